"""Re-parameterisation primitives: pure functions on (weight, bias) pairs.

All kernels are in PyTorch's layout (out, in, kh, kw). Used by the ``fuse()`` methods of
FMEN's RRRB/HFAB and GGAS's attention block.
"""

from __future__ import annotations

import torch
from torch import nn


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = scale * x + shift, per channel."""
    assert bn.running_var is not None and bn.running_mean is not None  # track_running_stats
    std = torch.sqrt(bn.running_var + bn.eps)
    weight = bn.weight if bn.affine else torch.ones_like(std)
    bias = bn.bias if bn.affine else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - bn.running_mean * scale


def fold_bn_after(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``bn(conv(x))`` into one conv: scales the conv's output channels."""
    scale, shift = bn_affine(bn)
    bias = torch.zeros_like(scale) if bias is None else bias
    return weight * scale.view(-1, 1, 1, 1), bias * scale + shift


def fold_bn_before(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``conv(bn(x))`` into one conv.

    Exact only where the conv's padding equals BN's shift (the padding value BN maps zero to),
    as in FMEN's HFAB, or where the conv pads nothing.
    """
    scale, shift = bn_affine(bn)
    bias = (
        torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        if bias is None
        else bias
    )
    new_weight = weight * scale.view(1, -1, 1, 1)
    new_bias = bias + (weight.sum(dim=(2, 3)) * shift.view(1, -1)).sum(dim=1)
    return new_weight, new_bias


def fold_bn_depthwise(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``bn(depthwise_conv(x))``; same as :func:`fold_bn_after` (one out channel per group)."""
    return fold_bn_after(weight, bias, bn)


def conv_from(
    weight: torch.Tensor, bias: torch.Tensor | None, *, padding: int, groups: int = 1
) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` holding ``weight`` and ``bias``."""
    out_c, in_per_group, kh, kw = weight.shape
    conv = nn.Conv2d(
        in_per_group * groups,
        out_c,
        (kh, kw),
        padding=padding,
        groups=groups,
        bias=bias is not None,
    ).to(weight.device, weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None and conv.bias is not None:
            conv.bias.copy_(bias)
    return conv


def fold_expand_conv_reduce(
    expand_w: torch.Tensor,
    expand_b: torch.Tensor,
    conv_w: torch.Tensor,
    conv_b: torch.Tensor,
    reduce_w: torch.Tensor,
    reduce_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold FMEN's RRRB into one k x k conv (k odd, padding k // 2 with zeros).

    The chain is ``e = expand(x)`` (1x1, n -> m); ``f = conv(pad_{expand_b}(e)) + e`` (k x k,
    m -> m, no zero padding: the border holds ``expand_b``, which is what ``expand`` gives for a
    zero-padded ``x``); ``out = reduce(f) + x`` (1x1, m -> n). Both identities go on the
    kernel centre; the expand bias passes through ``conv`` as ``sum(conv_w * expand_b)``.
    """
    e_w = expand_w.flatten(1)  # (m, n)
    k = conv_w.shape[-1]
    c = k // 2
    w1 = torch.einsum("omhw,mi->oihw", conv_w, e_w)
    w1[:, :, c, c] += e_w
    b1 = conv_b + (conv_w.sum(dim=(2, 3)) * expand_b.view(1, -1)).sum(dim=1) + expand_b
    r_w = reduce_w.flatten(1)  # (n, m)
    w2 = torch.einsum("om,mihw->oihw", r_w, w1)
    n = w2.shape[0]
    eye = torch.eye(n, dtype=w2.dtype, device=w2.device)
    w2[:, :, c, c] += eye
    b2 = r_w @ b1 + reduce_b
    return w2, b2
