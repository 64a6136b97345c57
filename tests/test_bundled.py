"""The bundled weights trained here (the A2F-SD defaults, MAFFSRN) are the ones the committed
tables (docs/BUNDLED.md, from benchmarks/results/bundled[_maffsrn]_summary.json) measured, and
those tables' verdicts are arithmetic on their own figures."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, benchmark_script, shared_path

import lightsr
from lightsr.data.benchmark import open_benchmark
from lightsr.evaluate import evaluate
from lightsr.hub import bundled_weights

RESULTS = REPO / "benchmarks" / "results"
#: weights family (file prefix in src/lightsr/weights/) -> (summary file, the run from scratch
#: every file of the family descends from)
FAMILIES = {
    "default": (RESULTS / "bundled_summary.json", "training/bundled_a2f_sd_x4"),
    "maffsrn": (RESULTS / "bundled_maffsrn_summary.json", "training/maffsrn_x4"),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bundled_weights_measure_what_the_committed_table_says(family: str, scale: int) -> None:
    path = bundled_weights(family, scale)
    if path is None:
        pytest.skip(f"no bundled {family} x{scale} weights in this checkout")
    summary = json.loads(FAMILIES[family][0].read_text())
    committed = summary["scales"][str(scale)]["sets"]["Set5"]
    model = lightsr.load(path, expect_scale=scale)
    dataset = open_benchmark(shared_path("data", "Set5"), scale=scale)
    assert dataset.lr_source == "folder-clamp"  # the LR the table was measured on
    measured = evaluate(model, dataset)
    # a retrained file shipped without re-running benchmarks/bundled_report.py fails here
    assert measured.psnr == pytest.approx(committed["psnr"], abs=6e-4)
    assert measured.ssim == pytest.approx(committed["ssim"], abs=6e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_committed_verdict_and_compute_follow_from_the_files(family: str) -> None:
    path, root_run = FAMILIES[family]
    report = benchmark_script("bundled_report")
    assert report.summary_path(family) == path
    if not path.is_file():
        assert not any(bundled_weights(family, s) for s in (2, 3, 4)), "shipped, never measured"
        pytest.skip(f"no {family} weights bundled yet, so no {path.name}")
    summary = json.loads(path.read_text())
    for scale, entry in summary["scales"].items():
        # the lineage (runs, steps, hours) is read off the shipped file and the committed logs
        checkpoint = REPO / entry["checkpoint"]
        if checkpoint.is_file():
            assert entry["lineage"] == report.training_lineage(checkpoint), scale
            assert entry["lineage"][0]["run"] == root_run  # from scratch
        for name, row in entry["sets"].items():
            assert row["gap_db"] == pytest.approx(row["psnr"] - row["paper_psnr"]), (scale, name)
            assert row["within_margin"] == (row["gap_db"] >= -summary["margin_db"]), (scale, name)
