"""RCAN (Zhang et al., "Image Super-Resolution Using Very Deep Residual Channel Attention
Networks", ECCV 2018): the big baseline of the GGAS/CWSS paper.

Layout of the authors' EDSR-PyTorch-based code: frozen mean shift -> head conv3x3 3->C (F0)
-> 10 residual groups (RG) -> conv3x3 C->C -> long skip ``+ F0`` -> upsampler (as EDSR's:
x2/x4 one or two stages conv C->4C + PixelShuffle(2), x3 conv C->9C + PixelShuffle(3))
-> conv3x3 C->3 -> add mean. RG(x) = x + conv3x3(RCAB_20(...RCAB_1(x))). RCAB(x) = x +
CA(conv3x3(ReLU(conv3x3(x)))), CA(z) = z * sigmoid(conv1x1 C/16->C (ReLU(conv1x1 C->C/16
(avgpool(z))))), all convs with bias, residual scale 1.

Trainable parameters (x2/x3/x4): 15,444,643 / 15,629,283 / 15,592,355 (C = 64, reduction 16).

I/O: float RGB in [0, 1] -> float RGB in [0, 1], unclamped; the body sees
``rgb_range * x - rgb_range * mean`` (``rgb_range=255`` for the authors' released models).

Strategies: GGAS blocks are the 10 residual groups (the paper analyses RG outputs, Fig. 1),
GA from F0; CWSS residual units are all 200 RCABs and the 10 RGs' short skips (210 x 64 =
13,440 alphas); the long skip around the body is not a unit.
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

_PAPER = "RCAN (Zhang et al., ECCV 2018)"


class ChannelAttention(nn.Module):
    """z * sigmoid(conv1x1(ReLU(conv1x1(global average pool(z))))), C -> C/r -> C."""

    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(channels, channels // reduction, 1)
        self.excite = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = z.mean(dim=(2, 3), keepdim=True)
        return z * torch.sigmoid(self.excite(torch.relu(self.squeeze(y))))


class RCAB(nn.Module):
    """Residual channel attention block: y = skip(x) + CA(conv(ReLU(conv(x))))."""

    def __init__(self, channels: int, *, skip: nn.Module, reduction: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv2d(channels, channels, 3),
            nn.ReLU(inplace=True),
            conv2d(channels, channels, 3),
            ChannelAttention(channels, reduction=reduction),
        )
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity, inp = self.skip(x)
        return identity + self.body(inp)


class ResidualGroup(nn.Module):
    """n RCABs then conv3x3, with the group's short skip: y = skip(x) + conv(RCABs(x))."""

    def __init__(
        self,
        channels: int,
        *,
        n_blocks: int,
        make_skip: Callable[[], nn.Module],
        reduction: int = 16,
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(RCAB(channels, skip=make_skip(), reduction=reduction) for _ in range(n_blocks)),
            conv2d(channels, channels, 3),
        )
        self.skip = make_skip()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity, inp = self.skip(x)
        return identity + self.body(inp)


class RCAN(SRModel):
    """RCAN; see the module docstring."""

    #: Channel attention pools over the whole input: tiles see their own statistics.
    tile_exact = False

    def __init__(
        self,
        *,
        scale: int,
        channels: int = 64,
        n_groups: int = 10,
        n_blocks: int = 20,
        reduction: int = 16,
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
            ResidualGroup(channels, n_blocks=n_blocks, make_skip=make_skip, reduction=reduction)
            for _ in range(n_groups)
        )
        self.global_attention = opts.global_attention(channels, n_blocks=n_groups)
        self.body_conv = conv2d(channels, channels, 3)
        self.upsampler = PixelShuffleUpsampler(channels, scale=scale)
        self.tail = conv2d(channels, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        f0 = self.head(self.sub_mean(x * self.rgb_range))
        h = f0
        maps = attention_maps(self.global_attention, f0, len(self.blocks))
        for group, ga in zip(self.blocks, maps):
            h = gate(group(h), ga)
        h = self.body_conv(h) + f0
        return self.add_mean(self.tail(self.upsampler(h))) / self.rgb_range


@register_model("rcan", paper=_PAPER)
def rcan(*, scale: int, rgb_range: float = 1.0, **strategies: Any) -> RCAN:
    """RCAN: C=64, 10 residual groups x 20 RCABs (15.6M params at x4); GGAS/CWSS options."""
    opts = StrategyOptions.from_options("rcan", strategies, own_options=("rgb_range",))
    return RCAN(scale=scale, rgb_range=rgb_range, strategies=opts)
