"""The bundled default weights are the ones the committed table (docs/BUNDLED.md, from
benchmarks/results/bundled_summary.json) measured, and that table's verdict is arithmetic on
its own figures."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO, shared_path

import lightsr
from lightsr.data.benchmark import open_benchmark
from lightsr.evaluate import evaluate
from lightsr.hub import bundled_weights

SUMMARY = REPO / "benchmarks" / "results" / "bundled_summary.json"


def _report_module():
    spec = importlib.util.spec_from_file_location(
        "bundled_report", REPO / "benchmarks" / "bundled_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bundled_weights_measure_what_the_committed_table_says(scale: int) -> None:
    path = bundled_weights("default", scale)
    if path is None:
        pytest.skip(f"no bundled x{scale} weights in this checkout")
    committed = json.loads(SUMMARY.read_text())["scales"][str(scale)]["sets"]["Set5"]
    model = lightsr.load(path, expect_scale=scale)
    dataset = open_benchmark(shared_path("data", "Set5"), scale=scale)
    assert dataset.lr_source == "folder-clamp"  # the LR the table was measured on
    measured = evaluate(model, dataset)
    # a retrained file shipped without re-running benchmarks/bundled_report.py fails here
    assert measured.psnr == pytest.approx(committed["psnr"], abs=6e-4)
    assert measured.ssim == pytest.approx(committed["ssim"], abs=6e-5)


def test_the_committed_verdict_and_compute_follow_from_the_files() -> None:
    summary = json.loads(SUMMARY.read_text())
    report = _report_module()
    for scale, entry in summary["scales"].items():
        # the lineage (runs, steps, hours) is read off the shipped file and the committed logs
        checkpoint = REPO / entry["checkpoint"]
        if checkpoint.is_file():
            assert entry["lineage"] == report.training_lineage(checkpoint), scale
            assert entry["lineage"][0]["run"] == "training/bundled_a2f_sd_x4"  # from scratch
        for name, row in entry["sets"].items():
            gap = round(row["psnr"] - row["paper_psnr"], 3)
            assert row["gap_db"] == pytest.approx(gap, abs=1.5e-3), (scale, name)
            assert row["within_margin"] == (row["gap_db"] >= -summary["margin_db"]), (scale, name)
