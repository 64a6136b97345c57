"""MemNet (Tai et al., "MemNet: A Persistent Memory Network for Image Restoration", ICCV 2017),
a baseline of the GGAS/CWSS paper, with a pixel-shuffle reconstruction (the paper works on
a pre-upsampled image).

Layout (C = 64, M = 6 memory blocks, R = 6 recursions): head conv3x3 3->C with bias (F0) ->
memory blocks -> ReLU -> conv3x3 C->3s^2 + PixelShuffle(s) -> ``+ bicubic(x)`` (MemNet's
global image residual). Memory block m (1-based): a recursive unit, ONE residual building
block ``x + conv(BN-ReLU(conv(BN-ReLU(x))))`` (bias-free 3x3 convs, pre-activation) applied R
times with shared weights, giving R short-term states; then the gate unit, BN-ReLU-conv1x1
(bias-free) from the concatenation of the long-term memory (F0 and the outputs of blocks
1..m-1) and the R short-term states, (m + R)C -> C channels. No multi-supervision.

Trainable parameters (x2/x3/x4): 693,388 / 702,043 / 714,160 (BN affine weights count; their
running statistics are buffers); the paper's Table 2 says 714K at x4. The counts fix: BN in
the memory blocks, bias-free convs there, a head conv with bias and no BN, no BN before the
reconstruction conv. The ReLU before the reconstruction conv and the bicubic skip are our
reconstruction (no public code of this variant is known).

I/O: float RGB in [0, 1] -> float RGB in [0, 1], unclamped; no mean shift.

Strategies: GGAS blocks are the 6 memory blocks (each gate-unit output times GA from the head
output F0; the gated output is what enters the long-term memory). CWSS residual units are
the 6 recursive units: one alpha per memory block, shared by its R recursions as their
weights are (6 x 64 = 384 alphas).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layers.common import BicubicUpsample, ConvPixelShuffle, conv2d
from ..registry import register_model
from ..strategies import StrategyOptions
from ..strategies.ggas import attention_maps, gate
from .base import SRModel

_PAPER = "MemNet (Tai et al., ICCV 2017)"


class BNReLUConv(nn.Sequential):
    """Pre-activation conv: BatchNorm -> ReLU -> bias-free conv (same padding)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            conv2d(in_channels, out_channels, kernel_size, bias=False),
        )


class MemoryBlock(nn.Module):
    """Recursive unit (one shared residual block, ``recursions`` times) + gate unit.

    ``forward(x, memory)`` returns the gate output; ``memory`` is the list of long-term states.
    """

    def __init__(self, channels: int, *, n_memories: int, recursions: int, skip: nn.Module) -> None:
        super().__init__()
        self.recursions = int(recursions)
        self.residual = nn.Sequential(
            BNReLUConv(channels, channels), BNReLUConv(channels, channels)
        )
        self.skip = skip
        self.gate_unit = BNReLUConv((n_memories + recursions) * channels, channels, 1)

    def forward(self, x: torch.Tensor, memory: list[torch.Tensor]) -> torch.Tensor:
        short_term = []
        for _ in range(self.recursions):
            identity, inp = self.skip(x)
            x = identity + self.residual(inp)
            short_term.append(x)
        return self.gate_unit(torch.cat([*memory, *short_term], dim=1))


class MemNet(SRModel):
    """MemNet with a pixel-shuffle reconstruction; see the module docstring."""

    def __init__(
        self,
        *,
        scale: int,
        channels: int = 64,
        n_blocks: int = 6,
        recursions: int = 6,
        strategies: StrategyOptions | None = None,
    ) -> None:
        super().__init__(scale=scale)
        opts = strategies or StrategyOptions()
        self.head = conv2d(3, channels, 3)
        make_skip = opts.identity_factory(channels)
        self.blocks = nn.ModuleList(
            MemoryBlock(channels, n_memories=m + 1, recursions=recursions, skip=make_skip())
            for m in range(n_blocks)
        )
        self.global_attention = opts.global_attention(channels, n_blocks=n_blocks)
        self.upsampler = nn.Sequential(nn.ReLU(), ConvPixelShuffle(channels, 3, scale=scale))
        self.image_upsample = BicubicUpsample(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        f0 = self.head(x)
        h, memory = f0, [f0]
        maps = attention_maps(self.global_attention, f0, len(self.blocks))
        for block, ga in zip(self.blocks, maps):
            h = gate(block(h, memory), ga)
            memory.append(h)
        return self.upsampler(h) + self.image_upsample(x)


@register_model("memnet", paper=_PAPER, tile_exact=False)
def memnet(*, scale: int, **strategies: Any) -> MemNet:
    """MemNet (pixel-shuffle upsampler): C=64, 6 memory blocks x 6 recursions (714K at x4)."""
    return MemNet(scale=scale, strategies=StrategyOptions.from_options("memnet", strategies))
