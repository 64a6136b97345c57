"""Wall time of ``lightsr upscale`` on a folder of small images of many sizes, per path.

What a user who upscales a folder of web pictures, or a benchmark set's LR images, waits for:
the whole command, from process start (imports and model load included) to the last file
written. The folders are Set14's MATLAB LR images at x4 (14 images, 62 to 180 pixels a side)
and x2 (124 to 362 a side), upscaled with the bundled default model of that scale. Each
command runs ``--rounds`` times in a fresh process (the ``min`` is kept, and the peak resident
memory of that process, from ``os.wait4``), the paths interleaved so that a busy moment of the
shared machine does not land on one path:

- ``auto``: ``lightsr upscale DIR -o OUT`` as a user runs it (OpenVINO fp32 where installed);
- ``torch``: ``--backend torch`` (PyTorch eager, fp32);
- ``int8``: ``--precision int8`` (its quantized graph from the cache after the first round).

``--src DIR`` runs another checkout's lightsr (a ``git worktree`` of an earlier commit),
recorded under ``--label``; results accumulate per label in
``benchmarks/results/batch/<cpu>.json``. Needs ``../shared`` (or ``$LIGHTSR_SHARED``).

    python benchmarks/bench_batch.py
    git worktree add /tmp/before 18a45f2
    python benchmarks/bench_batch.py --src /tmp/before/src --label 18a45f2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARED = Path(os.environ.get("LIGHTSR_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "benchmarks" / "results" / "batch"
SETS = {"set14_x4": ("Set14", 4), "set14_x2": ("Set14", 2)}
PATHS = {"auto": [], "torch": ["--backend", "torch"], "int8": ["--precision", "int8"]}


def run_once(folder: Path, scale: int, flags: list[str], src: Path, out: Path) -> dict[str, Any]:
    """One ``lightsr upscale`` of ``folder`` with ``src``'s lightsr: wall seconds, peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, "-m", "lightsr", "upscale", str(folder), "-o", str(out)]
    cmd += ["--scale", str(scale), "--quiet", *flags]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr}")
    return {"s": wall, "peak_mib": usage.ru_maxrss / 1024, "files": len(list(out.iterdir()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the lightsr to time")
    parser.add_argument("--label", help="the record's name (default: this checkout's commit)")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    from bench_backends import cpu_slug
    from bench_startup import commit_of

    from lightsr.atomic import atomic_write_text
    from lightsr.hardware import cpu_kind, machine_record

    folders = {}
    for name, (dataset, scale) in SETS.items():
        folder = SHARED / "data" / dataset / "LR_bicubic_clamp" / f"X{scale}"
        if not folder.is_dir():
            raise SystemExit(
                f"{folder} not found: put ../shared beside the checkout, or point "
                "LIGHTSR_SHARED at it."
            )
        folders[name] = (folder, scale)
    src = args.src.resolve()
    label = args.label or commit_of(src) or str(src)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, (folder, scale) in folders.items():
                for path in args.paths:
                    r = run_once(folder, scale, PATHS[path], src, Path(tmp) / "out")
                    runs.setdefault(name, {}).setdefault(path, []).append(r)
    record: dict[str, Any] = {"rounds": args.rounds}
    for name, per_path in runs.items():
        record[name] = {}
        for path, rs in per_path.items():
            best = min(rs, key=lambda r: r["s"])
            record[name][path] = {
                "min_s": round(best["s"], 2),
                "median_s": round(sorted(r["s"] for r in rs)[len(rs) // 2], 2),
                "peak_mib": round(max(r["peak_mib"] for r in rs), 1),
                "files": best["files"],
            }
            print(
                f"{label}: {name} {path:6s} min {best['s']:6.2f} s  "
                f"peak {record[name][path]['peak_mib']:.0f} MiB  ({best['files']} files)"
            )
    if args.no_save:
        return 0
    out = RESULTS / f"{cpu_slug(cpu_kind())}.json"
    result = json.loads(out.read_text()) if out.is_file() else {}
    result.update(
        {
            "what": "lightsr upscale of Set14's LR folders (x4: 14 images 62-180 px a side; x2: "
            "124-362 px) with the bundled default model of the scale, whole command",
            "how": "min and median wall time of --rounds fresh processes, paths interleaved; "
            "peak_mib: the largest ru_maxrss of those processes (os.wait4)",
            "cpu_kind": cpu_kind(),
            "machine": machine_record(),
            "command": "python benchmarks/bench_batch.py [--src DIR --label T]",
        }
    )
    result.setdefault("runs", {})[label] = record
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n", overwrite=True)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
