"""A²F: lightweight SR with attentive auxiliary features.

Wang et al., "Lightweight Single-Image Super-Resolution Network with Attentive Auxiliary Feature
Learning", ACCV 2020 (https://github.com/wxxxxxh/A2F-SR). Four variants, channels C / layers N:
A2F-S 32/4, A2F-SD 16/8, A2F-M 32/12, A2F-L 32/16; the block's inner width is 128 in all four.

Each layer adds three terms, each with its own learnable scalar: the layer input, a weight-normed
conv-ReLU-conv residual, and an *auxiliary* feature, a bias-free 1x1 projection of the
concatenation of every earlier state (head output included), re-weighted by channel attention.
A learned image path (``skip``) is added to the tail.

I/O: float RGB in [0, 1] -> float RGB in [0, 1], unclamped. The authors' network works on
x̂ = (255x - 255m)/127.5 = 2(x - m) with the DIV2K mean m, and returns (ŷ·127.5 + 255m)/255
= ŷ/2 + m in our range, so their released weights give their outputs unchanged.
Parameter counts match theirs exactly (x2/x3/x4): S 319,648 / 324,433 / 331,132;
SD 313,372 / 315,997 / 319,672; M 998,584 / 1,003,369 / 1,010,068;
L 1,362,628 / 1,367,413 / 1,374,112.

:func:`convert_official` recognises the authors' released state dicts (any variant and scale).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..layers.weight_norm import WNConv2d
from ..registry import (
    OfficialMatch,
    register_model,
    register_official_converter,
    register_official_exporter,
)
from .base import SRModel

# DIV2K RGB mean, as fractions of 255 (the authors' rgb_mean).
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)

# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


class _ChannelAttention(nn.Module):
    """z * sigmoid(conv1x1(ReLU(conv1x1(avgpool(z))))), C -> C -> C (reduction 1, with bias)."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(channels, channels, 1)
        self.excite = nn.Conv2d(channels, channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = F.adaptive_avg_pool2d(z, 1)
        return z * torch.sigmoid(self.excite(F.relu(self.squeeze(w))))


class A2FLayer(nn.Module):
    """Layer ``index`` (0-based): s' = x_scale*s + res_scale*block(s) + aux_scale*CA(merge(S)).

    ``S`` is the list of all earlier states (the head output first, ``s`` last), so ``merge``
    is a bias-free 1x1 conv from C*(index+1) channels to C.
    """

    def __init__(self, *, channels: int, inner_channels: int, index: int) -> None:
        super().__init__()
        self.expand = WNConv2d(channels, inner_channels, 3)
        self.reduce = WNConv2d(inner_channels, channels, 3)
        self.merge = nn.Conv2d(channels * (index + 1), channels, 1, bias=False)
        self.attention = _ChannelAttention(channels=channels)
        self.x_scale = nn.Parameter(torch.ones(1))
        self.res_scale = nn.Parameter(torch.ones(1))
        self.aux_scale = nn.Parameter(torch.ones(1))

    def forward(self, states: list[torch.Tensor]) -> torch.Tensor:
        s = states[-1]
        r = self.reduce(F.relu(self.expand(s)))
        a = self.attention(self.merge(torch.cat(states, dim=1)))
        return self.x_scale * s + self.res_scale * r + self.aux_scale * a


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


class A2F(SRModel):
    """A²F network: head -> N auxiliary-feature layers -> tail, plus a learned ``skip`` path.

    Input: float RGB in [0, 1], (N, 3, H, W). Output: float RGB in [0, 1] (unclamped),
    (N, 3, s*H, s*W).
    """

    #: Channel attention pools over the whole input: tiles see their own statistics.
    tile_exact = False
    mean: torch.Tensor  # buffer (register_buffer in __init__)

    def __init__(
        self, *, scale: int, channels: int, num_layers: int, inner_channels: int = 128
    ) -> None:
        super().__init__(scale=scale)
        out = 3 * scale * scale
        # A constant, not a weight: kept out of the state dict, moved with .to(device).
        self.register_buffer("mean", torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = WNConv2d(3, channels, 3)
        self.skip = WNConv2d(3, out, 3)
        self.layers = nn.ModuleList(
            A2FLayer(channels=channels, inner_channels=inner_channels, index=i)
            for i in range(num_layers)
        )
        self.tail = WNConv2d(channels, out, 3)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        # The authors' (255x - 255m) / 127.5, written in our [0, 1] range.
        x = (x - self.mean) * 2.0
        states = [self.head(x)]
        for layer in self.layers:
            states.append(layer(states))
        y = self.shuffle(self.tail(states[-1])) + self.shuffle(self.skip(x))
        # The authors' y*127.5 + 255m, divided by 255.
        return y * 0.5 + self.mean


# ---------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------

_PAPER = "A2F (Wang et al., ACCV 2020)"

# name -> (channels C, layers N); inner width 128 in all
VARIANTS: dict[str, tuple[int, int]] = {
    "a2f_s": (32, 4),
    "a2f_sd": (16, 8),
    "a2f_m": (32, 12),
    "a2f_l": (32, 16),
}
_INNER = 128


@register_model("a2f_s", paper=_PAPER)
def a2f_s(*, scale: int) -> A2F:
    """A2F-S: C=32, 4 layers (320k params at x2)."""
    return A2F(scale=scale, channels=32, num_layers=4)


# bf16_safe: Set5 PSNR-Y bf16 - fp32 = -0.0003 dB (x4), -0.004 dB (x2), authors' weights.
# bf16_engine_scales: OpenVINO bf16 - fp32 on Set5 = -0.0059/-0.0048/-0.0032 dB (x2/x3/x4,
# lightsr's weights), -0.0013 (x4, authors') (benchmarks/bf16_declarations.py).
@register_model("a2f_sd", paper=_PAPER, bf16_safe=True, bf16_engine_scales=(2, 3, 4))
def a2f_sd(*, scale: int) -> A2F:
    """A2F-SD: C=16, 8 layers (313k params at x2)."""
    return A2F(scale=scale, channels=16, num_layers=8)


@register_model("a2f_m", paper=_PAPER)
def a2f_m(*, scale: int) -> A2F:
    """A2F-M: C=32, 12 layers (999k params at x2)."""
    return A2F(scale=scale, channels=32, num_layers=12)


@register_model("a2f_l", paper=_PAPER)
def a2f_l(*, scale: int) -> A2F:
    """A2F-L: C=32, 16 layers (1.36M params at x2)."""
    return A2F(scale=scale, channels=32, num_layers=16)


# ---------------------------------------------------------------------------------------------
# The authors' released checkpoints
# ---------------------------------------------------------------------------------------------

# Authors' key pattern -> our key template. Keys that match none are passed on unchanged, so a
# strict load reports them as unexpected instead of dropping them silently.
_KEY_MAP: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(head|skip|tail)\.0\.(weight_g|weight_v|bias)$"), r"\1.\2"),
    (re.compile(r"^body\.(\d+)\.body\.0\.(weight_g|weight_v|bias)$"), r"layers.\1.expand.\2"),
    (re.compile(r"^body\.(\d+)\.body\.2\.(weight_g|weight_v|bias)$"), r"layers.\1.reduce.\2"),
    (re.compile(r"^fusion_conv_list\.(\d+)\.0\.weight$"), r"layers.\1.merge.weight"),
    (
        re.compile(r"^fusion_conv_list\.(\d+)\.1\.conv_du\.0\.(weight|bias)$"),
        r"layers.\1.attention.squeeze.\2",
    ),
    (
        re.compile(r"^fusion_conv_list\.(\d+)\.1\.conv_du\.2\.(weight|bias)$"),
        r"layers.\1.attention.excite.\2",
    ),
    (re.compile(r"^x_scale_list\.(\d+)\.scale$"), r"layers.\1.x_scale"),
    (re.compile(r"^res_scale_list\.(\d+)\.scale$"), r"layers.\1.res_scale"),
    (re.compile(r"^auxilary_scale_list\.(\d+)\.scale$"), r"layers.\1.aux_scale"),  # sic
]

# Keys that only the authors' A2F state dicts have together.
_SIGNATURE = (
    "head.0.weight_g",
    "skip.0.weight_v",
    "tail.0.weight_v",
    "body.0.body.0.weight_v",
    "fusion_conv_list.0.0.weight",
    "auxilary_scale_list.0.scale",
)


def _our_key(key: str) -> str:
    for pattern, template in _KEY_MAP:
        if pattern.match(key):
            return pattern.sub(template, key)
    return key


@register_official_converter("A2F")
def convert_official(state: Mapping[str, torch.Tensor]) -> OfficialMatch | None:
    """Recognise an authors' A²F state dict; variant from the head width and the number of
    layers, scale from the tail's 3*s^2 output channels. None if it is not an A²F state dict."""
    if not all(k in state for k in _SIGNATURE):
        return None
    convs = ("head.0.weight_v", "skip.0.weight_v", "tail.0.weight_v", "body.0.body.0.weight_v")
    if any(state[k].dim() != 4 for k in convs):
        raise CheckpointError(
            f"A2F checkpoint whose conv weights {convs} are not all 4-D (shapes "
            f"{[tuple(state[k].shape) for k in convs]}): the file is damaged."
        )
    channels = state["head.0.weight_v"].shape[0]
    inner = state["body.0.body.0.weight_v"].shape[0]
    # Indices of at most 4 digits (A2F-L has 16 layers): a longer one is left unmapped, and the
    # strict load names it, instead of int() parsing a forged thousand-digit number.
    layer_ids = {int(m.group(1)) for k in state if (m := re.match(r"^body\.(\d{1,4})\.", k))}
    num_layers = max(layer_ids) + 1
    out = state["tail.0.weight_v"].shape[0]
    scale = math.isqrt(out // 3)
    if 3 * scale * scale != out or state["skip.0.weight_v"].shape[0] != out:
        raise CheckpointError(
            f"A2F checkpoint with tail/skip output channels {out} / "
            f"{state['skip.0.weight_v'].shape[0]}: expected 3*s^2 for a scale s in (2, 3, 4). "
            "The file is damaged or not a super-resolution A2F model."
        )
    arch = next((name for name, cn in VARIANTS.items() if cn == (channels, num_layers)), None)
    if arch is None or inner != _INNER or layer_ids != set(range(num_layers)):
        known = ", ".join(f"{n} (C={c}, N={k})" for n, (c, k) in VARIANTS.items())
        raise CheckpointError(
            f"A2F checkpoint with C={channels}, N={num_layers}, inner width {inner} is none of "
            f"the released variants {known} with inner width {_INNER}."
        )
    if scale not in (2, 3, 4):
        raise CheckpointError(f"A2F checkpoint is for x{scale}; lightsr supports x2, x3, x4.")
    converted = {_our_key(k): v for k, v in state.items()}
    return OfficialMatch(arch=arch, scale=scale, folded=False, state_dict=converted)


def _official_keys(num_layers: int) -> list[str]:
    """Every key of the authors' state dict for ``num_layers`` layers, in their files' order
    (the scalar lists first, then head, body, tail, skip, fusion_conv_list; weight-normed convs
    as bias, weight_g, weight_v), so an exported dict lists keys exactly as theirs do."""
    wn = ("bias", "weight_g", "weight_v")
    lists = ("x_scale_list", "res_scale_list", "auxilary_scale_list")  # sic
    keys = [f"{name}.{i}.scale" for name in lists for i in range(num_layers)]
    keys += [f"head.0.{p}" for p in wn]
    keys += [f"body.{i}.body.{j}.{p}" for i in range(num_layers) for j in (0, 2) for p in wn]
    keys += [f"{name}.0.{p}" for name in ("tail", "skip") for p in wn]
    for i in range(num_layers):
        keys.append(f"fusion_conv_list.{i}.0.weight")
        keys += [
            f"fusion_conv_list.{i}.1.conv_du.{j}.{p}" for j in (0, 2) for p in ("weight", "bias")
        ]
    return keys


@register_official_exporter("a2f_s", "a2f_sd", "a2f_m", "a2f_l")
def to_official_state(model: A2F) -> dict[str, torch.Tensor]:
    """``model``'s weights under the authors' key names and in their order, so that their code
    loads them; the tensors are ``state_dict()``'s, sharing storage with the model.

    Names are mapped through the same table :func:`convert_official` reads with, so the two
    directions cannot drift apart. Their files hold weight-norm ``weight_g``/``weight_v``, which
    a folded model no longer has, so only the unfolded (training-form) model can be exported.
    """
    if not isinstance(model, A2F):
        raise CheckpointError(
            f"lightsr.models.a2f.to_official_state exports A2F, not {type(model).__name__}; "
            "use the to_official_state of that model's family module."
        )
    if not isinstance(model.head, WNConv2d):
        raise CheckpointError(
            "this A2F is folded (lightsr.reparameterize replaced its weight-normalised convs by "
            "plain ones), but the authors' files hold weight_g/weight_v, which folding does not "
            "keep. Export the unfolded model, e.g. lightsr.load() of its training checkpoint."
        )
    ours = model.state_dict()
    pairs = [(theirs, _our_key(theirs)) for theirs in _official_keys(len(model.layers))]
    mapped = {o for _, o in pairs}
    if set(ours) != mapped:
        missing, extra = sorted(mapped - set(ours)), sorted(set(ours) - mapped)
        raise CheckpointError(
            f"this A2F's weights do not fit the authors' layout (no counterpart for {extra[:4]}, "
            f"nothing for {missing[:4]}); only the registered a2f_* variants can be exported."
        )
    return {theirs: ours[o] for theirs, o in pairs}
