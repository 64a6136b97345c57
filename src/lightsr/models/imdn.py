"""IMDN (Hui et al., "Lightweight Image Super-Resolution with Information Multi-distillation
Network", ACM MM 2019), a baseline of the GGAS/CWSS paper.

Layout of the authors' ``IMDN`` (C = 64, 6 IMDBs, LeakyReLU slope 0.05, no mean shift):
fea_conv conv3x3 3->C (F0) -> 6 IMDBs in sequence -> fusion conv1x1 6C->C + LeakyReLU on
the concatenation of all IMDB outputs -> conv3x3 C->C -> ``+ F0`` -> conv3x3 C->3s^2 +
PixelShuffle(s).
IMDB(x): progressive distillation: t1 = LReLU(conv3x3 C->C (x)), split 16 | 48;
t2 = LReLU(conv3x3 48->C (rest)), split; t3 likewise; t4 = conv3x3 48->16 (rest);
y = conv1x1 C->C (CCA(cat(d1, d2, d3, t4))) + x. CCA (contrast-aware channel attention):
z * sigmoid(conv1x1 C/16->C (ReLU(conv1x1 C->C/16 (std(z) + mean(z))))), spatial std and
mean per channel (population std).

Trainable parameters (x2/x3/x4): 694,404 / 703,059 / 715,176; the paper's Table 2 says 715K
at x4.

I/O: float RGB in [0, 1] -> float RGB in [0, 1], unclamped (the authors' range too).

Strategies: GGAS blocks are the 6 IMDBs (each output times GA from F0, the fea_conv output;
the gated outputs feed both the next IMDB and the fusion concat). CWSS residual units are the
6 IMDBs' own residuals ``alpha * x + conv1x1(CCA(...))`` (6 x 64 = 384 alphas); the long
skip ``+ F0`` is not a unit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layers.common import ConvPixelShuffle, conv2d
from ..registry import register_model
from ..strategies import StrategyOptions
from ..strategies.ggas import attention_maps, gate
from .base import SRModel

_PAPER = "IMDN (Hui et al., ACM MM 2019)"
_SLOPE = 0.05


def contrast(z: torch.Tensor) -> torch.Tensor:
    """Per-channel spatial standard deviation (population) plus mean, shape (N, C, 1, 1)."""
    mean = z.mean(dim=(2, 3), keepdim=True)
    var = (z - mean).pow(2).mean(dim=(2, 3), keepdim=True)
    return var.sqrt() + mean


class ContrastChannelAttention(nn.Module):
    """CCA: z * sigmoid(conv1x1(ReLU(conv1x1(std(z) + mean(z)))))."""

    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(channels, channels // reduction, 1)
        self.excite = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.sigmoid(self.excite(torch.relu(self.squeeze(contrast(z)))))


class IMDB(nn.Module):
    """Information multi-distillation block (distillation rate 1/4); see the module docstring."""

    def __init__(self, channels: int, *, skip: nn.Module) -> None:
        super().__init__()
        self.distilled = channels // 4
        self.remaining = channels - self.distilled
        self.c1 = conv2d(channels, channels, 3)
        self.c2 = conv2d(self.remaining, channels, 3)
        self.c3 = conv2d(self.remaining, channels, 3)
        self.c4 = conv2d(self.remaining, self.distilled, 3)
        self.act = nn.LeakyReLU(_SLOPE)
        self.cca = ContrastChannelAttention(self.distilled * 4)
        self.c5 = nn.Conv2d(self.distilled * 4, channels, 1)
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity, inp = self.skip(x)
        split = (self.distilled, self.remaining)
        d1, r1 = torch.split(self.act(self.c1(inp)), split, dim=1)
        d2, r2 = torch.split(self.act(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(self.act(self.c3(r2)), split, dim=1)
        t4 = self.c4(r3)
        return identity + self.c5(self.cca(torch.cat([d1, d2, d3, t4], dim=1)))


class IMDN(SRModel):
    """IMDN; see the module docstring."""

    def __init__(
        self,
        *,
        scale: int,
        channels: int = 64,
        n_blocks: int = 6,
        strategies: StrategyOptions | None = None,
    ) -> None:
        super().__init__(scale=scale)
        opts = strategies or StrategyOptions()
        self.head = conv2d(3, channels, 3)
        make_skip = opts.identity_factory(channels)
        self.blocks = nn.ModuleList(IMDB(channels, skip=make_skip()) for _ in range(n_blocks))
        self.global_attention = opts.global_attention(channels, n_blocks=n_blocks)
        self.fusion = nn.Sequential(
            nn.Conv2d(channels * n_blocks, channels, 1), nn.LeakyReLU(_SLOPE)
        )
        self.lr_conv = conv2d(channels, channels, 3)
        self.upsampler = ConvPixelShuffle(channels, 3, scale=scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        f0 = self.head(x)
        h, outs = f0, []
        maps = attention_maps(self.global_attention, f0, len(self.blocks))
        for block, ga in zip(self.blocks, maps):
            h = gate(block(h), ga)
            outs.append(h)
        h = self.lr_conv(self.fusion(torch.cat(outs, dim=1))) + f0
        return self.upsampler(h)


@register_model("imdn", paper=_PAPER)
def imdn(*, scale: int, **strategies: Any) -> IMDN:
    """IMDN: C=64, 6 IMDBs (715K params at x4); GGAS/CWSS options."""
    return IMDN(scale=scale, strategies=StrategyOptions.from_options("imdn", strategies))
