"""The GGAS/CWSS comparison: the Table 2 transcription and the gain/verdict arithmetic
(:mod:`lightsr.strategies.report`), the run configs, and one tiny end-to-end run of
benchmarks/compare_strategies.py (skip, resume-free re-evaluation, budget guard)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from conftest import REPO, benchmark_script, shared_path

import lightsr.strategies.report as rp
from lightsr.config import config_from_dict
from lightsr.data.io import write_image


@pytest.fixture(scope="module")
def script():
    """benchmarks/compare_strategies.py (a script, not a package module): only the tests of its
    training and CLI parts (Budget, Job, main) load it."""
    return benchmark_script("compare_strategies")


# -- the paper's Table 2 ---------------------------------------------------------------------


def test_paper_rows_derive_absolute_values_and_ssim_gains():
    edsr = rp.paper_rows("edsr_baseline")
    assert edsr["baseline"]["Set5"] == {"psnr": 32.09, "ssim": 0.8938, "d_psnr": 0.0, "d_ssim": 0.0}
    # "+ both" prints +0.15 / 0.8973: PSNR 32.09 + 0.15, SSIM gain 0.8973 - 0.8938
    assert edsr["both"]["Set5"] == {"psnr": 32.24, "ssim": 0.8973, "d_psnr": 0.15, "d_ssim": 0.0035}
    imdn = rp.paper_rows("imdn")
    assert imdn["ggas"]["B100"] == {"psnr": 27.58, "ssim": 0.7356, "d_psnr": 0.03, "d_ssim": 0.0006}
    assert imdn["cwss"]["Urban100"]["d_psnr"] == 0.05
    assert set(rp.paper_rows("fsrcnn")) == {"baseline", "ggas"}  # no residual units: no CWSS
    assert rp.paper_rows("a2f_sd") == {}


def test_parse_table2_rejects_unsigned_gains_and_short_rows():
    cells = "  ".join(["0.04 / 0.8952"] * 5)
    with pytest.raises(ValueError, match="signed"):
        rp.parse_table2(f"imdn ggas {cells}")
    with pytest.raises(ValueError, match="cells"):
        rp.parse_table2("imdn base 32.21 / 0.8948  28.56 / 0.7809")


def test_transcription_matches_the_paper_text():
    text = shared_path("papers", "two-strategies-ggas-cwss.txt").read_text(encoding="utf-8")
    names = {
        "FSRCNN": "fsrcnn",
        "MemNet": "memnet",
        "CARN": "carn",
        "IDN": "idn",
        "EDSR-baseline": "edsr_baseline",
        "IMDN": "imdn",
    }
    variants = {"+ GGAS": "ggas", "+ CWSS": "cwss", "+ both": "both"}
    table = text[text.index("**Table 2.**") :]
    model, rows = None, 0
    for line in table.splitlines():
        head = line.split("\t")[0].strip()
        if head in names:
            model, variant = names[head], "baseline"
        elif head in variants and model:
            variant = variants[head]
        else:
            continue
        cells = re.findall(r"([+-]?\d+\.\d+) / (\d\.\d{4})", line)
        assert rp.PAPER_TABLE2[model][variant] == tuple((float(a), float(b)) for a, b in cells)
        assert rp.PAPER_PARAMS_K[model][variant] == int(line.split("\t")[1].rstrip("K"))
        rows += 1
    assert rows == sum(len(v) for v in rp.PAPER_TABLE2.values()) == 22


# -- gains and verdicts ----------------------------------------------------------------------


def _rec(variant: str, seed: int, psnr: float, ssim: float = 0.8) -> dict:
    return {
        "baseline": "edsr_baseline",
        "variant": variant,
        "seed": seed,
        "sets": {"Set5": {"psnr": psnr, "ssim": ssim}},
    }


def test_summarize_pairs_gains_by_seed_and_judges_noise():
    records = [
        _rec("baseline", 0, 30.0, 0.80),
        _rec("baseline", 1, 30.2, 0.81),
        _rec("ggas", 0, 30.1, 0.82),  # gains +0.1, +0.2 (paired by seed)
        _rec("ggas", 1, 30.4, 0.81),
        _rec("cwss", 0, 29.9),  # gains -0.1, +0.05: mean -0.025, within noise
        _rec("cwss", 1, 30.25),
        _rec("both", 0, 30.3),  # no seed-1 run: one paired gain, no spread
        _rec("baseline_lr2x", 0, 30.05),  # the control: baseline at the strategies' rate
        _rec("baseline_lr2x", 1, 30.3),
    ]
    variants = [*rp.DEFAULT_VARIANTS, "baseline_lr2x"]
    s = rp.summarize(records, baselines=["edsr_baseline"], variants=variants, sets=["Set5"])[
        "edsr_baseline"
    ]
    g = s["ggas"]["Set5"]
    assert g["psnr"] == pytest.approx(30.25)
    assert g["d_psnr"] == pytest.approx(0.15)
    assert g["d_ssim"] == pytest.approx(0.01)
    assert g["d_psnr_sem"] == pytest.approx(0.05)  # std(0.1, 0.2) / sqrt(2)
    assert g["direction"] == "yes"
    assert g["paper"]["d_psnr"] == 0.12
    assert g["d_psnr_vs_lr_control"] == pytest.approx(0.075)  # (0.05 + 0.10) / 2
    c = s["cwss"]["Set5"]
    assert c["d_psnr"] == pytest.approx(-0.025)
    assert c["d_psnr_sem"] == pytest.approx(0.075)
    assert c["direction"] == "no (within noise)"
    assert c["d_psnr_vs_lr_control"] == pytest.approx(-0.1)
    b = s["both"]["Set5"]
    assert (b["d_psnr"], b["d_psnr_sem"], b["paired_seeds"]) == (pytest.approx(0.3), None, 1)
    assert s["baseline"]["Set5"]["direction"] is None
    assert s["baseline_lr2x"]["Set5"]["direction"] == "n/a"  # not in the paper
    assert s["baseline_lr2x"]["Set5"]["d_psnr_vs_lr_control"] is None
    (line,) = rp.verdict_lines({"edsr_baseline": s})
    assert "+GGAS on 1/1 sets" in line
    assert "+CWSS on 0/1 sets (not on Set5) [within noise: Set5]" in line
    assert "One seed only" not in line
    assert "+GGAS ahead on 1/1 sets; +CWSS ahead on 0/1 sets; +both ahead on 1/1 sets" in line


def test_a_smoke_budget_gets_no_verdict():
    assert rp.smoke_reason(5000, "") is None
    assert rp.smoke_reason(rp.MIN_VERDICT_STEPS, "full run") is None
    assert "12 steps, fewer than the 1000" in rp.smoke_reason(12, "")
    assert "labelled a smoke run" in rp.smoke_reason(5000, "SMOKE RUN: harness check")
    records = [_rec("baseline", 0, 30.0), _rec("ggas", 0, 31.0)]  # a large "gain"
    kw = {"baselines": ["edsr_baseline"], "variants": ["baseline", "ggas"], "sets": ["Set5"]}
    judged = rp.summarize(records, **kw)
    assert judged["edsr_baseline"]["ggas"]["Set5"]["direction"] == "yes"
    smoke = rp.summarize(records, **kw, judge=False)
    row = smoke["edsr_baseline"]["ggas"]["Set5"]
    assert (row["direction"], row["d_psnr"]) == ("no verdict", pytest.approx(1.0))
    (line,) = rp.verdict_lines(smoke, smoke=rp.smoke_reason(12, ""))
    assert line.startswith("no verdict: smoke budget (12 steps")
    assert rp.verdict_lines({}, smoke="x") == []  # nothing evaluated: nothing to say


def test_the_committed_page_is_its_json_and_judges_only_a_real_budget(tmp_path):
    results = REPO / "benchmarks" / "results" / "strategies_x4.json"
    report = json.loads(results.read_text())
    doc = (REPO / "docs" / "STRATEGIES.md").read_text()
    smoke = rp.smoke_reason(report["budget"]["steps"], report["label"])
    if smoke is not None:
        assert "no verdict: smoke budget" in doc
        assert "reproduces for" not in doc and "| yes |" not in doc and "| no |" not in doc
    else:
        # the comparison the issue asks for: EDSR-baseline and IMDN x4, each as baseline,
        # +GGAS, +CWSS and +both, same seeds, on Set5/Set14/B100
        summary = report["summary"]
        for baseline in ("edsr_baseline", "imdn"):
            for variant in ("baseline", "ggas", "cwss", "both"):
                per_set = summary[baseline][variant]
                assert set(per_set) >= {"Set5", "Set14", "B100"}
                assert all(r["seeds"] == len(report["budget"]["seeds"]) for r in per_set.values())
        assert not report["missing"]
        assert "no verdict" not in doc and doc.count("reproduces for") == 2
    # the page is what --from-json makes of the JSON (it was not edited by hand)
    rebuilt = rp.rebuild_report(report, report.get("rebuilt_by", ""))
    assert rebuilt["summary"] == report["summary"]
    assert rp.render_markdown(rebuilt) == doc
    # and writing the committed report again gives both committed files byte for byte
    rp.write_report(report, tmp_path / "out.json", tmp_path / "out.md")
    assert (tmp_path / "out.json").read_bytes() == results.read_bytes()
    assert (tmp_path / "out.md").read_bytes() == (REPO / "docs" / "STRATEGIES.md").read_bytes()


def test_direction_rules():
    assert rp.direction(0.05, 0.12, None) == "yes"
    assert rp.direction(-0.05, 0.12, None) == "no"
    assert rp.direction(0.0, 0.12, None) == "no"
    assert rp.direction(0.05, 0.0, None) == "n/a"  # CARN +CWSS Set5 prints +0.00
    assert rp.direction(0.05, None, None) == "n/a"
    assert rp.direction(0.05, 0.12, 0.03) == "yes (within noise)"
    assert rp.direction(0.07, 0.12, 0.03) == "yes"
    assert rp.direction(math.nan, 0.12, None) == "n/a"


# -- what is trained -------------------------------------------------------------------------


def test_jobs_share_the_budget_and_double_the_strategy_lr(script, tmp_path):
    # the runs and the report share one table of variants (labels, options, LR choice)
    assert script.VARIANTS is rp.VARIANTS and script.SCALE == rp.SCALE == 4
    budget = script.Budget(
        steps=3000, batch=16, lr_patch=48, schedule="step", strategy_lr_scale=2.0, hr_dirs=("a",)
    )
    base = script.Job("imdn", "baseline", 0, 2e-4, budget, tmp_path / "b")
    both = script.Job("imdn", "both", 0, 2e-4, budget, tmp_path / "c")
    control = script.Job("imdn", "baseline_lr2x", 0, 2e-4, budget, tmp_path / "d")
    cfgs = [
        config_from_dict(j.config(device="cpu", workers=0, cache_dir="", ckpt_every=500))
        for j in (base, both, control)
    ]
    assert [c.optim.lr * c.optim.lr_scale for c in cfgs] == [2e-4, 4e-4, 4e-4]
    assert cfgs[1].model_options == {"ggas": True, "cwss": True}
    assert cfgs[2].model_options == {}
    for c in cfgs:
        assert (c.length, c.batch_size, c.lr_patch, c.hr_patch) == (3000, 16, 48, 192)
        assert (c.schedule.kind, c.schedule.every, c.schedule.gamma) == ("step", 2000, 0.5)
        assert c.data.boundary == "replicate" and c.data.lr_source == "resize"
        assert c.val.sets == []  # nothing is chosen on a test set
    assert base.fingerprint()["lr_scale"] == 1.0 and both.fingerprint()["lr_scale"] == 2.0
    other = script.Budget(
        steps=3001, batch=16, lr_patch=48, schedule="step", strategy_lr_scale=2.0, hr_dirs=("a",)
    )
    other_job = script.Job("imdn", "baseline", 0, 2e-4, other, tmp_path)
    assert other_job.fingerprint() != base.fingerprint()
    assert budget.tag == "s3000_b16_p48_step_lrx2"


# -- one tiny end-to-end comparison ----------------------------------------------------------


def _smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 6, size=3)
    img = [127 + 100 * np.sin(6 * x + 4 * y + p) for p in phase]
    return np.clip(np.stack(img, axis=2), 0, 255).astype(np.uint8)


def test_end_to_end_skips_finished_runs_and_guards_the_budget(script, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(tmp_path / "train" / f"t{i}.png", _smooth_image(rng, 48))
    for name in ("SetA", "SetB"):
        for i in range(2):
            write_image(tmp_path / "bench" / name / f"{name}{i}.png", _smooth_image(rng, 32))
    common = [
        "--baselines", "imdn", "--variants", "ggas", "--steps", "2", "--batch", "2",
        "--lr-patch", "8", "--threads", "1", "--workers", "0", "--device", "cpu",
        "--train-data", str(tmp_path / "train"), "--bench-root", str(tmp_path / "bench"),
        "--eval-lr-source", "imresize-replicate", "--runs-dir", str(tmp_path / "runs"),
        "--json", str(tmp_path / "out.json"), "--doc", str(tmp_path / "out.md"),
        "--label", "SMOKE",
    ]  # fmt: skip
    assert script.main([*common, "--sets", "SetA"]) == 0
    report = json.loads((tmp_path / "out.json").read_text())
    assert [(r["variant"], r["steps"]) for r in report["runs"]] == [("baseline", 2), ("ggas", 2)]
    assert report["runs"][1]["params"] == 715_176 + 7_488  # IMDN x4 + GGAS (C^2 + 53C)
    gain = report["runs"][1]["sets"]["SetA"]["psnr"] - report["runs"][0]["sets"]["SetA"]["psnr"]
    assert report["summary"]["imdn"]["ggas"]["SetA"]["d_psnr"] == pytest.approx(gain)
    run = tmp_path / "runs" / "imdn" / "ggas" / "seed0"
    assert not (run / "state.pt").exists() and (run / "last.safetensors").is_file()
    doc = (tmp_path / "out.md").read_text()
    assert "> **SMOKE**" in doc and "| +GGAS | SetA |" in doc
    assert "no verdict: smoke budget" in doc and "reproduces for" not in doc
    assert report["summary"]["imdn"]["ggas"]["SetA"]["direction"] == "no verdict"
    # --from-json rebuilds the same page from the JSON alone (no run folders, no training)
    assert script.main(["--from-json", str(tmp_path / "out.json"), "--json",
                    str(tmp_path / "re.json"), "--doc", str(tmp_path / "re.md")]) == 0  # fmt: skip
    redone = (tmp_path / "re.md").read_text()

    def body(text: str) -> list[str]:  # all but the "generated by" comment
        return [line for line in text.splitlines() if not line.startswith("<!--")]

    assert body(redone) == body(doc) and "rebuilt from its JSON by" in redone
    assert json.loads((tmp_path / "re.json").read_text())["summary"] == report["summary"]

    # Again with one more set: nothing is retrained, SetB is measured from the saved weights
    # and SetA is kept bit for bit.
    log_before = (run / "log.jsonl").read_text()
    capsys.readouterr()
    assert script.main([*common, "--sets", "SetA", "SetB"]) == 0
    assert "trained" not in capsys.readouterr().out
    assert (run / "log.jsonl").read_text() == log_before
    again = json.loads((tmp_path / "out.json").read_text())
    assert again["runs"][1]["sets"]["SetA"] == report["runs"][1]["sets"]["SetA"]
    assert again["runs"][1]["sets"]["SetB"]["images"] == 2

    # A missing benchmark set fails before any training.
    assert script.main([*common, "--variants", "cwss", "--sets", "Nope"]) == 2
    assert "Nope" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "imdn" / "cwss").exists()

    # Another budget in the same folder is refused rather than mixed in.
    common[common.index("--steps") + 1] = "3"
    assert script.main([*common, "--sets", "SetA"]) == 2
    assert "steps 2 there, 3 now" in capsys.readouterr().err
