"""Colour conversion as the super-resolution papers measure it (MATLAB's ``rgb2ycbcr``)."""

from __future__ import annotations

import numpy as np

from ..errors import LightSRError


def rgb2y(img: np.ndarray) -> np.ndarray:
    """Luma Y of an ``H x W x 3`` RGB (or ``H x W [x 1]`` grey) image on the 0..255 scale.

    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (ITU-R BT.601, MATLAB ``rgb2ycbcr``),
    returned as float64 ``H x W`` in [16, 235] and *not* rounded, as the papers' evaluation
    code keeps it. Input: uint8, or float already on the 0..255 scale. A grey image is the
    Y of the repeated channel (R = G = B). RGBA is refused: drop the alpha first.
    """
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        g = img.astype(np.float64)
        # (65.481 + 128.553 + 24.966) = 219: kept as three terms so the result is bit-identical
        # to converting the repeated-channel RGB image.
        return 16.0 + (65.481 * g + 128.553 * g + 24.966 * g) / 255.0
    if img.ndim != 3 or img.shape[2] != 3:
        raise LightSRError(
            f"rgb2y expects an H x W x 3 RGB or H x W grey image, got shape {img.shape}"
            + (
                " (RGBA: drop the alpha channel first)."
                if img.ndim == 3 and img.shape[2] == 4
                else "."
            )
        )
    x = img.astype(np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


__all__ = ["rgb2y"]
