"""``--denoise-strength`` / ``lightsr.load(name, denoise_strength=S)``: a photo model's weights
blended with the clean model it was fine-tuned from (network interpolation). The ends are the
two models bit for bit, the middle is the weights' midpoint, the partner is the one the
committed training config started from, and what cannot be blended is refused by name."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import REPO, benchmark_script

import lightsr
import lightsr.hub as hub
from lightsr.cli import main
from lightsr.data.io import read_image, write_image
from lightsr.errors import ConfigError

PHOTOS = [e for e in hub.list_weights() if e.fine_tuned_from]


def _model(seed: int, *, scale: int = 2, arch: str = "a2f_sd") -> lightsr.models.base.SRModel:
    torch.manual_seed(seed)
    return lightsr.create_model(arch, scale=scale).eval()


def test_the_photo_models_name_the_clean_model_their_training_started_from() -> None:
    assert {e.name for e in PHOTOS} == {"a2f_sd_photo_x2", "a2f_sd_photo_x4"}
    for entry in PHOTOS:
        partner = hub.get_weights(entry.fine_tuned_from)
        assert (partner.arch, partner.scale, partner.degradation) == (entry.arch, entry.scale, "")
        # The first run of the photo lineage started from the partner's weights, by name.
        config = REPO / "training" / entry.name / "config.json"
        assert json.loads(config.read_text())["init_from"] == partner.name


def test_blend_ends_are_each_model_bit_for_bit_and_the_middle_is_the_midpoint() -> None:
    start, end = _model(0), _model(1)
    a, b = start.state_dict(), end.state_dict()
    at0 = hub.blend_weights(start, end, strength=0).state_dict()
    at1 = hub.blend_weights(start, end, strength=1.0).state_dict()
    half = hub.blend_weights(start, end, strength=0.5).state_dict()
    for key in b:
        assert torch.equal(at0[key], a[key]) and torch.equal(at1[key], b[key]), key
        assert torch.allclose(half[key], (a[key] + b[key]) / 2, atol=1e-7, rtol=0), key
    assert any(not torch.equal(a[k], b[k]) for k in b)  # the two models did differ
    # The inputs are not changed in place.
    assert all(torch.equal(start.state_dict()[k], a[k]) for k in a)


@pytest.mark.parametrize(
    ("other", "what"),
    [
        (lambda: _model(1, scale=4), "scale"),
        (lambda: _model(1, arch="imdn"), "architecture"),
    ],
)
def test_models_that_differ_are_not_blended(other, what) -> None:
    with pytest.raises(ConfigError, match=what):
        hub.blend_weights(_model(0), other(), strength=0.5)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, True, "0.5", None])
def test_a_strength_outside_0_to_1_is_refused(bad) -> None:
    with pytest.raises(ConfigError, match="from 0"):
        hub.check_denoise_strength(bad)


def test_load_by_name_blends_with_the_partner_and_records_it() -> None:
    photo, clean = lightsr.load("a2f_sd_photo_x2"), lightsr.load("a2f_sd_x2")
    blended = lightsr.load("a2f_sd_photo_x2", denoise_strength=0.25)
    p, c, m = photo.state_dict(), clean.state_dict(), blended.state_dict()
    for key in p:
        assert torch.allclose(m[key], c[key] + 0.25 * (p[key] - c[key]), atol=1e-6), key
    assert blended.checkpoint_extra["denoise_strength"] == 0.25
    assert blended.checkpoint_extra["blended_with"] == "a2f_sd_x2"


def test_what_cannot_be_blended_is_refused_by_name(tmp_path) -> None:
    with pytest.raises(ConfigError, match="a2f_sd_photo_x4, a2f_sd_photo_x2"):
        lightsr.load("maffsrn_x4", denoise_strength=0.5)  # not fine-tuned from anything
    with pytest.raises(ConfigError, match="a2f_sd_photo_x4"):
        lightsr.load("a2f_sd_x4_int8", denoise_strength=0.5)  # its base: the clean model
    path = tmp_path / "m.safetensors"
    lightsr.save(_model(0), path)
    with pytest.raises(ConfigError, match="name of a photo model"):
        lightsr.load(path, denoise_strength=0.5)
    with pytest.raises(ConfigError, match="--weights"):
        hub.resolve_model(scale=2, denoise_strength=0.5)  # no --weights


def _upscale(tmp_path, name: str, *flags: str) -> np.ndarray:
    out = tmp_path / f"{name}.png"
    args = ["upscale", str(tmp_path / "in.png"), "-o", str(out), "--quiet"]
    args += ["--precision", "fp32", "--backend", "torch", "--tile", "none", *flags]
    assert main(args) == 0
    return read_image(out)


def test_upscale_at_strength_0_and_1_is_the_clean_and_the_photo_model(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    write_image(tmp_path / "in.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    clean = _upscale(tmp_path, "clean", "--weights", "a2f_sd_x2")
    photo = _upscale(tmp_path, "photo", "--weights", "a2f_sd_photo_x2")
    at0 = _upscale(tmp_path, "s0", "--weights", "a2f_sd_photo_x2", "--denoise-strength", "0")
    at1 = _upscale(tmp_path, "s1", "--weights", "a2f_sd_photo_x2", "--denoise-strength", "1")
    half = _upscale(tmp_path, "s05", "--weights", "a2f_sd_photo_x2", "--denoise-strength", ".5")
    assert np.array_equal(at0, clean) and np.array_equal(at1, photo)
    assert not np.array_equal(half, clean) and not np.array_equal(half, photo)
    assert "at denoise strength 0.5 (blended with a2f_sd_x2)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--denoise-strength", "2"], "from 0 to 1"),
        (["--denoise-strength", "0.5"], "name the photo model with --weights"),
        (["--weights", "a2f_sd_x2", "--denoise-strength", "0.5"], "not fine-tuned"),
    ],
)
def test_upscale_refuses_a_strength_it_cannot_apply(tmp_path, capsys, flags, message) -> None:
    write_image(tmp_path / "in.png", np.zeros((8, 8, 3), dtype=np.uint8))
    try:
        code = main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png"), *flags])
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_the_trade_off_table_counts_each_missed_bar() -> None:
    report_script = benchmark_script("photo_report")

    def cells(value: float) -> dict:
        return {s: {"psnr": value, "ssim": 0.5} for s in ("Set5", "Set14", "B100")}

    models = {"bicubic": 25.0, "clean": 25.2, "photo": 26.5}
    degraded = {p: {k: cells(v) for k, v in models.items()} for p in report_script.PRESETS}
    clean = {"bicubic": cells(28.0), "clean": cells(31.0), "photo": cells(29.5)}
    half = {"degraded": {p: cells(25.9) for p in report_script.PRESETS}, "clean": cells(30.3)}
    report = {"evaluation": {"degraded": degraded, "clean": clean}, "strengths": {"0.5": half}}
    rows = report_script.strength_rows(report)
    assert [r.split(" | ")[0] for r in rows[2:]] == [
        "| 0 (clean model)",
        "| 0.5",
        "| 1 (photo model)",
    ]
    # 0: the clean model misses both degraded bars in all 6 cells, no clean bar.
    assert rows[2].endswith("| +0.00 | +0.00 | +0.00 | 12 |")
    # 0.5: +0.70 / +0.90 misses the 1 dB bar in 6 cells; clean -0.70 is within 1 dB.
    assert "+0.70 / +0.90 ✗" in rows[3] and rows[3].endswith("| -0.70 | 6 |")
    # 1: +1.30 / +1.50 passes both; clean -1.50 misses in all 3 sets.
    assert "+1.30 / +1.50 |" in rows[4] and rows[4].endswith("| -1.50 ✗ | 3 |")


def test_export_of_a_blend_says_so_in_its_metadata(tmp_path, capsys) -> None:
    from lightsr.export import read_export_metadata

    out = tmp_path / "blend.pt"
    args = ["export", "--weights", "a2f_sd_photo_x2", "--denoise-strength", "0.25"]
    assert main([*args, "--torchscript", "-o", str(out), "--no-check"]) == 0
    meta = read_export_metadata(out)
    assert (meta["weights"], meta["denoise_strength"], meta["blended_with"]) == (
        "a2f_sd_photo_x2",
        "0.25",
        "a2f_sd_x2",
    )
    # Without named weights there is nothing to blend with: refused, nothing written.
    refused = tmp_path / "random.pt"
    code = main(
        ["export", "--model", "a2f_sd", "--scale", "2", "--denoise-strength", "0.5"]
        + ["--torchscript", "-o", str(refused)]
    )
    assert code == 2 and "name the photo model with --weights" in capsys.readouterr().err
    assert not refused.exists()


def test_the_x2_photo_entry_states_the_clean_costs_its_report_measured() -> None:
    report = json.loads((REPO / "benchmarks" / "results" / "photo_x2.json").read_text())
    clean = report["evaluation"]["clean"]
    at_half = report["strengths"]["0.5"]["clean"]

    def costs(psnr: dict) -> str:
        sets = ("Set5", "Set14", "B100")
        return " / ".join(f"{clean['clean'][s]['psnr'] - psnr[s]['psnr']:.2f}" for s in sets)

    notes = hub.get_weights("a2f_sd_photo_x2").notes
    assert f"it is {costs(clean['photo'])} dB under a2f_sd_x2" in notes
    assert f"{costs(at_half)} at --denoise-strength 0.5" in notes


def test_the_crops_show_the_blend_between_the_clean_and_the_photo_panels(tmp_path) -> None:
    report_script = benchmark_script("photo_report")
    named = {"bicubic": "bicubic", "clean": "a2f_sd_x4", "photo": "a2f_sd_photo_x4"}
    panels = report_script.crop_panels(named)
    assert list(panels) == ["bicubic", "clean", "photo at 0.5", "photo"]
    assert panels["photo at 0.5"] == ("a2f_sd_photo_x4", 0.5)
    # A photo model given as a file has no partner to blend with: no such panel.
    assert list(report_script.crop_panels({**named, "photo": str(tmp_path / "p.safetensors")})) == [
        "bicubic",
        "clean",
        "photo",
    ]
