"""Weight-normalised convolution that folds into a plain convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WNConv2d(nn.Module):
    """Conv2d with weight normalisation, w = g * v / ||v|| (norm per output channel, dim 0).

    Parameters are named ``weight_g``, ``weight_v`` and ``bias`` like the ones PyTorch's legacy
    ``weight_norm`` creates, so the authors' checkpoints map on by name, and both ``g`` and
    ``v`` count as parameters, as the papers count them. :meth:`fuse` returns the equivalent
    ``nn.Conv2d`` for deployment.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2 if padding is None else padding,
            dilation=dilation,
            bias=bias,
        )
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.in_channels, self.out_channels, self.kernel_size = (
            in_channels,
            out_channels,
            conv.kernel_size,
        )
        # PyTorch's weight_norm initialises g to ||v|| so the initial weight equals conv's.
        v = conv.weight.detach().clone()
        self.weight_v = nn.Parameter(v)
        if v.is_meta:
            # a checkpoint's description is first built on the meta device (lightsr.checkpoint):
            # only shapes count there, and a norm would import torch's Python meta kernels
            # (dynamo: ~1.4 s of every `lightsr upscale` that loads an A2F or MAFFSRN file)
            g = torch.empty(out_channels, 1, 1, 1, device=v.device)
        else:
            g = v.flatten(1).norm(dim=1).view(-1, 1, 1, 1).clone()
        self.weight_g = nn.Parameter(g)
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None

    def weight(self) -> torch.Tensor:
        """The effective convolution weight g * v / ||v||."""
        v = self.weight_v
        return self.weight_g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        # torch types conv geometry as tuple[int, ...]; a Conv2d's is a pair, as Conv2d() wants
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,  # type: ignore[arg-type]
            stride=self.stride,  # type: ignore[arg-type]
            padding=self.padding,  # type: ignore[arg-type]
            dilation=self.dilation,  # type: ignore[arg-type]
            bias=self.bias is not None,
        ).to(self.weight_v.device, self.weight_v.dtype)
        conv.weight.copy_(self.weight())
        if self.bias is not None and conv.bias is not None:
            conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )
