"""Measuring a model by running it: receptive field, the convolutions that produce image values,
working memory per pixel.

These probes serve the inference wrapper (:mod:`lightsr.upscale`) and the deploy forms
(:mod:`lightsr.deploy`). Where a model declares a property exactly (``SRModel.receptive_field``,
``SRModel.tile_exact``), the declaration is used and the probe only checks it (in the tests).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .models.base import SRModel

# Receptive-field probe: an LR input of 2 * _RF_LIMIT + 1 pixels; a support that reaches the
# probe's edge means a global operation (or a field wider than the limit).
_RF_LIMIT = 40
#: Overlap for models with global operations: their tiles cannot match untiled inference
#: exactly; 24 LR pixels of context keep the deviation small (A2F-SD: see
#: tests/test_upscale.py) at a tile cost of (1 + 48 / tile)^2.
GLOBAL_OVERLAP = 24


@dataclass(frozen=True)
class ReceptiveField:
    """Radius (LR pixels) of the input that influences one output pixel. ``is_global`` when the
    influence reaches beyond 40 pixels (global pooling, or a very deep or downsampling network):
    ``radius`` is then the default overlap for such models (24), not a bound."""

    radius: int
    is_global: bool


def receptive_field(model: SRModel) -> ReceptiveField:
    """The receptive field of ``model``: its declaration (:attr:`SRModel.receptive_field` and
    :attr:`SRModel.tile_exact`, exact and free) where it has one, else
    :func:`probe_receptive_field` (cached on the model)."""
    declared = getattr(model, "receptive_field", None)
    if isinstance(declared, int):
        return ReceptiveField(declared, False)
    if getattr(model, "tile_exact", True) is False:
        return ReceptiveField(GLOBAL_OVERLAP, True)
    cached = getattr(model, "_lightsr_receptive_field", None)
    if isinstance(cached, ReceptiveField):
        return cached
    result = probe_receptive_field(model)
    with contextlib.suppress(AttributeError, TypeError):
        # nn.Module.__setattr__ is typed for Tensor/Module values; any value works
        model._lightsr_receptive_field = result  # type: ignore[assignment]
    return result


def probe_receptive_field(model: SRModel, *, limit: int = _RF_LIMIT) -> ReceptiveField:
    """Measure the receptive field of ``model`` from the support of an input gradient.

    The model runs on a (2 ``limit`` + 1)^2 LR probe (81 x 81); the gradient of the centre
    pixel's s x s output block is non-zero exactly on the inputs it depends on (barring exact
    cancellation). A support reaching the probe's edge is reported as global. Ignores any
    declaration: the tests check declarations against it (with a smaller ``limit``, cheaper).
    """
    probe = copy.deepcopy(model).cpu().float().eval()
    for p in probe.parameters():
        p.requires_grad_(False)
    n = 2 * limit + 1
    s = int(model.scale)
    x = torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    with torch.enable_grad():
        y = probe(x)
        c = limit
        y[..., c * s : (c + 1) * s, c * s : (c + 1) * s].sum().backward()
    assert x.grad is not None  # set by backward(): x requires grad
    g = x.grad.abs().sum(dim=(0, 1))
    support = _chebyshev(n, c)[g > 0]
    radius = int(support.max()) if support.numel() else 0
    if radius < limit:
        return ReceptiveField(radius, False)
    return ReceptiveField(GLOBAL_OVERLAP, True)


def _chebyshev(n: int, c: int) -> torch.Tensor:
    r = (torch.arange(n) - c).abs()
    return torch.maximum(r[:, None], r[None, :])


def bytes_per_lr_pixel(model: SRModel, element_bytes: int) -> float:
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
        # nn.Module.__setattr__ is typed for Tensor/Module values; any value works
        model._lightsr_bytes_per_px = per_px  # type: ignore[assignment]
    return per_px * element_bytes


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


__all__ = [
    "GLOBAL_OVERLAP",
    "ReceptiveField",
    "bytes_per_lr_pixel",
    "output_convs",
    "probe_receptive_field",
    "receptive_field",
]
