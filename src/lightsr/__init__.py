"""lightsr: lightweight single-image super-resolution.

Models map float RGB in [0, 1], shape (N, 3, H, W), to float RGB in [0, 1] (unclamped),
shape (N, 3, s*H, s*W).
"""

from __future__ import annotations

from . import models  # noqa: F401  (explicit imports: registers every model and converter)
from ._version import __version__
from .checkpoint import load_any, load_official, save
from .data.color import rgb2y
from .data.io import read_image, write_image
from .data.resize import imresize
from .deploy import reparameterize
from .errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    ImageReadError,
    InputSizeError,
    LightSRError,
    UnknownModelError,
    UnsupportedScaleError,
)
from .hub import fetch_weights, list_weights
from .hub import load_by_name_or_path as load
from .metrics import psnr, ssim
from .registry import create_model, get_spec, list_models

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "ImageReadError",
    "InputSizeError",
    "LightSRError",
    "UnknownModelError",
    "UnsupportedScaleError",
    "__version__",
    "create_model",
    "get_spec",
    "imresize",
    "list_models",
    "fetch_weights",
    "list_weights",
    "load",
    "load_any",
    "load_official",
    "psnr",
    "read_image",
    "reparameterize",
    "rgb2y",
    "save",
    "ssim",
    "write_image",
]
