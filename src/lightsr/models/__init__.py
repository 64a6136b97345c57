"""Model families. Importing this package registers every model (explicit imports, no scanning)."""

from . import base  # noqa: F401
from . import a2f, maffsrn  # noqa: F401
from . import fmen  # noqa: F401
from . import carn, edsr, fsrcnn, idn, imdn, memnet, rcan  # noqa: F401
