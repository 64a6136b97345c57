"""A²F (S, SD, M, L): weight-norm folding, the mean shift, the authors' files and converter.
Parameter counts, forward, gradients, generic fold equality and save/load: tests/test_models.py."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from conftest import random_model, shared_path

import lightsr
from lightsr.checkpoint import convert_official_state
from lightsr.models.a2f import convert_official

# Parameter counts (ARCHITECTURES.md) are pinned in tests/test_models.py.
VARIANTS = ("a2f_s", "a2f_sd", "a2f_m", "a2f_l")
CASES = [(name, scale) for name in VARIANTS for scale in (2, 3, 4)]
MEAN = (0.4488, 0.4371, 0.4040)


def _to_authors_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our key names -> the names in the authors' released state dicts (written independently of
    the converter's table, so that a wrong table fails this test)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in ("head", "skip", "tail"):
            new = f"{parts[0]}.0.{parts[1]}"
        else:
            i, rest = parts[1], ".".join(parts[2:])
            new = {
                "expand.weight_g": f"body.{i}.body.0.weight_g",
                "expand.weight_v": f"body.{i}.body.0.weight_v",
                "expand.bias": f"body.{i}.body.0.bias",
                "reduce.weight_g": f"body.{i}.body.2.weight_g",
                "reduce.weight_v": f"body.{i}.body.2.weight_v",
                "reduce.bias": f"body.{i}.body.2.bias",
                "merge.weight": f"fusion_conv_list.{i}.0.weight",
                "attention.squeeze.weight": f"fusion_conv_list.{i}.1.conv_du.0.weight",
                "attention.squeeze.bias": f"fusion_conv_list.{i}.1.conv_du.0.bias",
                "attention.excite.weight": f"fusion_conv_list.{i}.1.conv_du.2.weight",
                "attention.excite.bias": f"fusion_conv_list.{i}.1.conv_du.2.bias",
                "x_scale": f"x_scale_list.{i}.scale",
                "res_scale": f"res_scale_list.{i}.scale",
                "aux_scale": f"auxilary_scale_list.{i}.scale",
            }[rest]
        out[new] = value.clone()
    return out


def _reference_forward(sd: dict[str, torch.Tensor], x255: torch.Tensor) -> torch.Tensor:
    """The authors' network computed straight from their state dict, in their 0..255 range."""

    def wn(prefix: str, t: torch.Tensor) -> torch.Tensor:
        v, g = sd[prefix + ".weight_v"], sd[prefix + ".weight_g"]
        w = g * v / v.pow(2).sum(dim=(1, 2, 3), keepdim=True).sqrt()
        return F.conv2d(t, w, sd[prefix + ".bias"], padding=w.shape[-1] // 2)

    scale = int(round((sd["tail.0.bias"].numel() / 3) ** 0.5))
    n = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    mean = 255 * torch.tensor(MEAN).view(1, 3, 1, 1)
    x = (x255 - mean) / 127.5
    states = [wn("head.0", x)]
    for i in range(n):
        s = states[-1]
        r = wn(f"body.{i}.body.2", F.relu(wn(f"body.{i}.body.0", s)))
        z = F.conv2d(torch.cat(states, 1), sd[f"fusion_conv_list.{i}.0.weight"])
        ca = f"fusion_conv_list.{i}.1.conv_du"
        w = z.mean(dim=(2, 3), keepdim=True)
        w = F.conv2d(F.relu(F.conv2d(w, sd[f"{ca}.0.weight"], sd[f"{ca}.0.bias"])),
                     sd[f"{ca}.2.weight"], sd[f"{ca}.2.bias"])  # fmt: skip
        a = z * torch.sigmoid(w)
        states.append(
            sd[f"x_scale_list.{i}.scale"] * s
            + sd[f"res_scale_list.{i}.scale"] * r
            + sd[f"auxilary_scale_list.{i}.scale"] * a
        )
    y = F.pixel_shuffle(wn("tail.0", states[-1]), scale) + F.pixel_shuffle(wn("skip.0", x), scale)
    return y * 127.5 + mean


# ---------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------


def test_mean_shift_is_a_device_following_constant_not_a_weight() -> None:
    model = lightsr.create_model("a2f_s", scale=2)
    assert "mean" not in model.state_dict()
    model = model.double()
    assert model.mean.dtype == torch.float64
    assert model.mean.flatten().tolist() == pytest.approx(MEAN)


# ---------------------------------------------------------------------------------------------
# The authors' checkpoints
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("filename", "scale"), [("a2f_sd_x2.pt", 2), ("a2f_sd_x4.pt", 4)])
def test_load_official_released_files(filename: str, scale: int) -> None:
    path = shared_path("weights", "official", filename)
    model = lightsr.load_official(path)  # loads strictly: every key mapped, every shape right
    assert (model.arch_name, model.scale, model.folded) == ("a2f_sd", scale, False)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    # The learned scalars are far from their init of 1; each must come from the file.
    for i, layer in enumerate(model.layers):
        assert torch.equal(layer.x_scale, sd[f"x_scale_list.{i}.scale"])
        assert torch.equal(layer.res_scale, sd[f"res_scale_list.{i}.scale"])
        assert torch.equal(layer.aux_scale, sd[f"auxilary_scale_list.{i}.scale"])
    assert not torch.allclose(model.layers[0].x_scale, torch.ones(1))
    # Our [0, 1] model reproduces the authors' 0..255 network computed from the raw file.
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model(x) * 255
        ref = _reference_forward(sd, x * 255)
    torch.testing.assert_close(ours, ref, rtol=0, atol=2e-3)


@pytest.mark.parametrize(("name", "scale"), CASES)
def test_converter_recognises_every_variant_and_scale(name: str, scale: int) -> None:
    ours = lightsr.create_model(name, scale=scale).state_dict()
    match = convert_official_state(_to_authors_keys(ours))
    assert (match.arch, match.scale, match.folded, match.options) == (name, scale, False, {})
    assert match.state_dict.keys() == ours.keys()
    assert all(match.state_dict[k].shape == v.shape for k, v in ours.items())


def test_converted_synthetic_checkpoint_reproduces_outputs_exactly() -> None:
    source = random_model("a2f_m", 3, seed=5).eval()
    match = convert_official_state(_to_authors_keys(source.state_dict()))
    assert (match.arch, match.scale) == ("a2f_m", 3)
    target = lightsr.create_model(match.arch, scale=match.scale, **match.options).eval()
    target.load_state_dict(match.state_dict, strict=True)
    x = torch.rand(1, 3, 9, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


def test_converter_ignores_other_families() -> None:
    assert convert_official(lightsr.create_model("maffsrn", scale=2).state_dict()) is None
    assert convert_official(lightsr.create_model("a2f_s", scale=2).state_dict()) is None


def test_converter_rejects_unknown_variant_and_scale() -> None:
    authors = _to_authors_keys(lightsr.create_model("a2f_s", scale=2).state_dict())
    # Drop the last layer: C=32 with N=3 is no released variant.
    fewer = {k: v for k, v in authors.items() if not re.search(r"(^body|_list)\.3\.", k)}
    with pytest.raises(lightsr.CheckpointError, match=r"C=32, N=3"):
        convert_official(fewer)
    # A tail with 5 output channels is not 3*s^2 for any scale.
    bad = dict(authors)
    bad["tail.0.weight_v"] = torch.zeros(5, 32, 3, 3)
    with pytest.raises(lightsr.CheckpointError, match=r"3\*s\^2"):
        convert_official(bad)
