"""lightsr: lightweight single-image super-resolution.

Models map float RGB in [0, 1], shape (N, 3, H, W), to float RGB in [0, 1] (unclamped),
shape (N, 3, s*H, s*W).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .checkpoint import load, load_any, load_official, save
from .deploy import reparameterize
from .errors import (
    CheckpointError,
    ConfigError,
    ImageReadError,
    InputSizeError,
    LightSRError,
    UnknownModelError,
    UnsupportedScaleError,
)
from .registry import create_model, get_spec, list_models

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ImageReadError",
    "InputSizeError",
    "LightSRError",
    "UnknownModelError",
    "UnsupportedScaleError",
    "__version__",
    "create_model",
    "get_spec",
    "list_models",
    "load",
    "load_any",
    "load_official",
    "reparameterize",
    "save",
]
