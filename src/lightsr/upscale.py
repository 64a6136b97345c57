"""Running a model on real images: range, channels, padding, tiling, precision.

The one inference contract of the library. A model maps float RGB in [0, 1], (N, 3, H, W), to
float RGB (N, 3, sH, sW); this module turns any image array into that and back:

- **dtypes**: uint8 (0..255) in gives uint8 out; uint16 (0..65535) in gives uint16 out, computed
  in float from ``x / 65535`` (no 8-bit step); float arrays in [0, 1] give float32 out
  (unclamped, for measuring).
- **channels**: grey (H x W or H x W x 1) is replicated to RGB, run, and converted back by
  taking the **mean of the three output channels** (the network is not exactly
  colour-equivariant; the mean is symmetric in R, G, B, so a grey image gives exactly the mean of
  its RGB replicate's output). RGBA: the colour runs through the model; **alpha is upscaled
  separately by bicubic interpolation** (``alpha="bicubic"``, default: masks and soft edges do
  not need a network, and it costs nothing next to the model) or, with ``alpha="model"``, by
  running the model on the alpha replicated to RGB and taking the mean. A constant alpha is
  carried over without computation.
- **small images** (below ``model.min_input_size``) are padded at the bottom/right by
  reflection (replicate where reflection cannot reach) and the output is cropped.
- **tiles**: large images run in tiles of ``tile`` x ``tile`` LR pixels, each read with
  ``overlap`` extra pixels of context on every side; only the tile's core is kept. When the
  overlap covers the network's receptive field the stitched result equals untiled inference up
  to float rounding. The default overlap is the receptive field measured by
  :func:`receptive_field`. Networks with global operations (A2F's channel attention pools over
  the whole input) cannot be tiled exactly: each tile sees its own mean; the deviation is small
  (measured in ``tests/test_upscale.py``); such models get a 24-pixel overlap.
  ``tile="auto"`` picks the largest tile that fits in the memory available
  (``/proc/meminfo`` MemAvailable on CPU, ``torch.cuda.mem_get_info`` on GPU); an out-of-memory
  error halves the tile and retries.
- **speed**: the model is folded (:func:`lightsr.reparameterize`) before inference, moved to
  channels_last memory format, optionally compiled (``compile=True``), and run in the precision
  ``precision="auto"`` (the default) picks: bf16 under autocast where the device computes bf16
  natively and the model is declared ``bf16_safe`` (measured), else fp32; or as asked: fp32,
  bf16/fp16 under autocast, int8 (CPU; :mod:`lightsr.quantize`, run by ONNX Runtime).
  Under autocast the convolutions that produce image values (those
  feeding a pixel shuffle, and the one making the output; found by :func:`output_convs`, a
  forward pass on a tiny input) stay in fp32, so the last rounding step is not half a grey
  level. On a CPU without native bf16 (no AVX512-BF16/AMX) bf16 is
  emulated and slower than fp32: ``precision="auto"`` then keeps fp32. fp32 on the CPU can run
  in ONNX Runtime instead of torch (``backend="onnxruntime"``, or ``"auto"``): faster where
  measured (docs/BACKENDS.md).

- **self-ensemble** (``self_ensemble=True``): every tile is run 8 times, flipped and
  transposed, and the outputs mapped back and averaged (:func:`lightsr.evaluate.ensemble_x8`,
  the papers' "+" rows): 8x the compute for a little more fidelity. It is applied per tile
  window, so tiled and untiled inference still agree.
- **outscale** (``outscale=3.5``): the network runs at its own scale, then the result is
  resized to ``round(3.5 * h) x round(3.5 * w)`` (rounded half up) by MATLAB's bicubic
  (:func:`lightsr.data.resize.imresize`, antialiased when shrinking) or Pillow's Lanczos
  (:class:`lightsr.data.resize.Resize`), every channel alike (alpha too; 16-bit stays
  16-bit).

The output image is assembled tile by tile in an array of the output dtype; no float copy of
the whole output is held (a resize's float temporaries are a few rows at a time).
:meth:`Upscaler.bands` gives the same pixels a row of tiles at a time (resized as they come,
with ``outscale``), and :func:`upscale_files` writes PNGs from it as they are computed
(:mod:`lightsr.data.png`), so a PNG or 16-bit TIFF output never exists whole in memory, nor
does the network's output before an ``outscale`` resize; Pillow's formats (JPEG, WebP, ...)
fill Pillow's own image band by band.

Files (:func:`upscale_files`): the output format is the input's own (``format="auto"``: PNG,
JPEG, WebP and TIFF inputs) or the one asked for, falling back to PNG, with a note in the
report, for an image the format cannot hold (alpha in JPEG, 16 bits in JPEG/WebP, a side over
WebP's 16,383 pixels); the name is ``<stem><name_suffix>.<ext>``; the input's ICC profile and
EXIF (orientation reset to 1: the pixels were turned when read) are written where the format
holds them (:func:`lightsr.data.io.write_image`).

Inputs are untrusted. Tiling bounds the model's working memory but not the output (Pillow's
formats hold a whole image, as does a returned array), so the output size is
bounded (``max_output_pixels``, :data:`DEFAULT_MAX_OUTPUT_PIXELS`) and checked from the file's
header before any pixel is decoded. :func:`upscale_files` checks every input (header, output
size, whether the output format can hold it, whether the output folder takes files) before the
model runs on any. A model whose output holds NaN/Inf (damaged or diverged weights) fails that
image with :class:`~lightsr.errors.DivergedError` instead of writing a black image.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import glob
import math
import os
import re
import stat
import sys
import tempfile
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .atomic import numbered, same_file
from .data.io import (
    IMAGE_EXTENSIONS,
    WRITE_EXTENSIONS,
    ImageHeader,
    ImageInfo,
    RowBands,
    cannot_hold,
    check_output_format,
    dropped_metadata,
    image_header,
    is_image_suffix,
    read_image,
    read_image_info,
    write_image,
)
from .data.resize import FILTERS as RESIZE_FILTERS
from .data.resize import Resize
from .deploy import PaddingReport, pad_channels, reparameterize
from .errors import (
    DivergedError,
    ImageReadError,
    LightSRError,
    OutputExistsError,
    OutputPathError,
    UnknownModelError,
)
from .evaluate import ensemble_x8
from .hardware import (
    auto_precision,
    available_memory,
    cpu_has_native_bf16,
    is_out_of_memory,
    resolve_device,
)
from .hub import cache_dir
from .models.base import SRModel
from .models.bicubic import Bicubic
from .probe import ReceptiveField, bytes_per_lr_pixel, output_convs, receptive_field
from .quantize import (
    Int8Model,
    OrtModel,
    onnxruntime_available,
    onnxruntime_model,
    openvino_available,
    openvino_model,
    quantize_int8,
)
from .registry import get_spec

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
#: What runs the model (``backend=``): torch eager/compiled (fp32, bf16, fp16), ONNX Runtime
#: (CPU: fp32, int8), OpenVINO (CPU: fp32, int8, and bf16 where native), or auto.
BACKENDS = ("torch", "onnxruntime", "openvino", "auto")
#: The precisions each runtime other than torch runs (on the CPU).
ENGINE_PRECISIONS = {"onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8")}
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Auto tile: largest tile whose estimated working set fits this share of the available memory,
# capped (bigger tiles do not run faster on a CPU, and the cap bounds peak memory).
_MEMORY_SHARE = 0.25
_MAX_AUTO_TILE_BYTES = 512 * 2**20
_MAX_AUTO_TILE = {"cpu": 512, "cuda": 2048}

#: The largest output (pixels) an :class:`Upscaler` makes unless told otherwise: 16384^2 = 268
#: MP. Why this figure: a laptop user's 4000x3000 photo x4 is 192 MP and must pass, as must an
#: 8K frame x2 (133 MP). What it costs: a PNG or 16-bit TIFF file is written band by band and
#: never held whole, so its memory is bounded by the tiles, but its time and disk are not;
#: Pillow's formats (JPEG, WebP, 8-bit TIFF, ...) need Pillow's whole image (4 bytes a pixel
#: for RGB), an array returned is H*W*C bytes (x2 for 16-bit), and
#: both together, as before outputs were written from bands, are about 7 bytes a pixel
#: (benchmarks/results/upscale_memory.json: that 192 MP output peaked at 1.53 GiB in all, with
#: FMEN-S and ~0.3 GB of interpreter and torch): ~2.2 GB at this limit, which fits beside a
#: desktop on an 8 GB laptop, where the next power of two (1.07 GP, ~7.5 GB) would not. A 10 KB
#: PNG that says 9000x9000 (x4: 1.3 GP; 9.1 GB measured before this limit) is refused from its
#: header (benchmarks/bench_untrusted_images.py). Raise it with ``max_output_pixels`` /
#: ``--max-output-pixels``; None turns the check off.
DEFAULT_MAX_OUTPUT_PIXELS = 16384 * 16384

#: ``format=`` choices of :func:`upscale_files` (``--format``) and the suffix each writes.
OUTPUT_FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}
#: Resampling filters for ``outscale``.
OUTSCALE_FILTERS = RESIZE_FILTERS
#: JPEG/WebP quality when none is given: visually lossless for photos, about half the size of
#: quality 100.
DEFAULT_QUALITY = 95
#: The output name is ``<stem><name_suffix>.<ext>``; ``{scale}`` becomes the scale (``4``,
#: or the outscale, ``3.5``).
DEFAULT_NAME_SUFFIX = "_x{scale}"
# Pillow's format names -> the kind of OUTPUT_FORMATS that keeps them (MPO: a camera's JPEG
# with a second frame, which Pillow opens as MPO).
_KIND_OF_FORMAT = {"PNG": "png", "JPEG": "jpg", "MPO": "jpg", "WEBP": "webp", "TIFF": "tiff"}
_FORMAT_NAMES = {"png": "PNG", "jpg": "JPEG", "webp": "WebP", "tiff": "TIFF"}
_KIND_OF_SUFFIX = {
    ".png": "png",
    ".jpg": "jpg",
    ".jpeg": "jpg",
    ".webp": "webp",
    ".tif": "tiff",
    ".tiff": "tiff",
}


# ---------------------------------------------------------------------------------------------
# Precision and tile size
# ---------------------------------------------------------------------------------------------


def resolve_precision(
    precision: str, device: torch.device, *, bf16_safe: bool | None = None
) -> tuple[str, str]:
    """Validate ``precision`` -> ``(precision, why)``. ``"auto"``: bf16 where the device
    computes it natively and the model is declared ``bf16_safe``, else fp32
    (:func:`lightsr.hardware.auto_precision`, whose ``why`` is e.g. ``"auto: no native bf16 on
    this CPU"``); a named precision is taken as asked (``why`` ``"asked for"``). int8 runs on
    the CPU only (:mod:`lightsr.quantize`)."""
    if precision not in PRECISIONS:
        raise LightSRError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        return auto_precision(device, bf16_safe=bf16_safe)
    if precision == "int8" and device.type != "cpu":
        raise LightSRError(
            f"int8 runs on the CPU (ONNX Runtime's int8 kernels), not {device}: use --device "
            "cpu, or --precision auto/bf16/fp16 on a GPU."
        )
    return precision, "asked for"


def resolve_backend(
    backend: str,
    device: torch.device,
    precision: str,
    *,
    compile: bool = False,
    network: bool = True,
    bf16_in_engines: bool | None = None,
) -> tuple[str, str]:
    """Validate ``backend`` for a resolved ``precision`` -> ``(backend, why)``.

    ``"onnxruntime"`` runs fp32 and int8, ``"openvino"`` fp32, int8 and bf16 (where the CPU
    computes bf16 natively), both on the CPU only and without ``compile``. ``"torch"`` runs
    fp32/bf16/fp16; it has no int8 path, so int8 with ``"torch"`` (the library default) runs
    in ONNX Runtime, its engine before OpenVINO was offered. ``"auto"``, on the CPU: OpenVINO
    where installed, else ONNX Runtime, else torch (OpenVINO ran fp32 fastest of every path
    on a quiet machine, and bf16 where native; docs/BACKENDS.md); bf16 only where native
    (emulated bf16 stays torch's) and the model is measured safe in an engine's bf16
    (``bf16_in_engines``: OpenVINO rounds the image convs to bf16 too, which torch keeps in
    fp32). torch on a GPU, for fp16, with ``compile``, and for a model
    with no network to export (bicubic, whose exact form is numpy). ``why`` reads e.g.
    ``"auto: fp32 on the CPU"``."""
    if backend not in BACKENDS:
        raise LightSRError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}.")
    if backend in ENGINE_PRECISIONS:
        _check_engine(backend, device, precision, compile=compile)
        return backend, "asked for"
    if precision == "int8":
        if backend == "torch":
            return "onnxruntime", "int8 does not run in torch"
        if openvino_available():
            return "openvino", "auto: int8 on the CPU"
        return "onnxruntime", "auto: OpenVINO not installed, pip install lightsr[openvino]"
    if backend == "torch":
        return "torch", "asked for"
    if device.type != "cpu":
        return "torch", f"auto: {device.type} runs torch"
    if compile:
        return "torch", "auto: compile asked for"
    if not network:
        return "torch", "auto: no network to export"
    if precision == "bf16":
        if not cpu_has_native_bf16():
            return "torch", "auto: no native bf16 on this CPU, torch emulates it"
        if bf16_in_engines is not True:
            return "torch", (
                "auto: OpenVINO's bf16 rounds the image convs too, not measured within 0.02 "
                "dB for this model at this scale; torch keeps them fp32"
            )
        if not openvino_available():
            return "torch", "auto: OpenVINO not installed, pip install lightsr[openvino]"
        return "openvino", "auto: native bf16 on the CPU"
    if precision != "fp32":
        return "torch", f"auto: {precision} runs in torch"
    if openvino_available():
        return "openvino", "auto: fp32 on the CPU"
    if onnxruntime_available():
        return "onnxruntime", "auto: fp32 on the CPU, OpenVINO not installed"
    return "torch", "auto: no CPU engine installed, pip install lightsr[openvino]"


def int8_floats(backend: str, *, bf16_in_engines: bool | None) -> str:
    """What the convs an int8 model keeps out of int8 compute in: bf16 where OpenVINO runs it
    on a CPU with native bf16 and the model is measured safe in OpenVINO's bf16 at its scale
    (``bf16_in_engines``; the kept convs include the image convs), else fp32. On such a CPU
    this ran FMEN-S x4 1.6x faster than fp32 floats for 0.016 dB more Set5 loss
    (docs/BACKENDS.md); ONNX Runtime has no bf16 CPU kernels."""
    if backend == "openvino" and bf16_in_engines is True and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def _check_engine(engine: str, device: torch.device, precision: str, *, compile: bool) -> None:
    """Raise a LightSRError naming the fix when ``engine`` cannot run ``precision`` here."""
    if device.type != "cpu":
        raise LightSRError(
            f"the {engine} backend runs on the CPU, not {device}: use --device cpu, or "
            "--backend torch (or auto)."
        )
    runs = ENGINE_PRECISIONS[engine]
    if precision not in runs:
        raise LightSRError(
            f"the {engine} backend runs {' and '.join(runs)}; {precision} runs in torch: use "
            f"--precision fp32, or --backend torch (or auto)."
        )
    if precision == "bf16" and not cpu_has_native_bf16():
        # OpenVINO would quietly compute f32 and call it bf16
        raise LightSRError(
            f"the {engine} backend runs bf16 only on a CPU with native bf16 (AVX512-BF16 or "
            "AMX in /proc/cpuinfo), which this one lacks: use --precision fp32 (or auto)."
        )
    if compile:
        raise LightSRError(
            f"compile is torch's (torch.compile); the {engine} backend does not use it: "
            "drop --compile, or use --backend torch."
        )


def _is_network(model: nn.Module) -> bool:
    """False for a registered model with no learned weights (bicubic): nothing to gain from
    ONNX Runtime, and its exact MATLAB form runs in numpy, which no export traces."""
    try:
        return get_spec(getattr(model, "arch_name", "")).learned
    except UnknownModelError:
        return True  # a user's own module: a network


def auto_tile_size(
    model: SRModel, *, device: torch.device, overlap: int = 0, element_bytes: int = 4
) -> int:
    """Largest tile side (LR pixels) whose forward pass, with ``overlap`` context on each side,
    fits in the share of available memory (see module docstring); at least 32."""
    budget = min(_MEMORY_SHARE * available_memory(device), _MAX_AUTO_TILE_BYTES)
    if device.type == "cuda":
        budget = 0.5 * available_memory(device)
    per_px = bytes_per_lr_pixel(model, element_bytes)
    side = int(math.sqrt(budget / per_px)) - 2 * overlap
    side = min(side, _MAX_AUTO_TILE.get(device.type, 512))
    return max(side, 32)


# ---------------------------------------------------------------------------------------------
# Preparing a model
# ---------------------------------------------------------------------------------------------


class _Float32Conv(nn.Module):
    """Runs a conv in fp32 with autocast off: for the convs whose outputs are image values."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.conv(x.float())


def _keep_image_convs_fp32(model: SRModel) -> None:
    """Wrap the :func:`output_convs` of ``model`` (in place) to run in fp32 under autocast:
    rounding their outputs to bf16/fp16 would cost up to half a grey level."""
    targets = output_convs(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if any(child is t for t in targets):
                setattr(parent, name, _Float32Conv(child))


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:,.1f} megapixels" if pixels >= 10**5 else f"{pixels:,} pixels"


def _tile_windows(n: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Split an axis of ``n`` LR pixels into cores of at most ``tile`` pixels, each with a read
    window of ``tile + 2 * overlap`` (shifted inside the image at its borders, so every window
    has the same size). Returns (core_start, core_end, window_start, window_end)."""
    if n <= tile + 2 * overlap:
        return [(0, n, 0, n)]
    count = math.ceil(n / tile)
    core = math.ceil(n / count)
    size = core + 2 * overlap
    out = []
    for start in range(0, n, core):
        end = min(start + core, n)
        w0 = min(max(start - overlap, 0), n - size)
        out.append((start, end, w0, w0 + size))
    return out


@dataclass
class UpscaleReport:
    """What :func:`upscale_files` did: written (input, output) pairs, non-image files skipped,
    images that failed with the reason, (input, output) pairs left alone because the output
    existed (``skip_existing``), and notes on written files (a format other than the one asked
    for or the input's, metadata the output format could not hold)."""

    written: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    existing: list[tuple[Path, Path]] = field(default_factory=list)
    notes: list[tuple[Path, str]] = field(default_factory=list)


@dataclass(frozen=True)
class OutputOptions:
    """How :func:`upscale_files` names and encodes its outputs.

    Args:
        format: ``"auto"`` (the input's own format when it is PNG, JPEG, WebP or TIFF, else
            PNG) or one of :data:`OUTPUT_FORMATS`. An image the format cannot hold (alpha or
            16 bits in JPEG, 16 bits in WebP, a side over WebP's 16,383) is written as PNG,
            and the report says so: nothing is dropped to fit a format.
        extension: every output gets this suffix (``".png"``, ``".bmp"``, ...) and an image
            it cannot hold fails instead (the strict form; overrides ``format``).
        quality: JPEG/WebP quality, 1..100 (None: :data:`DEFAULT_QUALITY`); refused when
            every output is PNG or TIFF, which are lossless.
        name_suffix: the output is ``<stem><name_suffix>.<ext>``; ``{scale}`` in it becomes
            the scale. No path separators (use the output folder for that).
        skip_existing: an input whose output exists is left alone (the file untouched) and
            listed in :attr:`UpscaleReport.existing`; excludes ``overwrite``.
        keep_metadata: write the input's ICC profile and EXIF where the format holds them.
    """

    format: str = "auto"
    extension: str | None = None
    quality: int | None = None
    name_suffix: str = DEFAULT_NAME_SUFFIX
    skip_existing: bool = False
    keep_metadata: bool = True

    def __post_init__(self) -> None:
        if self.format != "auto" and self.format not in OUTPUT_FORMATS:
            raise LightSRError(
                f"format {self.format!r} is not one of auto, {', '.join(OUTPUT_FORMATS)}."
            )
        if self.extension is not None:
            check_output_target(None, self.extension)
        q = self.quality
        if q is not None:
            if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 100:
                raise LightSRError(f"quality must be an integer from 1 to 100, not {q!r}.")
            kind = (
                _KIND_OF_SUFFIX.get(self.extension.lower(), "")
                if self.extension is not None
                else self.format
            )
            if kind in ("png", "tiff") or (self.extension is not None and not kind):
                what = kind.upper() if kind else self.extension
                raise LightSRError(
                    f"quality sets JPEG/WebP compression; {what} output is lossless and has "
                    "none: drop --quality, or pick --format jpg or webp."
                )
        bad = [c for c in ("/", "\\", "\0") if c in self.name_suffix]
        if bad:
            raise LightSRError(
                f"name suffix (--suffix) {self.name_suffix!r} holds {bad[0]!r}: it is part of "
                "a file name; choose the folder with -o instead."
            )

    def describe(self, scale: str, target: Path | None = None) -> str:
        """One line for a person: what the outputs are called and how they are encoded, e.g.
        ``writes <stem>_x4.<the input's format>, JPEG/WebP quality 95, ICC/EXIF kept``."""
        if target is not None:
            items = [f"writes {target}"]
        else:
            stem = f"<stem>{self.rendered_suffix(scale)}"
            if self.extension is not None:
                items = [f"writes {stem}{self.extension}"]
            elif self.format == "auto":
                items = [f"writes {stem}.<the input's format (png, jpg, webp, tiff; else png)>"]
            else:
                items = [f"writes {stem}{OUTPUT_FORMATS[self.format]}"]
        fixed = target.suffix if target is not None else self.extension
        kind = _KIND_OF_SUFFIX.get(fixed.lower()) if fixed else self.format
        if kind in ("auto", "jpg", "webp"):
            items.append(f"JPEG/WebP quality {self.jpeg_quality}")
        items.append("ICC/EXIF kept" if self.keep_metadata else "no ICC/EXIF")
        if self.skip_existing:
            items.append("existing outputs skipped")
        return ", ".join(items)

    def rendered_suffix(self, scale: str) -> str:
        """:attr:`name_suffix` with ``{scale}`` replaced by ``scale``."""
        return self.name_suffix.replace("{scale}", scale)

    @property
    def jpeg_quality(self) -> int:
        return DEFAULT_QUALITY if self.quality is None else self.quality


class Upscaler:
    """A model prepared once for inference on many images.

    Args:
        model: an :class:`SRModel` (training or folded form; it is folded here, on a copy).
        tile: ``None`` (whole image at once), a tile side in LR pixels, or ``"auto"``.
        overlap: LR pixels of context around each tile; ``"auto"`` = the receptive field.
        precision: ``"auto"`` (bf16 where the device computes it natively and the model is
            declared ``bf16_safe``, else fp32), ``"fp32"``, ``"bf16"``, ``"fp16"``, or
            ``"int8"`` (CPU: static quantization run by ONNX Runtime, :mod:`lightsr.quantize`;
            ``compile`` does not apply).
        backend: what runs the model (:func:`resolve_backend`): ``"torch"`` (eager, or
            ``compile``; int8 then runs in ONNX Runtime), ``"onnxruntime"`` (CPU, fp32 or
            int8: the folded model exported to ONNX and run by ONNX Runtime,
            :func:`lightsr.quantize.onnxruntime_model`, threads following
            ``torch.get_num_threads()``; tiling, self-ensemble, alpha and 16-bit work the same),
            ``"openvino"`` (the same export run by OpenVINO: fp32, int8, or bf16 on a CPU with
            native bf16, :func:`lightsr.quantize.openvino_model`), or ``"auto"`` (on the CPU
            OpenVINO where installed, else ONNX Runtime, else torch).
        calibration: for int8, what :func:`lightsr.quantize.quantize_int8` calibrates on (LR
            tensors or HR arrays); None: its generated patches.
        device: ``"cpu"``, ``"cuda"``, ... or None (CUDA when available).
        channels_last: run in channels_last memory format (faster convolutions).
        compile: ``torch.compile`` the folded model (slow first call; pays off on many
            same-size tiles).
        pad_narrow: widen feature maps narrower than 16 channels to 16 with zero filters
            (:func:`lightsr.deploy.pad_channels`; the same function, checked on a probe
            input): oneDNN runs such convs on slow reference paths (MAFFSRN's 8-channel
            attention convs).
        alpha: ``"bicubic"`` or ``"model"``: how an alpha channel is upscaled.
        progress: show a tqdm bar over tiles (None: only on a terminal).
        max_output_pixels: refuse (:class:`LightSRError`, before any compute) an image whose
            output would have more pixels; None: no limit. The default and why:
            :data:`DEFAULT_MAX_OUTPUT_PIXELS`. With ``outscale`` the larger of the network's
            output and the final image counts (both are held at once).
        self_ensemble: average the outputs of the 8 flips/transposes of each tile (x8 the
            compute; see module docstring).
        outscale: the final size as a multiple of the input (e.g. 3.5): the network runs at
            its scale, then the result is resized; None: the network's scale.
        outscale_filter: ``"bicubic"`` (MATLAB's imresize) or ``"lanczos"`` (Pillow's).
    """

    def __init__(
        self,
        model: SRModel,
        *,
        tile: int | str | None = "auto",
        overlap: int | str = "auto",
        precision: str = "auto",
        backend: str = "torch",
        device: str | torch.device | None = None,
        channels_last: bool = True,
        compile: bool = False,
        pad_narrow: bool = True,
        calibration: Any = None,
        alpha: str = "bicubic",
        progress: bool | None = False,
        max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
        self_ensemble: bool = False,
        outscale: float | None = None,
        outscale_filter: str = "bicubic",
    ) -> None:
        if alpha not in ("bicubic", "model"):
            raise LightSRError(f"alpha must be 'bicubic' or 'model', not {alpha!r}.")
        self.outscale = check_outscale(outscale)
        if outscale_filter not in OUTSCALE_FILTERS:
            raise LightSRError(
                f"outscale_filter must be one of {', '.join(OUTSCALE_FILTERS)}, not "
                f"{outscale_filter!r}."
            )
        self.outscale_filter = outscale_filter
        self.self_ensemble = bool(self_ensemble)
        if max_output_pixels is not None and (
            isinstance(max_output_pixels, bool)
            or not isinstance(max_output_pixels, int)
            or max_output_pixels < 1
        ):
            raise LightSRError(
                f"max_output_pixels must be a positive integer or None, not {max_output_pixels!r}."
            )
        self.max_output_pixels = max_output_pixels
        if not (tile is None or tile == "auto" or (isinstance(tile, int) and tile > 0)):
            raise LightSRError(f"tile must be None, 'auto' or a positive integer, not {tile!r}.")
        self.device = resolve_device(device)
        self.precision, self.precision_reason = resolve_precision(
            precision, self.device, bf16_safe=getattr(model, "bf16_safe", None)
        )
        if self.precision == "int8" and compile:
            raise LightSRError(
                "compile does not apply to int8 (ONNX Runtime or OpenVINO runs it); drop one."
            )
        self.backend, self.backend_reason = resolve_backend(
            backend,
            self.device,
            self.precision,
            compile=compile,
            network=_is_network(model),
            bf16_in_engines=getattr(model, "bf16_in_engines", None),
        )
        self.scale = int(model.scale)
        self.min_input_size = int(getattr(model, "min_input_size", 1))
        self.alpha = alpha
        self.progress = progress
        self.channels_last = channels_last
        self.arch_name = getattr(model, "arch_name", type(model).__name__)

        folded = reparameterize(model) if isinstance(model, SRModel) else copy.deepcopy(model)
        folded = folded.eval()
        for p in folded.parameters():
            p.requires_grad_(False)
        # Counted once, for the message when an output is non-finite.
        self._nonfinite_weights = sum(
            int((~torch.isfinite(t)).sum())
            for t in folded.state_dict().values()
            if t.is_floating_point()
        )
        self.padding: PaddingReport | None = None
        self.int8: Int8Model | None = None
        #: The ONNX Runtime or OpenVINO model that runs instead of torch (int8, or the
        #: onnxruntime/openvino backend).
        self.onnx_model: OrtModel | None = None
        # Exported before padding: ONNX Runtime needs none.
        if self.precision == "int8":
            # Isolated: calibration's ~1 GiB stays out of this process's peak; cached: the
            # next run with these weights starts in a second instead of ~15 s.
            self.int8 = self.onnx_model = quantize_int8(
                folded,
                calibration=calibration,
                engine=self.backend,
                cache_dir=cache_dir() / "int8",
                isolate=True,
                floats=int8_floats(
                    self.backend, bf16_in_engines=getattr(model, "bf16_in_engines", None)
                ),
            )
        elif self.backend in ENGINE_PRECISIONS:
            try:
                # the export is cached: the next run with these weights skips ~1.4 s
                exports = cache_dir() / "export"
                if self.backend == "openvino":
                    self.onnx_model = openvino_model(
                        folded, precision=self.precision, cache_dir=exports
                    )
                else:
                    self.onnx_model = onnxruntime_model(folded, cache_dir=exports)
            except LightSRError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever torch's exporter cannot trace
                if backend != "auto":
                    raise LightSRError(
                        f"the {self.backend} backend could not export {self.arch_name} to ONNX "
                        f"({type(exc).__name__}: {exc}): use --backend torch."
                    ) from exc
                # auto promises a run, not an engine: torch runs what cannot be exported
                self.backend = "torch"
                self.backend_reason = f"auto: the ONNX export failed ({type(exc).__name__})"
        if pad_narrow and isinstance(folded, SRModel):
            folded, self.padding = pad_channels(folded, below=16)
        if not (overlap == "auto" or (isinstance(overlap, int) and overlap >= 0)):
            raise LightSRError(f"overlap must be 'auto' or an integer >= 0, not {overlap!r}.")
        # Measured lazily: an image that fits in one tile needs neither probe.
        self._overlap: int | None = overlap if isinstance(overlap, int) else None
        self._receptive_field: ReceptiveField | None = None
        self._source = model
        self._auto_side: int | None = None
        folded = folded.to(self.device)
        if self.precision in ("bf16", "fp16"):
            if self.device.type == "cpu" and self.precision == "bf16" and not cpu_has_native_bf16():
                warnings.warn(
                    "this CPU has no native bf16 (AVX512-BF16/AMX): bf16 is emulated and slower "
                    "than fp32 here; use --precision fp32 (or auto).",
                    stacklevel=2,
                )
            _keep_image_convs_fp32(folded)
        self.element_bytes = 2 if self.precision in ("bf16", "fp16") else 4
        #: None (untiled), a side in LR pixels, or "auto" (decided per image from memory)
        self.tile: int | str | None = tile
        if channels_last:
            # Module.to's stubs omit memory_format, which it accepts (as Tensor.to does)
            folded = folded.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = folded
        self._run: Callable[[torch.Tensor], torch.Tensor] = folded
        if self.onnx_model is not None:
            self._run = self.onnx_model
        elif compile:
            # freezing lets inductor constant-fold the weights and fuse conv + pointwise ops.
            self._run = torch.compile(folded, dynamic=False, options={"freezing": True})
        self._alpha_model: Upscaler | None = None
        self._bar: Any = None  # the progress bar bands() shares between its rows of tiles

    @property
    def receptive_field(self) -> ReceptiveField:
        """The folded model's :func:`receptive_field` (probed on first use)."""
        if self._receptive_field is None:
            rf = receptive_field(self.model)
            with contextlib.suppress(AttributeError, TypeError):
                # the next Upscaler skips the probe (nn.Module.__setattr__ is typed for
                # Tensor/Module values; any value works)
                self._source._lightsr_receptive_field = rf  # type: ignore[assignment]
            self._receptive_field = rf
        return self._receptive_field

    @property
    def overlap(self) -> int:
        """LR pixels of context read around each tile."""
        if self._overlap is None:
            self._overlap = self.receptive_field.radius
        return self._overlap

    def _resolve_tile(self, h: int, w: int) -> int | None:
        """The tile side for an h x w image: ``"auto"`` -> None when the whole image fits in
        the memory budget, else the largest tile whose window (tile + 2 overlap) fits."""
        if self.tile != "auto":
            return self.tile  # type: ignore[return-value]
        side = self._auto_tile_side()
        if h * w <= side * side and max(h, w) <= 2 * side:
            return None
        return max(32, side - 2 * self.overlap)

    def _auto_tile_side(self) -> int:
        if self._auto_side is None:
            self._auto_side = auto_tile_size(
                self.model, device=self.device, element_bytes=self.element_bytes
            )
        return self._auto_side

    def describe(self, weights: str | None = None) -> str:
        """One line for a person: model, scale, ``weights`` (where they came from, as the
        caller knows it), device, precision, tiling and the options that change the result,
        e.g. ``a2f_sd x4 (weights default_x4, bundled) on cpu, fp32, tile auto (420,
        overlap 24)``. For ``tile="auto"`` it measures the tile and overlap (both are cached
        for the images)."""
        head = f"{self.arch_name} x{self.scale}"
        if weights:
            head += f" (weights {weights})"
        precision = self.precision
        if self.precision_reason != "asked for":
            precision += f" ({self.precision_reason})"
        elif self.int8 is not None:
            r = self.int8.report
            precision += f" ({r.engine}, {len(r.quantized)} convs int8, {len(r.kept_fp32)} "
            precision += "fp32" if r.floats == "fp32" else f"in native {r.floats}"
            precision += ", quantized graph from the cache)" if r.cached else ")"
        items = [f"{head} on {self.device}", precision]
        if self.int8 is None:  # int8's engine is in its precision item
            backend = self.backend
            if self.backend_reason != "asked for":
                backend += f" ({self.backend_reason})"
            items.append(backend)
        if self.tile is None:
            items.append("untiled")
        elif self.tile == "auto":
            side = self._auto_tile_side()
            items.append(f"tile auto ({max(32, side - 2 * self.overlap)}, overlap {self.overlap})")
        else:
            items.append(f"tile {self.tile} (overlap {self.overlap})")
        if self.self_ensemble:
            items.append("self-ensemble x8")
        if self.outscale is not None:
            items.append(f"outscale {self.scale_label} ({self.outscale_filter})")
        return ", ".join(items)

    # -- tensors ------------------------------------------------------------------------------

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 3, h, w) float32 on the device -> (1, 3, sh, sw) float32; pads small inputs."""
        h, w = x.shape[-2:]
        m = self.min_input_size
        if h < m or w < m:
            x = _pad_to(x, m)
        x = x.contiguous(memory_format=self._input_layout)
        run = self._run_ensemble if self.self_ensemble else self._run
        with torch.inference_mode():
            if self.precision in ("fp32", "int8") or self.onnx_model is not None:
                y = run(x)  # an engine's precision is in its compiled graph, not autocast
            else:
                with torch.autocast(self.device.type, dtype=_DTYPES[self.precision]):
                    y = run(x)
        y = y.float()
        s = self.scale
        y = y[..., : h * s, : w * s]
        # OpenVINO's graph optimisations can turn NaN weights into finite garbage: an engine
        # run with non-finite weights fails as torch's NaN output does.
        engine_hides_nan = self.onnx_model is not None and self._nonfinite_weights > 0
        if engine_hides_nan or not bool(torch.isfinite(y).all()):
            raise DivergedError(self._nonfinite_message())
        return y

    @property
    def _input_layout(self) -> torch.memory_format:
        """The memory format of the model's input: ONNX Runtime reads NCHW (a channels_last
        tensor would be copied back), torch runs channels_last when asked."""
        if self.channels_last and self.onnx_model is None:
            return torch.channels_last
        return torch.contiguous_format

    def _run_ensemble(self, x: torch.Tensor) -> torch.Tensor:
        """The x8 self-ensemble of one window: each flipped/transposed copy is made contiguous
        again (a transposed view would run the convolutions on strided memory) and its output
        summed in fp32 (bf16 sums of 8 terms would cost a grey level)."""

        def run(t: torch.Tensor) -> torch.Tensor:
            return self._run(t.contiguous(memory_format=self._input_layout)).float()

        return ensemble_x8(run, x)

    # -- sizes --------------------------------------------------------------------------------

    @property
    def scale_label(self) -> str:
        """The final scale as text: ``"4"``, or the outscale (``"3.5"``)."""
        return str(self.scale) if self.outscale is None else f"{self.outscale:g}"

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the output for an input of ``height`` x ``width``: the network's
        scale, or ``outscale`` times it rounded half up."""
        if self.outscale is None:
            return height * self.scale, width * self.scale
        return _round_half_up(self.outscale * height), _round_half_up(self.outscale * width)

    def _nonfinite_message(self) -> str:
        if self._nonfinite_weights:
            cause = (
                f"its weights hold {self._nonfinite_weights:,} NaN/Inf values (a training run "
                "that diverged?): use another checkpoint"
            )
        elif self.precision in ("bf16", "fp16"):
            cause = f"{self.precision} overflowed: use --precision fp32"
        else:
            cause = "its weights are damaged or out of range: use another checkpoint"
        return f"the model ({self.arch_name}) produced NaN/Inf values; no image written: {cause}."

    def check_output_size(
        self, height: int, width: int, channels: int = 3, dtype: Any = np.uint8, what: str = ""
    ) -> None:
        """Raise :class:`LightSRError` when an ``height`` x ``width`` input would make an
        output over ``max_output_pixels``, saying how large and what to pass to allow it. With
        ``outscale`` the larger of the network's output and the final image counts (neither is
        held whole beside the other, but the network's time grows with its output)."""
        limit = self.max_output_pixels
        if limit is None:
            return
        s = self.scale
        sizes = [(f"x{s} output", height * s, width * s)]
        if self.outscale is not None:
            h, w = self.output_size(height, width)
            label = f"x{self.scale_label} output"
            sizes = [(label, h, w), (f"x{s} network output", height * s, width * s)]
        for label, h, w in sizes:
            pixels = h * w
            if pixels <= limit:
                continue
            size = pixels * channels * np.dtype(dtype).itemsize
            name = f"{what}: " if what else ""
            raise LightSRError(
                f"{name}the {label} would be {w:,}x{h:,} = {_mp(pixels)} "
                f"({size / 2**20:,.0f} MiB as an array, more while it is written), over the "
                f"limit of {_mp(limit)}. If this machine has the memory, raise the limit with "
                f"--max-output-pixels {pixels} (library: max_output_pixels={pixels}); else "
                "upscale a crop."
            )

    def upscale_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Float RGB (1, 3, H, W) in [0, 1] -> float32 (1, 3, sH, sW) on the CPU, unclamped,
        tiled as configured (for measuring: no rounding; the network's scale, ``outscale`` is
        not applied)."""
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise LightSRError(f"upscale_tensor expects (1, 3, H, W), got {tuple(x.shape)}.")
        h, w = x.shape[-2:]
        self.check_output_size(h, w, 3, np.float32)
        s = self.scale
        out = torch.empty(1, 3, h * s, w * s)
        arr = x[0].permute(1, 2, 0).cpu().numpy()

        def sink(r0: int, c0: int, y: torch.Tensor) -> None:
            out[:, :, r0 : r0 + y.shape[-2], c0 : c0 + y.shape[-1]] = y.cpu()

        self._tiled(
            arr,
            lambda a: torch.from_numpy(np.array(a, dtype=np.float32)),
            sink,
            self._resolve_tile(h, w),
        )
        return out

    # -- arrays -------------------------------------------------------------------------------

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Upscale an ``H x W [x C]`` array (C = 1, 3, 4; uint8, uint16 or float in [0, 1]).
        Returns the same dtype and channel count, ``sH x sW`` (with ``outscale``:
        :meth:`output_size`); a 2-D input gives a 2-D output."""
        image, squeeze, peak = self._checked(image)
        h, w, c = image.shape
        size = self.output_size(h, w)
        if size == (h * self.scale, w * self.scale):
            out = self._upscale_window(image, peak, (h, w), alpha_constant=None)
        else:
            # resized as the network's rows of tiles come (bands): the network's whole output
            # is never held beside the final image
            dtype = self.output_dtype(image.dtype)
            out = RowBands(*size, c, dtype, lambda: self.bands(image)).array()
        return out[:, :, 0] if squeeze else out

    def bands(self, image: np.ndarray) -> Iterator[np.ndarray]:
        """:meth:`__call__`'s output a band of rows at a time, top to bottom: the same pixels,
        bit for bit, but only one band is held (the output of one row of tiles, ``scale x
        (tile + 2 overlap)`` rows) instead of the whole image, so a writer that streams
        (:func:`lightsr.data.png.write_png`) needs memory for a band. Each band is computed
        when asked for. With ``outscale`` the network's bands are resized as they come
        (:meth:`lightsr.data.resize.Resize.bands`: the rows the kernel still needs are held,
        not the network's whole output)."""
        image, squeeze, peak = self._checked(image)
        h, w, _ = image.shape
        s = self.scale
        network = self._network_bands(image, peak)
        size = self.output_size(h, w)
        out: Iterator[np.ndarray] = network
        if size != (h * s, w * s):
            resize = Resize(
                (h * s, w * s),
                size,
                dtype=self.output_dtype(image.dtype),
                filter=self.outscale_filter,
            )
            out = resize.bands(network)
        try:
            for band in out:
                yield band[:, :, 0] if squeeze else band
        finally:
            network.close()  # the tiles' progress bar, when a consumer stops early

    def _network_bands(
        self, image: np.ndarray, peak: float | None
    ) -> Generator[np.ndarray, None, None]:
        """The network's output for ``image`` (checked, H x W x C) a row of tiles at a time."""
        h, w, c = image.shape
        tile = self._resolve_tile(h, w)
        if tile is None or max(h, w) <= tile:
            rows, tiles = [(0, h, 0, h)], 1
        else:
            # the row windows __call__'s tiles use: each band is one row of them
            rows = _tile_windows(h, tile, self.overlap)
            tiles = len(rows) * len(_tile_windows(w, tile, self.overlap))
        # decided on the whole plane, as __call__ does, not band by band
        alpha_constant = c == 4 and bool(np.all(image[:, :, 3] == image[0, 0, 3]))
        s = self.scale
        if tiles > 1 and self.progress is not False:
            # one bar over the whole image's tiles, which the bands' runs advance
            self._bar = tqdm(total=tiles, desc="tiles", unit="tile", leave=False, disable=None)
        try:
            for r0, r1, wr0, wr1 in rows:
                out = self._upscale_window(image[wr0:wr1], peak, (h, w), alpha_constant)
                yield out[(r0 - wr0) * s : (r1 - wr0) * s]
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def _checked(self, image: np.ndarray) -> tuple[np.ndarray, bool, float | None]:
        """``image`` as H x W x C, whether it was 2-D, and its peak value (None: float),
        after refusing what cannot be upscaled."""
        image = np.asarray(image)
        squeeze = image.ndim == 2
        if squeeze:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape:
            raise LightSRError(
                f"expected an H x W or H x W x C image with C in (1, 3, 4), got {image.shape}."
            )
        dtype = image.dtype
        if dtype == np.uint8:
            peak: float | None = 255.0
        elif dtype == np.uint16:
            peak = 65535.0
        elif np.issubdtype(dtype, np.floating):
            peak = None
        else:
            raise LightSRError(f"image dtype {dtype} is not uint8, uint16 or float.")
        h, w, c = image.shape
        self.check_output_size(h, w, c, dtype if peak is not None else np.float32)
        if peak is None and not bool(np.isfinite(image).all()):
            raise LightSRError("the input image holds NaN/Inf values: pass values in [0, 1].")
        return image, squeeze, peak

    @staticmethod
    def output_dtype(dtype: Any) -> np.dtype:
        """The dtype of the output for an input of ``dtype``: the same for uint8 and uint16,
        float32 for float."""
        dtype = np.dtype(dtype)
        return dtype if dtype in (np.uint8, np.uint16) else np.dtype(np.float32)

    def _upscale_window(
        self,
        image: np.ndarray,
        peak: float | None,
        full_shape: tuple[int, int],
        alpha_constant: bool | None,
    ) -> np.ndarray:
        """The network's output for ``image`` (H x W x C, checked), part of an image of
        ``full_shape`` (height, width), with the tiles resolved for that whole image (so a
        band's windows are the whole image's); ``alpha_constant``: whether the whole image's
        alpha is constant (None: look at this one's)."""
        h, w, c = image.shape
        s = self.scale
        out = np.empty((h * s, w * s, c), dtype=self.output_dtype(image.dtype))
        colour = image[:, :, :3] if c >= 3 else image[:, :, :1]
        tile = self._resolve_tile(*full_shape)
        self._run_channels(colour, out, slice(0, 3 if c >= 3 else 1), peak, self, tile)
        if c == 4:
            alpha = image[:, :, 3:4]
            first = alpha.flat[0]
            if alpha_constant is None:
                alpha_constant = bool(np.all(alpha == first))
            if alpha_constant:  # opaque (or constant) alpha: nothing to compute
                out[:, :, 3] = first
            else:
                runner = self._alpha_runner()
                alpha_tile = runner._resolve_tile(*full_shape)
                self._run_channels(alpha, out, slice(3, 4), peak, runner, alpha_tile)
        return out

    def _alpha_runner(self) -> Upscaler:
        """What upscales a varying alpha channel: this model (``alpha="model"``) or bicubic."""
        if self.alpha == "model":
            return self
        if self._alpha_model is None:
            self._alpha_model = Upscaler(
                Bicubic(scale=self.scale),
                tile=self.tile,
                overlap=Bicubic.receptive_field,
                device=self.device,
                channels_last=False,
                progress=self.progress,
            )
        return self._alpha_model

    @staticmethod
    def _run_channels(
        src: np.ndarray,
        out: np.ndarray,
        dest: slice,
        peak: float | None,
        runner: Upscaler,
        tile: int | None,
    ) -> None:
        """Run ``runner`` on ``src`` (H x W x 1 or 3) and write into ``out[..., dest]``."""
        grey = src.shape[2] == 1

        def to_tensor(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(np.array(a, dtype=np.float32))  # a small copy per window
            if peak is not None:
                t = t / peak
            return t.expand(-1, -1, 3) if grey else t

        def sink(r0: int, c0: int, y: torch.Tensor) -> None:
            if grey:
                y = y.mean(dim=1, keepdim=True)
            if peak is not None:
                # round half up on non-negative values = MATLAB's im2uint8 / im2uint16
                y = y.clamp(0.0, 1.0).mul_(peak).add_(0.5).floor_()  # one HR-tile temporary
            tile = y[0].permute(1, 2, 0).cpu().numpy()
            out[r0 : r0 + tile.shape[0], c0 : c0 + tile.shape[1], dest] = tile

        runner._tiled(src, to_tensor, sink, tile)

    # -- tiling -------------------------------------------------------------------------------

    def _tiled(
        self,
        src: np.ndarray,
        to_tensor: Callable[[np.ndarray], torch.Tensor],
        sink: Callable[[int, int, torch.Tensor], None],
        tile: int | None,
    ) -> None:
        """Run the model over ``src`` (H x W x C array) tile by tile (``tile``: the side,
        :meth:`_resolve_tile`'s for the image this is part of; None: at once); ``to_tensor``
        makes an H x W x 3 float tensor of a window, ``sink(row, col, y)`` receives each output
        core (1, 3, h, w) at its HR position. Halves the tile on out-of-memory and starts
        over."""
        h, w = src.shape[:2]
        while True:
            try:
                self._tiled_once(src, to_tensor, sink, tile)
                return
            except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_out_of_memory(exc):
                    raise
                current = tile or max(h, w)
                smaller = current // 2
                if smaller < max(16, self.min_input_size):
                    raise LightSRError(
                        f"out of memory even with {current}x{current} tiles on {self.device}: "
                        "free memory, or use --device cpu."
                    ) from exc
                warnings.warn(
                    f"out of memory with {current}px tiles; retrying with {smaller}px tiles",
                    stacklevel=2,
                )
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                tile = smaller
                self.tile = smaller

    def _tiled_once(
        self,
        src: np.ndarray,
        to_tensor: Callable[[np.ndarray], torch.Tensor],
        sink: Callable[[int, int, torch.Tensor], None],
        tile: int | None,
    ) -> None:
        h, w = src.shape[:2]
        s = self.scale
        if tile is None or max(h, w) <= tile:
            rows, cols = [(0, h, 0, h)], [(0, w, 0, w)]
        else:
            rows = _tile_windows(h, tile, self.overlap)
            cols = _tile_windows(w, tile, self.overlap)
        jobs = [(r, c) for r in rows for c in cols]
        bar = self._bar  # bands(): the whole image's bar
        if bar is None and len(jobs) > 1 and self.progress is not False:
            bar = tqdm(total=len(jobs), desc="tiles", unit="tile", leave=False, disable=None)
        try:
            for (r0, r1, wr0, wr1), (c0, c1, wc0, wc1) in jobs:
                window = to_tensor(src[wr0:wr1, wc0:wc1])  # H x W x 3 float
                x = window.permute(2, 0, 1)[None].to(self.device, torch.float32)
                y = self._forward(x)
                core = y[..., (r0 - wr0) * s : (r1 - wr0) * s, (c0 - wc0) * s : (c1 - wc0) * s]
                sink(r0 * s, c0 * s, core)
                del x, y, core
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None and bar is not self._bar:
                bar.close()


def _pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Pad (bottom/right) to at least ``size`` per side: reflection where the image is large
    enough for it, then replicate for the rest."""
    h, w = x.shape[-2:]
    ph, pw = max(0, size - h), max(0, size - w)
    rh, rw = min(ph, h - 1), min(pw, w - 1)
    if rh or rw:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if ph - rh or pw - rw:
        x = F.pad(x, (0, pw - rw, 0, ph - rh), mode="replicate")
    return x


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def check_outscale(outscale: float | None) -> float | None:
    """``outscale`` as given, validated: None, or a finite number > 0."""
    if outscale is None:
        return None
    if (
        isinstance(outscale, bool)
        or not isinstance(outscale, (int, float))
        or not math.isfinite(outscale)
        or outscale <= 0
    ):
        raise LightSRError(
            f"outscale must be a number above 0 (e.g. 3.5: the output is 3.5 times the input), "
            f"not {outscale!r}."
        )
    return float(outscale)


def resize_image(
    image: np.ndarray, size: tuple[int, int], *, filter: str = "bicubic"
) -> np.ndarray:
    """Resize an ``H x W x C`` array (uint8, uint16 or float) to ``size`` = (height, width),
    every channel alike (alpha like the colour; no premultiplication), keeping its dtype
    (float32 for float input with ``"lanczos"``).

    ``"bicubic"``: MATLAB's ``imresize(img, [h w], 'bicubic')`` (antialiased when shrinking;
    integer images rounded between its two passes, as MATLAB does). ``"lanczos"``: Pillow's
    Lanczos (3 lobes) of each channel as a float32 image, horizontal pass first, rounded half up
    (no 8-bit step for 16-bit images). Both are :class:`lightsr.data.resize.Resize`, which gives
    the same pixels band by band (:meth:`Upscaler.bands` with ``outscale``)."""
    return Resize(image.shape[:2], size, dtype=image.dtype, filter=filter)(image)


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------


def upscale_image(
    model: SRModel | Upscaler,
    image: np.ndarray,
    *,
    tile: int | str | None = "auto",
    overlap: int | str = "auto",
    precision: str = "auto",
    device: str | torch.device | None = None,
    channels_last: bool = True,
    compile: bool = False,
    alpha: str = "bicubic",
    self_ensemble: bool = False,
    outscale: float | None = None,
    outscale_filter: str = "bicubic",
) -> np.ndarray:
    """Upscale one image array with ``model`` (see :class:`Upscaler` for the options).

    ``image``: ``H x W [x C]``, C in (1, 3, 4), uint8 / uint16 / float in [0, 1]. Returns the
    same dtype and channels at ``scale`` times the size. To run many images, build an
    :class:`Upscaler` once and pass it as ``model`` (the options are then ignored).
    """
    if not isinstance(model, Upscaler):
        model = Upscaler(
            model,
            tile=tile,
            overlap=overlap,
            precision=precision,
            device=device,
            channels_last=channels_last,
            compile=compile,
            alpha=alpha,
            self_ensemble=self_ensemble,
            outscale=outscale,
            outscale_filter=outscale_filter,
        )
    return model(image)


# Write errors that every later file would hit as well: upscale_files stops on them.
_FATAL_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}


def output_path(
    src: Path,
    *,
    scale: int | str,
    out_dir: Path | None,
    suffix: str = ".png",
    overwrite: bool = False,
    name_suffix: str = DEFAULT_NAME_SUFFIX,
) -> Path:
    """``<stem><name_suffix><suffix>`` (by default ``<stem>_x<scale>.png``) in ``out_dir`` (or
    beside ``src``); when that exists and not ``overwrite``, ``<stem>_x<scale>_1<suffix>``,
    ``_2``, ... (never silently overwrites).

    A preview: :func:`upscale_files` claims the name when it writes
    (:func:`lightsr.atomic.atomic_write_unique`), so a process writing meanwhile can move it on
    to the next number, never onto the same file."""
    folder = out_dir if out_dir is not None else src.parent
    path = folder / f"{src.stem}{name_suffix.replace('{scale}', str(scale))}{suffix}"
    return path if overwrite else _unique(path)


def plan_output(
    src: Path,
    *,
    channels: int,
    dtype: Any,
    height: int,
    width: int,
    input_format: str | None,
    folder: Path,
    options: OutputOptions,
    scale: str,
    target: Path | None = None,
) -> tuple[Path, str | None]:
    """The output file of ``src`` (an output image of ``channels``, ``dtype``, ``height`` x
    ``width``) and a note when its format is not the one asked for (or, with ``"auto"``, not
    the input's): ``target`` when given, else ``folder / <stem><name_suffix><ext>``. The
    strict forms (``target``, ``options.extension``) raise :class:`LightSRError` for an image
    their format cannot hold; ``options.format`` falls back to PNG (see
    :class:`OutputOptions`)."""
    shape = {"channels": channels, "dtype": dtype, "height": height, "width": width}
    if target is not None or options.extension is not None:
        dst = target or folder / f"{src.stem}{options.rendered_suffix(scale)}{options.extension}"
        check_output_format(dst, **shape)
        return dst, None
    input_kind = _KIND_OF_FORMAT.get(input_format or "")
    want = input_kind if options.format == "auto" else options.format
    note = None
    if want is None:
        kind = "png"
        note = (
            f"written as PNG: the input is {input_format or 'of an unknown format'}, and "
            f"--format auto keeps only {', '.join(_FORMAT_NAMES.values())}"
        )
    else:
        why = cannot_hold(OUTPUT_FORMATS[want], **shape)
        kind = want if why is None else "png"
        if why is not None:
            asked = "the input's format" if options.format == "auto" else "asked for"
            note = f"written as PNG, not {_FORMAT_NAMES[want]} ({asked}): {why}"
    ext = OUTPUT_FORMATS[kind]
    if kind == input_kind and _KIND_OF_SUFFIX.get(src.suffix.lower()) == kind:
        ext = src.suffix.lower()  # photo.jpeg -> photo_x4.jpeg
    return folder / f"{src.stem}{options.rendered_suffix(scale)}{ext}", note


def _unique(path: Path) -> Path:
    """``path``, or ``<stem>_1<suffix>``, ``_2``, ... when it exists (a link, even a dangling
    one, counts: it is not replaced either)."""
    k = 0
    while os.path.lexists(numbered(path, k)):
        k += 1
    return numbered(path, k)


def expand_inputs(
    inputs: Iterable[str | os.PathLike],
    *,
    skip_outputs_of_scale: int | None = None,
    out_dir: Path | None = None,
    output_suffix: str | None = None,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files, folders (their files, not recursive, hidden ones skipped) and glob patterns (where
    ``**`` matches any depth of subfolders) ->
    (candidate image files, [(path, reason)] for things that are skipped).

    With ``skip_outputs_of_scale=s`` (or ``output_suffix``, the outputs' name suffix, e.g.
    ``"_x4"``; an empty one skips nothing), files found in a folder or by a glob whose stem
    ends in ``_x<s>`` or ``_x<s>_<n>`` are skipped when their output would go into their own
    folder (``out_dir`` None, or that folder): they are what an earlier run wrote there, and a
    second run over the folder would upscale its own results. Files named explicitly always
    run.

    What is not a regular file or a folder (a FIFO, socket or device, which would block or
    never end; a dangling symlink; a symlink loop), named or found in a folder, is skipped
    with the reason."""
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    if output_suffix is None and skip_outputs_of_scale is not None:
        output_suffix = f"_x{int(skip_outputs_of_scale)}"
    earlier = re.compile(rf"{re.escape(output_suffix)}(_\d+)?$") if output_suffix else None
    target = out_dir.resolve() if out_dir is not None else None

    def add_file(p: Path, *, explicit: bool) -> None:
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            if is_image_suffix(p.suffix):
                reason = (
                    f"an image format lightsr does not read ({p.suffix}); it reads "
                    f"{', '.join(IMAGE_EXTENSIONS)}: convert it to PNG first"
                )
            else:
                reason = f"not an image file (suffix {p.suffix or 'none'!r})"
            skipped.append((p, reason))
        elif (
            not explicit
            and earlier is not None
            and earlier.search(p.stem)
            and (target is None or target == p.parent.resolve())
        ):
            skipped.append(
                (
                    p,
                    f"looks like an earlier output (name ends in {output_suffix}) "
                    "written beside the inputs; name the file explicitly to upscale it",
                )
            )
        else:
            files.append(p)

    for item in inputs:
        p = Path(item)
        kind = _file_kind(p)
        if kind == "dir":
            for child in sorted(p.iterdir()):
                if child.name.startswith("."):
                    continue
                child_kind = _file_kind(child)
                if child_kind == "file":
                    add_file(child, explicit=False)
                elif child_kind is not None and child_kind != "dir":  # not entered: silent
                    skipped.append((child, child_kind))
        elif kind == "file":
            add_file(p, explicit=True)
        elif kind is not None:
            skipped.append((p, kind))
        else:
            # "**" matches any depth of subfolders: `lightsr upscale 'photos/**/*.jpg'`
            matches = sorted(glob.glob(str(item), recursive=True))
            if not matches:
                skipped.append((p, "no such file, folder or glob match"))
            for m in matches:
                mp = Path(m)
                mkind = _file_kind(mp)
                if mkind == "file":
                    add_file(mp, explicit=False)
                elif mkind is not None and mkind != "dir":
                    skipped.append((mp, mkind))
    # the same file named twice (a folder and a glob) runs once
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, skipped


def _file_kind(p: Path) -> str | None:
    """``"file"`` (regular, or a link to one), ``"dir"``, None when nothing is there, else why
    ``p`` is not something to read (FIFO, socket, device, dangling link, link loop)."""
    try:
        st = p.stat()
    except OSError as exc:
        try:
            p.lstat()
        except OSError:
            return None  # nothing there (or an unreachable parent): a glob may still match
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (the link leads back to itself): fix or remove it"
        if exc.errno == errno.ENOENT and p.is_symlink():
            return f"a dangling symbolic link (its target {os.readlink(p)!r} does not exist)"
        return f"cannot be read ({exc.strerror or exc})"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    for test, what in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return f"not a regular file: {what}; reading it could block or never end"
    return "not a regular file"


def check_output_target(
    out: Path | None,
    suffix: str = ".png",
    *,
    format: str | None = None,
    quality: int | None = None,
) -> None:
    """Raise :class:`LightSRError` when ``out`` names an image file of a format lightsr does
    not write (``-o x.gif`` would otherwise become a folder called ``x.gif``), or ``suffix``
    (the outputs' suffix in a folder) is not one it writes (:data:`WRITE_EXTENSIONS`), or
    ``out`` names a file whose format is not ``format`` (``-o x.png --format jpg``), or a PNG
    or TIFF file with a ``quality`` (which only JPEG and WebP have)."""
    if suffix.lower() not in WRITE_EXTENSIONS:
        raise LightSRError(
            f"suffix {suffix!r}: lightsr writes {', '.join(WRITE_EXTENSIONS)}; pick one of them."
        )
    if out is None or out.is_dir():
        return
    ext = out.suffix.lower()
    if ext and ext not in WRITE_EXTENSIONS and is_image_suffix(ext):
        raise LightSRError(
            f"output {str(out)!r}: lightsr does not write {ext} images; name the output "
            f".png (or {', '.join(e for e in WRITE_EXTENSIONS if e != '.png')}), or pass a "
            "folder."
        )
    if ext not in WRITE_EXTENSIONS:
        return  # a folder to be created
    named = _KIND_OF_SUFFIX.get(ext)
    if format is not None and format != "auto" and named != format:
        raise LightSRError(
            f"output {str(out)!r} is a {ext} file but --format is {format}: name the output "
            f"{out.stem}{OUTPUT_FORMATS.get(format, '.' + format)}, or drop --format."
        )
    if quality is not None and named not in ("jpg", "webp"):
        raise LightSRError(
            f"--quality sets JPEG/WebP compression; {str(out)!r} is a lossless {ext} file: drop "
            "--quality, or name the output .jpg or .webp."
        )


def _probe_folder(folder: Path) -> str | None:
    """None when a new file can be created in ``folder`` (or in the folders that would be
    created for it), else why not. Creating and removing a uniquely named empty file is the
    only test that sees permissions, ACLs and read-only mounts alike."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{str(existing)!r} is not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".lightsr-probe-", dir=existing)
    except OSError as exc:
        return f"cannot create files in {str(existing)!r} ({exc.strerror or exc})"
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def preflight(
    files: Sequence[Path],
    runner: Upscaler,
    *,
    out_dir: Path | None,
    target: Path | None = None,
    suffix: str = ".png",
    report: UpscaleReport | None = None,
    output: OutputOptions | None = None,
) -> list[Path]:
    """The checks :func:`upscale_files` makes before the model runs on any image; returns the
    files that pass. From headers only (:func:`lightsr.data.io.image_header`), per input: it
    reads as an image, its output is within ``runner.max_output_pixels``, and the output
    format can hold it (:func:`lightsr.data.io.check_output_format`: 16-bit needs .png/.tif,
    alpha .png/.tif/.webp, ...; with ``output.format`` the fallback to PNG is chosen instead);
    its output name is not the input itself; when writing beside the inputs, their folder takes
    new files. A file that fails goes to ``report.failed`` with the reason (and a warning);
    with ``output.skip_existing`` a file whose output exists goes to ``report.existing``.
    An output folder (``out_dir``, or ``target``'s) that takes no files raises
    :class:`LightSRError`. ``output`` None: every output is ``suffix``, strictly."""
    opts = output if output is not None else OutputOptions(extension=suffix)
    folder = out_dir if out_dir is not None else (target.parent if target is not None else None)
    if folder is not None:
        why = _probe_folder(folder)
        if why is not None:
            raise LightSRError(
                f"cannot write into the output folder {str(folder)!r}: {why}. Pass a folder "
                "you can write to as -o."
            )
    beside: dict[Path, str | None] = {}
    passed: list[Path] = []
    for src in files:
        try:
            if folder is None:
                parent = src.parent
                if parent not in beside:
                    beside[parent] = _probe_folder(parent)
                if beside[parent] is not None:
                    raise LightSRError(
                        f"cannot write its output beside it: {beside[parent]}. Pass a folder "
                        "you can write to as -o."
                    )
            head: ImageHeader = image_header(src)
            runner.check_output_size(head.height, head.width, head.channels, head.dtype)
            height, width = runner.output_size(head.height, head.width)
            dst, _ = plan_output(
                src,
                channels=head.channels,
                dtype=head.dtype,
                height=height,
                width=width,
                input_format=head.format,
                folder=folder or src.parent,
                options=opts,
                scale=runner.scale_label,
                target=target,
            )
            if target is None and same_file(dst, src):
                raise OutputPathError(
                    f"its output name {dst.name!r} is the input's own name (an empty name "
                    "suffix beside the input): pass --suffix, or another folder as -o."
                )
            if opts.skip_existing and os.path.lexists(dst):
                if report is not None:
                    report.existing.append((src, dst))
                continue
        except LightSRError as exc:
            if report is not None:
                report.failed.append((src, str(exc)))
            warnings.warn(f"failed: {src}: {exc}", stacklevel=2)
            continue
        passed.append(src)
    return passed


def upscale_files(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    model: SRModel | Upscaler,
    overwrite: bool = False,
    suffix: str | None = None,
    format: str | None = None,
    quality: int | None = None,
    name_suffix: str = DEFAULT_NAME_SUFFIX,
    skip_existing: bool = False,
    keep_metadata: bool = True,
    progress: bool | None = None,
    **options: Any,
) -> UpscaleReport:
    """Upscale image files, folders and globs; write ``<stem>_x<s>.<ext>`` into ``out`` (a
    folder, created if needed; or a file name when there is exactly one input) or beside each
    input.

    Output (:class:`OutputOptions`): by default every output is PNG; ``format="auto"`` keeps
    the input's format (PNG, JPEG, WebP, TIFF), ``format="jpg"`` etc. asks for one, falling
    back to PNG (with a note in the report) for an image it cannot hold; ``suffix=".jpg"``
    (the strict form) fails such images instead. ``quality``: JPEG/WebP, 1..100 (default
    :data:`DEFAULT_QUALITY`). ``name_suffix``: the name is ``<stem><name_suffix>.<ext>``
    (``{scale}`` becomes the scale). ``skip_existing``: an input whose output file exists is
    left alone and listed in ``report.existing`` (excludes ``overwrite``). ``keep_metadata``:
    the input's ICC profile and EXIF (orientation 1) go into the output where its format
    holds them.

    Non-image files, and earlier outputs found in a folder or glob when writing beside the
    inputs (see :func:`expand_inputs`), are skipped with a warning; unreadable images and
    failed writes are reported; the run goes on and the returned :class:`UpscaleReport` lists
    both. Before the model runs on any image, every input is checked from its header
    (:func:`preflight`: readable, output within ``max_output_pixels``, a format that can hold
    it); an output folder that cannot be created or written to, or an output name or
    ``suffix`` lightsr does not write (:func:`check_output_target`), raises
    :class:`LightSRError`. ``options`` go to :class:`Upscaler` (tile, overlap, precision,
    device, channels_last, compile, alpha, max_output_pixels, self_ensemble, outscale,
    outscale_filter).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if skip_existing and overwrite:
        raise LightSRError(
            "skip_existing (--skip-existing) keeps existing outputs and overwrite "
            "(--overwrite) replaces them: pass one of them."
        )
    if suffix is not None and format is not None:
        raise LightSRError(
            f"suffix={suffix!r} and format={format!r} both choose the output format: pass one."
        )
    opts = OutputOptions(
        format=format or "auto",
        extension=suffix if suffix is not None or format is not None else ".png",
        quality=quality,
        name_suffix=name_suffix,
        skip_existing=skip_existing,
        keep_metadata=keep_metadata,
    )
    runner = model if isinstance(model, Upscaler) else Upscaler(model, progress=progress, **options)
    out_path = Path(out) if out is not None else None
    check_output_target(out_path, opts.extension or ".png", format=format, quality=quality)
    single_target = (
        out_path is not None
        and out_path.suffix.lower() in WRITE_EXTENSIONS
        and not out_path.is_dir()
    )
    files, skipped = expand_inputs(
        inputs,
        output_suffix=None if single_target else opts.rendered_suffix(runner.scale_label),
        out_dir=None if single_target else out_path,
    )
    report = UpscaleReport(skipped=list(skipped))
    for path, reason in skipped:
        warnings.warn(f"skipping {path}: {reason}", stacklevel=2)

    if single_target and len(files) > 1:
        raise LightSRError(
            f"output {str(out_path)!r} is a file name but there are {len(files)} inputs: "
            "pass a folder as -o."
        )
    if single_target and overwrite and files and out_path and same_file(files[0], out_path):
        raise OutputPathError(
            f"output {str(out_path)!r} is the input file: --overwrite would replace the image "
            "being upscaled. Choose another -o."
        )
    out_dir = None if single_target else out_path
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LightSRError(
                f"cannot create the output folder {str(out_dir)!r}: {exc.strerror or exc}. "
                "Pass a folder you can write to as -o."
            ) from None
    target = out_path if single_target else None
    # Every input's header, output size and format, and the folders: before any compute.
    files = preflight(files, runner, out_dir=out_dir, target=target, report=report, output=opts)

    claimed: dict[Path, Path] = {}  # outputs of this run -> their input
    bar = tqdm(files, desc="images", unit="img", disable=True if progress is False else None)
    for src in bar:
        try:
            image = read_image(src)
            info = read_image_info(src)  # format, ICC profile, EXIF: no second decode
        except (ImageReadError, OSError) as exc:
            reason = str(exc) if isinstance(exc, LightSRError) else f"cannot read: {exc}"
            report.failed.append((src, reason))
            warnings.warn(f"failed: {src}: {reason}", stacklevel=2)
            continue
        dst: Path | None = None
        keep_name = False
        try:
            result = _upscaled(runner, image)
            del image  # (the bands hold it until they are written)
            dst, notes = _plan_write(src, result, info, runner, opts, out_dir, target)
            earlier = claimed.get(dst)
            # Two inputs of this run with one output name (a.png and a.jpg into PNG): the
            # second gets the next free number whatever the flags (replacing or skipping would
            # lose one). Otherwise without overwrite the name is claimed as the file is
            # published: the first free one of dst, dst_1, ... (a check-then-write would let
            # two processes pick the same); with skip_existing the name itself or nothing.
            keep_name = opts.skip_existing and earlier is None
            replace = overwrite and earlier is None
            if earlier is not None:
                notes.append(f"{dst.name} was written from {earlier.name} in this run: numbered")
            written = write_image(
                dst,
                result,
                quality=opts.jpeg_quality,
                overwrite=replace,
                unique=not replace and not keep_name,
                icc_profile=info.icc_profile if opts.keep_metadata else None,
                exif=info.exif if opts.keep_metadata else None,
            )
            del result
        except OutputExistsError as exc:
            if keep_name and dst is not None:
                # created since the preflight (another process): left alone, like the others
                report.existing.append((src, dst))
            else:
                report.failed.append((src, str(exc)))
                warnings.warn(f"failed: {src}: {exc}", stacklevel=2)
            continue
        except LightSRError as exc:
            report.failed.append((src, str(exc)))
            warnings.warn(f"failed: {src}: {exc}", stacklevel=2)
            continue
        except OSError as exc:  # an unwritable target: this file fails, the run goes on
            if exc.errno in _FATAL_WRITE_ERRNOS:
                raise  # a full disk or read-only mount fails every later file too: stop now
            where = str(dst) if dst is not None else "the output"
            reason = f"cannot write {where!r}: {exc.strerror or exc}"
            report.failed.append((src, reason))
            warnings.warn(f"failed: {src}: {reason}", stacklevel=2)
            continue
        claimed[dst] = claimed[written] = src
        report.written.append((src, written))
        report.notes.extend((src, n) for n in notes)
    return report


def _upscaled(runner: Upscaler, image: np.ndarray) -> RowBands:
    """What ``upscale_files`` writes: the output as bands, computed (and resized, with
    ``outscale``) as the writer takes them: memory for one row of tiles, not the image."""
    image, _, _ = runner._checked(image)  # refused here, before any name is claimed
    h, w, c = image.shape
    out_h, out_w = runner.output_size(h, w)
    dtype = runner.output_dtype(image.dtype)
    return RowBands(out_h, out_w, c, dtype, lambda: runner.bands(image))


def _plan_write(
    src: Path,
    result: np.ndarray | RowBands,
    info: ImageInfo,
    runner: Upscaler,
    opts: OutputOptions,
    out_dir: Path | None,
    target: Path | None,
) -> tuple[Path, list[str]]:
    """The output name of ``result`` and the notes on it (format fallback, metadata the
    input could not give or the format cannot hold)."""
    height, width = result.shape[:2]
    channels = result.shape[2] if len(result.shape) == 3 else 1
    dst, note = plan_output(
        src,
        channels=channels,
        dtype=result.dtype,
        height=height,
        width=width,
        input_format=info.format,
        folder=out_dir if out_dir is not None else src.parent,
        options=opts,
        scale=runner.scale_label,
        target=target,
    )
    notes = [note] if note else []
    if opts.keep_metadata:
        notes += list(info.notes)
        notes += dropped_metadata(
            dst, channels=channels, icc_profile=info.icc_profile, exif=info.exif
        )
    return dst, notes


def print_report(report: UpscaleReport, *, file: Any = None) -> None:
    """Human summary: counts, then every skipped, kept (existing) and failed file with its
    reason, and the notes on written files."""
    file = file or sys.stderr
    kept = f"{len(report.existing)} already there (kept), " if report.existing else ""
    print(
        f"{len(report.written)} written, {kept}{len(report.skipped)} skipped, "
        f"{len(report.failed)} failed",
        file=file,
    )
    for path, reason in report.skipped:
        print(f"  skipped {path}: {reason}", file=file)
    for path, dst in report.existing:
        print(f"  kept    {path}: its output {dst} exists (--skip-existing)", file=file)
    for path, reason in report.failed:
        print(f"  failed  {path}: {reason}", file=file)
    for path, note in report.notes:
        print(f"  note    {path}: {note}", file=file)


__all__ = [
    "DEFAULT_MAX_OUTPUT_PIXELS",
    "DEFAULT_NAME_SUFFIX",
    "DEFAULT_QUALITY",
    "OUTPUT_FORMATS",
    "BACKENDS",
    "OUTSCALE_FILTERS",
    "PRECISIONS",
    "OutputOptions",
    "UpscaleReport",
    "Upscaler",
    "auto_tile_size",
    "check_outscale",
    "check_output_target",
    "expand_inputs",
    "int8_floats",
    "output_path",
    "plan_output",
    "preflight",
    "print_report",
    "resize_image",
    "resolve_backend",
    "resolve_precision",
    "upscale_files",
    "upscale_image",
]
