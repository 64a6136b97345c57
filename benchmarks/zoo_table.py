"""Every named weights entry of the hub evaluated with ``lightsr eval`` beside its paper row.

For each entry of ``lightsr list --weights``: ``lightsr eval --weights NAME`` on Set5, Set14 and
B100 (LR from ``LR_bicubic_clamp``: MATLAB imresize, replicate boundary; PSNR-Y/SSIM-Y, crop =
scale). The authors' files are looked for (by sha256) in ``../shared/weights/official`` (or
``--weights-dir``) and in lightsr's cache; nothing is downloaded unless ``--download``. Entries
whose file is absent are listed as such. Writes

    benchmarks/results/zoo.json                   per entry: means per set, paper, gaps, status
    src/lightsr/weights/zoo_measured.json         the means, read by `lightsr list --weights`
    docs/ZOO.md                                   the table

    python benchmarks/zoo_table.py [--only NAME ... | --render-only] [--weights-dir DIR]
                                   [--download]

``--only`` re-measures those entries and keeps the others' figures from zoo.json (an entry
measured neither now nor before is listed as not measured); ``--render-only`` measures nothing
and rewrites the three files from zoo.json. Either way every row's labels (source, training
data, paper figures) are the hub's as they are now, and each row keeps the CPU it was measured
on.

An int8 entry (``a2f_sd_x4_int8``: its base's file, run at int8) is evaluated the same way
(``lightsr eval --weights NAME`` runs it at int8) and its cost, int8 - base PSNR-Y per set, is
shown beside it (``lightsr list --weights`` computes the same from zoo_measured.json), with the
convs it kept in fp32 (``int8_kept_fp32``), so a change of the default list shows which rows it
made stale.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import lightsr
from lightsr import hub
from lightsr.atomic import atomic_write
from lightsr.errors import CheckpointError
from lightsr.hardware import cpu_kind, machine_record
from lightsr.hub import BF16_FLOATS_SECTION, MEASURED_FILE, fetch_weights, list_weights
from lightsr.quantize import default_keep_fp32
from lightsr.upscale import int8_floats, resolve_backend

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results" / "zoo.json"
DOC = REPO / "docs" / "ZOO.md"
SETS = ("Set5", "Set14", "B100")
COMMAND = "python benchmarks/zoo_table.py"
#: What a row keeps from zoo.json when it is not re-measured (everything else is the hub's).
_MEASUREMENT_KEYS = (
    "measured",
    "status",
    "int8_engine",
    "int8_kept_fp32",
    "measured_on",
    "measured_bf16_floats",
    "measured_bf16_floats_on",
)
#: An int8 row's figures as measured where its kept convs ran in bf16 (OpenVINO on a CPU with
#: native bf16, lightsr.upscale.int8_floats) are kept beside its fp32-floats figures, so a run
#: on either kind of CPU replaces only its own.
_BF16_KEYS = ("measured_bf16_floats", "measured_bf16_floats_on")


def _available(name: str, weights_dir: str, download: bool) -> bool:
    """True when the entry's file can be used: bundled, cached, or (by sha256) in
    ``weights_dir``; with ``download``, fetched. Converted into the cache on the way."""
    entry = hub.get_weights(name)
    local = entry.bundled or hub.is_cached(name)
    if not (local or download or hub._find_by_hash(Path(weights_dir), entry)):
        return False
    try:
        fetch_weights(name, weights_dir=weights_dir)
    except CheckpointError as exc:
        print(f"  {name}: {exc}", file=sys.stderr)
        return False
    return True


def _evaluate(name: str, weights_dir: str) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        cmd = [sys.executable, "-m", "lightsr", "eval", "--weights", name]
        cmd += ["--weights-dir", weights_dir, "--lr-source", "folder-clamp", "--out", str(out)]
        cmd += ["--quiet", *(str(SHARED / "data" / s) for s in SETS)]
        subprocess.run(cmd, check=True, cwd=REPO)
        data = json.loads(out.read_text())
    return {r["dataset"]: {"psnr": r["psnr"], "ssim": r["ssim"]} for r in data}


def _costs(entries: list[dict]) -> None:
    """Set each int8 row's ``cost``: its PSNR-Y minus its base's, per set measured for both
    (the same difference as ``lightsr.hub.measured_cost``)."""
    by_name = {e["name"]: e for e in entries}
    for e in entries:
        base = by_name.get(e.get("base") or "")
        if base is None:
            continue
        theirs = base["measured"]
        for key, figures in (("cost", "measured"), ("cost_bf16_floats", "measured_bf16_floats")):
            mine = e.get(figures) or {}
            if mine:
                e[key] = {
                    s: round(mine[s]["psnr"] - theirs[s]["psnr"], 4)
                    for s in SETS
                    if s in mine and s in theirs
                }


def _cost_cell(e: dict) -> str:
    if not e.get("base"):
        return ""
    cost = e.get("cost") or {}
    if not cost:
        return f"not measured (vs `{e['base']}`)"
    cell = " / ".join(f"{cost[s]:+.2f}" if s in cost else "-" for s in SETS) + f" vs `{e['base']}`"
    bf16 = e.get("cost_bf16_floats") or {}
    if bf16:
        figures = " / ".join(f"{bf16[s]:+.2f}" if s in bf16 else "-" for s in SETS)
        cell += f"; kept convs in bf16: {figures} ({e['measured_bf16_floats_on']})"
    return cell


def _machines_cell(entries: list[dict]) -> str:
    """The CPUs the measured rows ran on: one, or each with its row count."""
    on = [e["measured_on"] for e in entries if e.get("measured_on")]
    kinds = sorted(set(on))
    if len(kinds) <= 1:
        return kinds[0] if kinds else "no CPU (nothing measured)"
    counts = {k: on.count(k) for k in kinds}
    return "; ".join(f"{k} ({n} row{'s' * (n != 1)})" for k, n in counts.items())


def _markdown(report: dict) -> str:
    lines = [
        "# The weights zoo",
        "",
        "Every named weights entry (`lightsr list --weights`), evaluated here with",
        "`lightsr eval --weights NAME` on Set5 / Set14 / B100 (PSNR-Y, LR from",
        "`LR_bicubic_clamp`, crop = scale) beside the paper's figure for the same file or",
        "architecture. Regenerate with `" + COMMAND + "` (the authors' files are read from",
        "`../shared/weights/official` or the cache; absent ones are listed as such).",
        "",
        "An entry named `..._int8` is its base entry's file run at int8 (static quantization,",
        "`lightsr.quantize`, run by the engine `--backend auto` picks; what `--weights",
        "NAME_int8` and `--precision int8` run); its last column is what int8 costs: its",
        "PSNR-Y minus its base's, per set. On a CPU with native bf16, OpenVINO runs the convs",
        "int8 keeps in bf16 where the model is measured safe so (`lightsr.upscale.int8_floats`);",
        "those runs' cost is given after the fp32-floats one, with the CPU it was measured on.",
        "",
        "| weights | arch | x | source | training data | "
        + " | ".join(f"{s} ours / paper (gap)" for s in SETS)
        + " | int8 cost, "
        + " / ".join(SETS)
        + " (dB) |",
        "|---|---|---|---|---|" + "---|" * (len(SETS) + 1),
    ]
    for e in report["entries"]:
        cells = []
        for s in SETS:
            ours = e["measured"].get(s, {}).get("psnr")
            paper = e["paper"].get(s)
            if ours is None:
                missing = e["status"] in ("absent", "not measured")
                cells.append(e["status"] if missing else "-")
            elif paper is None:
                cells.append(f"{ours:.2f} / -")
            else:
                cells.append(f"{ours:.2f} / {paper:.2f} ({ours - paper:+.2f})")
        cells.append(_cost_cell(e))
        lines.append(
            f"| `{e['name']}`{' (default)' if e['default'] else ''} | {e['arch']} | "
            f"{e['scale']} | {e['source']} | {e['training_data']} | " + " | ".join(cells) + " |"
        )
    m = report["machine"]
    lines += [
        "",
        "Paper figures: the paper row of the architecture (for lightsr's own weights, trained on",
        "the 291 images, the paper's DIV2K-trained figure is the target, not the same file).",
        f"Measured with torch {m['torch']} on {_machines_cell(report['entries'])}.",
        "The int8 figures come from this CPU's int8 kernels ("
        + ", ".join(sorted({e["int8_engine"] for e in report["entries"] if "int8_engine" in e}))
        + f"; int8 dot product: {m.get('int8_dot') or 'none'}):",
        "another instruction set may round some values differently.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--only", nargs="+", metavar="NAME", help="re-measure only these entries")
    which.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: rewrite the table from zoo.json with the hub's current labels",
    )
    ap.add_argument("--weights-dir", default=str(SHARED / "weights" / "official"))
    ap.add_argument("--download", action="store_true", help="download absent authors' files")
    args = ap.parse_args()
    if args.render_only and not RESULTS.is_file():
        # rendering from nothing would overwrite the table and zoo_measured.json with empty rows
        ap.error(f"--render-only needs {RESULTS}: run without it (or with --only) to measure")
    try:
        old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"entries": []}
    except json.JSONDecodeError as exc:
        ap.error(
            f"{RESULTS} is not valid JSON ({exc}): restore it from git, or delete it and "
            "measure every entry again"
        )
    previous = {e["name"]: e for e in old["entries"]}
    entries = []
    unknown = sorted(set(args.only or ()) - {e.name for e in list_weights()})
    if unknown:
        ap.error(f"--only names no entry: {', '.join(unknown)} (see `lightsr list --weights`)")
    for entry in list_weights():
        row = {
            "name": entry.name,
            "arch": entry.arch,
            "scale": entry.scale,
            "source": entry.source,
            "training_data": entry.training_data,
            "default": entry.default,
            "precision": entry.precision,
            "base": entry.base,
            "paper": {s: entry.paper[s] for s in SETS if s in entry.paper},
            "measured": {},
            "status": "absent",
        }
        if args.render_only or (args.only and entry.name not in args.only):
            # its figures as measured before (an entry new since then waits for its own --only
            # run); its labels are the hub's now, so a corrected label reaches the table
            before = previous.get(entry.name, {"status": "not measured"})
            kept = {k: before[k] for k in _MEASUREMENT_KEYS if k in before}
            if kept.get("status") == "measured" and "measured_on" not in kept:
                kept["measured_on"] = old.get("machine", {}).get("cpu", "not recorded")
            entries.append({**row, **kept})
            continue
        print(f"{entry.name} ...", file=sys.stderr, flush=True)
        if _available(entry.name, args.weights_dir, args.download):
            figures = _evaluate(entry.name, args.weights_dir)
            floats = "fp32"
            if entry.precision == "int8":  # the engine `lightsr eval` ran it in
                row["int8_engine"] = resolve_backend("auto", torch.device("cpu"), "int8")[0]
                # the convs it kept in fp32 (lightsr.quantize's default, as eval ran it): a
                # later change of KEEP_FP32 makes this row stale (tests/test_hub.py checks)
                layout = lightsr.create_model(entry.arch, scale=entry.scale, **entry.options)
                # the list depends on the layout only: no weights file to load
                row["int8_kept_fp32"] = default_keep_fp32(lightsr.reparameterize(layout))
                floats = int8_floats(
                    row["int8_engine"], bf16_in_engines=getattr(layout, "bf16_in_engines", None)
                )
            before = previous.get(entry.name, {})
            if floats == "bf16":  # the fp32-floats figures stay those measured before
                row.update({k: before[k] for k in ("measured", "measured_on") if k in before})
                row.update(measured_bf16_floats=figures, measured_bf16_floats_on=cpu_kind())
            else:
                row.update({k: before[k] for k in _BF16_KEYS if k in before})
                row.update(measured=figures, measured_on=cpu_kind())
            row["status"] = "measured"
        entries.append(row)
    _costs(entries)
    # --render-only ran nothing: the record stays that of the last run that measured
    machine = old["machine"] if args.render_only and "machine" in old else machine_record()
    report = {"command": COMMAND, "machine": machine, "entries": entries}
    atomic_write(
        RESULTS, lambda t: Path(t).write_text(json.dumps(report, indent=1) + "\n"), overwrite=True
    )
    measured = {
        "command": COMMAND,
        "psnr_y": {
            e["name"]: {s: round(v["psnr"], 4) for s, v in e["measured"].items()}
            for e in entries
            if e["measured"]
        },
        BF16_FLOATS_SECTION: {
            e["name"]: {s: round(v["psnr"], 4) for s, v in e["measured_bf16_floats"].items()}
            for e in entries
            if e.get("measured_bf16_floats")
        },
    }
    atomic_write(
        MEASURED_FILE, lambda t: Path(t).write_text(json.dumps(measured, indent=1)), overwrite=True
    )
    atomic_write(DOC, lambda t: Path(t).write_text(_markdown(report)), overwrite=True)
    print(f"wrote {RESULTS}, {MEASURED_FILE} and {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
