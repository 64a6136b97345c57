"""Training configs: typed reading, unknown keys, derived values, the paper recipes, schedules,
and the AdamP optimiser."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lightsr.config import config_from_dict, load_config, parse_override
from lightsr.errors import ConfigError
from lightsr.optim import AdamP, _project
from lightsr.registry import create_model
from lightsr.train import make_schedule

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = {"model": "fsrcnn", "data": {"lr_patch": 8}}


def test_unknown_key_names_closest_valid_keys():
    with pytest.raises(ConfigError, match=r"`optim\.lrr`.*Did you mean 'lr'"):
        config_from_dict({**BASE, "optim": {"lrr": 1e-3}})
    with pytest.raises(ConfigError, match=r"`batchsize`.*Did you mean 'batch_size'"):
        config_from_dict({**BASE, "batchsize": 8})
    with pytest.raises(ConfigError, match=r"unknown config key `optim\.lrr`"):
        load_config(None, ["model=fsrcnn", "data.lr_patch=8", "optim.lrr=1e-3"])


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"batch_size": "16"}, r"`batch_size` must be int, got '16'"),
        ({"batch_size": True}, r"`batch_size` must be int"),
        ({"optim": {"lr": "fast"}}, r"`optim\.lr` must be float"),
        ({"optim": {"name": "sgd"}}, r"`optim\.name` must be 'adam' \| 'adamw' \| 'adamp'"),
        ({"optim": {"betas": [0.9]}}, r"`optim\.betas` must be tuple"),
        ({"data": {"lr_patch": 8, "hr_dirs": "imgs"}}, r"`data\.hr_dirs` must be list\[str\]"),
        ({"data": {"lr_patch": 8, "hr_dirs": [3]}}, r"`data\.hr_dirs\[0\]` must be str"),
        ({"amp": "fp16"}, r"`amp` must be 'none' \| 'bf16'"),
        ({"optim": 3}, r"`optim` must be OptimConfig"),
    ],
)
def test_values_are_type_checked(raw, match):
    merged = {**BASE, **raw}
    if "data" in raw:
        merged["data"] = raw["data"]
    with pytest.raises(ConfigError, match=match):
        config_from_dict(merged)


def test_hr_patch_is_derived_never_written_twice():
    cfg = config_from_dict({"model": "fsrcnn", "scale": 3, "data": {"lr_patch": 48}})
    assert (cfg.lr_patch, cfg.hr_patch) == (48, 144)
    # A2F gives the HR patch: LR patch = 96 / s.
    for scale, lr in ((2, 48), (3, 32), (4, 24)):
        cfg = config_from_dict({"model": "a2f_sd", "scale": scale, "data": {"hr_patch": 96}})
        assert (cfg.lr_patch, cfg.hr_patch) == (lr, 96)
    with pytest.raises(ConfigError, match="exactly one of `data.lr_patch` and `data.hr_patch`"):
        config_from_dict({"model": "fsrcnn", "data": {"lr_patch": 48, "hr_patch": 192}})
    with pytest.raises(ConfigError, match="exactly one"):
        config_from_dict({"model": "fsrcnn"})
    with pytest.raises(ConfigError, match="not a multiple of the scale 4; use 96"):
        config_from_dict({"model": "fsrcnn", "scale": 4, "data": {"hr_patch": 98}})
    # derived values are properties, not fields: they cannot be set in a file
    with pytest.raises(ConfigError, match="unknown config key `hr_patch`"):
        config_from_dict({**BASE, "hr_patch": 96})


def test_overrides_parse_toml_values():
    assert parse_override("optim.lr=1e-3") == (["optim", "lr"], 1e-3)
    assert parse_override("data.hr_dirs=['a', 'b']") == (["data", "hr_dirs"], ["a", "b"])
    assert parse_override("model=fmen_s") == (["model"], "fmen_s")  # bare word -> string
    assert parse_override("amp=bf16") == (["amp"], "bf16")
    assert parse_override("progress=false") == (["progress"], False)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("optim.lr")
    cfg = load_config(CONFIGS / "maffsrn.toml", ["scale=2", "optim.lr=1e-3", "data.lr_patch=64"])
    assert (cfg.scale, cfg.optim.lr, cfg.hr_patch) == (2, 1e-3, 128)
    with pytest.raises(ConfigError, match="exactly one"):
        load_config(CONFIGS / "a2f_sd.toml", ["data.lr_patch=48"])  # the recipe gives hr_patch


def test_missing_config_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("model = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    loop = tmp_path / "loop.toml"
    loop.write_text('inherit = "loop.toml"\n')
    with pytest.raises(ConfigError, match="loops back"):
        load_config(loop)


def _lr(cfg, step, steps_per_epoch=None):
    return make_schedule(cfg, steps_per_epoch or cfg.steps_per_epoch)(step)


def test_paper_recipes():
    # MAFFSRN: AdamP 2e-4 halved every 200 epochs (of 1000 batches), 1000 epochs, 16 x 48^2.
    m = load_config(CONFIGS / "maffsrn.toml")
    assert (m.model, m.optim.name, m.batch_size, m.lr_patch, m.loss) == (
        "maffsrn",
        "adamp",
        16,
        48,
        "l1",
    )
    s = make_schedule(m, m.steps_per_epoch)
    assert s.total == 1_000_000
    assert [s(k) for k in (0, 199_999, 200_000, 400_000, 999_999)] == [
        2e-4,
        2e-4,
        1e-4,
        5e-5,
        1.25e-5,
    ]
    # A2F-SD: Adam 1e-3, HR patch 96.
    a = load_config(CONFIGS / "a2f_sd.toml", ["scale=2"])
    assert (a.optim.name, a.optim.lr, a.hr_patch, a.lr_patch) == ("adam", 1e-3, 96, 48)
    # FMEN: Adam 5e-4, 64 x 64^2, halved every 2e5 iterations.
    for name in ("fmen.toml", "fmen_s.toml"):
        f = load_config(CONFIGS / name)
        assert (f.optim.name, f.batch_size, f.lr_patch, f.unit) == ("adam", 64, 64, "step")
        assert [_lr(f, k, 1) for k in (0, 199_999, 200_000)] == [5e-4, 5e-4, 2.5e-4]
    assert load_config(CONFIGS / "fmen_s.toml").model == "fmen_s"
    # GGAS/CWSS: the baseline's recipe at twice its learning rate.
    base = load_config(CONFIGS / "edsr_baseline.toml")
    both = load_config(CONFIGS / "edsr_baseline_ggas_cwss.toml")
    assert both.model_options == {"ggas": True, "cwss": True}
    assert _lr(both, 0) == 2 * _lr(base, 0) == 2e-4
    assert _lr(both, 200_000) == 2 * _lr(base, 200_000)
    for cfg in (m, a, f, base, both):
        assert cfg.data.augment and cfg.loss == "l1"


@pytest.mark.parametrize(
    "path", sorted(CONFIGS.rglob("*.toml")), ids=lambda p: str(p.relative_to(CONFIGS))
)
def test_every_recipe_builds_its_model(path):
    cfg = load_config(path)
    model = create_model(cfg.model, scale=cfg.scale, **cfg.model_options)
    assert cfg.lr_patch >= model.min_input_size


def test_schedule_kinds():
    cfg = config_from_dict(
        {
            **BASE,
            "length": 100,
            "schedule": {"kind": "multistep", "milestones": [10, 30], "gamma": 0.1},
        }
    )
    s = make_schedule(cfg, 1)
    assert [s(k) for k in (0, 9, 10, 29, 30)] == pytest.approx([1e-4, 1e-4, 1e-5, 1e-5, 1e-6])
    cfg = config_from_dict(
        {**BASE, "length": 100, "schedule": {"kind": "cosine", "warmup": 10, "min_lr_ratio": 0.1}}
    )
    s = make_schedule(cfg, 1)
    assert s(0) == pytest.approx(1e-5)  # linear warm-up: (0 + 1) / 10
    assert s(9) == pytest.approx(1e-4)
    assert s(10) == pytest.approx(1e-4)
    assert s(55) == pytest.approx(1e-4 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert s(100) == pytest.approx(1e-5)


# ---------------------------------------------------------------------------------------------
# AdamP
# ---------------------------------------------------------------------------------------------


def test_adamp_equals_adam_where_nothing_is_projected():
    torch.manual_seed(0)
    a = torch.randn(5, requires_grad=True)  # 1-D tensors are never projected
    b = a.detach().clone().requires_grad_(True)
    opt_a = AdamP([a], lr=1e-2)
    opt_b = torch.optim.Adam([b], lr=1e-2, foreach=False)
    target = torch.randn(5)
    for _ in range(5):
        for p, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            ((p - target) ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_adamp_projection_removes_the_radial_component():
    torch.manual_seed(0)
    p = torch.randn(4, 3, 3, 3)
    rows = p.reshape(4, -1)
    g = torch.randn(4, 27)
    # a gradient orthogonal to each row of p: what a scale-invariant weight receives
    g -= rows * (g * rows).sum(1, keepdim=True) / (rows * rows).sum(1, keepdim=True)
    update = torch.randn(4, 3, 3, 3)
    out, projected = _project(p, g.reshape(p.shape), update, delta=0.1, eps=1e-8)
    assert projected
    radial = (out.reshape(4, -1) * rows).sum(1)
    assert radial.abs().max() < 1e-5
    # the tangential part is kept: out - update is parallel to p, row by row
    diff = (out - update).reshape(4, -1)
    cos = (diff * rows).sum(1) / (diff.norm(dim=1) * rows.norm(dim=1))
    assert torch.allclose(cos.abs(), torch.ones(4), atol=1e-5)
    # a gradient along p (not scale invariant) leaves the update untouched
    same, projected = _project(p, p.clone(), update, delta=0.1, eps=1e-8)
    assert not projected and torch.equal(same, update)


def test_adamp_keeps_the_norm_of_a_scale_invariant_weight():
    # loss(v / ||v||): Adam inflates ||v||, AdamP does not to first order.
    torch.manual_seed(0)
    v0 = torch.randn(8, 16)
    target = torch.randn(8, 16)
    norms = {}
    for name, cls in (("adam", torch.optim.Adam), ("adamp", AdamP)):
        v = v0.clone().requires_grad_(True)
        opt = cls([v], lr=0.05)
        for _ in range(50):
            opt.zero_grad()
            w = v / v.norm(dim=1, keepdim=True)
            ((w - target) ** 2).sum().backward()
            opt.step()
        norms[name] = (v.norm(dim=1) / v0.norm(dim=1)).max().item()
    # only second-order growth is left (orthogonal steps): 1.035 vs Adam's 1.47 here
    assert norms["adamp"] < 1.05 and norms["adam"] > 1.3
    assert norms["adamp"] - 1 < (norms["adam"] - 1) / 5
