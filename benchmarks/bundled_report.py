"""Evaluate the bundled models trained here and set them against their paper's numbers.

For every ``src/lightsr/weights/<family>_x{s}.safetensors`` present (``--family default``: the
bundled A2F-SD defaults; ``--family maffsrn``: MAFFSRN): ``lightsr eval`` on Set5, Set14 and
B100 (LR from ``LR_bicubic_clamp``: MATLAB imresize, replicate boundary; PSNR-Y/SSIM-Y,
crop = scale), the MATLAB-bicubic baseline on the same LR, and the paper's row for the
architecture (A2F Table 6; MAFFSRN Table 2). Writes

    benchmarks/results/bundled[_maffsrn]_x{s}.json      lightsr eval's JSON (per image)
    benchmarks/results/bundled[_maffsrn]_summary.json   means, paper numbers, gaps, within-0.5-dB
                                                        flags, and each file's training lineage
    and prints the Markdown tables that docs/BUNDLED.md and the README quote.

The lineage follows the ``init_from`` chain recorded in each checkpoint's own config back to a
run started from scratch; per run it gives the steps that reached the shipped weights and the
training time they took, summed from the run's JSONL log (steps between records / logged it/s,
validation and checkpoint writes not counted).

    python benchmarks/bundled_report.py [--family default|maffsrn] [--scales 2 3 4] [--skip-eval]

Scales left out of ``--scales`` keep their entries in the summary already written.

``--skip-eval`` rebuilds the summary from the per-scale JSONs already written.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results"
WEIGHTS = REPO / "src" / "lightsr" / "weights"
SETS = ("Set5", "Set14", "B100")
#: The acceptance margin of the training issue: within this many dB of the paper, every set.
MARGIN_DB = 0.5

# A2F paper ("Lightweight Single-Image Super-Resolution Network with Attentive Auxiliary
# Feature Learning", Table 6, A2F-SD rows) and MAFFSRN paper ("Multi-Attentive Feature Fusion
# Super-Resolution Network", Table 2, MAFFSRN rows): PSNR / SSIM per set.
PAPER = {
    "a2f_sd": {
        2: {"Set5": (37.91, 0.9602), "Set14": (33.45, 0.9164), "B100": (32.08, 0.8986)},
        3: {"Set5": (34.23, 0.9259), "Set14": (30.22, 0.8395), "B100": (29.01, 0.8028)},
        4: {"Set5": (32.06, 0.8928), "Set14": (28.47, 0.7790), "B100": (27.48, 0.7373)},
    },
    "maffsrn": {
        2: {"Set5": (37.97, 0.9603), "Set14": (33.49, 0.9170), "B100": (32.14, 0.8994)},
        3: {"Set5": (34.32, 0.9269), "Set14": (30.35, 0.8429), "B100": (29.09, 0.8052)},
        4: {"Set5": (32.18, 0.8948), "Set14": (28.58, 0.7812), "B100": (27.57, 0.7361)},
    },
}
#: The weights families this report covers: file prefix in src/lightsr/weights/ -> the prefix
#: of its result files in benchmarks/results/.
FAMILIES = {"default": "bundled", "maffsrn": "bundled_maffsrn"}


def summary_path(family: str) -> Path:
    return RESULTS / f"{FAMILIES[family]}_summary.json"


def run_eval(args: list[str], out: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "lightsr", "eval", *args, "--out", str(out), "--no-progress"]
    cmd += ["--overwrite"]  # the result file this report regenerates
    cmd += [str(SHARED / "data" / s) for s in SETS]
    subprocess.run(cmd, check=True, cwd=REPO)
    return json.loads(out.read_text())


def named_start(name: str, log: Path) -> Path:
    """The file a run started from by weights name: the one whose sha256 the run's log
    recorded. A name can later name a newer release (the released file a run improved on is
    replaced by the run's own), so the name alone is not enough: the file with that hash is
    looked for among the shipped weights and the runs' tracked weights."""
    from lightsr.hub import fetch_weights, sha256_of
    from lightsr.train import read_log

    starts = [e for e in read_log(log) if e.get("event") == "init_from"]
    # "" in logs from before bundled entries carried their hash: recorded as unknown, like None
    sha = starts[0].get("sha256") if starts else None
    current = fetch_weights(name)
    if not sha or sha256_of(current) == sha:
        return current
    for path in sorted([*WEIGHTS.glob("*.safetensors"), *REPO.glob("training/*/*.safetensors")]):
        if sha256_of(path) == sha:
            return path
    raise SystemExit(
        f"{log.parent} started from {name} with sha256 {sha}, which no longer names that file, "
        "and no tracked weights file has that hash: restore it (git log) to trace the lineage"
    )


def training_lineage(checkpoint: Path) -> list[dict]:
    """The runs behind ``checkpoint``, oldest first: run folder, steps, training hours."""
    from lightsr.checkpoint import read_metadata

    runs = []
    record = read_metadata(checkpoint)["extra"]
    if "config" not in record:
        raise SystemExit(f"{checkpoint} records no training config (not written by lightsr train)")
    run_dir = REPO / record["config"]["out_dir"]
    while True:
        steps, seconds, done = int(record["step"]), 0.0, 0
        log = run_dir / "log.jsonl"
        if not log.is_file():
            raise SystemExit(f"{log} is missing: the training lineage of {checkpoint} needs it")
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("event") == "train" and done < entry["step"] <= steps:
                seconds += (entry["step"] - done) / entry["it_per_s"]
                done = entry["step"]
        runs.append(
            {
                "run": str(run_dir.relative_to(REPO)),
                "steps": steps,
                "hours": round(seconds / 3600, 2),
            }
        )
        parent = record["config"].get("init_from", "")
        if not parent:
            return runs[::-1]
        if (REPO / parent).is_file():
            # the file, not its recorded out_dir: a run folder may have moved (stage 1 did)
            run_dir = (REPO / parent).parent
            record = read_metadata(REPO / parent)["extra"]
        else:  # a weights name (init_from = "a2f_sd_x4"): the file it named then, and its run
            path = named_start(parent, log)
            record = read_metadata(path)["extra"]
            if "config" not in record:
                return runs[::-1]  # an authors' file: the lineage starts outside this project
            run_dir = REPO / record["config"]["out_dir"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(FAMILIES), default="default")
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args()
    if not (SHARED / "data" / "Set5").is_dir():
        print(f"the benchmark sets are not at {SHARED / 'data'}; nothing to do", file=sys.stderr)
        return 1

    out = summary_path(args.family)
    # scales not named keep the entries already written (re-measure one retrained file alone)
    kept = json.loads(out.read_text())["scales"] if out.is_file() else {}
    summary: dict = {"margin_db": MARGIN_DB, "sets": list(SETS), "scales": kept}
    for s in args.scales:
        ckpt = WEIGHTS / f"{args.family}_x{s}.safetensors"
        if not ckpt.is_file():
            print(f"x{s}: no bundled weights ({ckpt.name}); skipped", file=sys.stderr)
            continue
        ours_json = RESULTS / f"{FAMILIES[args.family]}_x{s}.json"
        bic_json = RESULTS / f"bicubic_x{s}.json"
        if args.skip_eval:
            ours, bic = json.loads(ours_json.read_text()), json.loads(bic_json.read_text())
        else:
            ours = run_eval(["--checkpoint", str(ckpt.relative_to(REPO))], ours_json)
            bic = run_eval(["--model", "bicubic", "--scale", str(s)], bic_json)
        arch = ours[0]["model"].split()[0]
        paper = PAPER.get(arch, {}).get(s)
        entry = {"checkpoint": str(ckpt.relative_to(REPO)), "arch": arch, "sets": {}}
        entry["lineage"] = training_lineage(ckpt)
        for o, b in zip(ours, bic, strict=True):
            name = o["dataset"]
            # Unrounded: the tables round once, from these (27.3452 rounded to 27.345 first
            # printed as 27.34).
            e = {"psnr": o["psnr"], "ssim": o["ssim"]}
            e["bicubic_psnr"], e["bicubic_ssim"] = b["psnr"], b["ssim"]
            if paper and name in paper:
                e["paper_psnr"], e["paper_ssim"] = paper[name]
                e["gap_db"] = o["psnr"] - paper[name][0]
                e["within_margin"] = e["gap_db"] >= -MARGIN_DB
            entry["sets"][name] = e
        summary["scales"][str(s)] = entry

    summary["scales"] = dict(sorted(summary["scales"].items(), key=lambda kv: int(kv[0])))
    rows = [(int(s), entry) for s, entry in summary["scales"].items()]
    from lightsr.atomic import atomic_write

    text = json.dumps(summary, indent=2) + "\n"
    atomic_write(out, lambda tmp: Path(tmp).write_text(text), overwrite=True)

    print("| scale | | " + " | ".join(SETS) + " |")
    print("|---|---|" + "---|" * len(SETS))
    for s, entry in rows:
        sets = [entry["sets"][n] for n in SETS]
        print(
            f"| ×{s} | bundled {entry['arch']} | "
            + " | ".join(f"{e['psnr']:.2f} / {e['ssim']:.4f}" for e in sets)
            + " |"
        )
        if all("paper_psnr" in e for e in sets):
            print(
                "| | paper | "
                + " | ".join(f"{e['paper_psnr']:.2f} / {e['paper_ssim']:.4f}" for e in sets)
                + " |"
            )
            print(
                "| | gap | "
                + " | ".join(
                    f"{e['gap_db']:+.2f} dB {'✓' if e['within_margin'] else '✗'}" for e in sets
                )
                + " |"
            )
        print(
            "| | bicubic | "
            + " | ".join(f"{e['bicubic_psnr']:.2f} / {e['bicubic_ssim']:.4f}" for e in sets)
            + " |"
        )
    print("\n| scale | runs (steps) | steps | training hours |")
    print("|---|---|---|---|")
    for s, entry in rows:
        runs = entry.get("lineage")
        if not runs:  # an entry written before lineages were recorded
            continue
        names = ", ".join(f"{Path(r['run']).name} ({r['steps']:,})" for r in runs)
        steps, hours = sum(r["steps"] for r in runs), sum(r["hours"] for r in runs)
        print(f"| ×{s} | {names} | {steps:,} | {hours:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
