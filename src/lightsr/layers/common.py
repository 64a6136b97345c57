"""Building blocks shared by more than one model.

Every block here works on float feature maps (N, C, H, W); the image-range blocks
(:class:`MeanShift`) say which range they expect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# DIV2K's RGB mean in [0, 1], the constant of EDSR-PyTorch, CARN and RCAN.
DIV2K_RGB_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    bias: bool = True,
    groups: int = 1,
) -> nn.Conv2d:
    """A stride-1 conv with 'same' padding (kernel_size // 2), as every SR baseline uses."""
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias, groups=groups
    )


class MeanShift(nn.Module):
    """Frozen per-channel mean shift: ``x + sign * rgb_range * mean``.

    The mean is a non-persistent buffer: it is a constant of the architecture (rebuilt from
    the options), so it is neither a trainable parameter nor stored in checkpoints. The
    public EDSR/CARN/RCAN code keeps it as a frozen 1x1 conv with unit std; that is the same
    function. ``rgb_range`` is the range of the image it sees (1 for [0, 1], 255 for 0..255).
    """

    shift: torch.Tensor  # buffer (register_buffer in __init__)

    def __init__(
        self,
        *,
        sign: int,
        rgb_range: float = 1.0,
        mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
    ) -> None:
        super().__init__()
        if sign not in (-1, 1):
            raise ValueError(f"MeanShift sign must be -1 or +1, got {sign!r}")
        shift = sign * float(rgb_range) * torch.tensor(mean, dtype=torch.float32)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


class PixelShuffleUpsampler(nn.Sequential):
    """EDSR-style upsampler: per x2 stage a conv3x3 C->4C and PixelShuffle(2); x3 is one
    conv3x3 C->9C and PixelShuffle(3). ``relu`` adds a ReLU after each conv (CARN does)."""

    def __init__(self, channels: int, *, scale: int, relu: bool = False) -> None:
        if scale in (2, 4, 8):
            stages = [2] * {2: 1, 4: 2, 8: 3}[scale]
        elif scale == 3:
            stages = [3]
        else:
            raise ValueError(f"PixelShuffleUpsampler supports scales 2, 3, 4, 8, not {scale!r}")
        layers: list[nn.Module] = []
        for s in stages:
            layers.append(conv2d(channels, channels * s * s, 3))
            if relu:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.PixelShuffle(s))
        super().__init__(*layers)


class ConvPixelShuffle(nn.Sequential):
    """One-step reconstruction: conv (k x k) C -> out*s^2, then PixelShuffle(s) (IMDN-style)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, scale: int, kernel_size: int = 3
    ) -> None:
        super().__init__(
            conv2d(in_channels, out_channels * scale * scale, kernel_size),
            nn.PixelShuffle(scale),
        )


def bicubic_upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Plain PyTorch bicubic (align_corners=False, no antialias, no clamp) of an image."""
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
    """PyTorch's 4 bicubic tap weights (taps at -1, 0, 1, 2) for a fractional offset ``t``."""

    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_phase_kernels(scale: int) -> torch.Tensor:
    """(scale^2, 1, 5, 5) float64 kernels: output pixel (s*i + p, s*j + q) of PyTorch's bicubic
    upsampling (align_corners=False) is kernel ``p*s + q`` applied at input (i, j), with the
    border replicated (PyTorch clamps tap indices to the image)."""
    taps = torch.zeros(scale, 5, dtype=torch.float64)
    for p in range(scale):
        d = (p + 0.5) / scale - 0.5  # source coordinate of the phase, relative to i
        base = -1 if d < 0 else 0
        t = d - base
        for k, w in enumerate(_cubic_weights(t)):
            taps[p, base - 1 + k + 2] = w  # offsets -2..2 -> columns 0..4
    return torch.einsum("pa,qb->pqab", taps, taps).reshape(scale * scale, 1, 5, 5)


class BicubicUpsample(nn.Module):
    """The bicubic image skip of MAFFSRN, IDN and MemNet (:func:`bicubic_upsample`).

    ``fuse()`` gives :class:`PhaseBicubicUpsample`, the same function as one small grouped conv
    and a pixel shuffle: on a CPU, ``aten::upsample_bicubic2d`` costs ~45 ms of a 256x256 x4
    MAFFSRN forward, the conv ~2 ms."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_upsample(x, self.scale)

    def fuse(self) -> PhaseBicubicUpsample:
        return PhaseBicubicUpsample(self.scale)


class PhaseBicubicUpsample(nn.Module):
    """Bicubic upsampling as replicate padding, a 5x5 conv per colour channel giving the
    ``scale^2`` output phases, and a pixel shuffle: equal to :func:`bicubic_upsample` up to
    float rounding (tests/test_deploy.py)."""

    kernels: torch.Tensor  # buffer (register_buffer in __init__)

    def __init__(self, scale: int, channels: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.channels = channels
        kernels = bicubic_phase_kernels(scale).float().repeat(channels, 1, 1, 1)
        self.register_buffer("kernels", kernels, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Image values: kept in fp32 (or wider) under bf16/fp16 autocast, like the output convs.
        with torch.autocast(x.device.type, enabled=False):
            x = x if x.dtype == torch.float64 else x.float()
            padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
            phases = F.conv2d(padded, self.kernels.to(x.dtype), groups=self.channels)
            return F.pixel_shuffle(phases, self.scale)
