"""CWSS: channel-wise scaling strategy (Du et al., "Two strategies toward lightweight image
super-resolution", section 2.3).

In every residual unit ``y = x + F(x)`` becomes ``y = alpha * x + F(x)``, ``alpha`` in R^C
learnable per channel, initialised to 0.9; C parameters per residual unit.

A residual unit takes its identity through an *identity path* module made by
:func:`identity_factory`; the module returns the pair ``(identity, residual_input)``::

    identity, inp = self.skip(x)        # (x, x) when CWSS is off
    return identity + self.body(inp)

Choices where the paper leaves room (each is an option of every baseline builder):

- ``cwss_shared_alpha`` (default False): one alpha per residual unit (the spec's reading of
  "in every residual unit", C parameters each). True: one alpha shared by all units of the
  model (C parameters in all). The paper's Table 2 parameter counts, read as truncated to
  thousands, fit the shared reading better (EDSR-baseline + both: 1525K; per-unit alphas give
  1,526,083, shared 1,525,123), but the text says neither; the default follows the spec.
- ``cwss_scale_residual_input`` (default False): eq. 8 writes ``y_i = alpha_i x_i +
  H_RL(x_hat)_i`` with ``x_hat`` the re-scaled input, which can be read as the residual branch
  also seeing ``alpha * x``. Default: the branch sees ``x`` (spec: y = alpha * x + F(x));
  True: ``y = alpha * x + F(alpha * x)``.
- ``cwss_init`` (default 0.9, the paper's value).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Unscaled(nn.Module):
    """The identity path of a plain residual unit: returns ``(x, x)``; no parameters."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


class ChannelScale(nn.Module):
    """CWSS identity path: returns ``(alpha * x, x)`` (or ``(alpha * x, alpha * x)`` with
    ``scale_residual_input``); ``alpha`` has shape (C,), one learnable scale per channel."""

    def __init__(self, channels: int, *, init: float = 0.9, scale_residual_input: bool = False):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((int(channels),), float(init)))
        self.scale_residual_input = bool(scale_residual_input)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.alpha.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scaled = self.scale(x)
        return scaled, (scaled if self.scale_residual_input else x)

    def extra_repr(self) -> str:
        return f"channels={self.alpha.numel()}, scale_residual_input={self.scale_residual_input}"


class SharedChannelScale(nn.Module):
    """CWSS identity path using another unit's ``alpha`` (``cwss_shared_alpha``).

    The owner is held outside the module tree (in a tuple) so the shared parameter appears once
    in ``parameters()`` and ``state_dict()`` (safetensors refuses aliased tensors). Deep copies
    of the whole model keep the sharing (``copy.deepcopy`` memoises the owner).
    """

    def __init__(self, owner: ChannelScale) -> None:
        super().__init__()
        self._owner = (owner,)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._owner[0](x)

    def extra_repr(self) -> str:
        return "alpha shared with the model's first residual unit"


def identity_factory(
    channels: int,
    *,
    enabled: bool,
    init: float = 0.9,
    shared_alpha: bool = False,
    scale_residual_input: bool = False,
) -> Callable[[], nn.Module]:
    """A function making the identity path of one residual unit per call.

    Off: every call gives an :class:`Unscaled`. On: a fresh :class:`ChannelScale` per call,
    or with ``shared_alpha`` the first call's ChannelScale and then :class:`SharedChannelScale`
    views of it. Use one factory per model (per channel width).
    """
    first: list[ChannelScale] = []

    def make() -> nn.Module:
        if not enabled:
            return Unscaled()
        if shared_alpha and first:
            return SharedChannelScale(first[0])
        unit = ChannelScale(channels, init=init, scale_residual_input=scale_residual_input)
        first.append(unit)
        return unit

    return make


def alphas(model: nn.Module) -> list[nn.Parameter]:
    """The distinct CWSS alpha parameters of ``model`` (empty when CWSS is off)."""
    return [m.alpha for m in model.modules() if isinstance(m, ChannelScale)]


__all__ = ["ChannelScale", "SharedChannelScale", "Unscaled", "alphas", "identity_factory"]
