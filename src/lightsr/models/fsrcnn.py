"""FSRCNN (Dong et al., "Accelerating the Super-Resolution Convolutional Neural Network",
ECCV 2016), a baseline of the GGAS/CWSS paper, on RGB with a pixel-shuffle reconstruction.

Layout (d = 56, s = 12, m = 4, ReLU after every conv but the last, no mean shift): feature
extraction conv5x5 3->d -> shrinking conv1x1 d->s -> m mapping convs 3x3 s->s -> expanding
conv1x1 s->d -> conv3x3 d->3r^2 + PixelShuffle(r) (instead of the paper's 9x9 transposed conv).

Trainable parameters (x2/x3/x4): 16,960 / 24,535 / 35,140. The paper's Table 2 says 33K at
x4, which no known layout gives (FSRCNN's own 9x9 transposed conv d->3 gives 24,511, and
per-channel PReLUs instead of ReLU would add only 2d + (m+1)s = 172); we build the common
pixel-shuffle variant (35,140 at x4) and document the difference.

I/O: float RGB in [0, 1] -> float RGB in [0, 1], unclamped.

Strategies: GGAS blocks are the m = 4 mapping layers (conv + ReLU); F0 is the shrinking
layer's output, so the attention works at width s = 12 and adds s^2 + 53s = 780 parameters
at training (the paper's Table 2: 33K -> 34K). FSRCNN has no residual units, so ``cwss=True``
raises ConfigError (the paper reports no FSRCNN + CWSS either).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..layers.common import ConvPixelShuffle, conv2d
from ..registry import register_model
from ..strategies import StrategyOptions
from ..strategies.ggas import attention_maps, gate
from .base import SRModel

_PAPER = "FSRCNN (Dong et al., ECCV 2016)"


class FSRCNN(SRModel):
    """FSRCNN with a pixel-shuffle reconstruction; see the module docstring."""

    def __init__(
        self,
        *,
        scale: int,
        d: int = 56,
        s: int = 12,
        m: int = 4,
        strategies: StrategyOptions | None = None,
    ) -> None:
        super().__init__(scale=scale)
        opts = strategies or StrategyOptions()
        if opts.cwss:
            raise ConfigError(
                "fsrcnn has no residual units, so CWSS (channel-wise scaling of residual "
                "identities) cannot apply to it. Build it with cwss=False (GGAS is supported)."
            )
        self.extract = nn.Sequential(conv2d(3, d, 5), nn.ReLU(inplace=True))
        self.shrink = nn.Sequential(nn.Conv2d(d, s, 1), nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList(
            nn.Sequential(conv2d(s, s, 3), nn.ReLU(inplace=True)) for _ in range(m)
        )
        self.global_attention = opts.global_attention(s, n_blocks=m)
        self.expand = nn.Sequential(nn.Conv2d(s, d, 1), nn.ReLU(inplace=True))
        self.upsampler = ConvPixelShuffle(d, 3, scale=scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        f0 = self.shrink(self.extract(x))
        h = f0
        maps = attention_maps(self.global_attention, f0, len(self.blocks))
        for block, ga in zip(self.blocks, maps):
            h = gate(block(h), ga)
        return self.upsampler(self.expand(h))


@register_model("fsrcnn", paper=_PAPER, receptive_field=7)
def fsrcnn(*, scale: int, **strategies: Any) -> FSRCNN:
    """FSRCNN (d56 s12 m4, pixel-shuffle upsampler; 35K params at x4); GGAS option."""
    return FSRCNN(scale=scale, strategies=StrategyOptions.from_options("fsrcnn", strategies))
