"""FMEN and FMEN-S: fast and memory-efficient network.

Du et al., "Fast and Memory-Efficient Network Towards Efficient Image Super-Resolution",
CVPR Workshops (NTIRE) 2022 (https://github.com/NJU-Jet/FMEN).

A plain, sequential trunk of enhanced residual blocks (ERB) alternating with high-frequency
attention blocks (HFAB). Both exist in two forms computing the same function (in eval mode):

* **training form** (what :func:`lightsr.create_model` builds): every 3x3 conv inside an ERB is
  an :class:`RRRB` (1x1 expand n -> 2n, 3x3 on the expanded tensor with an identity, 1x1 reduce,
  outer identity), and each HFAB carries three BatchNorms;
* **inference form** (what :func:`lightsr.reparameterize` returns): every RRRB is one 3x3 conv
  and the BatchNorms are folded into the HFAB's squeeze/excite convs. The folds are exact
  because the training form pads with the value a zero-padded input would have produced (the
  expand bias in an RRRB, BatchNorm's shift in an HFAB) instead of with zeros.

Network: head conv 3 -> C (output ``x``); warm-up = conv C -> C, HFAB(2 ERBs, width M - 4);
``num_blocks`` x (ERB, HFAB(1 ERB, width M)); ``lr_conv`` C -> C; ``+ x``; tail conv C -> 3s^2
and pixel shuffle. LeakyReLU slope 0.1; every conv 3x3.

I/O: float RGB in [0, 1] -> float RGB in [0, 1], unclamped. The authors' network takes RGB in
0..255 without normalisation, so ``forward`` multiplies by 255 on entry and divides on exit; the
authors' weights are loaded unchanged.

Variants (parameters x2 / x3 / x4):

* ``fmen_s`` (the authors' NTIRE 2022 config, released weights): C = 50, M = 16, 4 pairs, HFAB
  ERB counts [2, 1, 1, 1, 1] (warm-up first), RRRB expansion 2. Inference form
  324,830 / 331,595 / 341,066 (the paper's 341K at x4); training form
  1,029,630 / 1,036,395 / 1,045,866.
* ``fmen``: the paper (section 4.1) gives C = 64 and M = 32 and nothing else; no code or
  weights exist. We keep everything else as in FMEN-S (4 pairs after the warm-up, i.e. 5 HFABs
  as section 4.4 says, warm-up HFAB width M - 4 = 28, ERB counts [2, 1, 1, 1, 1]). Inference
  form 660,504 / 669,159 / 681,276; training form 2,032,592 / 2,041,247 / 2,053,364. The
  paper's table 3 lists 748K / 757K / 760K and its table 2 769K (x4): ours is ~79K smaller at
  x4, and no layout we could derive from the text reproduces those figures (five full pairs
  would give 810,588 at x4; the paper's x2 -> x4 increase of 12K is also smaller than a
  C -> 3s^2 tail's 20.8K), so treat ``fmen`` as "FMEN-S widened to the paper's widths".

Builders accept overrides (``channels``, ``attention_width``, ``warmup_width``,
``num_blocks``, ``attention_erbs``, ``expansion``) so that any authors'-layout checkpoint can be
rebuilt; :func:`convert_official` recognises the authors' inference-form files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..layers.rep import (
    bn_affine,
    conv_from,
    fold_bn_after,
    fold_bn_before,
    fold_expand_conv_reduce,
)
from ..registry import (
    OfficialMatch,
    register_model,
    register_official_converter,
    register_official_exporter,
)
from .base import SRModel

_PAPER = "FMEN (Du et al., CVPRW 2022)"
_SLOPE = 0.1

# ---------------------------------------------------------------------------------------------
# Padding with a per-channel value
# ---------------------------------------------------------------------------------------------


def pad_with_values(x: torch.Tensor, values: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """Pad ``x`` (N, C, H, W) by ``pad`` pixels on each side; channel k's border is ``values[k]``.

    Zero-pad, then add ``values`` on the border only (a 0/1 mask), so the interior is copied
    bit-exactly and gradients flow to both ``x`` and ``values``.
    """
    h, w = x.shape[-2:]
    mask = F.pad(x.new_zeros(1, 1, h, w), (pad, pad, pad, pad), value=1.0)
    return F.pad(x, (pad, pad, pad, pad)) + mask * values.view(1, -1, 1, 1)


def _bn_zero_value(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """What ``bn`` maps a zero input to, per channel, under the statistics it uses for ``x``.

    Eval mode: running statistics (the value folding relies on). Training mode: the batch's own
    statistics, as BatchNorm normalises with them, so the padded border stays "BN of a zero
    pixel" in both modes.
    """
    if bn.training or bn.running_mean is None:
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        weight = bn.weight if bn.affine else torch.ones_like(mean)
        bias = bn.bias if bn.affine else torch.zeros_like(mean)
        return bias - mean * weight / torch.sqrt(var + bn.eps)
    return bn_affine(bn)[1]


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


class RRRB(nn.Module):
    """Residual-in-residual re-parameterisable block; equals one 3x3 conv n -> n (pad 1).

    ``e = expand(x)`` (1x1, n -> expansion*n); ``f = fea_conv(pad_{b0}(e)) + e`` (3x3, pad 0,
    where the 1-pixel border holds the expand bias ``b0``); ``out = reduce(f) + x`` (1x1).
    """

    def __init__(self, *, channels: int, expansion: int = 2) -> None:
        super().__init__()
        mid = channels * expansion
        self.expand_conv = nn.Conv2d(channels, mid, 1)
        self.fea_conv = nn.Conv2d(mid, mid, 3, padding=0)
        self.reduce_conv = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.expand_conv(x)
        assert self.expand_conv.bias is not None  # the three convs are built with biases
        f = self.fea_conv(pad_with_values(e, self.expand_conv.bias)) + e
        return self.reduce_conv(f) + x

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        assert self.expand_conv.bias is not None and self.fea_conv.bias is not None
        assert self.reduce_conv.bias is not None
        w, b = fold_expand_conv_reduce(
            self.expand_conv.weight,
            self.expand_conv.bias,
            self.fea_conv.weight,
            self.fea_conv.bias,
            self.reduce_conv.weight,
            self.reduce_conv.bias,
        )
        return conv_from(w, b, padding=1)


class ERB(nn.Module):
    """Enhanced residual block: conv1 -> LeakyReLU(0.1) -> conv2 (no skip, no activation after).

    ``conv1``/``conv2`` are :class:`RRRB` in the training form and 3x3 convs once folded.
    """

    def __init__(self, *, channels: int, expansion: int = 2) -> None:
        super().__init__()
        self.conv1 = RRRB(channels=channels, expansion=expansion)
        self.conv2 = RRRB(channels=channels, expansion=expansion)
        self.act = nn.LeakyReLU(_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class HFAB(nn.Module):
    """High-frequency attention block, training form: ``x * sigmoid(a(x))``.

    a: BN1 -> pad with BN1(0) -> squeeze 3x3 (pad 0) C -> M -> LReLU -> ERBs -> LReLU -> BN2 ->
    pad with BN2(0) -> excitate 3x3 (pad 0) M -> C -> BN3. :meth:`fuse` folds the three BNs.
    """

    def __init__(self, *, channels: int, width: int, num_erbs: int, expansion: int = 2) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels)
        self.squeeze = nn.Conv2d(channels, width, 3, padding=0)
        self.convs = nn.Sequential(
            *[ERB(channels=width, expansion=expansion) for _ in range(num_erbs)]
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.excitate = nn.Conv2d(width, channels, 3, padding=0)
        self.bn3 = nn.BatchNorm2d(channels)
        self.act = nn.LeakyReLU(_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = pad_with_values(self.bn1(x), _bn_zero_value(self.bn1, x))
        z = self.act(self.convs(self.act(self.squeeze(z))))
        y = pad_with_values(self.bn2(z), _bn_zero_value(self.bn2, z))
        return x * torch.sigmoid(self.bn3(self.excitate(y)))

    @torch.no_grad()
    def fuse(self) -> FusedHFAB:
        # Children are fused first (post-order), so self.convs already holds plain convs.
        sw, sb = fold_bn_before(self.squeeze.weight, self.squeeze.bias, self.bn1)
        ew, eb = fold_bn_before(self.excitate.weight, self.excitate.bias, self.bn2)
        ew, eb = fold_bn_after(ew, eb, self.bn3)
        return FusedHFAB(
            squeeze=conv_from(sw, sb, padding=1),
            convs=self.convs,
            excitate=conv_from(ew, eb, padding=1),
        )


class FusedHFAB(nn.Module):
    """HFAB, inference form: ``x * sigmoid(excitate(LReLU(convs(LReLU(squeeze(x))))))``."""

    def __init__(self, *, squeeze: nn.Conv2d, convs: nn.Sequential, excitate: nn.Conv2d) -> None:
        super().__init__()
        self.squeeze = squeeze
        self.convs = convs
        self.excitate = excitate
        self.act = nn.LeakyReLU(_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.act(self.convs(self.act(self.squeeze(x))))
        return x * torch.sigmoid(self.excitate(z))


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


class FMEN(SRModel):
    """FMEN / FMEN-S (training form until :func:`lightsr.reparameterize`).

    Args:
        scale: upscaling factor (2, 3 or 4).
        channels: trunk width C.
        attention_width: HFAB inner width M of the trunk HFABs.
        warmup_width: inner width of the warm-up HFAB (the authors use M - 4).
        num_blocks: number of (ERB, HFAB) pairs after the warm-up.
        attention_erbs: ERBs inside each HFAB, warm-up first (``num_blocks + 1`` entries).
        expansion: RRRB channel expansion (training form only; folding removes it).
    """

    def __init__(
        self,
        *,
        scale: int,
        channels: int,
        attention_width: int,
        warmup_width: int,
        num_blocks: int,
        attention_erbs: Sequence[int],
        expansion: int = 2,
    ) -> None:
        super().__init__(scale=scale, min_input_size=1)
        attention_erbs = [int(n) for n in attention_erbs]
        if len(attention_erbs) != num_blocks + 1:
            raise ConfigError(
                f"FMEN attention_erbs needs num_blocks + 1 = {num_blocks + 1} entries (warm-up "
                f"HFAB first), got {len(attention_erbs)}: {attention_erbs}."
            )
        if min(channels, attention_width, warmup_width, expansion) < 1 or num_blocks < 0:
            raise ConfigError(
                "FMEN widths and expansion must be positive and num_blocks >= 0; got "
                f"channels={channels}, attention_width={attention_width}, "
                f"warmup_width={warmup_width}, expansion={expansion}, num_blocks={num_blocks}."
            )
        c = channels
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.warmup = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1),
            HFAB(channels=c, width=warmup_width, num_erbs=attention_erbs[0], expansion=expansion),
        )
        self.ERBs = nn.ModuleList([ERB(channels=c, expansion=expansion) for _ in range(num_blocks)])
        self.HFABs = nn.ModuleList(
            [
                HFAB(channels=c, width=attention_width, num_erbs=n, expansion=expansion)
                for n in attention_erbs[1:]
            ]
        )
        self.lr_conv = nn.Conv2d(c, c, 3, padding=1)
        self.tail = nn.Sequential(
            nn.Conv2d(c, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], (N, 3, H, W) -> RGB in [0, 1] (unclamped), (N, 3, sH, sW)."""
        self.check_input(x)
        x = self.head(x * 255.0)  # the authors' network works on 0..255
        h = self.warmup(x)
        for erb, hfab in zip(self.ERBs, self.HFABs):
            h = hfab(erb(h))
        h = self.lr_conv(h) + x
        return self.tail(h) / 255.0


# ---------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------

FMEN_S_CONFIG: dict[str, Any] = {
    "channels": 50,
    "attention_width": 16,
    "warmup_width": 12,
    "num_blocks": 4,
    "attention_erbs": [2, 1, 1, 1, 1],
    "expansion": 2,
}
FMEN_CONFIG: dict[str, Any] = {
    **FMEN_S_CONFIG,
    "channels": 64,
    "attention_width": 32,
    "warmup_width": 28,
}
_PRESETS = {"fmen_s": FMEN_S_CONFIG, "fmen": FMEN_CONFIG}


def _build(name: str, scale: int, overrides: Mapping[str, Any]) -> FMEN:
    preset = _PRESETS[name]
    unknown = sorted(set(overrides) - set(preset))
    if unknown:
        raise ConfigError(f"{name} has no option(s) {unknown}; valid options: {sorted(preset)}.")
    cfg = {**preset, **overrides}
    if "attention_width" in overrides and "warmup_width" not in overrides:
        # The authors' warm-up HFAB is 4 channels narrower than the trunk's.
        cfg["warmup_width"] = max(1, int(cfg["attention_width"]) - 4)
    if "num_blocks" in overrides and "attention_erbs" not in overrides:
        cfg["attention_erbs"] = [2] + [1] * int(cfg["num_blocks"])
    return FMEN(scale=scale, **cfg)


# bf16_safe: Set5 x4 PSNR-Y bf16 - fp32 = -0.008 dB with the authors' weights; OpenVINO's
# bf16 -0.010 (bf16_engine_scales; only x4 weights exist; benchmarks/bf16_declarations.py).
@register_model("fmen_s", paper=_PAPER, receptive_field=34, bf16_safe=True, bf16_engine_scales=(4,))
def fmen_s(*, scale: int, **overrides: Any) -> FMEN:
    """FMEN-S (NTIRE 2022, C=50, M=16): 341,066 params folded at x4; authors' weights exist."""
    return _build("fmen_s", scale, overrides)


@register_model("fmen", paper=_PAPER, receptive_field=34)
def fmen(*, scale: int, **overrides: Any) -> FMEN:
    """FMEN (C=64, M=32, otherwise FMEN-S's layout; no official code): 681,276 folded at x4."""
    return _build("fmen", scale, overrides)


# ---------------------------------------------------------------------------------------------
# The authors' released checkpoints (inference form)
# ---------------------------------------------------------------------------------------------

_TRUNK_RENAMES = (("basic_blocks.", "ERBs."), ("hfabs.", "HFABs."))
# Indices of at most 4 digits: a longer (forged) one is left unparsed, and the strict load
# names its key, instead of int() parsing a thousand-digit number.
_ERB_KEY = re.compile(r"^ERBs\.(\d{1,4})\.")
_HFAB_KEY = re.compile(r"^HFABs\.(\d{1,4})\.")
_HFAB_ERB_KEY = re.compile(r"^(warmup\.1|HFABs\.(\d{1,4}))\.convs\.(\d{1,4})\.")


def _our_key(key: str) -> str:
    for theirs, ours in _TRUNK_RENAMES:
        if key.startswith(theirs):
            key = ours + key[len(theirs) :]
    # The authors' inference RRRB is a wrapper holding one conv named rep_conv.
    return key.replace(".rep_conv.", ".")


def _is_training_form(keys: Sequence[str]) -> bool:
    return any(".bn1." in k or ".expand_conv." in k or ".fea_conv." in k for k in keys)


@register_official_converter("FMEN")
def convert_official(state: Mapping[str, torch.Tensor]) -> OfficialMatch | None:
    """Recognise the authors' FMEN / FMEN-S inference-form state dict (either trunk naming).

    C, the HFAB widths, the number of pairs, the ERB counts and the scale are read from key
    names and tensor shapes. A file matching a preset gives that preset with no options;
    anything else gives ``fmen_s`` with the options that rebuild it.
    """
    if not {"head.weight", "warmup.0.weight", "warmup.1.squeeze.weight", "tail.0.weight"} <= set(
        state
    ):
        return None
    ours = {_our_key(k): v for k, v in state.items()}
    if _is_training_form(list(ours)):
        raise CheckpointError(
            "this FMEN checkpoint is in the training form (it has BatchNorm / RRRB expand keys); "
            "only the authors' inference-form files are supported. Fold it with the authors' "
            "code first, or load its weights into lightsr.create_model('fmen_s', ...) by hand."
        )
    head = ours["head.weight"]
    if head.dim() != 4 or head.shape[1] != 3:
        return None
    channels = int(head.shape[0])
    if ours["tail.0.weight"].dim() != 4:
        raise CheckpointError(
            f"FMEN checkpoint's tail conv weight has shape {tuple(ours['tail.0.weight'].shape)}, "
            "not (3*s^2, C, 3, 3); the file is damaged."
        )
    # The inferred options (channels, widths, counts) are bounded by the loader, which builds
    # the model on the meta device and compares shapes before allocating anything.
    tail_out = int(ours["tail.0.weight"].shape[0])
    scale = round((tail_out / 3) ** 0.5)
    if 3 * scale * scale != tail_out:
        raise CheckpointError(
            f"FMEN checkpoint's tail conv has {tail_out} output channels, not 3*s^2 for an "
            "integer scale s; the file is damaged or not FMEN."
        )
    erbs = {int(m.group(1)) for k in ours if (m := _ERB_KEY.match(k))}
    hfabs = {int(m.group(1)) for k in ours if (m := _HFAB_KEY.match(k))}
    num_blocks = len(hfabs)
    if erbs != hfabs or hfabs != set(range(num_blocks)):
        raise CheckpointError(
            f"FMEN checkpoint has ERB blocks {sorted(erbs)} and HFAB blocks {sorted(hfabs)}; "
            "they must be the same consecutive indices 0..n-1. The file is incomplete."
        )
    counts: dict[str, set[int]] = {}
    for k in ours:
        if m := _HFAB_ERB_KEY.match(k):
            owner = "warmup" if m.group(2) is None else m.group(2)
            counts.setdefault(owner, set()).add(int(m.group(3)))
    order = ["warmup"] + [str(i) for i in range(num_blocks)]
    attention_erbs = [len(counts.get(o, ())) for o in order]
    warmup_width = int(ours["warmup.1.squeeze.weight"].shape[0])
    attention_width = (
        int(ours["HFABs.0.squeeze.weight"].shape[0]) if num_blocks else warmup_width + 4
    )
    cfg = {
        "channels": channels,
        "attention_width": attention_width,
        "warmup_width": warmup_width,
        "num_blocks": num_blocks,
        "attention_erbs": attention_erbs,
    }
    arch, options = "fmen_s", {}
    for name, preset in _PRESETS.items():
        if all(preset[k] == v for k, v in cfg.items()):
            arch = name
            break
    else:
        for name, preset in _PRESETS.items():
            if (preset["channels"], preset["attention_width"]) == (channels, attention_width):
                arch = name
        # The whole layout, so that no builder default (e.g. warm-up width = M - 4) applies.
        options = dict(cfg)
    return OfficialMatch(arch=arch, scale=scale, folded=True, state_dict=ours, options=options)


# Our folded ERB convs; the authors' inference RRRB wraps its one conv as ``rep_conv``.
_ERB_CONV_KEY = re.compile(r"^((?:.+\.)?(?:ERBs|convs)\.\d+\.conv[12])\.(weight|bias)$")


@register_official_exporter("fmen_s", "fmen", folded=True)
def to_official_state(model: FMEN) -> dict[str, torch.Tensor]:
    """``model``'s weights in the authors' inference-form key layout (``ERBs``/``HFABs`` trunk
    names, ERB convs as ``rep_conv``), the layout of their released ``test_weights.pt``; the
    tensors are ``state_dict()``'s, sharing storage with the model.

    The model must already be folded: the released files are the inference form, and folding
    here would mean importing :mod:`lightsr.deploy`, which imports :mod:`lightsr.models` and so
    this module (an import cycle). A training-form model raises, naming the fix.
    """
    if not isinstance(model, FMEN):
        raise CheckpointError(
            f"lightsr.models.fmen.to_official_state exports FMEN, not {type(model).__name__}; "
            "use the to_official_state of that model's family module."
        )
    if any(isinstance(m, (RRRB, HFAB)) for m in model.modules()):
        raise CheckpointError(
            "this FMEN is in the training form (RRRBs, BatchNorms), but the authors' released "
            "files are the folded inference form. Fold it first: "
            "to_official_state(lightsr.reparameterize(model))."
        )
    out = {}
    for key, value in model.state_dict().items():
        theirs = _ERB_CONV_KEY.sub(r"\1.rep_conv.\2", key)
        if _our_key(theirs) != key:  # the reader's table must map the name straight back
            raise CheckpointError(
                f"FMEN weight {key!r} has no place in the authors' inference layout; only "
                "models built by the fmen/fmen_s builders can be exported."
            )
        out[theirs] = value
    return out
