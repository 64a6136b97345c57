"""MATLAB's bicubic ``imresize`` and Pillow's Lanczos, exactly, whole or band by band, and a
fast approximate torch path.

:func:`imresize` reproduces ``imresize(img, scale, 'bicubic')``: cubic kernel with a = -0.5,
stretched by the scale when downscaling (MATLAB's antialiasing), output size
``ceil(in * scale)``, weights normalised to sum 1, one 1-D pass per axis (the axis that shrinks
most first; rows first for equal scales). For uint8/uint16 input the intermediate image is
rounded half away from zero and clipped between the two passes, as MATLAB does; this is what
makes the published LR sets match bit for bit.

Two boundary rules occur in published LR sets and are both supported:

- ``"mirror"``: symmetric reflection with the edge pixel repeated (MATLAB's own rule; the
  SwinIR/IMDN ``LR_bicubic`` files),
- ``"replicate"``: the edge pixel repeated (the SelfExSR/RCAN ``LR_bicubic_clamp`` files).

Each pass is a handful of vectorised gathers: per axis the tap weights and indices are
computed once and applied tap by tap (in MATLAB's summation order).

:class:`Resize` runs those passes on an image that arrives band by band (rows, top to bottom)
and gives its output band by band: every value is computed by the same operations as on the
whole image, so the bands put together equal the whole resize bit for bit, while only the rows
a band's kernel reaches are held. It also runs Pillow's Lanczos (``filter="lanczos"``): Pillow
does the horizontal pass (each row's output depends on that row alone), and the vertical pass,
whose weights Pillow would compute from a band's height instead of the image's, is reproduced
bit for bit (:func:`_lanczos_contributions`), so that it streams too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import LightSRError

#: The boundary rules. imresize and imresize_torch take a plain str (it often comes from user
#: input: a config, --lr-source) and check it at run time.
Boundary = Literal["mirror", "replicate"]
BOUNDARIES: tuple[str, ...] = ("mirror", "replicate")


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """The top-left ``H - H % scale`` by ``W - W % scale`` pixels of an ``H x W [x C]`` array."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


@lru_cache(maxsize=256)
def _contributions(
    in_len: int, out_len: int, scale: float, boundary: str
) -> tuple[np.ndarray, np.ndarray]:
    """Tap weights (out_len, P) float64 and 0-based source indices (out_len, P), as MATLAB's
    ``contributions`` (including dropping taps whose weight is zero for every output)."""
    if scale < 1:
        kernel_width = 4.0 / scale

        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * x)
    else:
        kernel_width = 4.0
        kernel = _cubic
    u = np.arange(1, out_len + 1, dtype=np.float64)  # 1-based output coordinates
    x = u / scale + 0.5 * (1 - 1 / scale)  # their positions in input coordinates
    left = np.floor(x - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    weights = kernel(x[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    idx = indices.astype(np.int64) - 1
    if boundary == "mirror":
        period = 2 * in_len  # [0..n-1, n-1..0]
        idx = np.mod(idx, period)
        idx = np.where(idx >= in_len, period - 1 - idx, idx)
    elif boundary == "replicate":
        idx = np.clip(idx, 0, in_len - 1)
    else:  # pragma: no cover - checked by callers
        raise AssertionError(boundary)
    keep = np.any(weights != 0, axis=0)
    weights, idx = weights[:, keep], idx[:, keep]
    weights.setflags(write=False)
    idx.setflags(write=False)
    return weights, idx


def _sinc(x: float) -> float:
    """Pillow's ``sinc_filter``, in its operation order."""
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    """Pillow's ``lanczos_filter``: sinc(x) * sinc(x / 3) on [-3, 3)."""
    if -3.0 <= x < 3.0:
        return _sinc(x) * _sinc(x / 3)
    return 0.0


@lru_cache(maxsize=64)
def _lanczos_contributions(in_len: int, out_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Tap weights (out_len, K) float64 and source indices (out_len, K) of Pillow's Lanczos
    resize of the whole axis (``precompute_coeffs`` in Pillow's Resample.c, operation for
    operation; ``math.sin`` is the C library's ``sin``, as Pillow's is). Rows with fewer taps
    than K are padded with weight 0 on a valid index, which adds an exact 0."""
    scale = in_len / out_len
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    ksize = math.ceil(support) * 2 + 1
    ss = 1.0 / filterscale
    weights = np.zeros((out_len, ksize), dtype=np.float64)
    idx = np.zeros((out_len, ksize), dtype=np.int64)
    for xx in range(out_len):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_len) - xmin
        taps = [_lanczos((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        total = 0.0
        for tap in taps:  # summed in order, as Pillow does (not Python's sum())
            total += tap
        if total != 0.0:
            taps = [tap / total for tap in taps]
        weights[xx, :xmax] = taps
        idx[xx, :xmax] = np.arange(xmin, xmin + xmax)
        idx[xx, xmax:] = xmin
    weights.setflags(write=False)
    idx.setflags(write=False)
    return weights, idx


def _resize_axis(x: np.ndarray, axis: int, weights: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """One 1-D pass over ``axis``: sum_p w[:, p] * x[idx[:, p]] in float64, tap by tap from
    the first (each output value is the same operations whatever else is in ``x``)."""
    # Gathering whole contiguous rows is several times faster than strided columns.
    x = np.ascontiguousarray(np.moveaxis(x, axis, 0))
    shape = (-1,) + (1,) * (x.ndim - 1)
    out = weights[:, 0].reshape(shape) * x[idx[:, 0]]
    for p in range(1, weights.shape[1]):
        out += weights[:, p].reshape(shape) * x[idx[:, p]]
    return np.moveaxis(out, 0, axis)


def _check_boundary(boundary: str) -> None:
    if boundary not in BOUNDARIES:
        raise LightSRError(
            f"unknown boundary rule {boundary!r}: use 'mirror' (MATLAB, LR_bicubic) or "
            "'replicate' (LR_bicubic_clamp)."
        )


#: The filters of :class:`Resize`: MATLAB's bicubic imresize, Pillow's Lanczos.
FILTERS: tuple[str, ...] = ("bicubic", "lanczos")

#: How many values (rows x width x channels) one step of a resize computes at once: its
#: float64 temporaries stay near 16 MiB whatever the image's size.
_STEP_VALUES = 1 << 21


@dataclass(frozen=True)
class _Pass:
    axis: int  # 0: rows (vertical), 1: columns (horizontal)
    weights: np.ndarray
    index: np.ndarray
    by_pillow: bool = False  # Pillow's Lanczos runs it (_pillow_lanczos_rows); no weights


class Resize:
    """A separable resize of ``H x W [x C]`` images of one dtype from ``in_size`` to
    ``out_size`` (both (height, width)), run on a whole image (``resize(image)``) or band by
    band (:meth:`bands`), with the same result bit for bit.

    ``filter="bicubic"``: MATLAB's ``imresize(img, [h w], 'bicubic')`` (see :func:`imresize`;
    ``scales`` overrides out/in per axis, as ``imresize(img, scale)`` does). uint8/uint16 give
    the same dtype, rounded and clipped after each pass; float gives its own dtype.
    ``filter="lanczos"``: Pillow's ``Image.resize(..., LANCZOS)`` of each channel as a float32
    image (horizontal pass first, float32 between the passes), rounded half up and clipped
    for uint8/uint16, float32 for float input.
    """

    def __init__(
        self,
        in_size: tuple[int, int],
        out_size: tuple[int, int],
        *,
        dtype: Any,
        filter: str = "bicubic",
        boundary: str = "mirror",
        scales: tuple[float, float] | None = None,
    ) -> None:
        if filter not in FILTERS:
            raise LightSRError(f"filter must be one of {', '.join(FILTERS)}, not {filter!r}.")
        _check_boundary(boundary)
        self.in_size = (int(in_size[0]), int(in_size[1]))
        self.out_size = (int(out_size[0]), int(out_size[1]))
        if min(self.in_size) < 1 or min(self.out_size) < 1:
            raise LightSRError(
                f"cannot resize {self.in_size} to {self.out_size}: both need at least 1x1 pixels."
            )
        self.dtype = np.dtype(dtype)
        if self.dtype in (np.uint8, np.uint16):
            self._peak: float | None = float(np.iinfo(self.dtype).max)
        elif np.issubdtype(self.dtype, np.floating):
            self._peak = None
        else:
            raise LightSRError(
                f"cannot resize an image of dtype {self.dtype} (use uint8, uint16 or float)."
            )
        self.filter = filter
        passes: list[_Pass] = []
        if filter == "bicubic":
            if scales is None:
                scales = (self.out_size[0] / self.in_size[0], self.out_size[1] / self.in_size[1])
            # MATLAB resizes the dimension with the smallest scale first (rows on ties) and
            # skips one that does not change.
            order = (0, 1) if scales[0] <= scales[1] else (1, 0)
            for axis in order:
                if scales[axis] == 1 and self.out_size[axis] == self.in_size[axis]:
                    continue
                w, idx = _contributions(
                    self.in_size[axis], self.out_size[axis], scales[axis], boundary
                )
                passes.append(_Pass(axis, w, idx))
            self.out_dtype = self.dtype
        else:
            # Pillow: the horizontal pass first, each pass only where the size changes. Pillow
            # itself runs the horizontal one (faster than numpy, and the same values: a row's
            # output depends on that row alone); the vertical one, which a band cannot hand
            # to Pillow (its weights depend on the whole height), is reproduced here.
            if self.out_size[1] != self.in_size[1]:
                none = np.empty((0, 0))
                passes.append(_Pass(1, none, none.astype(np.int64), by_pillow=True))
            if self.out_size[0] != self.in_size[0]:
                w, idx = _lanczos_contributions(self.in_size[0], self.out_size[0])
                passes.append(_Pass(0, w, idx))
            self.out_dtype = self.dtype if self._peak is not None else np.dtype(np.float32)
        self._passes = passes

    # -- the steps between passes -----------------------------------------------------------

    def _prepare(self, band: np.ndarray) -> np.ndarray:
        """An input band as the first pass reads it (integers promote to float64 exactly)."""
        if self.filter == "lanczos" and self._peak is None:
            return band.astype(np.float32, copy=False)  # Pillow's "F" image
        return band

    def _after_pass(self, x: np.ndarray) -> np.ndarray:
        """A pass's float64 result as the next step holds it."""
        if self.filter == "lanczos":
            return x.astype(np.float32)  # Pillow's intermediate image is float32
        if self._peak is not None:
            # MATLAB keeps the input class between passes: round half away from zero, clip.
            return np.floor(np.clip(x, 0.0, self._peak) + 0.5).astype(self.dtype)
        return x

    def _finish(self, x: np.ndarray) -> np.ndarray:
        if self.filter == "lanczos" and self._peak is not None:
            x32 = x.astype(np.float32, copy=False)
            return np.floor(np.clip(x32, 0.0, self._peak) + 0.5).astype(self.dtype)
        return x.astype(self.out_dtype)

    def _columns(self, x: np.ndarray, passes: list[_Pass]) -> np.ndarray:
        for p in passes:
            if p.by_pillow:
                x = _pillow_lanczos_rows(x, self.out_size[1])
            else:
                x = self._after_pass(_resize_axis(x, 1, p.weights, p.index))
        return x

    # -- running ----------------------------------------------------------------------------

    def output_shape(self, channels: int | None) -> tuple[int, ...]:
        """The output's shape for ``channels`` (None: a 2-D image)."""
        return self.out_size if channels is None else (*self.out_size, channels)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The whole of ``image`` (``in_size``) resized."""
        image = np.asarray(image)
        bands = self.bands([image])
        first = next(bands)
        if first.shape[0] == self.out_size[0]:  # one step: the band is the image (a new array)
            if next(bands, None) is not None:  # (also runs the generator's final checks)
                raise AssertionError("Resize gave rows past the output's height")
            return first
        out = np.empty(
            self.output_shape(image.shape[2] if image.ndim == 3 else None), self.out_dtype
        )
        out[: first.shape[0]] = first
        row = first.shape[0]
        for band in bands:
            out[row : row + band.shape[0]] = band
            row += band.shape[0]
        return out

    def bands(self, bands: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The output a band of rows at a time, top to bottom, from ``bands``: the input's rows
        top to bottom, in bands of any heights, all of one width and channel count. What is
        held at a time: the input rows the kernel still needs and one step's temporaries
        (:data:`_STEP_VALUES` values), besides the band being read."""
        split = next((i for i, p in enumerate(self._passes) if p.axis == 0), None)
        before = self._passes if split is None else self._passes[:split]
        after = [] if split is None else self._passes[split + 1 :]
        vertical = None if split is None else self._passes[split]
        in_h, in_w = self.in_size
        held: list[tuple[int, np.ndarray]] = []  # (first row, rows after the `before` passes)
        arrived = 0
        emitted = 0
        shape: tuple[int, ...] | None = None
        if vertical is not None:
            # output row i reads rows up to reach[i] (so it can run once they have arrived) and
            # the rows from lowest[i] on are read by row i or a later one (the others go)
            reach = np.maximum.accumulate(vertical.index.max(axis=1))
            lowest = np.minimum.accumulate(vertical.index.min(axis=1)[::-1])[::-1]
        for band in bands:
            band = np.asarray(band)
            if shape is None:
                shape = band.shape[1:]
                if band.ndim not in (2, 3) or shape[0] != in_w:
                    raise LightSRError(
                        f"Resize from {in_h}x{in_w} got a band of shape {band.shape}: expected "
                        f"rows of {in_w} pixels."
                    )
            elif band.shape[1:] != shape:
                raise LightSRError(
                    f"Resize: a band of shape {band.shape} after bands of rows {shape}: every "
                    "band needs the same width and channels."
                )
            if band.dtype != self.dtype:
                raise LightSRError(f"Resize for {self.dtype} images got a band of {band.dtype}.")
            if arrived + band.shape[0] > in_h:
                raise LightSRError(
                    f"Resize from {in_h} rows got {arrived + band.shape[0]}: too many rows."
                )
            channels = math.prod(band.shape[2:])
            step = max(1, _STEP_VALUES // (max(in_w, self.out_size[1]) * channels))
            out_step = max(1, _STEP_VALUES // (self.out_size[1] * channels))
            # a step of rows at a time through the passes before the vertical one, so their
            # float temporaries are a step's, not the band's
            for r in range(0, band.shape[0], step):
                rows = self._columns(self._prepare(band[r : r + step]), before)
                if vertical is None:
                    yield self._finish(rows)
                    arrived += rows.shape[0]
                    continue
                held.append((arrived, rows))
                arrived += rows.shape[0]
                ready = int(np.searchsorted(reach, arrived))  # rows whose every tap has come
                while emitted < ready:
                    stop = min(ready, emitted + out_step)
                    index = vertical.index[emitted:stop]
                    lo = int(index.min())
                    window = _rows_of(held, lo, int(index.max()) + 1)
                    x = _resize_axis(window, 0, vertical.weights[emitted:stop], index - lo)
                    yield self._finish(self._columns(self._after_pass(x), after))
                    emitted = stop
                    if emitted < len(lowest):
                        keep_from = int(lowest[emitted])
                        held = [(r0, a) for r0, a in held if r0 + a.shape[0] > keep_from]
        if arrived != in_h:
            raise LightSRError(f"Resize from {in_h} rows got {arrived}: too few rows.")


def _pillow_lanczos_rows(x: np.ndarray, width: int) -> np.ndarray:
    """Pillow's Lanczos of each row of ``x`` (H x W [x C]) to ``width``, channel by channel as
    float32 ("F") images: float32 (rows x width [x C])."""
    planes = x[:, :, None] if x.ndim == 2 else x
    out = np.empty((x.shape[0], width, planes.shape[2]), dtype=np.float32)
    for c in range(planes.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(planes[:, :, c], dtype=np.float32))
        out[:, :, c] = np.asarray(plane.resize((width, x.shape[0]), Image.Resampling.LANCZOS))
    return out[:, :, 0] if x.ndim == 2 else out


def _rows_of(held: list[tuple[int, np.ndarray]], start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the image whose rows ``held`` holds as (first row, array)."""
    parts = []
    for r0, a in held:
        lo, hi = max(start, r0), min(stop, r0 + a.shape[0])
        if lo < hi:
            parts.append(a[lo - r0 : hi - r0])
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def imresize(
    img: np.ndarray,
    scale: float | tuple[float, float] | None = None,
    *,
    output_shape: tuple[int, int] | None = None,
    boundary: str = "mirror",
) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` of an ``H x W [x C]`` array.

    ``scale`` is output/input (``1/4`` downscales by 4); give it or ``output_shape`` (H, W),
    in which case the scale per axis is ``out/in`` as in MATLAB. uint8 and uint16 input give
    the same dtype back, rounded (half away from zero) and clipped after *each* pass; float
    input is computed in float64 without rounding and returned in its own float dtype (values
    are not clipped, so 0..1 input can leave 0..1 slightly). ``boundary`` is ``"mirror"``
    (MATLAB's rule) or ``"replicate"``. Band by band, with the same result: :class:`Resize`.
    """
    _check_boundary(boundary)
    img = np.asarray(img)
    if img.ndim not in (2, 3) or 0 in img.shape[:2]:
        raise LightSRError(f"imresize expects an H x W [x C] array, got shape {img.shape}.")
    in_h, in_w = img.shape[:2]
    if output_shape is not None:
        out_h, out_w = (int(v) for v in output_shape)
        scales: tuple[float, ...] = (out_h / in_h, out_w / in_w)
    elif scale is not None:
        scales = tuple(float(v) for v in scale) if isinstance(scale, tuple) else (float(scale),) * 2
        out_h, out_w = math.ceil(in_h * scales[0]), math.ceil(in_w * scales[1])
    else:
        raise LightSRError("imresize needs a scale or an output_shape.")
    if min(scales) <= 0 or min(out_h, out_w) < 1:
        raise LightSRError(f"imresize: invalid scale {scales} for an image of {in_h}x{in_w}.")
    if not (img.dtype in (np.uint8, np.uint16) or np.issubdtype(img.dtype, np.floating)):
        raise LightSRError(f"imresize: unsupported dtype {img.dtype} (use uint8, uint16 or float).")
    resize = Resize(
        (in_h, in_w),
        (out_h, out_w),
        dtype=img.dtype,
        boundary=boundary,
        scales=(scales[0], scales[1]),
    )
    return resize(img)


# ---------------------------------------------------------------------------------------------
# Fast torch path (approximate), for degradation on the fly
# ---------------------------------------------------------------------------------------------


def _pad_index(n: int, pad: int, boundary: str, device) -> object:
    idx = torch.arange(-pad, n + pad, device=device)
    if boundary == "mirror":
        idx = torch.remainder(idx, 2 * n)
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
    else:
        idx = idx.clamp(0, n - 1)
    return idx


def imresize_torch(batch, scale: float, *, boundary: str = "mirror"):
    """Fast bicubic resize of a float batch (N, C, H, W), on the batch's device.

    Pads by 4 source pixels per output-grid step (``4 * s`` when downscaling by ``s``) with
    the boundary rule, runs ``F.interpolate(mode="bicubic", antialias=True)`` (a = -0.5 and
    the kernel stretched when downscaling, like MATLAB) and crops the padding off. ``scale``
    is output/input; ``1/scale`` (downscaling) or ``scale`` (upscaling) must be an integer.

    Deviation from :func:`imresize` on the same float input (no rounding), measured on
    Set5/Set14 in [0, 1] at x2/x3/x4, both boundary rules: at most 4e-7 when downscaling and
    8e-6 when upscaling (largest at x3); float32 arithmetic. Bounded by
    tests/test_resize.py. Rounded to uint8 the two paths agree on all but ~0.003% of pixels
    (at most 0.03% on one image). Neither float path keeps MATLAB's uint8 rounding between
    passes, so against the published uint8-derived LR files 10-15% of pixels differ, mostly by
    one level: use :func:`imresize` on uint8 images where bit-exactness matters (evaluation).
    """

    _check_boundary(boundary)
    if batch.dim() != 4 or not batch.is_floating_point():
        raise LightSRError(
            f"imresize_torch expects a float (N, C, H, W) batch, got {tuple(batch.shape)}."
        )
    scale = float(scale)
    if scale <= 0:
        raise LightSRError(f"imresize_torch: invalid scale {scale}.")
    if scale < 1:
        factor = round(1 / scale)
        if abs(1 / scale - factor) > 1e-9:
            raise LightSRError(f"imresize_torch supports 1/integer downscales, not {scale}.")
        pad_in, pad_out = 4 * factor, 4
    else:
        factor = round(scale)
        if abs(scale - factor) > 1e-9:
            raise LightSRError(f"imresize_torch supports integer upscales, not {scale}.")
        pad_in, pad_out = 4, 4 * factor
    h, w = batch.shape[-2:]
    if scale < 1 and (h % factor or w % factor):
        raise LightSRError(
            f"imresize_torch: a {h}x{w} batch is not divisible by {factor}; modcrop it first."
        )
    hi = _pad_index(h, pad_in, boundary, batch.device)
    wi = _pad_index(w, pad_in, boundary, batch.device)
    padded = batch.index_select(-2, hi).index_select(-1, wi)
    out = F.interpolate(
        padded,
        size=(round((h + 2 * pad_in) * scale), round((w + 2 * pad_in) * scale)),
        mode="bicubic",
        antialias=True,
        align_corners=False,
    )
    return out[..., pad_out:-pad_out, pad_out:-pad_out]


__all__ = ["BOUNDARIES", "FILTERS", "Resize", "imresize", "imresize_torch", "modcrop"]
