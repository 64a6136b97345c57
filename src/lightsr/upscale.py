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
  channels_last memory format, optionally compiled (``compile=True``), and run in fp32 (default)
  or bf16/fp16 under autocast. Under autocast the convolutions that produce image values (those
  feeding a pixel shuffle, and the one making the output; found by :func:`output_convs`, a
  forward pass on a tiny input) stay in fp32, so the last rounding step is not half a grey
  level. On a CPU without native bf16 (no AVX512-BF16/AMX) bf16 is
  emulated and slower than fp32: ``precision="auto"`` then keeps fp32.

The output image is assembled tile by tile in an array of the output dtype; no float copy of
the whole output is held.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import CheckpointError, ImageReadError, LightSRError
from .models.base import SRModel
from .profile import cpu_has_native_bf16  # re-exported: one CPU-feature check in the library

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# Receptive-field probe: an LR input of 2 * _RF_LIMIT + 1 pixels; a support that reaches the
# probe's edge means a global operation (or a field wider than the limit).
_RF_LIMIT = 40
# Overlap for such models: their tiles cannot match untiled inference exactly; 24 LR pixels of
# context keep the deviation small (A2F-SD: see tests/test_upscale.py) at a tile cost of
# (1 + 48 / tile)^2.
_GLOBAL_OVERLAP = 24
# Auto tile: largest tile whose estimated working set fits this share of the available memory,
# capped (bigger tiles do not run faster on a CPU, and the cap bounds peak memory).
_MEMORY_SHARE = 0.25
_MAX_AUTO_TILE_BYTES = 512 * 2**20
_MAX_AUTO_TILE = {"cpu": 512, "cuda": 2048}


# ---------------------------------------------------------------------------------------------
# Bicubic "model" (baseline, and alpha channels)
# ---------------------------------------------------------------------------------------------


class Bicubic(SRModel):
    """Bicubic upscaling as an SRModel: cubic kernel a = -0.5 (MATLAB's ``imresize``), mirror
    (symmetric) borders. Float [0, 1] in and out, unclamped. No parameters.

    The fast torch path (:func:`lightsr.data.resize.imresize_torch`): any device, any dtype,
    tileable, within ~8e-6 of MATLAB in float32 (float64 input: to rounding). It is the
    ``--model bicubic`` of ``lightsr upscale`` and the alpha-channel upscaler. Evaluation uses
    :class:`lightsr.evaluate.BicubicBaseline` instead, the exact numpy ``imresize`` (float64,
    CPU), for the papers' Bicubic rows."""

    #: Each output pixel depends on input pixels at most 2 LR pixels away.
    receptive_field = 2

    def __init__(self, *, scale: int) -> None:
        super().__init__(scale=scale, min_input_size=1)
        self.arch_name = "bicubic"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .data.resize import imresize_torch

        self.check_input(x)
        return imresize_torch(x, self.scale, boundary="mirror")


# ---------------------------------------------------------------------------------------------
# Hardware: devices, precisions, memory
# ---------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LightSRError(
            "device 'cuda' requested but no CUDA GPU is available: use --device cpu."
        )
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """Validate ``precision``; ``"auto"`` -> fp16 on CUDA, bf16 on a CPU with native bf16,
    else fp32."""
    if precision not in PRECISIONS:
        raise LightSRError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return precision


def available_memory(device: torch.device) -> int:
    """Bytes free for inference: CUDA free memory, or MemAvailable from /proc/meminfo (CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4 * 2**30  # no /proc (macOS, Windows): assume a modest machine


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    )


# ---------------------------------------------------------------------------------------------
# Model analysis: receptive field, memory per pixel
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceptiveField:
    """Radius (LR pixels) of the input that influences one output pixel. ``is_global`` when the
    influence reaches beyond 40 pixels (global pooling, or a very deep or downsampling network):
    ``radius`` is then the default overlap for such models (24), not a bound."""

    radius: int
    is_global: bool


def receptive_field(model: nn.Module) -> ReceptiveField:
    """Measure the receptive field of ``model`` from the support of an input gradient.

    The model runs on an 81 x 81 LR probe; the gradient of the centre pixel's s x s output block
    is non-zero exactly on the inputs it depends on (barring exact cancellation). A model may
    declare an integer ``receptive_field`` attribute instead. The result is cached on the model.
    """
    declared = getattr(model, "receptive_field", None)
    if isinstance(declared, int):
        return ReceptiveField(declared, False)
    cached = getattr(model, "_lightsr_receptive_field", None)
    if isinstance(cached, ReceptiveField):
        return cached
    probe = copy.deepcopy(model).cpu().float().eval()
    for p in probe.parameters():
        p.requires_grad_(False)
    n = 2 * _RF_LIMIT + 1
    s = int(model.scale)
    x = torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    with torch.enable_grad():
        y = probe(x)
        c = _RF_LIMIT
        y[..., c * s : (c + 1) * s, c * s : (c + 1) * s].sum().backward()
    g = x.grad.abs().sum(dim=(0, 1))
    support = _chebyshev(n, c)[g > 0]
    radius = int(support.max()) if support.numel() else 0
    result = (
        ReceptiveField(radius, False)
        if radius < _RF_LIMIT
        else ReceptiveField(_GLOBAL_OVERLAP, True)
    )
    with contextlib.suppress(AttributeError, TypeError):
        model._lightsr_receptive_field = result
    return result


def _chebyshev(n: int, c: int) -> torch.Tensor:
    r = (torch.arange(n) - c).abs()
    return torch.maximum(r[:, None], r[None, :])


def _bytes_per_lr_pixel(model: nn.Module, element_bytes: int) -> float:
    """Estimated peak working set of one forward pass per LR input pixel (bytes).

    Measured with forward hooks on a small probe: the largest single activation (per LR pixel),
    times 4 for the tensors alive next to it (its input, residual/skip tensors, a concat), plus
    the HR output. Deliberately generous: it only sizes tiles.
    """
    cached = getattr(model, "_lightsr_bytes_per_px", None)
    if cached is not None:
        return cached * element_bytes
    n = max(32, int(getattr(model, "min_input_size", 1)))
    largest = [0]

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            largest[0] = max(largest[0], out.numel())

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, n, n, device=device))
    finally:
        for h in handles:
            h.remove()
    s = int(model.scale)
    per_px = 4.0 * largest[0] / (n * n) + 2.0 * 3 * s * s + 3
    with contextlib.suppress(AttributeError, TypeError):
        model._lightsr_bytes_per_px = per_px
    return per_px * element_bytes


def auto_tile_size(
    model: nn.Module, *, device: torch.device, overlap: int = 0, element_bytes: int = 4
) -> int:
    """Largest tile side (LR pixels) whose forward pass, with ``overlap`` context on each side,
    fits in the share of available memory (see module docstring); at least 32."""
    budget = min(_MEMORY_SHARE * available_memory(device), _MAX_AUTO_TILE_BYTES)
    if device.type == "cuda":
        budget = 0.5 * available_memory(device)
    per_px = _bytes_per_lr_pixel(model, element_bytes)
    side = int(math.sqrt(budget / per_px)) - 2 * overlap
    side = min(side, _MAX_AUTO_TILE.get(device.type, 512))
    return max(side, 32)


# ---------------------------------------------------------------------------------------------
# Preparing a model
# ---------------------------------------------------------------------------------------------


class _Float32Conv(nn.Module):
    """Runs a conv in fp32 with autocast off: for the convs whose outputs are image values."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.conv(x.float())


_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


class _PixelShuffleWatch(TorchFunctionMode):
    """Calls ``on_shuffle(input)`` for every pixel shuffle (``nn.PixelShuffle`` and
    ``F.pixel_shuffle`` both end in ``torch.pixel_shuffle``)."""

    def __init__(self, on_shuffle: Callable[[Any], None]) -> None:
        super().__init__()
        self.on_shuffle = on_shuffle

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") == "pixel_shuffle" and args:
            self.on_shuffle(args[0])
        return func(*args, **(kwargs or {}))


def output_convs(model: nn.Module) -> list[nn.Module]:
    """The convolutions that produce image values: those whose outputs reach a pixel shuffle's
    input or the model's output through no other convolution (the two-branch tail of MAFFSRN
    gives two, A2F's tail and skip two, EDSR's upsampler and final C->3 conv three at x4).

    Found by one forward pass on a tiny input, walking the autograd graph back from each
    pixel-shuffle input and from the output and stopping at conv outputs. If a path reaches
    no conv module (a functional conv), the conv module executed last before it counts.
    Returned in execution order, without repeats."""
    conv_of: dict[Any, nn.Module] = {}  # grad_fn of a conv's output -> the conv
    order: list[nn.Module] = []
    ends: list[tuple[Any, nn.Module | None]] = []  # (tensor, last conv executed before it)

    def record(conv: nn.Module, _inp: Any, out: Any) -> None:
        order.append(conv)
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            conv_of[out.grad_fn] = conv

    def on_shuffle(t: Any) -> None:
        ends.append((t, order[-1] if order else None))

    n = max(8, int(getattr(model, "min_input_size", 1)))
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.rand(1, 3, n, n, device=device, requires_grad=True)  # a graph without weight grads
    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, _CONVS)]
    try:
        with torch.inference_mode(False), torch.enable_grad(), _PixelShuffleWatch(on_shuffle):
            y = model(x)
        on_shuffle(y)
    finally:
        for h in handles:
            h.remove()

    found: set[int] = set()
    for tensor, fallback in ends:
        hits = _nearest_convs(getattr(tensor, "grad_fn", None), conv_of)
        if not hits and fallback is not None:
            hits = [fallback]
        found.update(id(c) for c in hits)
    return [c for i, c in enumerate(order) if id(c) in found and c not in order[:i]]


def _nearest_convs(node: Any, conv_of: dict[Any, nn.Module]) -> list[nn.Module]:
    """Convs met first on every path back from autograd ``node`` (not passing through them)."""
    hits: list[nn.Module] = []
    stack, seen = [node], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn in conv_of:
            hits.append(conv_of[fn])
            continue
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return hits


def _keep_image_convs_fp32(model: SRModel) -> None:
    """Wrap the :func:`output_convs` of ``model`` (in place) to run in fp32 under autocast:
    rounding their outputs to bf16/fp16 would cost up to half a grey level."""
    targets = output_convs(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if any(child is t for t in targets):
                setattr(parent, name, _Float32Conv(child))


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
    and images that failed with the reason."""

    written: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


class Upscaler:
    """A model prepared once for inference on many images.

    Args:
        model: an :class:`SRModel` (training or folded form; it is folded here, on a copy).
        tile: ``None`` (whole image at once), a tile side in LR pixels, or ``"auto"``.
        overlap: LR pixels of context around each tile; ``"auto"`` = the receptive field.
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (see module docstring).
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
    """

    def __init__(
        self,
        model: SRModel,
        *,
        tile: int | str | None = "auto",
        overlap: int | str = "auto",
        precision: str = "fp32",
        device: str | torch.device | None = None,
        channels_last: bool = True,
        compile: bool = False,
        pad_narrow: bool = True,
        alpha: str = "bicubic",
        progress: bool | None = False,
    ) -> None:
        if alpha not in ("bicubic", "model"):
            raise LightSRError(f"alpha must be 'bicubic' or 'model', not {alpha!r}.")
        if not (tile is None or tile == "auto" or (isinstance(tile, int) and tile > 0)):
            raise LightSRError(f"tile must be None, 'auto' or a positive integer, not {tile!r}.")
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.scale = int(model.scale)
        self.min_input_size = int(getattr(model, "min_input_size", 1))
        self.alpha = alpha
        self.progress = progress
        self.channels_last = channels_last
        self.arch_name = getattr(model, "arch_name", type(model).__name__)

        from .deploy import PaddingReport, pad_channels, reparameterize

        folded = reparameterize(model) if isinstance(model, SRModel) else copy.deepcopy(model)
        folded = folded.eval()
        for p in folded.parameters():
            p.requires_grad_(False)
        self.padding: PaddingReport | None = None
        if pad_narrow and isinstance(folded, SRModel):
            folded, self.padding = pad_channels(folded, below=16)
        if not (overlap == "auto" or (isinstance(overlap, int) and overlap >= 0)):
            raise LightSRError(f"overlap must be 'auto' or an integer >= 0, not {overlap!r}.")
        # Measured lazily: an image that fits in one tile needs neither probe.
        self._overlap: int | None = None if overlap == "auto" else overlap
        self._receptive_field: ReceptiveField | None = None
        self._source = model
        self._auto_side: int | None = None
        folded = folded.to(self.device)
        if self.precision != "fp32":
            if self.device.type == "cpu" and self.precision == "bf16" and not cpu_has_native_bf16():
                warnings.warn(
                    "this CPU has no native bf16 (AVX512-BF16/AMX): bf16 is emulated and slower "
                    "than fp32 here; use --precision fp32 (or auto).",
                    stacklevel=2,
                )
            _keep_image_convs_fp32(folded)
        self.element_bytes = 4 if self.precision == "fp32" else 2
        #: None (untiled), a side in LR pixels, or "auto" (decided per image from memory)
        self.tile: int | str | None = tile
        if channels_last:
            folded = folded.to(memory_format=torch.channels_last)
        self.model = folded
        self._run: Callable[[torch.Tensor], torch.Tensor] = folded
        if compile:
            # freezing lets inductor constant-fold the weights and fuse conv + pointwise ops.
            self._run = torch.compile(folded, dynamic=False, options={"freezing": True})
        self._alpha_model: Upscaler | None = None

    @property
    def receptive_field(self) -> ReceptiveField:
        """The folded model's :func:`receptive_field` (probed on first use)."""
        if self._receptive_field is None:
            rf = receptive_field(self.model)
            with contextlib.suppress(AttributeError, TypeError):
                self._source._lightsr_receptive_field = rf  # the next Upscaler skips the probe
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
        if self._auto_side is None:
            self._auto_side = auto_tile_size(
                self.model, device=self.device, element_bytes=self.element_bytes
            )
        side = self._auto_side
        if h * w <= side * side and max(h, w) <= 2 * side:
            return None
        return max(32, side - 2 * self.overlap)

    # -- tensors ------------------------------------------------------------------------------

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 3, h, w) float32 on the device -> (1, 3, sh, sw) float32; pads small inputs."""
        h, w = x.shape[-2:]
        m = self.min_input_size
        if h < m or w < m:
            x = _pad_to(x, m)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.precision == "fp32":
                y = self._run(x)
            else:
                with torch.autocast(self.device.type, dtype=_DTYPES[self.precision]):
                    y = self._run(x)
        y = y.float()
        s = self.scale
        return y[..., : h * s, : w * s]

    def upscale_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Float RGB (1, 3, H, W) in [0, 1] -> float32 (1, 3, sH, sW) on the CPU, unclamped,
        tiled as configured (for measuring: no rounding)."""
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise LightSRError(f"upscale_tensor expects (1, 3, H, W), got {tuple(x.shape)}.")
        h, w = x.shape[-2:]
        s = self.scale
        out = torch.empty(1, 3, h * s, w * s)
        arr = x[0].permute(1, 2, 0).cpu().numpy()

        def sink(r0: int, c0: int, y: torch.Tensor) -> None:
            out[:, :, r0 : r0 + y.shape[-2], c0 : c0 + y.shape[-1]] = y.cpu()

        self._tiled(arr, lambda a: torch.from_numpy(np.array(a, dtype=np.float32)), sink)
        return out

    # -- arrays -------------------------------------------------------------------------------

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Upscale an ``H x W [x C]`` array (C = 1, 3, 4; uint8, uint16 or float in [0, 1]).
        Returns the same dtype and channel count, ``sH x sW``; a 2-D input gives a 2-D output."""
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
            peak = 255.0
        elif dtype == np.uint16:
            peak = 65535.0
        elif np.issubdtype(dtype, np.floating):
            peak = None
        else:
            raise LightSRError(f"image dtype {dtype} is not uint8, uint16 or float.")
        h, w, c = image.shape
        s = self.scale
        out_dtype = dtype if peak is not None else np.float32
        out = np.empty((h * s, w * s, c), dtype=out_dtype)
        colour = image[:, :, :3] if c >= 3 else image[:, :, :1]
        self._run_channels(colour, out, slice(0, 3 if c >= 3 else 1), peak, self)
        if c == 4:
            self._upscale_alpha(image[:, :, 3:4], out, peak)
        return out[:, :, 0] if squeeze else out

    def _upscale_alpha(self, alpha: np.ndarray, out: np.ndarray, peak: float | None) -> None:
        first = alpha.flat[0]
        if np.all(alpha == first):  # opaque (or constant) alpha: nothing to compute
            out[:, :, 3] = first
            return
        if self.alpha == "model":
            self._run_channels(alpha, out, slice(3, 4), peak, self)
            return
        if self._alpha_model is None:
            self._alpha_model = Upscaler(
                Bicubic(scale=self.scale),
                tile=self.tile,
                overlap=Bicubic.receptive_field,
                device=self.device,
                channels_last=False,
                progress=self.progress,
            )
        self._run_channels(alpha, out, slice(3, 4), peak, self._alpha_model)

    @staticmethod
    def _run_channels(
        src: np.ndarray, out: np.ndarray, dest: slice, peak: float | None, runner: Upscaler
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

        runner._tiled(src, to_tensor, sink)

    # -- tiling -------------------------------------------------------------------------------

    def _tiled(
        self,
        src: np.ndarray,
        to_tensor: Callable[[np.ndarray], torch.Tensor],
        sink: Callable[[int, int, torch.Tensor], None],
    ) -> None:
        """Run the model over ``src`` (H x W x C array) tile by tile; ``to_tensor`` makes an
        H x W x 3 float tensor of a window, ``sink(row, col, y)`` receives each output core
        (1, 3, h, w) at its HR position. Halves the tile on out-of-memory and starts over."""
        h, w = src.shape[:2]
        tile = self._resolve_tile(h, w)
        while True:
            try:
                self._tiled_once(src, to_tensor, sink, tile)
                return
            except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not _is_oom(exc):
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
        bar = None
        if len(jobs) > 1 and self.progress is not False:
            from tqdm.auto import tqdm

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
            if bar is not None:
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


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------


def upscale_image(
    model: SRModel | Upscaler,
    image: np.ndarray,
    *,
    tile: int | str | None = "auto",
    overlap: int | str = "auto",
    precision: str = "fp32",
    device: str | torch.device | None = None,
    channels_last: bool = True,
    compile: bool = False,
    alpha: str = "bicubic",
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
        )
    return model(image)


def bundled_weights(name: str, scale: int) -> Path | None:
    """The path of a checkpoint shipped with the package (``weights/<name>_x<scale>.safetensors``),
    or None."""
    path = WEIGHTS_DIR / f"{name}_x{int(scale)}.safetensors"
    return path if path.is_file() else None


def default_model(scale: int = 4) -> SRModel:
    """The bundled default model for ``scale`` (``weights/default_x<scale>.safetensors``)."""
    from .checkpoint import load

    path = bundled_weights("default", scale)
    if path is None:
        raise CheckpointError(
            f"no bundled default weights for x{scale} in this installation ({WEIGHTS_DIR}). "
            "Pass --checkpoint PATH (a lightsr checkpoint, or the authors' file such as "
            "a2f_sd_x4.pt), or --model bicubic."
        )
    return load(path, expect_scale=scale)


def resolve_model(
    *,
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    scale: int | None = None,
) -> SRModel:
    """The model the CLI means: a checkpoint (ours or the authors', optionally checked against
    ``model``/``scale``), ``bicubic``, a bundled ``<model>_x<scale>`` file, or the default."""
    from .checkpoint import load_any

    if checkpoint is not None:
        if model is not None and model.lower() == "bicubic":
            raise LightSRError("--model bicubic takes no --checkpoint.")
        return load_any(checkpoint, expect_arch=model or None, expect_scale=scale or None)
    if model is not None:
        if model.lower() == "bicubic":
            return Bicubic(scale=scale or 4)
        from .registry import get_spec

        spec = get_spec(model)  # unknown names fail here, with suggestions
        path = bundled_weights(spec.name, scale or 4)
        default = bundled_weights("default", scale or 4)
        if path is None and default is not None:
            from .checkpoint import read_metadata

            # `--model a2f_sd` means the bundled weights when the default model is an A2F-SD
            if read_metadata(default)["arch"] == spec.name:
                path = default
        if path is not None:
            from .checkpoint import load

            return load(path, expect_scale=scale or 4)
        raise CheckpointError(
            f"--model {model} without --checkpoint would upscale with random weights. Pass "
            f"--checkpoint PATH with trained {spec.name} weights, or --model bicubic."
        )
    return default_model(scale or 4)


def output_path(
    src: Path, *, scale: int, out_dir: Path | None, suffix: str = ".png", overwrite: bool = False
) -> Path:
    """``<stem>_x<scale><suffix>`` in ``out_dir`` (or beside ``src``); when that exists and not
    ``overwrite``, ``<stem>_x<scale>_1<suffix>``, ``_2``, ... (never silently overwrites)."""
    folder = out_dir if out_dir is not None else src.parent
    path = folder / f"{src.stem}_x{scale}{suffix}"
    return path if overwrite else _unique(path)


def _unique(path: Path) -> Path:
    """``path``, or ``<stem>_1<suffix>``, ``_2``, ... when it exists."""
    k, candidate = 1, path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}_{k}{path.suffix}")
        k += 1
    return candidate


def expand_inputs(
    inputs: Iterable[str | os.PathLike],
    *,
    skip_outputs_of_scale: int | None = None,
    out_dir: Path | None = None,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files, folders (their files, not recursive, hidden ones skipped) and glob patterns ->
    (candidate image files, [(path, reason)] for things that are skipped).

    With ``skip_outputs_of_scale=s``, files found in a folder or by a glob whose stem ends in
    ``_x<s>`` or ``_x<s>_<n>`` are skipped when their output would go into their own folder
    (``out_dir`` None, or that folder): they are what an earlier run wrote there, and a second
    run over the folder would upscale its own results. Files named explicitly always run."""
    from .data.io import IMAGE_EXTENSIONS

    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    earlier = (
        re.compile(rf"_x{int(skip_outputs_of_scale)}(_\d+)?$")
        if skip_outputs_of_scale is not None
        else None
    )
    target = out_dir.resolve() if out_dir is not None else None

    def add_file(p: Path, *, explicit: bool) -> None:
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((p, f"not an image file (suffix {p.suffix or 'none'!r})"))
        elif (
            not explicit
            and earlier is not None
            and earlier.search(p.stem)
            and (target is None or target == p.parent.resolve())
        ):
            skipped.append(
                (
                    p,
                    f"looks like an earlier output (name ends in _x{skip_outputs_of_scale}) "
                    "written beside the inputs; name the file explicitly to upscale it",
                )
            )
        else:
            files.append(p)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for child in sorted(p.iterdir()):
                if child.is_file() and not child.name.startswith("."):
                    add_file(child, explicit=False)
        elif p.is_file():
            add_file(p, explicit=True)
        else:
            matches = sorted(glob.glob(str(item)))
            if not matches:
                skipped.append((p, "no such file, folder or glob match"))
            for m in matches:
                mp = Path(m)
                if mp.is_file():
                    add_file(mp, explicit=False)
    # the same file named twice (a folder and a glob) runs once
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, skipped


def upscale_files(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    model: SRModel | Upscaler,
    overwrite: bool = False,
    suffix: str = ".png",
    progress: bool | None = None,
    **options: Any,
) -> UpscaleReport:
    """Upscale image files, folders and globs; write ``<stem>_x<s>.png`` into ``out`` (a folder,
    created if needed; or a file name when there is exactly one input) or beside each input.

    Non-image files, and earlier outputs found in a folder or glob when writing beside the
    inputs (see :func:`expand_inputs`), are skipped with a warning; unreadable images and
    failed writes are reported; the run goes on and the returned :class:`UpscaleReport` lists
    both. An output folder that cannot be created raises :class:`LightSRError`. ``options`` go
    to :class:`Upscaler` (tile, overlap, precision, device, channels_last, compile, alpha).
    """
    from tqdm.auto import tqdm

    from .data.io import IMAGE_EXTENSIONS, read_image, write_image

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    runner = model if isinstance(model, Upscaler) else Upscaler(model, progress=progress, **options)
    out_path = Path(out) if out is not None else None
    single_target = (
        out_path is not None
        and out_path.suffix.lower() in IMAGE_EXTENSIONS
        and not out_path.is_dir()
    )
    files, skipped = expand_inputs(
        inputs,
        skip_outputs_of_scale=None if single_target else runner.scale,
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
    out_dir = None if single_target else out_path
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LightSRError(
                f"cannot create the output folder {str(out_dir)!r}: {exc.strerror or exc}. "
                "Pass a folder you can write to as -o."
            ) from None

    bar = tqdm(files, desc="images", unit="img", disable=True if progress is False else None)
    for src in bar:
        try:
            image = read_image(src)
        except (ImageReadError, OSError) as exc:
            reason = str(exc) if isinstance(exc, LightSRError) else f"cannot read: {exc}"
            report.failed.append((src, reason))
            warnings.warn(f"failed: {src}: {reason}", stacklevel=2)
            continue
        dst: Path | None = None
        try:
            result = runner(image)
            del image
            if single_target:
                dst = out_path if overwrite else _unique(out_path)
            else:
                dst = output_path(
                    src, scale=runner.scale, out_dir=out_dir, suffix=suffix, overwrite=overwrite
                )
            write_image(dst, result)
            del result
        except LightSRError as exc:
            report.failed.append((src, str(exc)))
            warnings.warn(f"failed: {src}: {exc}", stacklevel=2)
            continue
        except OSError as exc:  # an unwritable or full target: this file fails, the run goes on
            target = str(dst) if dst is not None else "the output"
            reason = f"cannot write {target!r}: {exc.strerror or exc}"
            report.failed.append((src, reason))
            warnings.warn(f"failed: {src}: {reason}", stacklevel=2)
            continue
        report.written.append((src, dst))
    return report


def print_report(report: UpscaleReport, *, file: Any = None) -> None:
    """Human summary: counts, then every skipped and failed file with its reason."""
    file = file or sys.stderr
    print(
        f"{len(report.written)} written, {len(report.skipped)} skipped, "
        f"{len(report.failed)} failed",
        file=file,
    )
    for path, reason in report.skipped:
        print(f"  skipped {path}: {reason}", file=file)
    for path, reason in report.failed:
        print(f"  failed  {path}: {reason}", file=file)


__all__ = [
    "Bicubic",
    "PRECISIONS",
    "ReceptiveField",
    "UpscaleReport",
    "Upscaler",
    "auto_tile_size",
    "available_memory",
    "bundled_weights",
    "cpu_has_native_bf16",
    "default_model",
    "expand_inputs",
    "output_convs",
    "output_path",
    "print_report",
    "receptive_field",
    "resolve_model",
    "upscale_files",
    "upscale_image",
]
