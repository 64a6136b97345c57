"""IDN (Hui et al., "Fast and Accurate Single Image Super-Resolution via Information
Distillation Network", CVPR 2018), a baseline of the GGAS/CWSS paper, with a pixel-shuffle
reconstruction instead of the paper's 17x17 transposed conv.

Layout (C = 64, d = 16, groups s = 4, LeakyReLU slope 0.05 after every conv except the
1x1 compression and the upsampling conv): FBlock = conv3x3 3->C, LReLU, conv3x3 C->C, LReLU (F0) ->
4 DBlocks -> conv3x3 C->C, LReLU -> conv3x3 C->3s^2 + PixelShuffle(s) -> ``+ bicubic(x)``
(IDN's image-level residual).
DBlock(x) = compression conv1x1 (C+d)->C of the enhancement unit:
p = upper(x) with upper = conv3x3 C->C-d, conv3x3 C-d->C-2d (4 groups), conv3x3 C-2d->C;
its first C-d channels go through lower = conv3x3 C-d->C, conv3x3 C->C-d (4 groups),
conv3x3 C-d->C+d, and ``lower(p[:, :C-d]) + cat(x, p[:, C-d:])`` is the unit's output.

Trainable parameters (x2/x3/x4): 579,276 / 587,931 / 600,048; the paper's Table 2 says 600K
at x4. The counts fix the layer shapes, including one conv3x3 C->C before the upsampling conv
that the IDN paper does not have; its place and the LReLU after it, and the bicubic image
skip, are our reconstruction of the pixel-shuffle variant (no public code of it is known).

I/O: float RGB in [0, 1] -> float RGB in [0, 1], unclamped; no mean shift. The bicubic skip
is PyTorch's (align_corners=False, no antialias).

Strategies: GGAS blocks are the 4 DBlocks (each output times GA from the FBlock output F0).
CWSS residual units are the 4 enhancement units; their identity is ``cat(x, slice)`` and only
the unit's input x is scaled, ``cat(alpha * x, slice)`` (4 x 64 = 256 alphas): the 16 sliced
channels are computed inside the unit, not its input.
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

_PAPER = "IDN (Hui et al., CVPR 2018)"
_SLOPE = 0.05


def _conv_lrelu(in_channels: int, out_channels: int, *, groups: int = 1) -> list[nn.Module]:
    return [conv2d(in_channels, out_channels, 3, groups=groups), nn.LeakyReLU(_SLOPE)]


class DBlock(nn.Module):
    """Distillation block: enhancement unit (the residual unit) + 1x1 compression."""

    def __init__(self, channels: int, *, skip: nn.Module, d: int = 16, groups: int = 4) -> None:
        super().__init__()
        c = channels
        self.split = c - d  # upper output channels that continue through the lower module
        self.upper = nn.Sequential(
            *_conv_lrelu(c, c - d),
            *_conv_lrelu(c - d, c - 2 * d, groups=groups),
            *_conv_lrelu(c - 2 * d, c),
        )
        self.lower = nn.Sequential(
            *_conv_lrelu(c - d, c),
            *_conv_lrelu(c, c - d, groups=groups),
            *_conv_lrelu(c - d, c + d),
        )
        self.compression = nn.Conv2d(c + d, c, 1)
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity, inp = self.skip(x)
        p = self.upper(inp)
        y = self.lower(p[:, : self.split]) + torch.cat([identity, p[:, self.split :]], dim=1)
        return self.compression(y)


class IDN(SRModel):
    """IDN with a pixel-shuffle reconstruction; see the module docstring."""

    def __init__(
        self,
        *,
        scale: int,
        channels: int = 64,
        n_blocks: int = 4,
        strategies: StrategyOptions | None = None,
    ) -> None:
        super().__init__(scale=scale)
        opts = strategies or StrategyOptions()
        self.fblock = nn.Sequential(*_conv_lrelu(3, channels), *_conv_lrelu(channels, channels))
        make_skip = opts.identity_factory(channels)
        self.blocks = nn.ModuleList(DBlock(channels, skip=make_skip()) for _ in range(n_blocks))
        self.global_attention = opts.global_attention(channels, n_blocks=n_blocks)
        self.lr_conv = nn.Sequential(*_conv_lrelu(channels, channels))
        self.upsampler = ConvPixelShuffle(channels, 3, scale=scale)
        self.image_upsample = BicubicUpsample(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        f0 = self.fblock(x)
        h = f0
        maps = attention_maps(self.global_attention, f0, len(self.blocks))
        for block, ga in zip(self.blocks, maps):
            h = gate(block(h), ga)
        return self.upsampler(self.lr_conv(h)) + self.image_upsample(x)


@register_model("idn", paper=_PAPER, receptive_field=28)
def idn(*, scale: int, **strategies: Any) -> IDN:
    """IDN (pixel-shuffle upsampler): C=64, 4 DBlocks (600K params at x4); GGAS/CWSS options."""
    return IDN(scale=scale, strategies=StrategyOptions.from_options("idn", strategies))
