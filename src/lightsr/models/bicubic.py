"""Bicubic upscaling as a registered model: the Bicubic row of the papers' tables, the
``--model bicubic`` of every command, and the alpha-channel upscaler of the inference wrapper.

Cubic kernel a = -0.5 with MATLAB ``imresize``'s antialiasing rules, float RGB in [0, 1] in and
out (unclamped), no parameters. Two paths:

- fast (default, ``exact=False``): :func:`lightsr.data.resize.imresize_torch`, any device and
  dtype, tileable; within ~8e-6 of MATLAB in float32 (float64 input: to rounding);
- exact (``exact=True``): :func:`lightsr.data.resize.imresize` in float64 numpy on the CPU, the
  same arithmetic as MATLAB, so evaluation reproduces the papers' Bicubic rows to the digit.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.resize import imresize, imresize_torch
from ..errors import ConfigError
from ..registry import register_model
from .base import SRModel

_BOUNDARIES = ("mirror", "replicate")


class Bicubic(SRModel):
    """Bicubic upscaling by ``scale`` (see the module docstring for the two paths)."""

    #: Each output pixel depends on input pixels at most 2 LR pixels away.
    receptive_field = 2

    def __init__(self, *, scale: int, exact: bool = False, boundary: str = "mirror") -> None:
        super().__init__(scale=scale, min_input_size=1)
        if boundary not in _BOUNDARIES:
            raise ConfigError(
                f"bicubic boundary must be one of {', '.join(_BOUNDARIES)}, not {boundary!r}."
            )
        self.exact = bool(exact)
        self.boundary = boundary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if not self.exact:
            return imresize_torch(x, self.scale, boundary=self.boundary)
        imgs = x.detach().cpu().double().permute(0, 2, 3, 1).numpy()
        out = np.stack([imresize(im, self.scale, boundary=self.boundary) for im in imgs])
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device)


@register_model("bicubic", paper="MATLAB imresize (the papers' Bicubic rows)", learned=False)
def bicubic(*, scale: int, exact: bool = False, boundary: str = "mirror") -> Bicubic:
    """Bicubic interpolation (no weights): the baseline every table starts from."""
    return Bicubic(scale=scale, exact=exact, boundary=boundary)
