"""MAFFSRN x4 vs A2F-SD x4 trained from scratch on the same budget: implementation vs data.

Both runs share everything but the model and each paper's own optimizer (MAFFSRN: AdamP,
A2F: Adam): the 291 images (T91 + BSD200), HR patch 96, batch 16, the same seed and data
order, lr 1e-3 on the same cosine (60,000 steps, warm-up 200, floor 2%), EMA 0.999, cut at the
same step. Their EMA weights are evaluated with ``lightsr eval`` on Set5, Set14 and B100 (LR
from ``LR_bicubic_clamp``, PSNR-Y/SSIM-Y, crop 4), and the difference MAFFSRN - A2F-SD set
beside the papers' difference (each paper's DIV2K-trained x4 row). If the implementation were
wrong the gap would be far below the papers'; if only the data differ, both fall short of their
papers by about as much and the difference stays near the papers'.

    python benchmarks/same_budget.py [--maffsrn CKPT] [--a2f CKPT]

Each checkpoint's config and step are read from the file itself (both must be at the same
step, with the same data, batch, patch, schedule and seed: refused otherwise). Writes
benchmarks/results/same_budget_x4.json and prints the Markdown table docs/SAME_BUDGET.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors import safe_open

from lightsr import hub
from lightsr.atomic import atomic_write_text
from lightsr.hardware import machine_record

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO.parent / "shared"))
RESULT = REPO / "benchmarks" / "results" / "same_budget_x4.json"
SETS = ("Set5", "Set14", "B100")
COMMAND = "python benchmarks/same_budget.py"

#: MAFFSRN's paper, Table 2 (x4 rows, PSNR on Y). No weights file of it exists to carry these.
MAFFSRN_PAPER_X4 = {"Set5": 32.18, "Set14": 28.58, "B100": 27.57}
#: The config keys that must agree for the comparison to be at the same budget.
SAME = ("batch_size", "seed", "length", "unit", "ema_decay", "scale")
SAME_DATA = ("hr_dirs", "hr_patch", "lr_patch", "boundary", "augment")
SAME_SCHEDULE = ("kind", "warmup", "min_lr_ratio")


def _meta(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    extra = json.loads(meta["extra"])
    return {"arch": meta["arch"], "step": extra["step"], "config": extra["config"]}


def _data(config: dict) -> dict:
    data = dict(config["data"])
    # One run gives the HR patch, the other the LR patch: compare the HR side.
    if data.get("hr_patch") is None and data.get("lr_patch"):
        data["hr_patch"] = data["lr_patch"] * config["scale"]
    data["lr_patch"] = data["hr_patch"] // config["scale"]
    return data


def check_same_budget(a: dict, b: dict) -> None:
    problems = [k for k in SAME if a["config"].get(k) != b["config"].get(k)]
    da, db = _data(a["config"]), _data(b["config"])
    problems += [f"data.{k}" for k in SAME_DATA if da.get(k) != db.get(k)]
    sa, sb = a["config"]["schedule"], b["config"]["schedule"]
    problems += [f"schedule.{k}" for k in SAME_SCHEDULE if sa.get(k) != sb.get(k)]
    if a["config"]["optim"]["lr"] != b["config"]["optim"]["lr"]:
        problems.append("optim.lr")
    if a["step"] != b["step"]:
        problems.append(f"step ({a['step']} vs {b['step']})")
    if problems:
        sys.exit(f"not the same budget: {', '.join(problems)} differ")


def _evaluate(path: Path) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        cmd = [sys.executable, "-m", "lightsr", "eval", "--checkpoint", str(path)]
        cmd += ["--lr-source", "folder-clamp", "--out", str(out), "--quiet"]
        cmd += [str(SHARED / "data" / s) for s in SETS]
        subprocess.run(cmd, check=True, cwd=REPO)
        rows = json.loads(out.read_text())
    return {r["dataset"]: {"psnr": r["psnr"], "ssim": r["ssim"]} for r in rows}


def markdown(report: dict) -> str:
    m, a = report["maffsrn"], report["a2f_sd"]
    lines = [
        f"Same budget: step {m['step']:,}, batch {m['batch_size']}, HR patch {m['hr_patch']}, "
        "291 images; PSNR-Y (dB), x4.",
        "",
        "| | " + " | ".join(SETS) + " |",
        "|---|" + "---|" * len(SETS),
        "| MAFFSRN (AdamP) | " + " | ".join(f"{m['measured'][s]['psnr']:.2f}" for s in SETS) + " |",
        "| A2F-SD (Adam) | " + " | ".join(f"{a['measured'][s]['psnr']:.2f}" for s in SETS) + " |",
        "| difference here | " + " | ".join(f"{report['diff'][s]:+.2f}" for s in SETS) + " |",
        "| difference in the papers | "
        + " | ".join(f"{report['paper_diff'][s]:+.2f}" for s in SETS)
        + " |",
        "| MAFFSRN here - its paper | "
        + " | ".join(f"{m['measured'][s]['psnr'] - m['paper'][s]:+.2f}" for s in SETS)
        + " |",
        "| A2F-SD here - its paper | "
        + " | ".join(f"{a['measured'][s]['psnr'] - a['paper'][s]:+.2f}" for s in SETS)
        + " |",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--maffsrn", type=Path, default=REPO / "training/maffsrn_x4/ema_step9009.safetensors"
    )
    ap.add_argument(
        "--a2f", type=Path, default=REPO / "training/bundled_a2f_sd_x4/last_ema.safetensors"
    )
    args = ap.parse_args()
    runs = {"maffsrn": _meta(args.maffsrn), "a2f_sd": _meta(args.a2f)}
    check_same_budget(runs["maffsrn"], runs["a2f_sd"])
    papers = {"maffsrn": MAFFSRN_PAPER_X4, "a2f_sd": hub.get_weights("a2f_sd_x4_official").paper}
    report: dict = {"command": COMMAND, "machine": machine_record()}
    for key, path in (("maffsrn", args.maffsrn), ("a2f_sd", args.a2f)):
        meta = runs[key]
        print(f"evaluating {key} ({path}) ...", file=sys.stderr, flush=True)
        report[key] = {
            "checkpoint": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
            "arch": meta["arch"],
            "step": meta["step"],
            "batch_size": meta["config"]["batch_size"],
            "hr_patch": _data(meta["config"])["hr_patch"],
            "optimizer": meta["config"]["optim"]["name"],
            "measured": _evaluate(path),
            "paper": {s: papers[key][s] for s in SETS},
        }
    m, a = report["maffsrn"], report["a2f_sd"]
    report["diff"] = {s: m["measured"][s]["psnr"] - a["measured"][s]["psnr"] for s in SETS}
    report["paper_diff"] = {s: m["paper"][s] - a["paper"][s] for s in SETS}
    atomic_write_text(RESULT, json.dumps(report, indent=2) + "\n", overwrite=True)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
