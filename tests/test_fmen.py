"""FMEN / FMEN-S: the fold maths (RRRB, BN-valued padding, float64), the authors' weights and
converter. Parameter counts (training and folded), forward, gradients, generic fold equality and
save/load: tests/test_models.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path
from torch import nn

import lightsr
from lightsr.checkpoint import convert_official_state
from lightsr.models.fmen import RRRB, pad_with_values


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomise_bn(model: nn.Module, g: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so folding has work to do."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                mod.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.25)
                mod.weight.copy_(torch.randn(c, generator=g) * 0.5 + 1.0)
                mod.bias.copy_(torch.randn(c, generator=g) * 0.5)


def to_authors_keys(state: dict[str, torch.Tensor], *, trunk=("ERBs", "HFABs")) -> dict:
    """Our folded keys -> the authors' inference-form keys (RRRB convs wrapped as rep_conv)."""
    out = {}
    for k, v in state.items():
        for conv in ("conv1", "conv2"):
            k = k.replace(f".{conv}.weight", f".{conv}.rep_conv.weight")
            k = k.replace(f".{conv}.bias", f".{conv}.rep_conv.bias")
        if k.startswith("ERBs."):
            k = trunk[0] + k[len("ERBs") :]
        elif k.startswith("HFABs."):
            k = trunk[1] + k[len("HFABs") :]
        out[k] = v.clone()
    return out


# --------------------------------------------------------------------------- folding


def test_pad_with_values_is_exact_and_differentiable() -> None:
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    v = torch.tensor([0.3, -1.7, 1e-9], dtype=torch.float64, requires_grad=True)
    y = pad_with_values(x, v)
    assert torch.equal(y[:, :, 1:-1, 1:-1], x)
    for k in range(3):
        border = torch.cat([y[:, k, 0], y[:, k, -1], y[:, k, :, 0], y[:, k, :, -1]], dim=1)
        assert torch.all(border == v[k])
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    # each channel's value fills the border of both images: 2 * (6*7 - 4*5) = 44 pixels
    assert torch.equal(v.grad, torch.full_like(v, 44.0))


def test_rrrb_folds_to_one_conv_exactly() -> None:
    torch.manual_seed(0)
    block = RRRB(channels=5, expansion=2).double()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p))  # large biases: wrong border handling would show
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64)
    conv = block.fuse()
    assert isinstance(conv, nn.Conv2d) and conv.padding == (1, 1)
    torch.testing.assert_close(conv(x), block(x), rtol=0, atol=1e-11)


@pytest.mark.parametrize("name", ["fmen_s", "fmen"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folded_equals_training_form_in_eval(name: str, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(2)
    model = lightsr.create_model(name, scale=3).to(dtype)
    randomise_bn(model, g)
    model.eval()
    folded = lightsr.reparameterize(model)
    assert folded.folded and not model.folded
    assert not any(isinstance(m, (nn.BatchNorm2d, RRRB)) for m in folded.modules())
    x = torch.rand(1, 3, 16, 16, generator=g, dtype=dtype)
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert ref.shape == (1, 3, 48, 48)
    assert ref.abs().max() > 0.1  # a meaningful signal, not a collapsed net
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert (ref - out).abs().max().item() < tol


def test_training_mode_pad_uses_batch_statistics() -> None:
    # In training mode the HFAB border is BN's image of a zero pixel under the batch statistics,
    # i.e. the same as BN-normalising a zero-padded copy with the unpadded batch's stats.
    torch.manual_seed(0)
    model = lightsr.create_model("fmen_s", scale=2).train()
    hfab = model.HFABs[0]
    x = torch.randn(2, 50, 6, 6) * 3 + 1
    bn = hfab.bn1
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    manual = (torch.nn.functional.pad(x, (1, 1, 1, 1)) - mean.view(1, -1, 1, 1)) / torch.sqrt(
        var.view(1, -1, 1, 1) + bn.eps
    ) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    from lightsr.models.fmen import _bn_zero_value

    ours = pad_with_values(bn(x), _bn_zero_value(bn, x))
    torch.testing.assert_close(ours, manual, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- options


def test_bad_options_raise_config_error() -> None:
    with pytest.raises(lightsr.ConfigError, match="attention_width"):
        lightsr.create_model("fmen_s", scale=2, width=3)
    with pytest.raises(lightsr.ConfigError, match="num_blocks"):
        lightsr.create_model("fmen_s", scale=2, num_blocks=2, attention_erbs=[1, 1])


# --------------------------------------------------------------------------- authors' weights


@pytest.fixture(scope="module")
def official_path():
    return shared_path("weights", "official", "fmen_s_x4.pt")


def test_official_fmen_s_x4_recognised_and_exact(official_path) -> None:
    model = lightsr.load_official(official_path)  # strict load inside
    assert (model.arch_name, model.scale, model.folded, model.arch_options) == (
        "fmen_s",
        4,
        True,
        {},
    )
    assert n_params(model) == 341_066
    raw = torch.load(str(official_path), map_location="cpu", weights_only=True)
    ours = model.state_dict()
    assert len(ours) == len(raw)
    for k, v in raw.items():
        assert torch.equal(ours[k.replace(".rep_conv.", ".")], v), k


def test_official_fmen_s_x4_psnr_on_set5_head(official_path) -> None:
    from PIL import Image

    hr = np.asarray(Image.open(shared_path("data", "Set5", "HR", "head.png")).convert("RGB"))
    lr_path = shared_path("data", "Set5", "LR_bicubic_clamp", "X4", "headx4.png")
    lr = np.asarray(Image.open(lr_path).convert("RGB"))
    hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
    model = lightsr.load_official(official_path)
    x = torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        sr = (model(x).clamp(0, 1) * 255).round()[0].permute(1, 2, 0).double().numpy()

    def luma(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        return 16 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255

    mse = ((luma(sr) - luma(hr))[4:-4, 4:-4] ** 2).mean()
    psnr = 10 * np.log10(255**2 / mse)
    # Measured 32.9625 dB (Set5 mean over all five images: 32.12 dB, the authors' figure).
    assert psnr == pytest.approx(32.9625, abs=0.005)


def test_official_alternate_trunk_naming(tmp_path, official_path) -> None:
    raw = torch.load(str(official_path), map_location="cpu", weights_only=True)
    renamed = {}
    for k, v in raw.items():
        k = "basic_blocks" + k[len("ERBs") :] if k.startswith("ERBs.") else k
        k = "hfabs" + k[len("HFABs") :] if k.startswith("HFABs.") else k
        renamed[k] = v
    assert any(k.startswith("basic_blocks.") for k in renamed)
    assert any(k.startswith("hfabs.") for k in renamed)
    path = tmp_path / "fmen_alt.pth"
    torch.save(renamed, path)
    a = lightsr.load_official(official_path)
    b = lightsr.load_official(path)
    assert (b.arch_name, b.scale, b.folded) == ("fmen_s", 4, True)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize(
    ("name", "scale", "options", "trunk"),
    [
        ("fmen_s", 2, {}, ("ERBs", "HFABs")),
        ("fmen", 3, {}, ("basic_blocks", "hfabs")),
        # Not a preset: must come back with the options that rebuild it.
        ("fmen_s", 4, {"channels": 24, "attention_width": 8, "num_blocks": 2}, ("ERBs", "HFABs")),
    ],
)
def test_synthetic_inference_checkpoint_recognised(tmp_path, name, scale, options, trunk) -> None:
    torch.manual_seed(5)
    g = torch.Generator().manual_seed(5)
    model = lightsr.create_model(name, scale=scale, **options)
    randomise_bn(model, g)
    folded = lightsr.reparameterize(model)
    path = tmp_path / "synthetic.pt"
    torch.save(to_authors_keys(folded.state_dict(), trunk=trunk), path)
    back = lightsr.load_official(path)
    assert (back.arch_name, back.scale, back.folded) == (name, scale, True)
    if options:
        assert back.arch_options["channels"] == 24
        assert back.arch_options["attention_width"] == 8
        assert back.arch_options["warmup_width"] == 4
        assert back.arch_options["attention_erbs"] == [2, 1, 1]
    else:
        assert back.arch_options == {}
    x = torch.rand(1, 3, 9, 11, generator=g)
    with torch.no_grad():
        assert torch.equal(folded(x), back(x))


def test_training_form_state_is_refused_with_clear_error() -> None:
    state = lightsr.create_model("fmen_s", scale=2).state_dict()
    with pytest.raises(lightsr.CheckpointError, match="training form"):
        convert_official_state(state)
