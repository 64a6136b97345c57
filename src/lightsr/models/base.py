"""The contract every model in lightsr honours.

An :class:`SRModel` maps float RGB in [0, 1], shape (N, 3, H, W), to float RGB in [0, 1]
(unclamped), shape (N, 3, s*H, s*W). Networks whose authors worked in 0..255 or with a mean
shift convert inside ``forward`` so that loading the authors' weights keeps their outputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InputSizeError


class SRModel(nn.Module):
    """Base class: declares the scale and the smallest LR input the network accepts.

    Attributes set by :func:`lightsr.create_model`: ``arch_name`` (registry name) and
    ``arch_options`` (the keyword options it was built with). ``folded`` is True once
    :func:`lightsr.reparameterize` has turned the model into its inference form.
    """

    #: Chebyshev radius (LR pixels) of the input one output pixel depends on, where declared
    #: exactly (a class attribute, or set by :func:`lightsr.create_model` from the variant's
    #: registration); None: :func:`lightsr.probe.receptive_field` measures it when needed.
    receptive_field: int | None = None
    #: False when tiles cannot reproduce untiled inference exactly (global pooling, or a field
    #: wider than a tile's context); None: not declared (probed).
    tile_exact: bool | None = None
    #: True where bf16 autocast is measured to keep Set5 PSNR within 0.02 dB of fp32 (declared
    #: with ``register_model(bf16_safe=True)``); ``precision="auto"`` picks bf16 only for those.
    bf16_safe: bool | None = None
    #: True where an engine's bf16 (OpenVINO's, which rounds the image convs too) is measured
    #: within 0.02 dB Set5 PSNR of fp32 at this model's scale (``register_model``'s
    #: ``bf16_engine_scales``); only then does ``backend="auto"`` run bf16 in OpenVINO.
    bf16_in_engines: bool | None = None
    #: LR sides are any size of at least ``min_input_size`` unless a model declares a multiple.
    input_multiple: int = 1
    #: Set on a model read from a file (:func:`lightsr.load`, :func:`lightsr.load_official`):
    #: the ``extra`` metadata saved with it (training step, config...).
    checkpoint_extra: dict[str, Any]

    def __init__(self, *, scale: int, min_input_size: int = 1, in_channels: int = 3) -> None:
        super().__init__()
        self.scale = int(scale)
        self.min_input_size = int(min_input_size)
        self.in_channels = int(in_channels)
        self.arch_name: str = type(self).__name__.lower()
        self.arch_options: dict = {}
        self.folded = False

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputSizeError` if ``x`` is not (N, C, H, W) with H, W large enough."""
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputSizeError(
                f"{self.arch_name} expects a float tensor of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}."
            )
        h, w = x.shape[-2:]
        if min(h, w) < self.min_input_size:
            raise InputSizeError(
                f"{self.arch_name} needs an LR input of at least "
                f"{self.min_input_size}x{self.min_input_size} pixels, got {h}x{w}. "
                "Pad the image (lightsr.upscale pads small images automatically) or use a "
                "larger one."
            )
