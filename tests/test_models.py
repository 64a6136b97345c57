"""The contracts every registered model honours, at every scale it supports.

Parametrised over ``lightsr.list_models()`` x ``lightsr.get_spec(name).scales`` (plus the
strategy/option variants pinned in ``PARAMS``), so a model added to the registry is covered
with no edit here, and fails ``test_every_registered_model_has_a_pinned_count`` until its
parameter count is pinned below. For every case:

- forward: shape (N, 3, s*H, s*W), finite, depends on the input, batch items independent;
- backward: every parameter gets a finite gradient; a gradient that is exactly zero must be
  explained (no gradient reached its module's output, or the module's input was all zeros);
- fold: ``lightsr.reparameterize`` computes the eval-mode training form's function, with
  trained BatchNorm statistics so that BN folds do real work;
- save/load: bit-exact state dict and output, training and folded form, metadata included;
- parameter count: the pinned number.

Models above HEAVY_PARAMS (RCAN) run the backward, fold and save/load checks at their first
scale only, and every check on 4 x 6 inputs (see HEAVY_PARAMS).

Family-specific checks (official weights, fold maths, strategy behaviour) stay in the family
files (test_a2f.py, test_fmen.py, test_maffsrn.py, test_baselines.py, test_strategies.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import perturb_parameters_
from torch import nn

import lightsr
from lightsr.checkpoint import read_metadata
from lightsr.errors import ConfigError
from lightsr.layers.weight_norm import WNConv2d

# --------------------------------------------------------------------------- pinned counts

# GGAS (paper eq. 5) adds one global attention block of C^2 + 53C parameters (7x7 depthwise,
# BN, 1x1); CWSS adds C per residual unit (one alpha per unit, or C in all when shared).
C = 64
GAB = C**2 + 53 * C  # 7,488
GAB_FSRCNN = 12**2 + 53 * 12  # FSRCNN's attention works at its width s = 12

# Option sets run as extra cases of the models that pin them (keys with a third element).
# The strategies act on the body, not the upsampler, so one scale per variant suffices.
VARIANTS: dict[str, dict[str, Any]] = {
    # The paper's reading: one shared attention map, one alpha per residual unit.
    "ggas+cwss": {"ggas": True, "cwss": True},
    # The other readings of the paper's open choices (see lightsr.strategies.StrategyOptions):
    # one GAB per block (more BatchNorms to fold), one alpha shared by all units (an aliased
    # parameter through save/load), the residual branch seeing alpha * x, another init.
    "per_block+shared": {
        "ggas": True,
        "ggas_per_block": True,
        "cwss": True,
        "cwss_shared_alpha": True,
        "cwss_scale_residual_input": True,
        "cwss_init": 0.8,
    },
    # FSRCNN has no residual units (cwss is refused): GGAS alone.
    "ggas": {"ggas": True},
    "ggas_per_block": {"ggas": True, "ggas_per_block": True},
    # MAFFSRN without the authors' ReLU before the spatial gate's sigmoid.
    "gate_relu=False": {"gate_relu": False},
}

# Trainable parameters, training form, keyed by (name, scale) or (name, scale, variant).
# ARCHITECTURES.md gives the plain counts (formerly pinned in test_registry.py, test_a2f.py,
# test_maffsrn.py and test_fmen.py).
PARAMS: dict[tuple, int] = {
    ("a2f_s", 2): 319_648,
    ("a2f_s", 3): 324_433,
    ("a2f_s", 4): 331_132,
    ("a2f_sd", 2): 313_372,
    ("a2f_sd", 3): 315_997,
    ("a2f_sd", 4): 319_672,
    ("a2f_m", 2): 998_584,
    ("a2f_m", 3): 1_003_369,
    ("a2f_m", 4): 1_010_068,
    ("a2f_l", 2): 1_362_628,
    ("a2f_l", 3): 1_367_413,
    ("a2f_l", 4): 1_374_112,
    ("maffsrn", 2): 402_394,
    ("maffsrn", 3): 418_774,
    ("maffsrn", 4): 441_706,
    ("maffsrn", 3, "gate_relu=False"): 418_774,  # the option changes no weight
    ("maffsrn_l", 2): 790_754,
    ("maffsrn_l", 3): 807_134,
    ("maffsrn_l", 4): 830_066,
    ("fmen_s", 2): 1_029_630,
    ("fmen_s", 3): 1_036_395,
    ("fmen_s", 4): 1_045_866,
    # FMEN (large) has no released code; counts of our documented reading of the paper:
    # C=64, M=32, warm-up width 28, 4 pairs, ERB counts [2,1,1,1,1] (fmen.py docstring).
    ("fmen", 2): 2_032_592,
    ("fmen", 3): 2_041_247,
    ("fmen", 4): 2_053_364,
    ("fsrcnn", 2): 16_960,
    ("fsrcnn", 3): 24_535,
    ("fsrcnn", 4): 35_140,
    ("fsrcnn", 2, "ggas"): 16_960 + GAB_FSRCNN,
    ("fsrcnn", 2, "ggas_per_block"): 16_960 + 4 * GAB_FSRCNN,  # 4 blocks
    ("memnet", 2): 693_388,
    ("memnet", 3): 702_043,
    ("memnet", 4): 714_160,
    ("memnet", 2, "ggas+cwss"): 693_388 + GAB + 6 * C,  # 6 memory blocks = 6 residual units
    ("memnet", 2, "per_block+shared"): 693_388 + 6 * GAB + C,
    ("carn", 2): 964_163,
    ("carn", 3): 1_148_803,
    ("carn", 4): 1_111_875,
    ("carn", 2, "ggas+cwss"): 964_163 + GAB + 9 * C,  # 3 cascading blocks of 3 units
    ("carn", 2, "per_block+shared"): 964_163 + 3 * GAB + C,
    ("idn", 2): 579_276,
    ("idn", 3): 587_931,
    ("idn", 4): 600_048,
    ("idn", 2, "ggas+cwss"): 579_276 + GAB + 4 * C,  # 4 distillation blocks
    ("idn", 2, "per_block+shared"): 579_276 + 4 * GAB + C,
    ("edsr_baseline", 2): 1_369_859,
    ("edsr_baseline", 3): 1_554_499,
    ("edsr_baseline", 4): 1_517_571,
    ("edsr_baseline", 2, "ggas+cwss"): 1_369_859 + GAB + 16 * C,  # 16 ResBlocks
    ("edsr_baseline", 2, "per_block+shared"): 1_369_859 + 16 * GAB + C,
    ("imdn", 2): 694_404,
    ("imdn", 3): 703_059,
    ("imdn", 4): 715_176,
    ("imdn", 2, "ggas+cwss"): 694_404 + GAB + 6 * C,  # 6 IMDBs
    ("imdn", 2, "per_block+shared"): 694_404 + 6 * GAB + C,
    ("rcan", 2): 15_444_643,
    ("rcan", 3): 15_629_283,
    ("rcan", 4): 15_592_355,
    # RCAN's residual units: its 200 RCABs and the 10 residual groups' short skips.
    # One variant only, the paper's reading, at x2 (see HEAVY_PARAMS below).
    ("rcan", 2, "ggas+cwss"): 15_444_643 + GAB + 210 * C,
}

# Parameters of the folded (inference) form, where pinned (test_fmen.py's former counts):
# FMEN's RRRBs collapse to single convs and its BatchNorms fold away.
FOLDED_PARAMS: dict[tuple, int] = {
    ("fmen_s", 2): 324_830,
    ("fmen_s", 3): 331_595,
    ("fmen_s", 4): 341_066,
    ("fmen", 2): 660_504,
    ("fmen", 3): 669_159,
    ("fmen", 4): 681_276,
}

# Models with nothing to learn need no pin: their count must be 0 (bicubic interpolation).
ZERO_PARAM_MODELS = {"bicubic"}


# --------------------------------------------------------------------------- cases


def _registered() -> list[tuple[str, int]]:
    # Names starting with "_" are test doubles that other test files register (test_train.py).
    return [
        (name, scale)
        for name in lightsr.list_models()
        if not name.startswith("_")
        for scale in lightsr.get_spec(name).scales
    ]


def _cases() -> list[Any]:
    keys: list[tuple] = list(_registered())
    keys += [key for key in PARAMS if len(key) == 3]
    return [pytest.param(key, id="-".join((key[0], f"x{key[1]}", *key[2:]))) for key in keys]


# RCAN (15.4M parameters, 7.5x FMEN's) took 2-10 s per check and scale here, about 40%
# of this file's time: its backward, fold and save/load checks run at its first scale only, and
# its strategy variant runs only the forward and count checks (the GAB fold and the CWSS alphas
# are exercised on the other baselines). Its upsamplers at the other scales are plain convs +
# pixel shuffles, which the forward test still runs. Any model this large is treated the same.
HEAVY_PARAMS = 5_000_000


def _full_check(key: tuple) -> bool:
    if PARAMS.get(key, 0) < HEAVY_PARAMS:
        return True
    return len(key) == 2 and key[1] == lightsr.get_spec(key[0]).scales[0]


CASES = _cases()
FULL_CASES = [case for case in CASES if _full_check(case.values[0])]


def _options(key: tuple) -> dict[str, Any]:
    return dict(VARIANTS[key[2]]) if len(key) == 3 else {}


def _build(key: tuple, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return lightsr.create_model(key[0], scale=key[1], **_options(key))


def _input(model: nn.Module, n: int, seed: int) -> torch.Tensor:
    """n different random images, small but at least the model's minimum; H != W so that a
    swapped height and width shows. A model above HEAVY_PARAMS gets 4 x 6 pixels (its cost is
    its convs' arithmetic, which scales with the pixels; RCAN's is 7.5x FMEN's)."""
    h = max(int(model.min_input_size), 4 if _n_params(model) >= HEAVY_PARAMS else 8)
    return torch.rand(n, 3, h, h + 2, generator=torch.Generator().manual_seed(seed))


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def _as_if_trained(model: nn.Module, seed: int) -> nn.Module:
    """``model`` with its init coincidences broken and its BatchNorms trained, in eval mode.

    Every parameter is scaled per element by a factor in [0.5, 1.5): weight-norm gains no
    longer equal ||v|| and learned scalars are no longer 1, so those folds have work to do.
    BatchNorm biases get random shifts, and running statistics are measured on random images
    (momentum None: the running stats become the mean of the batches' statistics), so the
    folded BN statistics are those of real activations, not the (0, 1) of a fresh BN.
    """
    g = torch.Generator().manual_seed(seed)
    perturb_parameters_(model, g)
    bns = [bn for bn in _batchnorms(model) if bn.track_running_stats]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        if bn.affine:
            bn.bias.add_(0.2 * torch.randn(bn.bias.shape, generator=g))
        bn.reset_running_stats()
        bn.momentum = None
    if bns:
        model.train()
        for _ in range(2):  # two small training batches
            model(_input(model, 1, seed=int(torch.randint(1 << 30, (1,), generator=g))))
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
            # The statistics came from the data: a fold of the fresh (0, 1) would be weaker.
            # (MemNet reuses each BN in its recursive units: several batches per forward.)
            assert bn.num_batches_tracked >= 2
            assert bn.running_mean.abs().max() > 1e-3
            assert (bn.running_var - 1).abs().max() > 1e-3
    return model.eval()


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _pinned(key: tuple) -> int | None:
    if key in PARAMS:
        return PARAMS[key]
    return 0 if key[0] in ZERO_PARAM_MODELS else None


# --------------------------------------------------------------------------- forward


@pytest.fixture(scope="module", params=CASES)
def fresh(request: pytest.FixtureRequest) -> tuple[tuple, nn.Module]:
    # A freshly built model shared by the forward and count tests, which leave it as it was
    # (module scope, parametrised: pytest runs both for one model, then builds the next).
    return request.param, _build(request.param)


def test_forward_shape_dependence_and_batch_independence(fresh: tuple[tuple, nn.Module]) -> None:
    key, model = fresh
    model.eval()
    s = key[1]
    x = _input(model, 2, seed=1)
    with torch.no_grad():
        y = model(x)
        alone = torch.cat([model(x[:1]), model(x[1:])])
    assert y.shape == (2, 3, s * x.shape[2], s * x.shape[3]) and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    # Two different images give different outputs. A network ignoring its input gives equal
    # rows (float noise at most, ~1e-7 here); 1e-5 allows for FSRCNN+GGAS at init, whose four
    # attention gates (~0.5 each) damp the input's effect to ~1e-4.
    assert (y[0] - y[1]).abs().max() > 1e-5
    # In eval mode nothing is pooled across the batch (channel attention, contrast, BN all
    # per sample), nor are items mixed up: each item's output is the one it gets alone.
    torch.testing.assert_close(y, alone, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- backward


def _record_dead_paths(model: nn.Module) -> tuple[dict[nn.Module, dict[str, bool]], list]:
    """Forward hooks on every module owning parameters: did any gradient reach its output
    (over all its calls), and was its input all zeros on every call?"""
    seen: dict[nn.Module, dict[str, bool]] = {}

    def hook(module: nn.Module, args: tuple, out: Any) -> None:
        state = seen.setdefault(module, {"no_grad_out": True, "zero_input": True})
        first = args[0] if args else None
        if not (torch.is_tensor(first) and not first.any()):
            state["zero_input"] = False
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t) and t.requires_grad:

                def on_grad(grad: torch.Tensor, state: dict = state) -> None:
                    if grad.any():
                        state["no_grad_out"] = False

                t.register_hook(on_grad)

    handles = [m.register_forward_hook(hook) for m in model.modules() if list(m.parameters(False))]
    return seen, handles


@pytest.mark.parametrize("key", FULL_CASES)
def test_backward_reaches_every_parameter(key: tuple) -> None:
    model = _build(key).train()
    params = dict(model.named_parameters())
    # Nothing frozen hides in parameters() (frozen mean shifts are buffers, not weights).
    assert all(p.requires_grad for p in params.values())
    x = _input(model, 1, seed=2).requires_grad_()
    seen, handles = _record_dead_paths(model)
    y = model(x)
    for h in handles:
        h.remove()
    target = torch.rand(y.shape, generator=torch.Generator().manual_seed(3))
    if not params:
        # Nothing to train (bicubic): explicitly none, but the input still gets a gradient.
        assert key[0] in ZERO_PARAM_MODELS and _pinned(key) == 0
    F.l1_loss(y, target).backward()  # the training loss
    assert x.grad is not None and x.grad.abs().sum() > 0
    if not params:
        return
    missing = [k for k, p in params.items() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in params.values())
    total = torch.sqrt(sum(p.grad.double().square().sum() for p in params.values()))
    assert total > 0
    # At init some gradients are exactly zero for a reason, not a bug: the channel attentions
    # of RCAN and IMDN squeeze 64 -> 4 channels through a ReLU, and for some of them all four
    # are negative for the pooled input, so the squeeze gets no gradient and the excite conv
    # sees zeros (its bias still learns). Every zero gradient must be explained in those terms:
    # no gradient reached the module's output, or (weights only) its input was all zeros.
    owner = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    zero = {k: p for k, p in params.items() if not p.grad.any()}
    unexplained = []
    for k, p in zero.items():
        state = seen.get(owner[id(p)], {"no_grad_out": False, "zero_input": False})
        if not (state["no_grad_out"] or (state["zero_input"] and k.endswith("weight"))):
            unexplained.append(k)
    assert unexplained == []
    # ... and they stay few (measured: RCAN x2 27 of 1,628 tensors, IMDN x2 3 of 92; the
    # other models none).
    assert len(zero) <= 0.05 * len(params)


# --------------------------------------------------------------------------- fold


@dataclass
class Trained:
    """A model as if trained (see _as_if_trained), its folded form and their outputs."""

    key: tuple
    model: nn.Module
    before: dict[str, torch.Tensor]  # the model's state before reparameterize
    folded: nn.Module
    x: torch.Tensor
    y: torch.Tensor  # model(x), eval mode
    y_folded: torch.Tensor  # folded(x)


@pytest.fixture(scope="module", params=FULL_CASES)
def trained(request: pytest.FixtureRequest) -> Trained:
    # Module scope, parametrised: pytest runs the fold and save/load tests of one model one
    # after the other and builds, trains and folds it once for both (one model held at a time).
    key = request.param
    model = _as_if_trained(_build(key), seed=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = lightsr.reparameterize(model)
    x = _input(model, 1, seed=5)
    with torch.no_grad():
        return Trained(key, model, before, folded, x, model(x), folded(x))


def test_reparameterized_equals_training_form(trained: Trained) -> None:
    model, folded, key = trained.model, trained.folded, trained.key
    # A copy: the training form is untouched and still the training form.
    assert folded is not model and folded.folded and not model.folded
    assert all(torch.equal(v, trained.before[k]) for k, v in model.state_dict().items())
    assert not folded.training
    ref, out = trained.y, trained.y_folded
    assert ref.abs().max() > 0.1  # a meaningful signal, not a collapsed net
    replaced = [type(m) for m in folded.modules()] != [type(m) for m in model.modules()]
    if replaced:
        # Measured: FMEN's BN/RRRB folds ~1.2e-7, the bicubic skip's phase conv ~1.1e-6.
        assert (out - ref).abs().max() < 1e-5
    else:
        # No module was replaced (nothing folds): the same arithmetic, bit for bit.
        assert torch.equal(out, ref)
    # Nothing is left to fold: a block still offering fuse() gives back an equal block, and
    # leaves itself as it was (the save/load test reuses this folded model).
    for name, m in list(folded.named_modules()):
        if m is not folded and callable(getattr(m, "fuse", None)):
            state = {k: v.clone() for k, v in m.state_dict().items()}
            again = m.fuse()
            assert type(again) is type(m), name
            for sd in (again.state_dict(), m.state_dict()):
                assert list(sd) == list(state), name
                assert all(torch.equal(sd[k], state[k]) for k in sd), name
    assert _n_params(folded) <= _n_params(model)  # a fold never adds weights
    # Weight norm folds away everywhere, and drops exactly its gains (one per output channel).
    gains = sum(m.weight_g.numel() for m in model.modules() if isinstance(m, WNConv2d))
    assert not any(isinstance(m, WNConv2d) for m in folded.modules())
    if gains:
        assert _n_params(folded) == _n_params(model) - gains
    if key in FOLDED_PARAMS:
        assert _n_params(folded) == FOLDED_PARAMS[key]


# --------------------------------------------------------------------------- save / load


def test_save_load_round_trip_is_bit_exact(trained: Trained, tmp_path: Path) -> None:
    key, x = trained.key, trained.x
    forms = (("training", trained.model, trained.y), ("folded", trained.folded, trained.y_folded))
    for form, m, y in forms:
        path = tmp_path / f"{form}.safetensors"
        lightsr.save(m, path, extra={"note": form})
        meta = read_metadata(path)
        assert (meta["arch"], meta["scale"], meta["folded"]) == (key[0], key[1], form == "folded")
        assert meta["options"] == _options(key) and meta["extra"] == {"note": form}
        back = lightsr.load(path)
        assert (back.arch_name, back.scale, back.folded) == (key[0], key[1], form == "folded")
        assert back.arch_options == _options(key) and not back.training
        sd, sd_back = m.state_dict(), back.state_dict()
        assert list(sd) == list(sd_back)  # same keys, same order
        for k, v in sd.items():
            assert v.dtype == sd_back[k].dtype and torch.equal(v, sd_back[k]), k
        with torch.no_grad():
            assert torch.equal(back(x), y)


# --------------------------------------------------------------------------- parameter counts


def test_parameter_count(fresh: tuple[tuple, nn.Module]) -> None:
    key, model = fresh
    expected = _pinned(key)
    assert expected is not None, f"pin the parameter count of {key} in PARAMS"
    assert _n_params(model) == expected


def test_every_registered_model_has_a_pinned_count() -> None:
    registered = set(_registered())
    unpinned = sorted(k for k in registered if _pinned(k) is None)
    assert unpinned == [], "pin these counts in tests/test_models.py PARAMS"
    # No stale pins: every pinned model and scale is registered (variants included).
    stale = sorted(k for k in PARAMS if k[:2] not in registered)
    assert stale == []
    assert all(k[2] in VARIANTS for k in PARAMS if len(k) == 3)
    assert set(FOLDED_PARAMS) <= set(PARAMS)


def test_every_strategy_baseline_runs_its_strategy_variants() -> None:
    """A model accepting the GGAS/CWSS options (a baseline) has pinned strategy variants, so
    a new baseline's strategy composition (a GAB with a BatchNorm to fold, CWSS alphas) runs
    through the checks above too."""
    strategy_variants = {"ggas+cwss", "ggas", "per_block+shared", "ggas_per_block"}
    with_variants = {k[0] for k in PARAMS if len(k) == 3 and k[2] in strategy_variants}
    accepts = set()
    for name in {n for n, _ in _registered()}:
        try:
            lightsr.create_model(name, scale=lightsr.get_spec(name).scales[0], ggas=True)
        except ConfigError:
            continue
        accepts.add(name)
    assert accepts == with_variants
    assert len(accepts) >= 7  # the paper's seven baselines
