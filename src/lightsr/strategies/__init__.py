"""Strategies composed into baselines: GGAS (:mod:`.ggas`) and CWSS (:mod:`.cwss`).

Every baseline builder accepts the options of :class:`StrategyOptions` as keyword arguments
(``create_model("edsr_baseline", scale=4, ggas=True, cwss=True)``). A baseline uses them by
declaring where its pieces are, and nothing else:

- ``opts.global_attention(C, n_blocks=N)`` -> the GGAS module (or None), computed on the
  shallow feature F0, with :func:`.ggas.attention_maps` and :func:`.ggas.gate` applied to
  each block's output;
- ``opts.identity_factory(C)`` -> called once per residual unit for its identity path.

A new baseline thus needs no edit here; a new strategy option needs none in the baselines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import ConfigError
from . import cwss, ggas
from .ggas import GlobalGuidance  # by name: the `ggas` field shadows the module in the class


@dataclass(frozen=True)
class StrategyOptions:
    """Which strategies a baseline is built with, and the paper's open choices.

    ggas: global-guided attention on (adds C^2 + 53C parameters at training).
    ggas_per_block: one GAB per block instead of one shared map (paper: shared).
    ggas_kernel_size: depthwise kernel of the GAB (paper: 7).
    cwss: channel-wise scaling of every residual unit's identity (adds C per unit).
    cwss_init: initial alpha (paper: 0.9).
    cwss_shared_alpha: one alpha for all residual units of the model (adds C in all).
    cwss_scale_residual_input: the residual branch also sees alpha * x (one reading of eq. 8).
    """

    ggas: bool = False
    ggas_per_block: bool = False
    ggas_kernel_size: int = 7
    cwss: bool = False
    cwss_init: float = 0.9
    cwss_shared_alpha: bool = False
    cwss_scale_residual_input: bool = False

    @classmethod
    def from_options(
        cls, model: str, options: Mapping[str, Any], *, own_options: tuple[str, ...] = ()
    ) -> StrategyOptions:
        """Validate builder keyword options; unknown names or wrong types raise ConfigError.

        ``own_options`` are the builder's other option names, listed in the error message.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ConfigError(
                f"{model} has no option {', '.join(map(repr, unknown))}. Its options are "
                f"{', '.join((*own_options, *fields))} (see lightsr.strategies.StrategyOptions)."
            )
        for name, value in options.items():
            default = fields[name].default
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:  # float options also take ints (cwss_init=1)
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok:
                raise ConfigError(
                    f"{model} option {name}={value!r} must be a {type(default).__name__} "
                    f"(default {default!r})."
                )
        opts = cls(**dict(options))
        if opts.ggas_kernel_size < 1 or opts.ggas_kernel_size % 2 == 0:
            raise ConfigError(
                f"{model} option ggas_kernel_size={opts.ggas_kernel_size} must be odd and positive "
                "(the paper uses 7)."
            )
        return opts

    def global_attention(self, channels: int, *, n_blocks: int) -> GlobalGuidance | None:
        """The GGAS module for ``n_blocks`` blocks of width ``channels`` (None when off)."""
        return ggas.build(
            channels,
            n_blocks=n_blocks,
            enabled=self.ggas,
            per_block=self.ggas_per_block,
            kernel_size=self.ggas_kernel_size,
        )

    def identity_factory(self, channels: int) -> Callable[[], nn.Module]:
        """Maker of residual-unit identity paths of width ``channels`` (see :mod:`.cwss`)."""
        return cwss.identity_factory(
            channels,
            enabled=self.cwss,
            init=self.cwss_init,
            shared_alpha=self.cwss_shared_alpha,
            scale_residual_input=self.cwss_scale_residual_input,
        )


__all__ = ["StrategyOptions", "cwss", "ggas"]
