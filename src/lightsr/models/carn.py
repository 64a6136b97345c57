"""CARN (Ahn et al., "Fast, Accurate, and Lightweight Super-Resolution with Cascading Residual
Network", ECCV 2018), single-scale, a baseline of the GGAS/CWSS paper.

Layout of the authors' ``carn.py`` with one upsampler (the released model is multi-scale with
one upsampler per scale; the paper trains single-scale): frozen mean shift -> entry conv3x3
3->C (F0) -> global cascade of 3 blocks -> upsampler (x2/x4: one or two stages of conv3x3
C->4C, ReLU, PixelShuffle(2); x3: conv3x3 C->9C, ReLU, PixelShuffle(3)) -> exit conv3x3 C->3
-> add mean. Cascade (both levels): ``c0 = o0 = x; b_i = unit_i(o_{i-1}); c_i = cat(c_{i-1},
b_i); o_i = ReLU(conv1x1 (i+1)C->C (c_i))``, output o_3. Inside a block the units are residual
blocks ``ReLU(x + conv3x3(ReLU(conv3x3(x))))``; at network level the units are the blocks.
No global skip.

Trainable parameters (x2/x3/x4): 964,163 / 1,148,803 / 1,111,875 (C = 64); the paper's
Table 2 says 1112K at x4. The mean shift (DIV2K mean, [0, 1] input as in the authors' code)
is a non-persistent buffer.

I/O: float RGB in [0, 1] -> float RGB in [0, 1], unclamped.

Strategies: GGAS blocks are the 3 cascading blocks (the paper's "CARB", Fig. 1): each block's
output is multiplied by GA (from the entry conv output F0) before it enters the cascade.
CWSS residual units are the 9 residual blocks: ``ReLU(alpha * x + F(x))``
(9 x 64 = 576 alphas).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..layers.common import MeanShift, PixelShuffleUpsampler, conv2d
from ..registry import register_model
from ..strategies import StrategyOptions
from ..strategies.ggas import attention_maps, gate
from .base import SRModel

_PAPER = "CARN (Ahn et al., ECCV 2018)"


class ResidualBlock(nn.Module):
    """CARN's residual block: ReLU(skip(x) + conv3x3(ReLU(conv3x3(x))))."""

    def __init__(self, channels: int, *, skip: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv2d(channels, channels, 3), nn.ReLU(inplace=True), conv2d(channels, channels, 3)
        )
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity, inp = self.skip(x)
        return torch.relu(identity + self.body(inp))


class _Fusion(nn.Sequential):
    """The cascade's 1x1 conv + ReLU on the concatenation of everything so far."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True))


class CascadingBlock(nn.Module):
    """Three residual blocks in a local cascade (see the module docstring)."""

    def __init__(self, channels: int, *, make_skip: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.units = nn.ModuleList(ResidualBlock(channels, skip=make_skip()) for _ in range(3))
        self.fusions = nn.ModuleList(_Fusion(channels * (i + 2), channels) for i in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cat, out = x, x
        for unit, fusion in zip(self.units, self.fusions):
            cat = torch.cat([cat, unit(out)], dim=1)
            out = fusion(cat)
        return out


class CARN(SRModel):
    """CARN (single scale); see the module docstring."""

    def __init__(
        self, *, scale: int, channels: int = 64, strategies: StrategyOptions | None = None
    ) -> None:
        super().__init__(scale=scale)
        opts = strategies or StrategyOptions()
        self.sub_mean = MeanShift(sign=-1)
        self.add_mean = MeanShift(sign=1)
        self.entry = conv2d(3, channels, 3)
        make_skip = opts.identity_factory(channels)
        self.blocks = nn.ModuleList(CascadingBlock(channels, make_skip=make_skip) for _ in range(3))
        self.fusions = nn.ModuleList(_Fusion(channels * (i + 2), channels) for i in range(3))
        self.global_attention = opts.global_attention(channels, n_blocks=3)
        self.upsampler = PixelShuffleUpsampler(channels, scale=scale, relu=True)
        self.exit = conv2d(channels, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        f0 = self.entry(self.sub_mean(x))
        cat, out = f0, f0
        maps = attention_maps(self.global_attention, f0, len(self.blocks))
        for block, fusion, ga in zip(self.blocks, self.fusions, maps):
            cat = torch.cat([cat, gate(block(out), ga)], dim=1)
            out = fusion(cat)
        return self.add_mean(self.exit(self.upsampler(out)))


@register_model("carn", paper=_PAPER, receptive_field=21)
def carn(*, scale: int, **strategies: Any) -> CARN:
    """CARN (single scale): C=64, 3 cascading blocks (1.11M params at x4); GGAS/CWSS options."""
    return CARN(scale=scale, strategies=StrategyOptions.from_options("carn", strategies))
