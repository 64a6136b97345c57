"""GGAS and CWSS composed into the baselines: exact parameter overheads, exact BN folding,
equality with the plain model when the strategies are neutralised, where GA and alpha act,
gradients, and save/load of the options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightsr
from lightsr.errors import ConfigError
from lightsr.models.edsr import EDSR
from lightsr.models.rcan import RCAN
from lightsr.strategies import StrategyOptions, cwss
from lightsr.strategies.ggas import GlobalAttentionBlock

# ARCHITECTURES.md, trainable parameters at x2 of the plain baselines.
PLAIN_X2 = {
    "fsrcnn": 16_960,
    "memnet": 693_388,
    "carn": 964_163,
    "idn": 579_276,
    "edsr_baseline": 1_369_859,
    "imdn": 694_404,
}
RCAN_X4 = 15_592_355
# GGAS blocks and CWSS residual units each baseline declares (see the model docstrings).
N_BLOCKS = {"fsrcnn": 4, "memnet": 6, "carn": 3, "idn": 4, "edsr_baseline": 16, "imdn": 6}
N_UNITS = {"memnet": 6, "carn": 9, "idn": 4, "edsr_baseline": 16, "imdn": 6, "rcan": 210}
SMALL = list(PLAIN_X2)
RESIDUAL = [n for n in SMALL if n != "fsrcnn"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def ggas_overhead(channels: int, kernel: int = 7) -> int:
    """Paper eq. 5: (K^2 + 1)C (depthwise) + 2C (BN) + C^2 + C (pointwise)."""
    return (kernel**2 + 1) * channels + 2 * channels + channels**2 + channels


def randomize_bn(model: nn.Module, seed: int) -> None:
    """Random affine parameters and running statistics in every BatchNorm."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


# --- parameter overheads ----------------------------------------------------------------------


def test_ggas_overhead_is_c2_plus_53c() -> None:
    assert ggas_overhead(64) == 64**2 + 53 * 64 == 7_488


@pytest.mark.parametrize("name", SMALL)
def test_ggas_adds_exactly_one_attention_block(name: str) -> None:
    width = 12 if name == "fsrcnn" else 64  # FSRCNN's attention works at its width s = 12
    model = lightsr.create_model(name, scale=2, ggas=True)
    assert n_params(model) - PLAIN_X2[name] == ggas_overhead(width)
    per_block = lightsr.create_model(name, scale=2, ggas=True, ggas_per_block=True)
    assert n_params(per_block) - PLAIN_X2[name] == N_BLOCKS[name] * ggas_overhead(width)


@pytest.mark.parametrize("name", RESIDUAL)
def test_cwss_adds_c_per_residual_unit(name: str) -> None:
    model = lightsr.create_model(name, scale=2, cwss=True)
    assert n_params(model) - PLAIN_X2[name] == 64 * N_UNITS[name]
    assert len(cwss.alphas(model)) == N_UNITS[name]
    assert all(torch.all(a == 0.9) for a in cwss.alphas(model))
    shared = lightsr.create_model(name, scale=2, cwss=True, cwss_shared_alpha=True)
    assert n_params(shared) - PLAIN_X2[name] == 64
    shared_paths = [m for m in shared.modules() if isinstance(m, cwss.SharedChannelScale)]
    assert len(shared_paths) == N_UNITS[name] - 1


def test_rcan_with_both_strategies() -> None:
    model = lightsr.create_model("rcan", scale=4, ggas=True, cwss=True)
    assert n_params(model) == RCAN_X4 + 7_488 + 64 * N_UNITS["rcan"]
    assert len(cwss.alphas(model)) == 210


def test_fsrcnn_rejects_cwss() -> None:
    with pytest.raises(ConfigError, match="no residual units"):
        lightsr.create_model("fsrcnn", scale=2, cwss=True)


# --- GGAS folding -----------------------------------------------------------------------------


def test_attention_block_fold_is_exact() -> None:
    torch.manual_seed(0)
    gab = GlobalAttentionBlock(64)
    randomize_bn(gab, seed=1)
    gab.eval()
    fused = gab.fuse()
    assert fused.folded and isinstance(fused.norm, nn.Identity)
    assert n_params(gab) - n_params(fused) == 2 * 64  # eq. 6: the BN's weight and bias
    assert n_params(fused) == 64**2 + 51 * 64
    f0 = torch.randn(2, 64, 9, 11) * 2
    with torch.no_grad():
        torch.testing.assert_close(fused(f0), gab(f0), rtol=0, atol=1e-6)
    assert fused.fuse() is fused


@pytest.mark.parametrize("name", SMALL)
def test_reparameterized_model_equals_training_model(name: str) -> None:
    torch.manual_seed(2)
    opts = {"cwss": True} if name != "fsrcnn" else {}
    model = lightsr.create_model(name, scale=2, ggas=True, ggas_per_block=name == "idn", **opts)
    randomize_bn(model, seed=3)
    model.eval()
    folded = lightsr.reparameterize(model)
    n_gab = N_BLOCKS[name] if name == "idn" else 1
    width = 12 if name == "fsrcnn" else 64
    assert n_params(model) - n_params(folded) == n_gab * 2 * width
    assert not any(
        isinstance(m.norm, nn.BatchNorm2d)
        for m in folded.modules()
        if isinstance(m, GlobalAttentionBlock)
    )
    x = torch.rand(1, 3, 10, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=1e-5)


# --- neutralised strategies equal the plain model -----------------------------------------------


def _load_into(model: nn.Module, plain: nn.Module) -> list[str]:
    result = model.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys
    return sorted(result.missing_keys)


@pytest.mark.parametrize("name", RESIDUAL)
def test_cwss_with_alpha_one_is_the_plain_model(name: str) -> None:
    torch.manual_seed(4)
    plain = lightsr.create_model(name, scale=2).eval()
    for variant in ({}, {"cwss_scale_residual_input": True}, {"cwss_shared_alpha": True}):
        model = lightsr.create_model(name, scale=2, cwss=True, **variant).eval()
        missing = _load_into(model, plain)
        assert missing and all(k.endswith("skip.alpha") for k in missing)
        x = torch.rand(1, 3, 6, 7)
        with torch.no_grad():
            assert not torch.equal(model(x), plain(x))  # alpha = 0.9 changes the output
            for alpha in cwss.alphas(model):
                alpha.fill_(1.0)
            assert torch.equal(model(x), plain(x))  # 1.0 * x == x bit-exactly


@pytest.mark.parametrize("name", SMALL)
def test_ggas_with_unit_map_is_the_plain_model(name: str) -> None:
    """sigmoid(50) == 1.0 in float32: a pointwise conv of weight 0, bias 50 gives GA == 1."""
    torch.manual_seed(5)
    plain = lightsr.create_model(name, scale=2).eval()
    model = lightsr.create_model(name, scale=2, ggas=True).eval()
    missing = _load_into(model, plain)
    assert missing and all(k.startswith("global_attention.") for k in missing)
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        assert not torch.equal(model(x), plain(x))
        for gab in model.global_attention.blocks:
            gab.pointwise.weight.zero_()
            gab.pointwise.bias.fill_(50.0)
        assert torch.equal(model(x), plain(x))


# --- where GA and alpha act ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fsrcnn", "memnet", "idn", "edsr_baseline", "imdn", "rcan"])
def test_every_block_output_is_multiplied_by_the_map(name: str) -> None:
    """Block i+1's input is block i's raw output times GA (the map computed from F0)."""
    torch.manual_seed(6)
    if name == "rcan":
        model = RCAN(scale=2, n_groups=3, n_blocks=2, strategies=StrategyOptions(ggas=True))
    else:
        model = lightsr.create_model(name, scale=2, ggas=True)
    model.eval()
    outputs, inputs, maps = [], [], []
    for block in model.blocks:
        block.register_forward_hook(lambda m, args, out: outputs.append(out))
        block.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    model.global_attention.register_forward_hook(lambda m, args, out: maps.extend(out))
    with torch.no_grad():
        model(torch.rand(1, 3, 6, 5))
    ga = maps[0]
    assert len(maps) == len(model.blocks) and all(m is ga for m in maps)
    assert ga.min() > 0 and ga.max() < 1 and ga.std() > 0
    for i in range(1, len(model.blocks)):
        assert torch.equal(inputs[i], outputs[i - 1] * ga)


def test_carn_gates_each_cascading_block_before_the_cascade() -> None:
    torch.manual_seed(7)
    model = lightsr.create_model("carn", scale=2, ggas=True).eval()
    outputs, fused_inputs, maps = [], [], []
    for block, fusion in zip(model.blocks, model.fusions):
        block.register_forward_hook(lambda m, args, out: outputs.append(out))
        fusion.register_forward_pre_hook(lambda m, args: fused_inputs.append(args[0]))
    model.global_attention.register_forward_hook(lambda m, args, out: maps.extend(out))
    with torch.no_grad():
        model(torch.rand(1, 3, 6, 5))
    for i in range(3):
        assert torch.equal(fused_inputs[i][:, -64:], outputs[i] * maps[i])


def test_cwss_unit_is_alpha_x_plus_residual() -> None:
    """An EDSR ResBlock: y = alpha * x + F(x), or alpha * x + F(alpha * x)."""
    torch.manual_seed(8)
    plain = EDSR(scale=2, n_blocks=1).blocks[0]
    for scale_input in (False, True):
        opts = StrategyOptions(cwss=True, cwss_scale_residual_input=scale_input)
        unit = EDSR(scale=2, n_blocks=1, strategies=opts).blocks[0]
        unit.load_state_dict(plain.state_dict(), strict=False)
        with torch.no_grad():
            unit.skip.alpha.copy_(torch.rand(64) + 0.25)
        alpha = unit.skip.alpha.detach().view(1, -1, 1, 1)
        x = torch.randn(2, 64, 5, 6)
        with torch.no_grad():
            seen = alpha * x if scale_input else x
            expected = alpha * x + plain.body(seen)
            torch.testing.assert_close(unit(x), expected, rtol=0, atol=1e-6)


def test_shared_alpha_survives_deepcopy_and_reparameterize() -> None:
    model = lightsr.create_model("imdn", scale=2, cwss=True, cwss_shared_alpha=True)
    folded = lightsr.reparameterize(model)
    (alpha,) = cwss.alphas(folded)
    assert alpha is not cwss.alphas(model)[0]
    for m in folded.modules():
        if isinstance(m, cwss.SharedChannelScale):
            assert m._owner[0].alpha is alpha
    # Moving the model (dtype here; device alike) converts the one alpha all units use.
    model.double()
    assert all(
        m._owner[0].alpha.dtype == torch.float64
        for m in model.modules()
        if isinstance(m, cwss.SharedChannelScale)
    )
    assert model(torch.rand(1, 3, 5, 5, dtype=torch.float64)).dtype == torch.float64


# --- gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*SMALL, "rcan"])
def test_backward_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(9)
    opts = {"ggas": True} if name == "fsrcnn" else {"ggas": True, "cwss": True}
    if name == "edsr_baseline":
        opts.update(ggas_per_block=True, cwss_shared_alpha=True, cwss_scale_residual_input=True)
    model = lightsr.create_model(name, scale=2, **opts).train()
    size = 4 if name == "rcan" else 6
    model(torch.rand(2, 3, size, size)).abs().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    for alpha in cwss.alphas(model):
        assert alpha.grad.abs().sum() > 0


# --- save / load --------------------------------------------------------------------------------


@pytest.mark.parametrize("fold", [False, True], ids=["training", "folded"])
@pytest.mark.parametrize("name", ["edsr_baseline", "memnet", "fsrcnn"])
def test_save_load_round_trip(tmp_path, name: str, fold: bool) -> None:
    torch.manual_seed(10)
    options = {"ggas": True, "ggas_per_block": name == "memnet"}
    if name != "fsrcnn":
        options.update(cwss=True, cwss_shared_alpha=name == "edsr_baseline", cwss_init=0.8)
    model = lightsr.create_model(name, scale=3, **options)
    randomize_bn(model, seed=11)
    model.eval()
    if fold:
        model = lightsr.reparameterize(model)
    path = tmp_path / f"{name}.safetensors"
    lightsr.save(model, path)
    loaded = lightsr.load(path)
    assert loaded.arch_name == name and loaded.scale == 3
    assert loaded.arch_options == options
    assert loaded.folded == fold
    assert n_params(loaded) == n_params(model)
    x = torch.rand(1, 3, 7, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
