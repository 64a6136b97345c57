"""The tables benchmarks/zoo_table.py and benchmarks/bench_backends.py write, without measuring:
zoo rows it does not re-measure keep their figures but take the hub's labels as they are now,
and say which CPU measured them; per-CPU backend tables keep each machine's own figures."""

from __future__ import annotations

import json
import sys

import pytest
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


def test_render_only_without_results_refuses_and_writes_nothing(tmp_path, monkeypatch, capsys):
    zoo = benchmark_script("zoo_table")
    doc, measured = tmp_path / "ZOO.md", tmp_path / "m.json"
    doc.write_text("the committed table")
    monkeypatch.setattr(zoo, "RESULTS", tmp_path / "absent.json")
    monkeypatch.setattr(zoo, "DOC", doc)
    monkeypatch.setattr(zoo, "MEASURED_FILE", measured)
    monkeypatch.setattr(sys, "argv", ["zoo_table.py", "--render-only"])
    with pytest.raises(SystemExit) as exc:
        zoo.main()
    assert exc.value.code == 2 and "--render-only needs" in capsys.readouterr().err
    assert doc.read_text() == "the committed table" and not measured.exists()


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


def _backends_run(cpu: str, set5: float, ms: float) -> dict:
    paths = {
        "authors": {"min_ms": ms, "set5_psnr_y": set5},
        "fp32": {"min_ms": ms / 2, "set5_psnr_y": set5},
        "int8": {"min_ms": ms / 4, "set5_psnr_y": 31.0},
    }
    return {
        "cpu_kind": cpu,
        "machine": {"cpu": cpu, "cpu_flags": ["avx2"], "torch_threads": 2, "torch": "2"},
        "versions": {},
        "load_average_at_start": 0.0,
        "load_average_at_end": 0.0,
        "models": {
            "maffsrn": {
                "paths": paths,
                "notes": {},
                "speedup_vs_authors_min": {"authors": 1.0, "fp32": 2.0, "int8": 4.0},
            }
        },
    }


def test_backends_table_gives_each_machines_quality_where_they_differ(tmp_path, monkeypatch):
    """A file replaced between two CPUs' runs: the Set5 column must not show the first run's
    figure as if both had measured it."""
    bench = benchmark_script("bench_backends")
    results = tmp_path / "backends"
    results.mkdir()
    for slug, set5, ms in (("a-cpu", 31.4364, 1000.0), ("b-cpu", 31.5777, 800.0)):
        (results / f"{slug}.json").write_text(json.dumps(_backends_run(slug, set5, ms)))
    monkeypatch.setattr(bench, "RESULTS", results)
    monkeypatch.setattr(bench, "MEMORY", tmp_path / "no-memory-results")
    monkeypatch.setattr(bench, "DOC", tmp_path / "BACKENDS.md")
    rows = {line.split(" | ")[0]: line for line in bench.write_markdown().splitlines()}
    assert rows["| authors"] == "| authors | 1000 (x1.0) | 800 (x1.0) | 31.4364 / 31.5777 | - |"
    # the same figure on both machines is given once
    assert rows["| int8"] == "| int8 | 250 (x4.0) | 200 (x4.0) | 31.0000 | - |"


def test_memory_table_says_how_each_run_wrote_its_png(tmp_path, monkeypatch):
    bench = benchmark_script("bench_backends")
    memory = tmp_path / "memory"
    memory.mkdir()
    run = {
        "cpu_kind": "A CPU",
        "threads": 2,
        "weights": {"name": "a2f_sd_x4"},
        "lr_size_wh": [4000, 3000],
        "hr_size_wh": [16000, 12000],
        "command": "python benchmarks/bench_memory.py ",
        "paths": [
            {
                "path": "fp32",
                "measured": True,
                "precision": "fp32",
                "backend": "torch",
                "peak_rss_gib": 1.0449,
                "wall_s": 156.5,
                "upscale_and_write_s": 152.46,
            },
            {"path": "bf16", "measured": False, "why": "no native bf16 on this CPU"},
            {
                "path": "auto_outscale@abc123",
                "measured": True,
                "precision": "fp32",
                "backend": "openvino",
                "peak_rss_gib": 4.983,
                "wall_s": 111.6,
                "upscale_and_write_s": 109.5,
                "output_size_wh": [8000, 6000],
                "outscale_filter": "bicubic",
            },
        ],
    }
    (memory / "old.json").write_text(json.dumps(run))
    (memory / "new.json").write_text(json.dumps(dict(run, png_writer="bands, our encoder")))
    monkeypatch.setattr(bench, "MEMORY", memory)
    text = bench.memory_tables()
    assert "| fp32 | fp32, torch | 1.04 | 156 | 152 |" in text
    assert "| bf16 | not measured: no native bf16 on this CPU | - | - | - |" in text
    # --outscale: the row says the other output size and the filter
    assert (
        "| auto_outscale@abc123 | fp32, openvino; to 8000x6000 (bicubic) | 4.98 | 112 | 110 |"
        in text
    )
    # a run without the record predates it: the whole output, then Pillow's encoder
    assert (
        "written as bands, our encoder (`python benchmarks/bench_memory.py`; the last run: "
        "`python benchmarks/bench_memory.py`)" in text
    )
    assert "written as the whole output, then Pillow's PNG encoder" in text


def test_an_int8_row_keeps_fp32_and_bf16_floats_figures_side_by_side(
    tmp_path, monkeypatch, capsys
) -> None:
    # A CPU with native bf16 runs int8's kept convs in bf16 (OpenVINO): its --only run of an
    # int8 entry adds those figures and keeps the fp32-floats ones an earlier CPU measured.
    import lightsr.upscale

    zoo = benchmark_script("zoo_table")
    results, doc, measured = tmp_path / "zoo.json", tmp_path / "ZOO.md", tmp_path / "m.json"

    def sets(*values):
        return {s: {"psnr": v, "ssim": 0.9} for s, v in zip(("Set5", "Set14", "B100"), values)}

    earlier = {"status": "measured", "measured_on": "CPU A (avx2)"}
    previous = {
        "machine": {"cpu": "A", "torch": "2.0"},
        "entries": [
            {"name": "fmen_s_x4_official", "measured": sets(32.1, 28.7, 27.6), **earlier},
            {"name": "fmen_s_x4_official_int8", "measured": sets(32.05, 28.67, 27.58), **earlier},
        ],
    }
    results.write_text(json.dumps(previous))
    for name, value in (("RESULTS", results), ("DOC", doc), ("MEASURED_FILE", measured)):
        monkeypatch.setattr(zoo, name, value)
    monkeypatch.setattr(zoo, "_available", lambda *a: True)
    monkeypatch.setattr(zoo, "_evaluate", lambda *a: sets(32.03, 28.66, 27.57))
    monkeypatch.setattr(zoo, "resolve_backend", lambda *a, **k: ("openvino", "auto"))
    monkeypatch.setattr(lightsr.upscale, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(sys, "argv", ["zoo_table.py", "--only", "fmen_s_x4_official_int8"])
    assert zoo.main() == 0
    row = next(
        e
        for e in json.loads(results.read_text())["entries"]
        if e["name"] == "fmen_s_x4_official_int8"
    )
    assert row["measured"] == previous["entries"][1]["measured"]
    assert row["measured_on"] == "CPU A (avx2)"
    assert row["cost"] == {"Set5": -0.05, "Set14": -0.03, "B100": -0.02}
    assert row["cost_bf16_floats"] == {"Set5": -0.07, "Set14": -0.04, "B100": -0.03}
    assert "kept convs in bf16: -0.07 / -0.04 / -0.03" in doc.read_text()
    sections = json.loads(measured.read_text())
    assert sections["psnr_y"]["fmen_s_x4_official_int8"]["Set5"] == 32.05
    assert sections[hub.BF16_FLOATS_SECTION] == {
        "fmen_s_x4_official_int8": {"Set5": 32.03, "Set14": 28.66, "B100": 27.57}
    }
    # `lightsr list --weights` gives both costs
    monkeypatch.setattr(hub, "MEASURED_FILE", measured)
    assert hub.measured_cost("fmen_s_x4_official_int8") == row["cost"]
    bf16 = hub.measured_figures(int8_floats="bf16")
    assert hub.measured_cost("fmen_s_x4_official_int8", bf16) == row["cost_bf16_floats"]
    from lightsr.cli import main

    assert main(["list", "--weights"]) == 0
    line = next(
        x for x in capsys.readouterr().out.splitlines() if x.startswith("fmen_s_x4_official_int8")
    )
    assert line.endswith("(kept convs in bf16, native-bf16 CPUs: -0.07/-0.04/-0.03)")
