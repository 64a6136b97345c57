"""PSNR/SSIM on Y: regression values from CONVENTIONS.md, closed forms and a naive oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import shared_path

from lightsr.data.color import rgb2y
from lightsr.data.io import read_image
from lightsr.data.resize import imresize, modcrop
from lightsr.errors import LightSRError
from lightsr.metrics import psnr, ssim


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(x * 255.0, 0, 255) + 0.5).astype(np.uint8)


@pytest.mark.parametrize(
    ("path", "scale", "want_psnr", "want_ssim"),
    [
        (("Set5", "HR", "butterfly.png"), 2, 27.43860, 0.91597),
        (("Set14", "HR", "baboon.png"), 4, 22.43806, 0.45283),
        (("Set14", "HR", "comic.png"), 3, 23.11552, 0.69932),
    ],
)
def test_bicubic_regression_values(path, scale, want_psnr, want_ssim):
    # CONVENTIONS.md: HR modcropped; LR = imresize of HR as float in [0, 1], rounded to uint8
    # at the end (mirror); SR = imresize of that LR by s, likewise; crop = scale.
    hr = modcrop(read_image(shared_path("data", *path)), scale)
    lr = _to_uint8(imresize(hr / 255.0, 1 / scale, boundary="mirror"))
    sr = _to_uint8(imresize(lr / 255.0, scale, boundary="mirror"))
    assert psnr(sr, hr, crop_border=scale) == pytest.approx(want_psnr, abs=1e-5)
    assert ssim(sr, hr, crop_border=scale) == pytest.approx(want_ssim, abs=1e-5)


def test_rgb2y_matches_bt601():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 20, 30]]], np.uint8)
    y = rgb2y(rgb)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y[0, :3], [16.0, 235.0, 16 + 65.481], atol=1e-12)
    assert y[0, 3] == pytest.approx(16 + (65.481 * 10 + 128.553 * 20 + 24.966 * 30) / 255)
    with pytest.raises(LightSRError, match="alpha"):
        rgb2y(np.zeros((2, 2, 4), np.uint8))


def test_psnr_closed_forms():
    hr = np.full((20, 20, 3), 100, np.uint8)
    sr = hr + np.uint8(1)
    assert psnr(hr, hr, crop_border=0) == math.inf
    # every RGB value off by 1 -> Y off by 219/255
    assert psnr(sr, hr, crop_border=2) == pytest.approx(20 * math.log10(255 / (219 / 255)))
    assert psnr(sr, hr, crop_border=0, y_channel=False) == pytest.approx(20 * math.log10(255))


def test_crop_border_removes_border_pixels():
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[:3] = 0  # damage only the border band
    sr[:, -3:] = 255
    assert psnr(sr, hr, crop_border=3) == math.inf
    noisy = np.clip(hr.astype(int) + rng.integers(-9, 10, hr.shape), 0, 255).astype(np.uint8)
    assert psnr(noisy, hr, crop_border=4) == psnr(noisy[4:-4, 4:-4], hr[4:-4, 4:-4], crop_border=0)
    assert ssim(noisy, hr, crop_border=4) == ssim(noisy[4:-4, 4:-4], hr[4:-4, 4:-4], crop_border=0)


def test_grey_is_y_of_repeated_channel():
    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, (30, 30), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    rep = lambda a: np.repeat(a[:, :, None], 3, axis=2)  # noqa: E731
    assert psnr(sr, hr, crop_border=2) == psnr(rep(sr), rep(hr), crop_border=2)
    assert ssim(sr, hr, crop_border=2) == ssim(rep(sr), rep(hr), crop_border=2)
    assert ssim(sr[..., None], hr[..., None], crop_border=2) == ssim(sr, hr, crop_border=2)


def _naive_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Window by window, straight from the definition (Gaussian 11x11, sigma 1.5)."""
    x = np.arange(11) - 5.0
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    w = g / g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append(
                ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    return float(np.mean(vals))


def test_ssim_matches_naive_definition():
    rng = np.random.default_rng(3)
    hr = rng.integers(0, 256, (24, 27, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-40, 41, hr.shape), 0, 255).astype(np.uint8)
    want = _naive_ssim(rgb2y(sr)[1:-1, 1:-1], rgb2y(hr)[1:-1, 1:-1])
    assert ssim(sr, hr, crop_border=1) == pytest.approx(want, abs=1e-12)
    assert want < 0.99  # the noise is visible to SSIM
    assert ssim(hr, hr, crop_border=1) == pytest.approx(1.0, abs=1e-12)
    # RGB mode: the mean of per-channel SSIMs
    per_channel = [
        _naive_ssim(sr[..., c].astype(float), hr[..., c].astype(float)) for c in range(3)
    ]
    assert ssim(sr, hr, crop_border=0, y_channel=False) == pytest.approx(np.mean(per_channel))


def test_bad_inputs_are_refused():
    a = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(LightSRError, match="shape"):
        psnr(a, np.zeros((20, 21, 3), np.uint8), crop_border=2)
    with pytest.raises(LightSRError, match="uint16"):
        psnr(a.astype(np.uint16), a.astype(np.uint16), crop_border=2)
    with pytest.raises(LightSRError, match="window"):
        ssim(a, a, crop_border=5)
    with pytest.raises(LightSRError, match="nothing left"):
        psnr(a, a, crop_border=10)
