"""benchmarks/zoo_table.py without measuring: rows it does not re-measure keep their figures
but take the hub's labels as they are now, and say which CPU measured them."""

from __future__ import annotations

import json
import sys

from conftest import benchmark_script

from lightsr import hub


def _render_only(tmp_path, monkeypatch, previous: dict) -> tuple[dict, str, dict]:
    zoo = benchmark_script("zoo_table")
    results, doc, measured = tmp_path / "zoo.json", tmp_path / "ZOO.md", tmp_path / "m.json"
    results.write_text(json.dumps(previous))
    monkeypatch.setattr(zoo, "RESULTS", results)
    monkeypatch.setattr(zoo, "DOC", doc)
    monkeypatch.setattr(zoo, "MEASURED_FILE", measured)
    monkeypatch.setattr(zoo, "_evaluate", lambda *a: (_ for _ in ()).throw(AssertionError))
    monkeypatch.setattr(sys, "argv", ["zoo_table.py", "--render-only"])
    assert zoo.main() == 0
    return json.loads(results.read_text()), doc.read_text(), json.loads(measured.read_text())


def test_render_only_keeps_figures_and_takes_current_labels(tmp_path, monkeypatch) -> None:
    figures = {s: {"psnr": 30.0 + i, "ssim": 0.9} for i, s in enumerate(("Set5", "Set14", "B100"))}
    old_machine = {"cpu": "Old CPU (family 1, model 2)", "torch": "2.0"}
    previous = {
        "machine": old_machine,
        "entries": [
            {
                "name": "maffsrn_x4",
                "training_data": "a stale label",
                "measured": figures,
                "status": "measured",
            }
        ],
    }
    report, table, measured = _render_only(tmp_path, monkeypatch, previous)
    row = next(e for e in report["entries"] if e["name"] == "maffsrn_x4")
    assert row["measured"] == figures
    assert row["training_data"] == hub.get_weights("maffsrn_x4").training_data != "a stale label"
    # a row from a file that predates per-row machines takes that file's machine
    assert row["measured_on"] == old_machine["cpu"]
    assert report["machine"] == old_machine
    assert "a stale label" not in table and "31.00 / 28.58 (+2.42)" in table
    assert measured["psnr_y"] == {"maffsrn_x4": {"Set5": 30.0, "Set14": 31.0, "B100": 32.0}}
    # an entry the old file lacks is listed as not measured, not evaluated
    others = [e for e in report["entries"] if e["name"] != "maffsrn_x4"]
    assert others and all(e["status"] == "not measured" for e in others)


def test_rows_from_two_cpus_name_both(tmp_path, monkeypatch) -> None:
    row = {"measured": {"Set5": {"psnr": 30.0, "ssim": 0.9}}, "status": "measured"}
    previous = {
        "machine": {"cpu": "B", "torch": "2.0"},
        "entries": [
            {"name": "a2f_sd_x4", **row, "measured_on": "CPU A"},
            {"name": "a2f_sd_x3", **row, "measured_on": "CPU A"},
            {"name": "maffsrn_x4", **row, "measured_on": "CPU B"},
        ],
    }
    _, table, _ = _render_only(tmp_path, monkeypatch, previous)
    assert "on CPU A (2 rows); CPU B (1 row)." in table
