"""GGAS: global-guided attention strategy (Du et al., "Two strategies toward lightweight image
super-resolution", section 2.2).

One global attention block (GAB) reads the shallow feature F0 (the output of the baseline's
shallow feature extraction) and gives a map GA of shape (N, C, H, W) with values in (0, 1);
every backbone block's output is multiplied by it: F_i = H_Bi(F_{i-1}) * GA (eq. 3).

GAB(F0) = sigmoid(conv1x1 C->C (ReLU(BN(depthwise conv KxK (F0))))), K = 7, pad K // 2.
Parameters at training: (K^2 + 1)C + 2C + C^2 + C = C^2 + 53C for K = 7 (7,488 at C = 64,
eq. 5); after folding the BN into the depthwise conv, C^2 + 51C (eq. 6).

Choices where the paper leaves room (each is an option of every baseline builder):

- ``ggas_per_block`` (default False): one GA shared by all blocks, as eq. 2-3 write it; True
  gives each block its own GAB (all reading F0), n_blocks times the parameters.
- ``ggas_kernel_size`` (default 7, the paper's value).
- Which feature is F0 and what the blocks are is declared by each baseline (see its docstring).

How a baseline uses it (no subclassing; the baseline only says where F0 and its blocks are)::

    self.global_attention = strategies.global_attention(channels, n_blocks=len(self.blocks))
    ...
    maps = attention_maps(self.global_attention, f0, len(self.blocks))
    for block, ga in zip(self.blocks, maps):
        h = gate(block(h), ga)
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.rep import conv_from, fold_bn_after


class GlobalAttentionBlock(nn.Module):
    """GAB: F0 (N, C, H, W) -> attention map in (0, 1), same shape.

    Training form: depthwise conv -> BatchNorm -> ReLU -> 1x1 conv -> sigmoid.
    :meth:`fuse` returns the inference form (``folded=True``): BN folded into the depthwise
    conv, ``norm`` an identity; it computes the same function as the eval-mode training form.
    """

    def __init__(self, channels: int, *, kernel_size: int = 7, folded: bool = False) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"GGAS kernel size must be odd and positive, got {kernel_size!r}")
        self.channels = int(channels)
        self.kernel_size = int(kernel_size)
        self.depthwise = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels
        )
        self.norm: nn.Module = nn.Identity() if folded else nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1)

    @property
    def folded(self) -> bool:
        return isinstance(self.norm, nn.Identity)

    def forward(self, f0: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.pointwise(torch.relu(self.norm(self.depthwise(f0)))))

    @torch.no_grad()
    def fuse(self) -> GlobalAttentionBlock:
        if self.folded:
            return self
        assert isinstance(self.norm, nn.BatchNorm2d)
        weight, bias = fold_bn_after(self.depthwise.weight, self.depthwise.bias, self.norm)
        fused = GlobalAttentionBlock(self.channels, kernel_size=self.kernel_size, folded=True)
        fused.depthwise = conv_from(
            weight, bias, padding=self.kernel_size // 2, groups=self.channels
        )
        fused.pointwise.load_state_dict(self.pointwise.state_dict())
        return fused.to(self.pointwise.weight.device, self.pointwise.weight.dtype)


class GlobalGuidance(nn.Module):
    """The GAB(s) of one model: ``forward(f0)`` returns one map per block (a list of length
    ``n_blocks``; the same tensor repeated unless ``per_block``)."""

    def __init__(
        self, channels: int, *, n_blocks: int, per_block: bool = False, kernel_size: int = 7
    ) -> None:
        super().__init__()
        self.n_blocks = int(n_blocks)
        self.per_block = bool(per_block)
        count = self.n_blocks if self.per_block else 1
        self.blocks = nn.ModuleList(
            GlobalAttentionBlock(channels, kernel_size=kernel_size) for _ in range(count)
        )

    def forward(self, f0: torch.Tensor) -> list[torch.Tensor]:
        if not self.per_block:
            return [self.blocks[0](f0)] * self.n_blocks
        return [gab(f0) for gab in self.blocks]


def build(
    channels: int, *, n_blocks: int, enabled: bool, per_block: bool = False, kernel_size: int = 7
) -> GlobalGuidance | None:
    """The GGAS module for a backbone of ``n_blocks`` blocks of width ``channels``, or None
    when the strategy is off (so a plain baseline holds no trace of it)."""
    if not enabled:
        return None
    return GlobalGuidance(channels, n_blocks=n_blocks, per_block=per_block, kernel_size=kernel_size)


def attention_maps(
    guidance: GlobalGuidance | None, f0: torch.Tensor, n_blocks: int
) -> list[torch.Tensor | None]:
    """One attention map per block (``None`` entries when GGAS is off)."""
    if guidance is None:
        return [None] * n_blocks
    maps = guidance(f0)
    if len(maps) != n_blocks:
        raise RuntimeError(f"GGAS was built for {len(maps)} blocks, the backbone has {n_blocks}")
    return maps


def gate(x: torch.Tensor, ga: torch.Tensor | None) -> torch.Tensor:
    """A block's output times its attention map (unchanged when GGAS is off)."""
    return x if ga is None else x * ga


__all__ = ["GlobalAttentionBlock", "GlobalGuidance", "attention_maps", "build", "gate"]
