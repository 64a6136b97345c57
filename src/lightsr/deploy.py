"""Re-parameterisation: fold a trained model into its inference form.

One verb: every fusable block has a ``fuse()`` method that returns its inference-form
replacement (``WNConv2d`` -> ``Conv2d``; FMEN's RRRB -> one 3x3 conv; BatchNorms into convs).
:func:`reparameterize` walks the model bottom-up, so a block's ``fuse()`` sees its children
already fused. Nothing is ever fused inside ``forward()``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import nn

from .models.base import SRModel
from .probe import output_convs  # the convs that produce image values

_M = TypeVar("_M", bound=nn.Module)


def _fuse_tree(module: nn.Module) -> nn.Module:
    for name, child in list(module.named_children()):
        fused = _fuse_tree(child)
        if fused is not child:
            setattr(module, name, fused)
    fuse = getattr(module, "fuse", None)
    if callable(fuse) and not isinstance(module, SRModel):
        return fuse()
    return module


@torch.no_grad()
def reparameterize(model: _M, *, inplace: bool = False) -> _M:
    """Return the inference form of ``model`` (a copy unless ``inplace``), in eval mode.

    The folded model computes the same function as ``model.eval()`` up to float rounding;
    BatchNorm statistics are folded as they stand, so fold only a trained model.
    """
    if getattr(model, "folded", False):
        return model if inplace else copy.deepcopy(model)
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    _fuse_tree(target)
    fuse_root = getattr(target, "fuse_root", None)
    if callable(fuse_root):
        fuse_root()
    # nn.Module.__setattr__ is typed for Tensor/Module values; any value works
    target.folded = True  # type: ignore[assignment]
    return target.eval()


# ---------------------------------------------------------------------------------------------
# Channel padding: kernel-friendly widths, same function
# ---------------------------------------------------------------------------------------------


@dataclass
class PaddingReport:
    """What :func:`pad_channels` did: ``widened`` maps old -> new widths; ``reason`` says why
    nothing was done (empty when the model was padded)."""

    widened: dict[int, int] = field(default_factory=dict)
    convs: int = 0
    max_abs_diff: float = 0.0
    reason: str = ""


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _padded_conv(conv: nn.Conv2d, in_to: int, out_to: int) -> nn.Conv2d:
    """``conv`` with zero filters appended up to ``out_to`` outputs and zero weights for the
    inputs past its ``in_channels`` up to ``in_to`` (depthwise convs grow their groups)."""
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    groups = out_to if depthwise else 1
    # torch types conv geometry as tuple[int, ...]; a Conv2d's is a pair, as Conv2d() wants
    new = nn.Conv2d(
        in_to,
        out_to,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        o, i = conv.weight.shape[:2]
        new.weight[:o, :i] = conv.weight
        if conv.bias is not None and new.bias is not None:
            new.bias.zero_()
            new.bias[:o] = conv.bias
    return new.requires_grad_(conv.weight.requires_grad)


@torch.no_grad()
def pad_channels(
    model: SRModel, *, multiple: int = 16, below: int | None = None, tolerance: float = 1e-5
) -> tuple[SRModel, PaddingReport]:
    """A copy of the folded ``model`` whose inner feature widths are rounded up to ``multiple``
    with zero filters, and a :class:`PaddingReport`.

    Why: oneDNN's AVX-512 convolutions work on blocks of 16 channels, and narrow widths (MAFFSRN's
    8) fall back to slow reference kernels (``benchmarks/bench_upscale.py`` times the
    ``Upscaler``'s ``below=16`` padding against none). ``below`` leaves wider widths alone: their
    extra FLOPs can cost more than the better blocking saves. The added channels carry
    values that every consumer multiplies by zero weights, so the function is unchanged: the
    image side of the model (3-channel inputs, the convs feeding a pixel shuffle or the output)
    keeps its widths, and the result is checked against the original on a random input. A
    model whose widths are already multiples, that has per-channel parameters outside its
    convs, or whose padded form does not reproduce the original within ``tolerance`` (channel
    splits, concatenations at fixed offsets) is returned unchanged, with the reason.
    """
    original = model if getattr(model, "folded", False) else reparameterize(model)
    report = PaddingReport()
    padded = copy.deepcopy(original)
    keep_out = {id(c) for c in output_convs(padded)}

    def widen(w: int) -> int:
        if w == 3 or w % multiple == 0 or (below is not None and w >= below):
            return w
        return _round_up(w, multiple)

    plan: list[tuple[nn.Module, str, nn.Conv2d, int, int]] = []
    for parent in list(padded.modules()):
        for name, conv in list(parent.named_children()):
            if not isinstance(conv, nn.Conv2d):
                continue
            depthwise = conv.groups == conv.in_channels == conv.out_channels
            in_to = widen(conv.in_channels)
            out_to = conv.out_channels if id(conv) in keep_out else widen(conv.out_channels)
            if conv.groups > 1 and depthwise:
                in_to = out_to = widen(conv.out_channels)
            if (in_to, out_to) == (conv.in_channels, conv.out_channels):
                continue
            if conv.groups > 1 and not depthwise:
                report.reason = f"grouped conv {name} ({conv.groups} groups) cannot be padded"
                return original, report
            plan.append((parent, name, conv, in_to, out_to))
            for a, b in ((conv.in_channels, in_to), (conv.out_channels, out_to)):
                if a != b:
                    report.widened[a] = b
    if not plan:
        report.reason = f"every feature width is already a multiple of {multiple}"
        return original, report
    for m in padded.modules():
        if isinstance(m, nn.Conv2d):
            continue
        for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)):
            if any(d in report.widened for d in t.shape):
                report.reason = (
                    f"{type(m).__name__} holds a tensor of shape {tuple(t.shape)} outside a "
                    "conv, sized by a width that would be padded"
                )
                return original, PaddingReport(reason=report.reason)
    for parent, name, conv, in_to, out_to in plan:
        setattr(parent, name, _padded_conv(conv, in_to, out_to))
        report.convs += 1

    n = max(16, int(getattr(original, "min_input_size", 1)))
    device = next(original.parameters()).device
    x = torch.rand(2, 3, n, n + 3, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        diff = float((padded.eval()(x) - original.eval()(x)).abs().max())
    except Exception as exc:  # noqa: BLE001 - a width used at a fixed place (split, view) broke
        report.reason = f"the padded model does not run ({str(exc).splitlines()[0]})"
        return original, PaddingReport(reason=report.reason)
    if not diff <= tolerance:
        return original, PaddingReport(
            max_abs_diff=diff, reason=f"the padded model differs by {diff:.2e} > {tolerance:.0e}"
        )
    report.max_abs_diff = diff
    padded.folded = True
    return padded, report
