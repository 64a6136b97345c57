"""The photo models' committed report: docs/PHOTO.md is what benchmarks/photo_report.py writes
from the committed benchmarks/results/photo_x*.json (no hand edits drift from the figures), and
each JSON's lineage and sha256 are those of the shipped file it reports."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, benchmark_script

from lightsr.hub import fetch_weights, photo_weights, sha256_of

RESULTS = REPO / "benchmarks" / "results"
REPORTS = sorted(RESULTS.glob("photo_x*.json"))


def test_the_committed_page_is_what_the_report_writes_from_the_committed_figures() -> None:
    if not REPORTS:
        pytest.skip("no photo report committed")
    report = benchmark_script("photo_report")
    reports = [json.loads(p.read_text()) for p in REPORTS]
    assert (REPO / "docs" / "PHOTO.md").read_text() == report.document(reports)


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.stem)
def test_each_report_describes_the_shipped_photo_file(path) -> None:
    committed = json.loads(path.read_text())
    entry = photo_weights(committed["scale"])
    assert entry is not None and committed["models"]["photo"] == entry.name
    shipped = fetch_weights(entry.name)
    assert committed["photo_sha256"] == sha256_of(shipped) == entry.sha256
    lineage = benchmark_script("bundled_report").training_lineage(shipped.resolve())
    assert committed["lineage"] == lineage
