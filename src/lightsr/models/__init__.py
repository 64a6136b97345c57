"""Model families. Importing this package registers every model (explicit imports, no scanning)."""

from . import (  # noqa: F401  (each import registers its family's variants)
    a2f,
    base,
    bicubic,
    carn,
    edsr,
    fmen,
    fsrcnn,
    idn,
    imdn,
    maffsrn,
    memnet,
    rcan,
)
