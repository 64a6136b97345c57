"""EDSR-baseline (Lim et al., "Enhanced Deep Residual Networks for Single Image
Super-Resolution", CVPRW 2017), a baseline of the GGAS/CWSS paper.

Layout of EDSR-PyTorch's ``edsr.py`` with the baseline settings (C = 64, 16 residual blocks,
residual scale 1, no BN): frozen mean shift -> head conv3x3 3->C (F0) -> 16 ResBlocks
(conv-ReLU-conv, ``y = x + F(x)``) -> conv3x3 C->C (the conv after the blocks, which the
authors' code has) -> long skip ``+ F0`` -> upsampler (x2/x4: one or two stages of conv
C->4C + PixelShuffle(2); x3: conv C->9C + PixelShuffle(3); no activation) -> conv3x3 C->3
-> add mean.

Trainable parameters (x2/x3/x4): 1,369,859 / 1,554,499 / 1,517,571; the paper's Table 2 says
1518K at x4. The mean shift is a non-persistent buffer, not a parameter.

I/O: float RGB in [0, 1] -> float RGB in [0, 1], unclamped. The network body sees
``rgb_range * x - rgb_range * mean``; ``rgb_range=255`` reproduces EDSR-PyTorch's released
models, 1 (default) the [0, 1] framework the GGAS/CWSS paper trains in.

Strategies: the 16 ResBlocks are both the GGAS blocks (each output times GA, GA from the head
output F0) and the CWSS residual units (16 x 64 = 1,024 alphas). The long skip is not a unit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layers.common import MeanShift, PixelShuffleUpsampler, conv2d
from ..registry import register_model
from ..strategies import StrategyOptions
from ..strategies.ggas import attention_maps, gate
from .base import SRModel

_PAPER = "EDSR (Lim et al., CVPRW 2017)"


class ResBlock(nn.Module):
    """conv3x3-ReLU-conv3x3 with identity skip: y = skip(x) + res_scale * F(x)."""

    def __init__(self, channels: int, *, skip: nn.Module, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv2d(channels, channels, 3), nn.ReLU(inplace=True), conv2d(channels, channels, 3)
        )
        self.skip = skip
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity, inp = self.skip(x)
        res = self.body(inp)
        return identity + (res if self.res_scale == 1.0 else res * self.res_scale)


class EDSR(SRModel):
    """EDSR (baseline settings by default); see the module docstring."""

    def __init__(
        self,
        *,
        scale: int,
        channels: int = 64,
        n_blocks: int = 16,
        res_scale: float = 1.0,
        rgb_range: float = 1.0,
        strategies: StrategyOptions | None = None,
    ) -> None:
        super().__init__(scale=scale)
        opts = strategies or StrategyOptions()
        self.rgb_range = float(rgb_range)
        self.sub_mean = MeanShift(sign=-1, rgb_range=rgb_range)
        self.add_mean = MeanShift(sign=1, rgb_range=rgb_range)
        self.head = conv2d(3, channels, 3)
        make_skip = opts.identity_factory(channels)
        self.blocks = nn.ModuleList(
            ResBlock(channels, skip=make_skip(), res_scale=res_scale) for _ in range(n_blocks)
        )
        self.global_attention = opts.global_attention(channels, n_blocks=n_blocks)
        self.body_conv = conv2d(channels, channels, 3)
        self.upsampler = PixelShuffleUpsampler(channels, scale=scale)
        self.tail = conv2d(channels, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        f0 = self.head(self.sub_mean(x * self.rgb_range))
        h = f0
        maps = attention_maps(self.global_attention, f0, len(self.blocks))
        for block, ga in zip(self.blocks, maps):
            h = gate(block(h), ga)
        h = self.body_conv(h) + f0
        return self.add_mean(self.tail(self.upsampler(h))) / self.rgb_range


@register_model("edsr_baseline", paper=_PAPER, receptive_field=36)
def edsr_baseline(*, scale: int, rgb_range: float = 1.0, **strategies: Any) -> EDSR:
    """EDSR-baseline: C=64, 16 residual blocks (1.52M params at x4); GGAS/CWSS options."""
    opts = StrategyOptions.from_options("edsr_baseline", strategies, own_options=("rgb_range",))
    return EDSR(scale=scale, rgb_range=rgb_range, strategies=opts)
