"""PSNR and SSIM exactly as the super-resolution papers report them.

Both take two images of the same shape, ``H x W x C`` (C = 3 RGB or 1 grey) or ``H x W``,
uint8 or float already on the 0..255 scale and rounded (clamp and round a model's output to
uint8 first: :func:`lightsr.data.io.tensor_to_image`). By default they measure the luma Y of
MATLAB's ``rgb2ycbcr`` in float64 (:func:`lightsr.data.color.rgb2y`); a grey image is measured
as the Y of its repeated channel. ``crop_border`` pixels are removed from every side of both
images first (the papers use the scale factor).
"""

from __future__ import annotations

import math

import numpy as np

from .data.color import rgb2y
from .errors import LightSRError

_PEAK = 255.0


def _prepare(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool, what: str):
    sr, hr = np.asarray(sr), np.asarray(hr)
    if sr.shape != hr.shape:
        raise LightSRError(
            f"{what}: images differ in shape, {sr.shape} (SR) vs {hr.shape} (HR). Modcrop the "
            "HR image to a multiple of the scale and check the LR size."
        )
    for name, a in (("SR", sr), ("HR", hr)):
        if a.dtype == np.uint16:
            raise LightSRError(
                f"{what}: the {name} image is uint16; the papers' metrics are defined on 8-bit "
                "images (peak 255). Convert with round(x / 257) to uint8 first."
            )
    if crop_border < 0:
        raise LightSRError(f"{what}: crop_border must be >= 0, got {crop_border}.")
    if y_channel:
        sr, hr = rgb2y(sr), rgb2y(hr)
    else:
        sr, hr = sr.astype(np.float64), hr.astype(np.float64)
        if sr.ndim == 2:
            sr, hr = sr[..., None], hr[..., None]
    if crop_border:
        sr = sr[crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[crop_border:-crop_border, crop_border:-crop_border]
    if sr.size == 0:
        raise LightSRError(f"{what}: nothing left after cropping {crop_border} border pixels.")
    return sr, hr


def psnr(sr: np.ndarray, hr: np.ndarray, *, crop_border: int, y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio in dB (peak 255, float64); ``inf`` for identical images.

    ``y_channel=False`` measures all channels together (the NTIRE RGB convention).
    """
    a, b = _prepare(sr, hr, crop_border, y_channel, "psnr")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(_PEAK * _PEAK / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """'valid' 2-D correlation of an H x W float64 image with the separable window k k^T."""
    n = len(k)
    h, w = img.shape
    rows = k[0] * img[0 : h - n + 1]
    for i in range(1, n):
        rows = rows + k[i] * img[i : h - n + 1 + i]
    out = k[0] * rows[:, 0 : w - n + 1]
    for j in range(1, n):
        out = out + k[j] * rows[:, j : w - n + 1 + j]
    return out


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    k = _gaussian_1d()
    if min(a.shape) < len(k):
        raise LightSRError(
            f"ssim: the (cropped) image is {a.shape[0]}x{a.shape[1]}, smaller than the 11x11 "
            "window."
        )
    c1, c2 = (0.01 * _PEAK) ** 2, (0.03 * _PEAK) ** 2
    mu1, mu2 = _filter_valid(a, k), _filter_valid(b, k)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = _filter_valid(a * a, k) - mu1_sq
    s2 = _filter_valid(b * b, k) - mu2_sq
    s12 = _filter_valid(a * b, k) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def ssim(sr: np.ndarray, hr: np.ndarray, *, crop_border: int, y_channel: bool = True) -> float:
    """Structural similarity (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, 'valid'
    filtering (no padding), K1 = 0.01, K2 = 0.03, L = 255, mean of the map.

    ``y_channel=False`` averages the SSIM of each channel.
    """
    a, b = _prepare(sr, hr, crop_border, y_channel, "ssim")
    if a.ndim == 2:
        return _ssim_2d(a, b)
    return float(np.mean([_ssim_2d(a[..., c], b[..., c]) for c in range(a.shape[2])]))


__all__ = ["psnr", "ssim"]
