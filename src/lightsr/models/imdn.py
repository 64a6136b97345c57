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

:func:`convert_official` recognises the authors' released state dicts (Zheng222/IMDN,
``checkpoints/IMDN_x{2,3,4}.pth``); :func:`to_official_state` writes ours in their key layout.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..layers.common import ConvPixelShuffle, conv2d
from ..registry import (
    OfficialMatch,
    register_model,
    register_official_converter,
    register_official_exporter,
)
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
        split = [self.distilled, self.remaining]
        d1, r1 = torch.split(self.act(self.c1(inp)), split, dim=1)
        d2, r2 = torch.split(self.act(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(self.act(self.c3(r2)), split, dim=1)
        t4 = self.c4(r3)
        return identity + self.c5(self.cca(torch.cat([d1, d2, d3, t4], dim=1)))


class IMDN(SRModel):
    """IMDN; see the module docstring."""

    #: Contrast-aware channel attention pools over the whole input: tiles see their own statistics.
    tile_exact = False

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


# ---------------------------------------------------------------------------------------------
# The authors' released checkpoints
# ---------------------------------------------------------------------------------------------

# (authors' module, ours) per IMDB, in the order of the authors' state dicts: c5 is registered
# before cca there, after it here.
_IMDB_MODULES = (
    ("c1", "c1"),
    ("c2", "c2"),
    ("c3", "c3"),
    ("c4", "c4"),
    ("c5", "c5"),
    ("cca.conv_du.0", "cca.squeeze"),
    ("cca.conv_du.2", "cca.excite"),
)
# Keys only the authors' IMDN has together. Their IMDN_AS (fea_conv a Sequential: fea_conv.0.*)
# and IMDN_RTC/RTE (model.* / block* names) lack some, so they are not taken for IMDN.
_SIGNATURE = (
    "fea_conv.weight",
    "IMDB1.c1.weight",
    "IMDB1.cca.conv_du.0.weight",
    "c.0.weight",
    "LR_conv.weight",
    "upsampler.0.weight",
)
_BLOCK_KEY = re.compile(r"^IMDB(\d{1,4})\.")  # a longer (forged) index: an unexpected key
_CHANNELS, _BLOCKS = 64, 6  # the only IMDN the authors released (and our builder builds)


def _official_key_pairs(n_blocks: int) -> list[tuple[str, str]]:
    """(authors' key, our key) for every tensor, in the authors' order (fea_conv, IMDB1..n with
    1-based names, c.0, LR_conv, upsampler.0), so an exported dict lists keys as their files do."""
    modules = [("fea_conv", "head")]
    for i in range(n_blocks):
        modules += [(f"IMDB{i + 1}.{t}", f"blocks.{i}.{o}") for t, o in _IMDB_MODULES]
    modules += [("c.0", "fusion.0"), ("LR_conv", "lr_conv"), ("upsampler.0", "upsampler.0")]
    return [(f"{t}.{p}", f"{o}.{p}") for t, o in modules for p in ("weight", "bias")]


def _describe_difference(have: set[str], want: set[str]) -> str:
    missing, unexpected = sorted(want - have), sorted(have - want)
    parts = []
    if missing:
        parts.append(f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}")
    if unexpected:
        parts.append(f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
    return "; ".join(parts)


@register_official_converter("IMDN")
def convert_official(state: Mapping[str, torch.Tensor]) -> OfficialMatch | None:
    """Recognise the authors' IMDN state dict (``module.`` prefix already stripped): C = 64 and
    six IMDBs, scale from the upsampler's 3*s^2 output channels. None if it is not IMDN's.

    A file with IMDN's signature keys whose key set is not exactly the authors' is damaged or a
    modified network: that raises (naming the keys) instead of loading part of it.
    """
    if not all(k in state for k in _SIGNATURE):
        return None
    head = state["fea_conv.weight"]
    if head.dim() != 4 or head.shape[1] != 3:
        return None
    channels = int(head.shape[0])
    blocks = sorted({int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))})
    if (channels, blocks) != (_CHANNELS, list(range(1, _BLOCKS + 1))):
        raise CheckpointError(
            f"IMDN checkpoint with C={channels} and IMDB blocks numbered {blocks}: lightsr's "
            f"imdn is the released configuration, C={_CHANNELS} with IMDB1..IMDB{_BLOCKS}. The "
            "file is incomplete or from a modified IMDN; retrain it with "
            "lightsr.create_model('imdn')."
        )
    pairs = _official_key_pairs(_BLOCKS)
    theirs = {t for t, _ in pairs}
    if set(state) != theirs:
        raise CheckpointError(
            f"IMDN checkpoint keys differ from the authors' layout: "
            f"{_describe_difference(set(state), theirs)}. The file is damaged or from a modified "
            "IMDN (IMDN_AS and IMDN_RTC are not supported)."
        )
    if state["upsampler.0.weight"].dim() != 4:
        raise CheckpointError(
            "IMDN checkpoint's upsampler weight has shape "
            f"{tuple(state['upsampler.0.weight'].shape)}, not (3*s^2, 64, 3, 3); the file is "
            "damaged."
        )
    out = int(state["upsampler.0.weight"].shape[0])
    scale = math.isqrt(out // 3)
    if 3 * scale * scale != out or scale not in (2, 3, 4):
        raise CheckpointError(
            f"IMDN checkpoint's upsampler has {out} output channels, not 3*s^2 for a scale s in "
            "(2, 3, 4); the file is damaged or not an x2/x3/x4 IMDN."
        )
    converted = {o: state[t] for t, o in pairs}
    return OfficialMatch(arch="imdn", scale=scale, folded=False, state_dict=converted)


@register_official_exporter("imdn")
def to_official_state(model: IMDN) -> dict[str, torch.Tensor]:
    """``model``'s weights under the authors' key names and in their order (no ``module.``
    prefix), so that their ``test_IMDN.py`` loads them; the tensors are ``state_dict()``'s,
    sharing storage with the model.

    Only the plain IMDN has a counterpart in their code: GGAS/CWSS add parameters it lacks.
    """
    if not isinstance(model, IMDN):
        raise CheckpointError(
            f"lightsr.models.imdn.to_official_state exports IMDN, not {type(model).__name__}; "
            "use the to_official_state of that model's family module."
        )
    ours = model.state_dict()
    pairs = _official_key_pairs(len(model.blocks))
    mapped = {o for _, o in pairs}
    if set(ours) != mapped:
        raise CheckpointError(
            "this IMDN has weights the authors' IMDN has no place for "
            f"({_describe_difference(set(ours), mapped)}): GGAS/CWSS variants cannot be written "
            "in their layout. Export a plain lightsr.create_model('imdn', scale=...) model."
        )
    return {t: ours[o] for t, o in pairs}
