"""Inference forms beyond fuse(): the bicubic skip as a phase conv, and channel padding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightsr
from lightsr.deploy import pad_channels
from lightsr.layers.common import PhaseBicubicUpsample, bicubic_phase_kernels, bicubic_upsample
from lightsr.models.base import SRModel


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_phase_bicubic_equals_pytorch_bicubic_borders_included(scale):
    x = torch.rand(2, 3, 7, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = PhaseBicubicUpsample(scale).double()(x)
    want = bicubic_upsample(x, scale)
    # x3's source coordinates go through 1/3 in float inside PyTorch: ~1e-8 apart
    assert (got - want).abs().max() < (1e-7 if scale == 3 else 1e-12)


def test_phase_kernels_interpolate_constants_exactly():
    # each phase's taps sum to one (a flat image stays flat), and x2's phase 0 puts the cubic
    # weights of t = 0.75 on offsets -2..1
    k = bicubic_phase_kernels(2)
    torch.testing.assert_close(k.sum(dim=(1, 2, 3)), torch.ones(4, dtype=torch.float64))
    taps = k[0, 0].sum(dim=1)  # phase (0, 0): rows' taps = the 1-D taps
    assert taps[4] == 0 and taps[0] == pytest.approx(-0.03515625)


def test_phase_bicubic_stays_fp32_under_autocast():
    x = torch.rand(1, 3, 9, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = PhaseBicubicUpsample(4)(x)
    assert y.dtype == torch.float32
    assert (y - bicubic_upsample(x, 4)).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["maffsrn", "idn", "memnet"])
def test_folded_models_with_a_bicubic_skip_use_the_phase_conv(name):
    torch.manual_seed(0)
    model = lightsr.create_model(name, scale=3).eval()
    folded = lightsr.reparameterize(model)
    assert isinstance(folded.image_upsample, PhaseBicubicUpsample)
    assert not any("image_upsample" in k for k in folded.state_dict())  # no checkpoint keys
    x = torch.rand(1, 3, 16, 19)
    with torch.no_grad():
        assert (folded(x) - model(x)).abs().max() < 1e-5


@pytest.mark.parametrize(("name", "widths"), [("fmen_s", {50: 64, 12: 16}), ("maffsrn", {8: 16})])
def test_padded_model_computes_the_same_function(name, widths):
    torch.manual_seed(0)
    model = lightsr.create_model(name, scale=4).eval()  # x4: no image-side width is padded
    padded, report = pad_channels(model)
    assert report.reason == "" and report.widened == widths
    convs = [m for m in padded.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels not in widths and c.in_channels not in widths for c in convs)
    x = torch.rand(1, 3, 21, 18)
    folded = lightsr.reparameterize(model)
    with torch.no_grad():
        assert (padded(x) - folded(x)).abs().max() < 1e-5
    assert sum(p.numel() for p in padded.parameters()) > sum(p.numel() for p in folded.parameters())
    # below=16 pads only the narrow widths
    _, narrow = pad_channels(model, below=16)
    assert narrow.widened == {k: v for k, v in widths.items() if k < 16}


class _SplitsAtFixedOffsets(SRModel):
    """Splits a 20-channel feature at channel 10: padding to 32 would move the split."""

    def __init__(self) -> None:
        super().__init__(scale=2)
        self.head = nn.Conv2d(3, 20, 3, padding=1)
        self.tail = nn.Conv2d(10, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.head(x).split(10, dim=1)
        return self.shuffle(self.tail(a * b))


class _ChannelScale(_SplitsAtFixedOffsets):
    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, 20, 1, 1))


def test_padding_refuses_models_it_would_change():
    model = _SplitsAtFixedOffsets().eval()
    same, report = pad_channels(model)
    assert not any(c.out_channels == 32 for c in same.modules() if isinstance(c, nn.Conv2d))
    assert report.widened == {} and ("differs" in report.reason or "does not run" in report.reason)
    _, report = pad_channels(_ChannelScale().eval())
    assert "outside a conv" in report.reason
    _, report = pad_channels(lightsr.create_model("a2f_sd", scale=2).eval())
    assert "already a multiple" in report.reason


def test_upscaler_pads_narrow_widths_by_default_with_the_same_output():
    from lightsr.upscale import Upscaler

    torch.manual_seed(0)
    model = lightsr.create_model("maffsrn", scale=2).eval()
    padded = Upscaler(model, tile=None)
    plain = Upscaler(model, tile=None, pad_narrow=False)
    assert padded.padding.widened == {8: 16} and plain.padding is None
    x = torch.rand(1, 3, 20, 17)
    assert (padded._forward(x) - plain._forward(x)).abs().max() < 1e-5
