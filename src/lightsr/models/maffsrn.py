"""MAFFSRN: Multi-Attentive Feature Fusion Super-Resolution Network.

Muqeet et al., "Multi-Attention Based Ultra Lightweight Image Super-Resolution", ECCV 2020
workshops (AIM 2020 efficient SR challenge). Two variants, both with C = 32 channels:
MAFFSRN (4 feature-fusion groups) and MAFFSRN-L (8 groups).

The structure follows the authors' code where the paper is vague (see the "MAFFSRN" section of
the project's architecture notes): a ReLU sits before the sigmoid of the spatial gate (gate in
[0.5, 1)); ``gate_relu=False`` drops it. Parameter counts match the authors' network exactly:
MAFFSRN 402,394 / 418,774 / 441,706 and MAFFSRN-L 790,754 / 807,134 / 830,066 (x2/x3/x4).

I/O: float RGB in [0, 1] (no mean shift) -> float RGB in [0, 1], unclamped. The LR input must be
at least 13x13: the spatial gate downsamples by a stride-2 conv and then a 7x7/3 max-pool.
No released weights exist, so there is no official-key converter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.common import BicubicUpsample
from ..layers.weight_norm import WNConv2d
from ..registry import register_model
from .base import SRModel

_SLOPE = 0.05  # LeakyReLU slope used throughout the authors' network

# Smallest LR side: conv 3x3/2 (pad 1) gives ceil(n/2) >= 7 for the 7x7 pool, so n >= 13.
MIN_INPUT_SIZE = 13

# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


class _SpatialGate(nn.Module):
    """ESA-like spatial attention gate (reduction r = C/4): returns the gate, not gated features."""

    def __init__(self, *, channels: int, reduced: int, gate_relu: bool) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.down = nn.Conv2d(reduced, reduced, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(kernel_size=7, stride=3)
        self.dilated = nn.Conv2d(reduced, reduced, 3, padding=2, dilation=2)
        self.local = nn.Conv2d(reduced, reduced, 3, padding=1)
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.act = nn.LeakyReLU(_SLOPE)
        self.gate_relu = gate_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rc = self.reduce(x)
        p = self.pool(self.down(rc))
        q = self.act(self.dilated(p)) + self.act(self.local(p))
        u = F.interpolate(q, size=rc.shape[-2:], mode="nearest") + rc
        g = self.expand(u)
        # The authors' code applies ReLU before the sigmoid, so the gate never closes below 0.5.
        if self.gate_relu:
            g = F.relu(g)
        return torch.sigmoid(g)


class _CEAGate(nn.Module):
    """Cost-efficient attention: per-pixel, per-channel gate sigmoid(dw5x5(conv1x1(t)))."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.depthwise = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.depthwise(self.pointwise(t)))


class MAB(nn.Module):
    """Multi-attention block: t = conv(LReLU(conv(x))); out = g_spatial(x) * t * g_cea(t).

    There is no residual connection inside the block (the FFG adds them).
    """

    def __init__(self, *, channels: int, gate_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(_SLOPE)
        self.spatial = _SpatialGate(channels=channels, reduced=channels // 4, gate_relu=gate_relu)
        self.cea = _CEAGate(channels=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv2(self.act(self.conv1(x)))
        return self.spatial(x) * t * self.cea(t)


def _shuffle_concat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Concatenate with interleaved channels a0, b0, a1, b1, ... (channel shuffle, 2 groups)."""
    return torch.stack((a, b), dim=2).flatten(1, 2)


class FFG(nn.Module):
    """Feature-fusion group: four MABs, three shuffle-and-fuse 1x1 convs, scaled residual.

    x0 = MAB(x); x1 = MAB(x0) + x0; x2 = MAB(x1) + x1; x3 = MAB(x2);
    f1 = fuse(x0, x1); f2 = fuse(f1, x2); f3 = fuse(f2, x3); out = res_scale*f3 + x_scale*x.
    """

    def __init__(self, *, channels: int, gate_relu: bool = True) -> None:
        super().__init__()
        self.mabs = nn.ModuleList(MAB(channels=channels, gate_relu=gate_relu) for _ in range(4))
        self.fusions = nn.ModuleList(WNConv2d(2 * channels, channels, 1) for _ in range(3))
        self.res_scale = nn.Parameter(torch.ones(1))
        self.x_scale = nn.Parameter(torch.ones(1))
        # Training form interleaves the channels before each fusion conv; fuse() moves that
        # permutation into the convs' input channels, so the deployed form concatenates plainly
        # (the interleaving copy is slow, especially in channels-last memory).
        self.interleaved = True

    def _join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _shuffle_concat(a, b) if self.interleaved else torch.cat((a, b), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.mabs[0](x)
        x1 = self.mabs[1](x0) + x0
        x2 = self.mabs[2](x1) + x1
        x3 = self.mabs[3](x2)  # no residual on the fourth block, as in the authors' code
        f = self.fusions[0](self._join(x0, x1))
        f = self.fusions[1](self._join(f, x2))
        f = self.fusions[2](self._join(f, x3))
        return self.res_scale * f + self.x_scale * x

    @torch.no_grad()
    def fuse(self) -> FFG:
        """Fold the channel shuffle into the (already weight-norm-folded) fusion convs."""
        if self.interleaved:
            for conv in self.fusions:
                if not isinstance(conv, nn.Conv2d):
                    raise TypeError("FFG.fuse() expects its fusion convs folded first")
                # Interleaved input channel 2i is a_i, 2i+1 is b_i; plain concat is [a, b].
                conv.weight.copy_(torch.cat((conv.weight[:, 0::2], conv.weight[:, 1::2]), dim=1))
            self.interleaved = False
        return self


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


class MAFFSRN(SRModel):
    """MAFFSRN: head 3x3 -> ``num_groups`` FFGs -> two-branch tail (3x3 and 5x5) + bicubic.

    Input: float RGB in [0, 1], (N, 3, H, W) with H, W >= 13. Output: float RGB in [0, 1]
    (unclamped), (N, 3, s*H, s*W).
    """

    def __init__(
        self,
        *,
        scale: int,
        channels: int = 32,
        num_groups: int = 4,
        gate_relu: bool = True,
    ) -> None:
        super().__init__(scale=scale, min_input_size=MIN_INPUT_SIZE)
        out = 3 * scale * scale
        self.head = WNConv2d(3, channels, 3)
        self.body = nn.Sequential(
            *(FFG(channels=channels, gate_relu=gate_relu) for _ in range(num_groups))
        )
        self.tail3 = WNConv2d(channels, out, 3)
        self.tail5 = WNConv2d(channels, out, 5)
        self.tail3_scale = nn.Parameter(torch.full((1,), 0.5))
        self.tail5_scale = nn.Parameter(torch.full((1,), 0.5))
        self.shuffle = nn.PixelShuffle(scale)
        self.image_upsample = BicubicUpsample(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        f = self.body(self.head(x))
        # Scalar multiplication commutes with pixel shuffle, so one shuffle of the sum suffices.
        y = self.shuffle(self.tail3_scale * self.tail3(f) + self.tail5_scale * self.tail5(f))
        return y + self.image_upsample(x)


# ---------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------

_PAPER = "MAFFSRN (Muqeet et al., ECCVW 2020)"


# bf16_safe: Set5 PSNR-Y bf16 - fp32 = -0.003/-0.000/+0.0004 dB (x2/x3/x4, lightsr's weights;
# the authors released none). OpenVINO's bf16, which rounds the image convs too: -0.054 at
# x2, -0.008/-0.009 at x3/x4, hence bf16_engine_scales (3, 4) (benchmarks/bf16_declarations.py).
@register_model(
    "maffsrn", paper=_PAPER, tile_exact=False, bf16_safe=True, bf16_engine_scales=(3, 4)
)
def maffsrn(*, scale: int, gate_relu: bool = True) -> MAFFSRN:
    """MAFFSRN: C=32, 4 feature-fusion groups (402k params at x2)."""
    return MAFFSRN(scale=scale, channels=32, num_groups=4, gate_relu=gate_relu)


@register_model("maffsrn_l", paper=_PAPER, tile_exact=False)
def maffsrn_l(*, scale: int, gate_relu: bool = True) -> MAFFSRN:
    """MAFFSRN-L: C=32, 8 feature-fusion groups (791k params at x2)."""
    return MAFFSRN(scale=scale, channels=32, num_groups=8, gate_relu=gate_relu)
