"""Model families. Importing this package registers every model (explicit imports, no scanning)."""

from . import base  # noqa: F401
