"""Synthetic real-world degradations (Real-ESRGAN style), deterministic under a seed.

Real-ESRGAN (Wang et al. 2021) makes LR training images from HR ones with a *high-order*
degradation: each order blurs, resizes, adds noise and JPEG-compresses, and a final stage
resizes to the LR size, applies a 2-D sinc filter (ringing/overshoot) and compresses once more,
the last two in random order. This module implements that model on numpy images, and the
simpler classical ones as presets (:data:`PRESETS`): JPEG only, noise only, blur + noise + JPEG,
and the clean MATLAB bicubic downscale the benchmark LR sets use.

Images are ``H x W x 3`` float32 RGB in [0, 1]. Kernels are float64 ``k x k`` (odd ``k``),
summing to 1. Every random choice is drawn from the ``np.random.Generator`` passed in, in a fixed
order; no global numpy/torch/``random`` state is read or set. So :func:`degrade` is a pure
function of (image, scale, config, generator state), and :func:`rng_for` derives a generator
from stable keys (a training sample index, or a benchmark image's name) so that a data worker
can resume exactly and an evaluation LR set can be made again bit for bit. The float maths is
elementwise numpy in a fixed order, torch's ``interpolate`` (no reductions across threads) and
Pillow's JPEG codec, so the same library versions give the same bytes; numpy does not promise
the same streams from ``Generator`` methods across releases, so keep a generated benchmark set
rather than relying on regenerating it years later.

Deviations from Real-ESRGAN, and why:

- JPEG is Pillow's real encoder/decoder with an integer quality drawn from the range (Real-ESRGAN
  trains with a differentiable JPEG and a float quality), so the artefacts are those of real
  files.
- The HR image is degraded as given: Real-ESRGAN first sharpens it (USM); that is a choice of
  training target, not of degradation.
- A shape parameter beta whose range straddles 1 is drawn from below or above 1 with equal
  probability (Real-ESRGAN's rule for generalised Gaussians); a range on one side of 1 is drawn
  uniformly (Real-ESRGAN's plateau draw would return exactly 1 half of the time).
- Kernels are not zero-padded to 21 x 21 (that is only for batching on a GPU; the result is
  the same).
- Each order has probabilities for noise and JPEG (Real-ESRGAN: always), and the order's resize
  says whether its random scale is relative to its input or to the LR size (Real-ESRGAN: first
  order to the input, second to the LR size), so the classical pipelines are presets of the
  same code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError, LightSRError
from .resize import imresize

KernelType = Literal[
    "iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"
]
KERNEL_TYPES: tuple[KernelType, ...] = typing.get_args(KernelType)
ResizeMode = Literal["area", "bilinear", "bicubic", "matlab"]
#: ``area``/``bilinear``/``bicubic`` are torch's ``interpolate`` (no antialiasing, bicubic
#: a = -0.75), as Real-ESRGAN; ``matlab`` is the exact MATLAB bicubic (:func:`.resize.imresize`).
RESIZE_MODES: tuple[ResizeMode, ...] = typing.get_args(ResizeMode)
SincWindow = Literal["none", "hann"]
SINC_WINDOWS: tuple[SincWindow, ...] = typing.get_args(SincWindow)

# Real-ESRGAN's kernel mixture (train_realesrgan_x4plus.yml).
_REALESRGAN_KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ConfigError(
            f"kernel size {size!r} is invalid: use an odd integer >= 1 (the kernel needs a centre)."
        )


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} = {value!r} is invalid: it must be a finite number > 0.")


def _quadratic_form(size: int, sigma_x: float, sigma_y: float | None, theta: float) -> np.ndarray:
    """``d^T Sigma^-1 d`` on the kernel grid, ``Sigma = R(theta) diag(sx^2, sy^2) R(theta)^T``.

    ``d = (x, y)`` is the offset from the centre, ``x`` along columns and ``y`` along rows
    (downwards); the ``sigma_x`` axis points along ``(cos theta, sin theta)``.
    """
    _check_size(size)
    _check_positive("sigma_x", sigma_x)
    if sigma_y is None:
        sigma_y, theta = sigma_x, 0.0
    _check_positive("sigma_y", sigma_y)
    r = size // 2
    y, x = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    c, s = math.cos(theta), math.sin(theta)
    u = c * x + s * y  # coordinate along the sigma_x axis
    v = -s * x + c * y  # and along the sigma_y axis
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def _normalised(kernel: np.ndarray) -> np.ndarray:
    return kernel / kernel.sum()


def gaussian_kernel(
    size: int, *, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0
) -> np.ndarray:
    """Gaussian blur kernel, ``size x size`` float64 summing to 1.

    ``sigma_y=None`` gives the isotropic kernel (``theta`` ignored); otherwise ``sigma_x`` and
    ``sigma_y`` (pixels) are the standard deviations along the principal axes and ``theta``
    (radians) turns the ``sigma_x`` axis from the column direction towards the row direction
    (down). The kernel is truncated to the square, so its variance falls short of ``sigma^2``
    once ``size / 2`` is under about 3 sigma.
    """
    return _normalised(np.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(
    size: int,
    *,
    sigma_x: float,
    sigma_y: float | None = None,
    theta: float = 0.0,
    beta: float,
) -> np.ndarray:
    """Generalised Gaussian ``exp(-q^beta / 2)``, ``q = d^T Sigma^-1 d``: beta = 1 is the
    Gaussian, beta < 1 has heavier tails (a sharp peak on a wide skirt), beta > 1 is flatter
    with a sharper edge. It falls to ``exp(-1/2)`` of its peak at ``q = 1`` for every beta.
    Axes and ``theta`` as :func:`gaussian_kernel`."""
    _check_positive("beta", beta)
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    return _normalised(np.exp(-0.5 * np.power(q, beta)))


def plateau_kernel(
    size: int,
    *,
    sigma_x: float,
    sigma_y: float | None = None,
    theta: float = 0.0,
    beta: float,
) -> np.ndarray:
    """Plateau-shaped kernel ``1 / (1 + q^beta)`` (Real-ESRGAN): flat top, slowly decaying
    tails; half its peak at ``q = 1`` for every beta. Axes and ``theta`` as
    :func:`gaussian_kernel`."""
    _check_positive("beta", beta)
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    return _normalised(1.0 / (1.0 + np.power(q, beta)))


def sinc_kernel(size: int, *, omega: float, window: SincWindow = "none") -> np.ndarray:
    """Circularly symmetric 2-D sinc: the ideal low-pass with cutoff ``omega`` (radians per
    pixel, in (0, pi]), ``omega J1(omega r) / (2 pi r)``, truncated to ``size x size``.

    Its negative lobes are what make ringing and overshoot near edges, the artefacts of
    sharpening and of Lanczos-like resizers. ``window="none"`` is Real-ESRGAN's square
    truncation (the strongest ringing, ripples in the pass band); ``"hann"`` tapers the kernel
    radially to zero just beyond ``size // 2``, trading a wider transition band for a flatter
    pass band and weaker ringing.
    """
    _check_size(size)
    if not (math.isfinite(omega) and 0 < omega <= math.pi):
        raise ConfigError(f"sinc cutoff omega = {omega!r} is invalid: use 0 < omega <= pi.")
    if window not in SINC_WINDOWS:
        raise ConfigError(f"sinc window {window!r} is unknown: use one of {SINC_WINDOWS}.")
    r = size // 2
    y, x = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    rad = np.hypot(x, y)
    # J1 from torch (numpy has none): float64, elementwise, so deterministic.
    j1 = torch.special.bessel_j1(torch.from_numpy(omega * rad)).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = omega * j1 / (2 * math.pi * rad)
    kernel[r, r] = omega**2 / (4 * math.pi)  # the limit at r = 0
    if window == "hann":
        edge = r + 1.0  # the outermost on-axis taps keep a non-zero weight
        kernel *= np.where(rad < edge, 0.5 * (1.0 + np.cos(math.pi * rad / edge)), 0.0)
    return _normalised(kernel)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def _bad(where: str, name: str, value: object, valid: str) -> ConfigError:
    return ConfigError(f"{where}.{name} = {value!r} is invalid: {valid}.")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_tuple(obj: object, name: str) -> None:
    """Store a list field (from TOML/JSON) as a tuple, so the frozen config stays hashable."""
    value = getattr(obj, name)
    if isinstance(value, list):
        object.__setattr__(obj, name, tuple(value))


def _check_prob(where: str, name: str, value: object) -> None:
    if not (_is_number(value) and 0.0 <= value <= 1.0):
        raise _bad(where, name, value, "a probability must be a number in [0, 1]")


def _check_range(
    where: str,
    name: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    integer: bool = False,
    odd: bool = False,
    contains: float | None = None,
) -> None:
    """``value`` must be ``(min, max)`` with ``low <= min <= max <= high`` (``low < min`` when
    ``low_open``), integers (odd) when asked, and ``min <= contains <= max`` when given."""
    lo_txt = f"{low:g} < min" if low_open else f"{low:g} <= min"
    hi_txt = "" if high == math.inf else f" <= {high:g}"
    kind = "odd integers" if odd else "integers" if integer else "numbers"
    mid = f" <= {contains:g} <=" if contains is not None else " <="
    valid = f"give (min, max), {kind} with {lo_txt}{mid} max{hi_txt}"
    if not (isinstance(value, tuple) and len(value) == 2 and all(map(_is_number, value))):
        raise _bad(where, name, value, valid)
    lo, hi = value
    if (integer or odd) and not (isinstance(lo, int) and isinstance(hi, int)):
        raise _bad(where, name, value, valid)
    if odd and (lo % 2 == 0 or hi % 2 == 0):
        raise _bad(where, name, value, "even kernel size; " + valid)
    if lo > hi:
        raise _bad(where, name, value, "min > max; " + valid)
    if lo < low or (low_open and lo == low) or hi > high:
        raise _bad(where, name, value, "out of range; " + valid)
    if contains is not None and not lo <= contains <= hi:
        raise _bad(where, name, value, valid)


def _check_distribution(where: str, name: str, value: object, length: int, meaning: str) -> None:
    valid = f"give {length} probabilities ({meaning}), each >= 0, summing to 1"
    if not (
        isinstance(value, tuple)
        and len(value) == length
        and all(_is_number(p) and p >= 0 for p in value)
        and abs(sum(value) - 1.0) <= 1e-6
    ):
        raise _bad(where, name, value, valid)


def _check_choices(where: str, name: str, value: object, allowed: tuple[str, ...]) -> None:
    if not (isinstance(value, tuple) and value and all(v in allowed for v in value)):
        raise _bad(where, name, value, f"give a non-empty tuple of names from {allowed}")


@dataclass(frozen=True)
class KernelConfig:
    """How :func:`random_kernel` draws a blur kernel (Real-ESRGAN's first-order defaults).

    With probability ``sinc_prob`` a sinc kernel; otherwise one of ``kernel_list`` with the
    probabilities ``kernel_prob``. Sizes are the odd integers in ``size_range``, uniformly.
    """

    kernel_list: tuple[KernelType, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = _REALESRGAN_KERNEL_PROB
    #: Standard deviations in pixels (each axis drawn independently for anisotropic kernels).
    sigma_range: tuple[float, float] = (0.2, 3.0)
    #: Angle of the sigma_x axis, radians.
    rotation_range: tuple[float, float] = (-math.pi, math.pi)
    #: Shape of the generalised Gaussians (1 = Gaussian).
    betag_range: tuple[float, float] = (0.5, 4.0)
    #: Shape of the plateau kernels.
    betap_range: tuple[float, float] = (1.0, 2.0)
    #: Odd kernel sizes, both ends included.
    size_range: tuple[int, int] = (7, 21)
    sinc_prob: float = 0.1
    #: Sinc cutoffs (radians per pixel) for sizes >= 13, and for smaller sizes, whose
    #: truncation cannot hold a low cutoff's wide main lobe.
    sinc_omega_range: tuple[float, float] = (math.pi / 5, math.pi)
    sinc_omega_range_small: tuple[float, float] = (math.pi / 3, math.pi)
    sinc_window: SincWindow = "none"

    def __post_init__(self) -> None:
        where = type(self).__name__
        for name in (f.name for f in dataclasses.fields(self)):
            _as_tuple(self, name)
        _check_choices(where, "kernel_list", self.kernel_list, KERNEL_TYPES)
        _check_distribution(
            where, "kernel_prob", self.kernel_prob, len(self.kernel_list), "one per kernel_list"
        )
        _check_range(where, "sigma_range", self.sigma_range, low=0.0, low_open=True)
        _check_range(where, "rotation_range", self.rotation_range, low=-math.inf)
        _check_range(where, "betag_range", self.betag_range, low=0.0, low_open=True)
        _check_range(where, "betap_range", self.betap_range, low=0.0, low_open=True)
        _check_range(where, "size_range", self.size_range, low=1, odd=True)
        _check_prob(where, "sinc_prob", self.sinc_prob)
        for name in ("sinc_omega_range", "sinc_omega_range_small"):
            _check_range(where, name, getattr(self, name), low=0.0, high=math.pi, low_open=True)
        if self.sinc_window not in SINC_WINDOWS:
            raise _bad(where, "sinc_window", self.sinc_window, f"use one of {SINC_WINDOWS}")


@dataclass(frozen=True)
class OrderConfig:
    """One order of degradation: blur -> random resize -> noise -> JPEG, each with a probability.

    Defaults are Real-ESRGAN's first order. ``resize_prob`` is (up, down, keep); an up-scale is
    drawn from ``[1, resize_range[1]]``, a down-scale from ``[resize_range[0], 1]``. The scale
    applies to the order's input size (``resize_base="input"``) or to the final LR size
    (``"lr"``: Real-ESRGAN's second order, which keeps the image size bounded whatever the first
    order did; "keep" then means "resize to the LR size"). Noise is Gaussian with probability
    ``gaussian_noise_prob``, else Poisson; grey (equal in all channels) with ``gray_noise_prob``.
    """

    blur_prob: float = 1.0
    kernel: KernelConfig = field(default_factory=KernelConfig)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    resize_modes: tuple[ResizeMode, ...] = ("area", "bilinear", "bicubic")
    resize_base: Literal["input", "lr"] = "input"
    noise_prob: float = 1.0
    gaussian_noise_prob: float = 0.5
    #: Gaussian sigma in 0..255 units.
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 1.0
    #: JPEG quality (Pillow's 1..100), an integer drawn uniformly, both ends included.
    jpeg_range: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        where = type(self).__name__
        for name in (f.name for f in dataclasses.fields(self)):
            _as_tuple(self, name)
        for name in ("blur_prob", "noise_prob", "gaussian_noise_prob", "gray_noise_prob"):
            _check_prob(where, name, getattr(self, name))
        _check_prob(where, "jpeg_prob", self.jpeg_prob)
        if not isinstance(self.kernel, KernelConfig):
            raise _bad(where, "kernel", self.kernel, "give a KernelConfig")
        _check_distribution(where, "resize_prob", self.resize_prob, 3, "up, down, keep")
        _check_range(where, "resize_range", self.resize_range, low=0.0, low_open=True, contains=1)
        _check_choices(where, "resize_modes", self.resize_modes, RESIZE_MODES)
        if self.resize_base not in ("input", "lr"):
            raise _bad(where, "resize_base", self.resize_base, "use 'input' or 'lr'")
        _check_range(where, "noise_range", self.noise_range, low=0.0, high=255.0)
        _check_range(where, "poisson_scale_range", self.poisson_scale_range, low=0.0)
        _check_range(where, "jpeg_range", self.jpeg_range, low=1, high=100, integer=True)


def _realesrgan_second_order() -> OrderConfig:
    return OrderConfig(
        blur_prob=0.8,
        kernel=KernelConfig(sigma_range=(0.2, 1.5)),
        resize_prob=(0.3, 0.4, 0.3),
        resize_range=(0.3, 1.2),
        resize_base="lr",
        noise_range=(1.0, 25.0),
        poisson_scale_range=(0.05, 2.5),
        jpeg_prob=0.0,  # its JPEG is the final stage's, in random order with the final resize
    )


@dataclass(frozen=True)
class DegradationConfig:
    """The whole pipeline; defaults are Real-ESRGAN's (train_realesrgan_x4plus.yml).

    ``orders`` run in turn on the (cropped) HR image. The final stage then resizes to the LR
    size with a mode from ``final_resize_modes`` (skipped when the image already has it), applies
    a sinc filter with probability ``final_sinc_prob``, and JPEG-compresses with probability
    ``final_jpeg_prob``; the JPEG comes before the resize + sinc with probability
    ``final_jpeg_first_prob``. The scale factor is not part of the config: it is
    :func:`degrade`'s argument (one source of truth; Real-ESRGAN uses these ranges at x2 and x4).
    """

    orders: tuple[OrderConfig, ...] = field(
        default_factory=lambda: (OrderConfig(), _realesrgan_second_order())
    )
    final_resize_modes: tuple[ResizeMode, ...] = ("area", "bilinear", "bicubic")
    final_sinc_prob: float = 0.8
    final_sinc_omega_range: tuple[float, float] = (math.pi / 3, math.pi)
    final_sinc_size_range: tuple[int, int] = (7, 21)
    final_sinc_window: SincWindow = "none"
    final_jpeg_prob: float = 1.0
    final_jpeg_range: tuple[int, int] = (30, 95)
    final_jpeg_first_prob: float = 0.5

    def __post_init__(self) -> None:
        where = type(self).__name__
        for name in (f.name for f in dataclasses.fields(self)):
            _as_tuple(self, name)
        if not (
            isinstance(self.orders, tuple) and all(isinstance(o, OrderConfig) for o in self.orders)
        ):
            raise _bad(where, "orders", self.orders, "give a tuple of OrderConfig (may be empty)")
        _check_choices(where, "final_resize_modes", self.final_resize_modes, RESIZE_MODES)
        _check_prob(where, "final_sinc_prob", self.final_sinc_prob)
        _check_range(
            where,
            "final_sinc_omega_range",
            self.final_sinc_omega_range,
            low=0.0,
            high=math.pi,
            low_open=True,
        )
        _check_range(where, "final_sinc_size_range", self.final_sinc_size_range, low=1, odd=True)
        if self.final_sinc_window not in SINC_WINDOWS:
            raise _bad(
                where, "final_sinc_window", self.final_sinc_window, f"use one of {SINC_WINDOWS}"
            )
        _check_prob(where, "final_jpeg_prob", self.final_jpeg_prob)
        _check_range(
            where, "final_jpeg_range", self.final_jpeg_range, low=1, high=100, integer=True
        )
        _check_prob(where, "final_jpeg_first_prob", self.final_jpeg_first_prob)


def _lr_order(**changes: Any) -> OrderConfig:
    """An order that starts by resizing to the LR size with the exact MATLAB bicubic: with no
    order before it, its blur acts on the HR image and its noise on the LR one (the classical
    model ``y = (x * k) downscaled + n``)."""
    base = OrderConfig(
        blur_prob=0.0,
        resize_prob=(0.0, 0.0, 1.0),
        resize_modes=("matlab",),
        resize_base="lr",
        noise_prob=0.0,
        jpeg_prob=0.0,
    )
    return dataclasses.replace(base, **changes)


# The clean benchmark LR: the exact MATLAB bicubic (mirror boundary), nothing else. The other
# presets change it.
_BICUBIC = DegradationConfig(
    orders=(),
    final_resize_modes=("matlab",),
    final_sinc_prob=0.0,
    final_jpeg_prob=0.0,
    final_jpeg_first_prob=0.0,  # resize first: the classical presets compress the LR image
)

#: Named pipelines. Noise, blur and JPEG ranges are Real-ESRGAN's first-order ones.
PRESETS: dict[str, DegradationConfig] = {
    # Real-ESRGAN's full second-order model.
    "realesrgan": DegradationConfig(),
    # MATLAB bicubic LR, then JPEG with quality in [30, 95].
    "jpeg": dataclasses.replace(_BICUBIC, final_jpeg_prob=1.0, final_jpeg_range=(30, 95)),
    # MATLAB bicubic LR plus Gaussian (sigma 1..30 /255, p = 0.5) or Poisson (scale 0.05..3)
    # noise, grey with p = 0.4.
    "noise": dataclasses.replace(_BICUBIC, orders=(_lr_order(noise_prob=1.0),)),
    # Blur the HR with a Real-ESRGAN first-order kernel (no sinc), MATLAB bicubic downscale,
    # noise as "noise", then JPEG with quality in [30, 95].
    "blur_noise_jpeg": dataclasses.replace(
        _BICUBIC,
        orders=(_lr_order(blur_prob=1.0, kernel=KernelConfig(sinc_prob=0.0), noise_prob=1.0),),
        final_jpeg_prob=1.0,
        final_jpeg_range=(30, 95),
    ),
    "bicubic": _BICUBIC,
    # Training mixture for the photo model: each of blur (HR, as blur_noise_jpeg), noise (LR, as
    # "noise") and JPEG (LR, q 30..95) independently, with the ranges of the presets above, so
    # one sample may be clean, carry one of them, or all three (about 9% are clean: the model
    # must not learn to smooth what is already sharp).
    "photo": dataclasses.replace(
        _BICUBIC,
        orders=(_lr_order(blur_prob=0.5, kernel=KernelConfig(sinc_prob=0.0), noise_prob=0.5),),
        final_jpeg_prob=0.7,
        final_jpeg_range=(30, 95),
    ),
}


def get_preset(name: str) -> DegradationConfig:
    """The :data:`PRESETS` entry ``name``, or a ConfigError listing the known names."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown degradation preset {name!r}: use one of {sorted(PRESETS)}."
        ) from None


# ---------------------------------------------------------------------------------------------
# Random draws
# ---------------------------------------------------------------------------------------------


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _draw_beta(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    """Half the draws below 1 and half above when the range straddles 1 (sharper and flatter
    than a Gaussian equally often, however lopsided the range)."""
    lo, hi = bounds
    if lo < 1.0 < hi:
        return _uniform(rng, (lo, 1.0) if rng.random() < 0.5 else (1.0, hi))
    return _uniform(rng, bounds)


def _choose(rng: np.random.Generator, probs: Sequence[float]) -> int:
    """An index drawn with ``probs`` (validated to sum to 1 within 1e-6; renormalised here
    because numpy's ``choice`` demands a tighter sum)."""
    p = np.asarray(probs, dtype=np.float64)
    return int(rng.choice(len(p), p=p / p.sum()))


def _draw_odd(rng: np.random.Generator, bounds: Sequence[int]) -> int:
    sizes = range(bounds[0], bounds[1] + 1, 2)
    return int(sizes[int(rng.integers(len(sizes)))])


def random_kernel(rng: np.random.Generator, cfg: KernelConfig) -> np.ndarray:
    """A blur kernel drawn as Real-ESRGAN's ``random_mixed_kernels`` / sinc choice."""
    size = _draw_odd(rng, cfg.size_range)
    if rng.random() < cfg.sinc_prob:
        bounds = cfg.sinc_omega_range_small if size < 13 else cfg.sinc_omega_range
        return sinc_kernel(size, omega=_uniform(rng, bounds), window=cfg.sinc_window)
    kind = cfg.kernel_list[_choose(rng, cfg.kernel_prob)]
    sigma_x = _uniform(rng, cfg.sigma_range)
    sigma_y: float | None = None
    theta = 0.0
    if kind.endswith("aniso"):
        sigma_y = _uniform(rng, cfg.sigma_range)
        theta = _uniform(rng, cfg.rotation_range)
    if kind.startswith("generalized"):
        beta = _draw_beta(rng, cfg.betag_range)
        return generalized_gaussian_kernel(
            size, sigma_x=sigma_x, sigma_y=sigma_y, theta=theta, beta=beta
        )
    if kind.startswith("plateau"):
        beta = _draw_beta(rng, cfg.betap_range)
        return plateau_kernel(size, sigma_x=sigma_x, sigma_y=sigma_y, theta=theta, beta=beta)
    return gaussian_kernel(size, sigma_x=sigma_x, sigma_y=sigma_y, theta=theta)


# ---------------------------------------------------------------------------------------------
# Operations on H x W x 3 float32 images in [0, 1]
# ---------------------------------------------------------------------------------------------


def _as_image(img: np.ndarray, what: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
        raise LightSRError(f"{what}: expected an H x W x 3 RGB array, got shape {img.shape}.")
    if not np.issubdtype(img.dtype, np.floating):
        raise LightSRError(
            f"{what}: expected float RGB in [0, 1], got {img.dtype} "
            "(divide uint8 images by 255 first)."
        )
    return img.astype(np.float32, copy=False)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8, clipped and rounded half away from zero in float32: the rule of
    :func:`lightsr.data.io.tensor_to_image`, i.e. what writing the image to a file does."""
    x = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    return np.floor(x * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def quantize(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> float32 on the 256 uint8 levels (``k / 255``): the image as it would be
    read back from an 8-bit file."""
    return to_uint8(img).astype(np.float32) / np.float32(255.0)


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``img`` filtered with a centrally symmetric ``k x k`` kernel (so correlation equals
    convolution), reflect padding (edge pixel not repeated, as torch's ``reflect``).

    Summed tap by tap in float32 in a fixed order, so the result does not depend on the machine
    or the thread count (a BLAS or oneDNN convolution would not promise that).
    """
    img = _as_image(img, "blur")
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ConfigError(f"blur: expected a square k x k kernel, got shape {k.shape}.")
    _check_size(k.shape[0])
    r = k.shape[0] // 2
    h, w = img.shape[:2]
    padded = np.pad(img, ((r, r), (r, r), (0, 0)), mode="reflect")
    out = np.zeros_like(img)
    tmp = np.empty_like(img)
    for dy, dx in zip(*np.nonzero(k)):  # row-major order; exactly-zero taps add nothing
        np.multiply(padded[dy : dy + h, dx : dx + w], np.float32(k[dy, dx]), out=tmp)
        out += tmp
    return out


def resize(img: np.ndarray, *, size: tuple[int, int], mode: ResizeMode) -> np.ndarray:
    """``img`` resized to ``size`` = (H, W). ``area``/``bilinear``/``bicubic``: torch's
    ``interpolate`` without antialiasing (Real-ESRGAN's resizers, aliasing included);
    ``matlab``: the exact MATLAB bicubic with the mirror boundary. Values are not clipped
    (bicubic overshoots slightly, as a real resizer's float output does)."""
    img = _as_image(img, "resize")
    out_h, out_w = (int(v) for v in size)
    if out_h < 1 or out_w < 1:
        raise ConfigError(f"resize: output size {size!r} must be at least 1 x 1.")
    if mode == "matlab":
        return imresize(img, output_shape=(out_h, out_w))
    if mode not in RESIZE_MODES:
        raise ConfigError(f"resize: unknown mode {mode!r}; use one of {RESIZE_MODES}.")
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    if mode == "area":
        y = F.interpolate(x, size=(out_h, out_w), mode="area")
    else:
        y = F.interpolate(x, size=(out_h, out_w), mode=mode, align_corners=False)
    return np.ascontiguousarray(y[0].numpy().transpose(1, 2, 0))


def resize_random(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    updown_prob: Sequence[float] = (0.2, 0.7, 0.1),
    scale_range: Sequence[float] = (0.15, 1.5),
    modes: Sequence[ResizeMode] = ("area", "bilinear", "bicubic"),
    base_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resize by a random scale: up (from ``[1, scale_range[1]]``), down (``[scale_range[0],
    1]``) or keep (1), chosen with ``updown_prob``, with a mode drawn uniformly from ``modes``.

    The output is ``int(base * scale)`` per axis (at least 1), ``base_size`` defaulting to the
    image's own size (Real-ESRGAN's second order passes the LR size). An output the size of the
    input is returned unchanged (those resizers are the identity then), the draws still made.
    """
    img = _as_image(img, "resize_random")
    kind = _choose(rng, updown_prob)
    if kind == 0:
        scale = _uniform(rng, (1.0, scale_range[1]))
    elif kind == 1:
        scale = _uniform(rng, (scale_range[0], 1.0))
    else:
        scale = 1.0
    mode = modes[int(rng.integers(len(modes)))]
    base_h, base_w = base_size if base_size is not None else img.shape[:2]
    size = (max(1, int(base_h * scale)), max(1, int(base_w * scale)))
    if size == img.shape[:2]:
        return img
    return resize(img, size=size, mode=mode)


def _grey(img: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma (OpenCV's/torchvision's RGB-to-grey), H x W x 1."""
    return (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2])[..., None]


def add_gaussian_noise(
    img: np.ndarray, rng: np.random.Generator, *, sigma: float, grey: bool, clip: bool = True
) -> np.ndarray:
    """Additive white Gaussian noise of standard deviation ``sigma / 255`` (``sigma`` in 0..255
    units, the convention of the denoising literature). ``grey``: one noise field shared by the
    three channels (luminance noise); else independent per channel (chroma noise). ``clip``:
    clip to [0, 1], as a camera or file would."""
    img = _as_image(img, "add_gaussian_noise")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"add_gaussian_noise: sigma = {sigma!r} must be >= 0 (0..255 units).")
    shape = img.shape[:2] + ((1,) if grey else (3,))
    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma / 255.0)
    out = img + noise
    return np.clip(out, 0.0, 1.0) if clip else out


def add_poisson_noise(
    img: np.ndarray, rng: np.random.Generator, *, scale: float, grey: bool, clip: bool = True
) -> np.ndarray:
    """Signal-dependent (shot) noise, Real-ESRGAN's formulation: with the image rounded to 8
    bits and ``v`` = its number of distinct values rounded up to a power of two, the noise is
    ``(Poisson(img * v) / v - img) * scale``, so its variance is ``img * scale^2 / v``: it grows
    linearly with the signal. ``grey``: drawn once on the BT.601 luma and shared by the three
    channels. ``clip`` as :func:`add_gaussian_noise`."""
    img = _as_image(img, "add_poisson_noise")
    if not (math.isfinite(scale) and scale >= 0):
        raise ConfigError(f"add_poisson_noise: scale = {scale!r} must be >= 0.")
    src = _grey(img.astype(np.float64)) if grey else img.astype(np.float64)
    # Rounded and clipped so the count of distinct values (the "photon levels") is meaningful.
    src = np.clip(np.round(src * 255.0), 0, 255) / 255.0
    levels = 2.0 ** math.ceil(math.log2(len(np.unique(src))))
    noise = rng.poisson(src * levels) / levels - src
    out = img + (noise * scale).astype(np.float32)
    return np.clip(out, 0.0, 1.0) if clip else out


def _check_quality(quality: int) -> None:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise ConfigError(f"JPEG quality {quality!r} must be an integer in 1..100.")
    if not 1 <= quality <= 100:
        raise ConfigError(f"JPEG quality {quality} is out of range: use 1..100.")


def encode_jpeg(img: np.ndarray, *, quality: int) -> bytes:
    """The JPEG file Pillow writes for ``img`` (clipped and rounded to uint8 by :func:`to_uint8`)
    at ``quality`` (1..100), with Pillow's other defaults (4:2:0 chroma subsampling)."""
    img = _as_image(img, "encode_jpeg")
    _check_quality(quality)
    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def jpeg(img: np.ndarray, *, quality: int) -> np.ndarray:
    """``img`` encoded to a real JPEG file at ``quality`` and decoded again with Pillow:
    float32 on the uint8 levels, with the codec's blocking, ringing and chroma blur."""
    data = encode_jpeg(img, quality=quality)
    with Image.open(io.BytesIO(data), formats=["JPEG"]) as decoded:
        out = np.asarray(decoded.convert("RGB"))
    return out.astype(np.float32) / np.float32(255.0)


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------


def _random_noise(img: np.ndarray, rng: np.random.Generator, order: OrderConfig) -> np.ndarray:
    if rng.random() < order.gaussian_noise_prob:
        sigma = _uniform(rng, order.noise_range)
        grey = bool(rng.random() < order.gray_noise_prob)
        return add_gaussian_noise(img, rng, sigma=sigma, grey=grey)
    scale = _uniform(rng, order.poisson_scale_range)
    grey = bool(rng.random() < order.gray_noise_prob)
    return add_poisson_noise(img, rng, scale=scale, grey=grey)


def _random_jpeg(img: np.ndarray, rng: np.random.Generator, bounds: Sequence[int]) -> np.ndarray:
    return jpeg(img, quality=int(rng.integers(bounds[0], bounds[1] + 1)))


def _apply_order(
    img: np.ndarray, rng: np.random.Generator, order: OrderConfig, lr_size: tuple[int, int]
) -> np.ndarray:
    if rng.random() < order.blur_prob:
        img = blur(img, random_kernel(rng, order.kernel))
    img = resize_random(
        img,
        rng,
        updown_prob=order.resize_prob,
        scale_range=order.resize_range,
        modes=order.resize_modes,
        base_size=lr_size if order.resize_base == "lr" else None,
    )
    if rng.random() < order.noise_prob:
        img = _random_noise(img, rng, order)
    if rng.random() < order.jpeg_prob:
        img = _random_jpeg(img, rng, order.jpeg_range)
    return img


def _final_resize_and_sinc(
    img: np.ndarray, rng: np.random.Generator, config: DegradationConfig, lr_size: tuple[int, int]
) -> np.ndarray:
    mode = config.final_resize_modes[int(rng.integers(len(config.final_resize_modes)))]
    if img.shape[:2] != lr_size:
        img = resize(img, size=lr_size, mode=mode)
    if rng.random() < config.final_sinc_prob:
        size = _draw_odd(rng, config.final_sinc_size_range)
        omega = _uniform(rng, config.final_sinc_omega_range)
        img = blur(img, sinc_kernel(size, omega=omega, window=config.final_sinc_window))
    return img


def degrade(
    hr: np.ndarray, *, scale: int, config: DegradationConfig, rng: np.random.Generator
) -> np.ndarray:
    """A synthetic LR image for ``hr`` (``H x W x 3`` float RGB in [0, 1]).

    ``hr`` is first cropped to its top-left ``H - H % scale`` by ``W - W % scale`` pixels (as
    :func:`lightsr.data.resize.modcrop`), so the LR is exactly ``(H // scale, W // scale)``.
    Returns float32 in [0, 1] on the 256 uint8 levels (what a saved 8-bit file holds, rounded
    as :func:`to_uint8`). Every random choice comes from ``rng``, in a fixed order: the same
    generator state gives a bit-identical result.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"degrade: scale = {scale!r} must be an integer >= 1.")
    if not isinstance(config, DegradationConfig):
        raise ConfigError(f"degrade: config must be a DegradationConfig, not {type(config)}.")
    hr = _as_image(hr, "degrade")
    h, w = hr.shape[:2]
    lr_size = (h // scale, w // scale)
    if min(lr_size) < 1:
        raise LightSRError(f"degrade: a {h}x{w} image is smaller than the scale {scale}.")
    img = hr[: lr_size[0] * scale, : lr_size[1] * scale]
    for order in config.orders:
        img = _apply_order(img, rng, order, lr_size)
    if rng.random() < config.final_jpeg_first_prob:
        if rng.random() < config.final_jpeg_prob:
            img = _random_jpeg(img, rng, config.final_jpeg_range)
        img = _final_resize_and_sinc(img, rng, config, lr_size)
    else:
        img = _final_resize_and_sinc(img, rng, config, lr_size)
        if rng.random() < config.final_jpeg_prob:
            img = _random_jpeg(img, rng, config.final_jpeg_range)
    return quantize(img)


def rng_for(seed: int, *keys: int | str) -> np.random.Generator:
    """A generator that is a stable function of ``(seed, *keys)``: the same on every run,
    machine and Python process (unlike ``hash()``, which is salted per process).

    The keys are hashed with SHA-256 (each tagged with its type and length, so ``1`` and
    ``"1"``, or ``("ab", "c")`` and ``("a", "bc")``, differ) into the entropy of a
    ``SeedSequence`` driving a PCG64, both pinned by numpy's stream-compatibility policy. For a
    data worker: ``rng_for(seed, epoch, index)`` makes a sample independent of which worker
    loads it, and resuming at any step exact.
    """
    digest = hashlib.sha256(b"lightsr.degrade.rng_for/1")
    for key in (seed, *keys):
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise ConfigError(f"rng_for: keys must be int or str, got {key!r}.")
        data = str(key).encode()
        digest.update((b"i" if isinstance(key, int) else b"s") + len(data).to_bytes(8, "little"))
        digest.update(data)
    entropy = int.from_bytes(digest.digest(), "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def degrade_for_eval(
    hr: np.ndarray, *, scale: int, preset: str, seed: int, name: str = ""
) -> np.ndarray:
    """:func:`degrade` with the preset ``preset`` and the generator
    ``rng_for(seed, "eval", preset, name)``: a benchmark LR image that is a function of (HR,
    scale, preset, seed, name) only, so the set can be made again bit for bit. Give each image
    its file name, so images differ in their draws; the scale is not a key, so the x2 and x4
    sets share their draws (kernel, noise level, quality)."""
    config = get_preset(preset)
    return degrade(hr, scale=scale, config=config, rng=rng_for(seed, "eval", preset, name))


__all__ = [
    "KERNEL_TYPES",
    "PRESETS",
    "RESIZE_MODES",
    "SINC_WINDOWS",
    "DegradationConfig",
    "KernelConfig",
    "OrderConfig",
    "add_gaussian_noise",
    "add_poisson_noise",
    "blur",
    "degrade",
    "degrade_for_eval",
    "encode_jpeg",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "get_preset",
    "jpeg",
    "plateau_kernel",
    "quantize",
    "random_kernel",
    "resize",
    "resize_random",
    "rng_for",
    "sinc_kernel",
    "to_uint8",
]
