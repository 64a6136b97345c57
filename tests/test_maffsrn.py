"""MAFFSRN / MAFFSRN-L: weight-norm and shuffle folding, input-size errors, the gate option, the
bicubic tail. Parameter counts, forward, gradients, generic fold equality and save/load (with
gate_relu=False too): tests/test_models.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import random_model

import lightsr
from lightsr.models.maffsrn import MAB, _shuffle_concat

# Parameter counts (ARCHITECTURES.md) are pinned in tests/test_models.py.
CASES = [(name, scale) for name in ("maffsrn", "maffsrn_l") for scale in (2, 3, 4)]


def test_input_below_13_pixels_raises_clear_error() -> None:
    model = lightsr.create_model("maffsrn", scale=2).eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 13, 13))  # the smallest accepted size runs
        with pytest.raises(lightsr.InputSizeError, match=r"at least 13x13.*got 12x12"):
            model(torch.rand(1, 3, 12, 12))
        with pytest.raises(lightsr.InputSizeError, match=r"got 40x12"):
            model(torch.rand(1, 3, 40, 12))


def test_channel_shuffle_interleaves() -> None:
    a = torch.arange(3.0).view(1, 3, 1, 1)
    b = torch.arange(10.0, 13.0).view(1, 3, 1, 1)
    assert _shuffle_concat(a, b).flatten().tolist() == [0.0, 10.0, 1.0, 11.0, 2.0, 12.0]


@pytest.mark.parametrize("gate_relu", [True, False])
def test_spatial_gate_relu_option(gate_relu: bool) -> None:
    # With the authors' ReLU before the sigmoid the gate never closes below 0.5.
    torch.manual_seed(4)
    gate = MAB(channels=32, gate_relu=gate_relu).spatial
    with torch.no_grad():
        g = gate(torch.randn(2, 32, 16, 16))
    assert (g.min().item() >= 0.5) == gate_relu


def test_tail_adds_to_plain_bicubic_upsampling() -> None:
    model = random_model("maffsrn", 4).eval()
    with torch.no_grad():
        model.tail3_scale.zero_()
        model.tail5_scale.zero_()
        x = torch.rand(1, 3, 13, 17, generator=torch.Generator().manual_seed(5))
        ref = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
        assert torch.equal(model(x), ref)
