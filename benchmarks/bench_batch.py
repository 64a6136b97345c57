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
- ``int8``: ``--precision int8``.

One warm-up round of every path comes first and is not recorded: it fills lightsr's caches
(the ONNX export, the int8 calibration), so the figures are those of a user's second and later
runs.

``--src DIR`` runs another checkout's lightsr (a ``git worktree`` of an earlier commit),
recorded under ``--label``; results accumulate per label in
``benchmarks/results/batch/<cpu>.json``. Needs ``../shared`` (or ``$LIGHTSR_SHARED``).

    python benchmarks/bench_batch.py
    git worktree add /tmp/before 18a45f2
    python benchmarks/bench_batch.py --src /tmp/before/src --label 18a45f2
"""

from __future__ import annotations

import argparse
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

from labelled_runs import add_comparison_arguments, label_of, save_run  # noqa: E402

SHARED = Path(os.environ.get("LIGHTSR_SHARED", ROOT.parent / "shared"))
SETS = {"set14_x4": ("Set14", 4), "set14_x2": ("Set14", 2)}
PATHS = {"auto": [], "torch": ["--backend", "torch"], "int8": ["--precision", "int8"]}


def run_once(folder: Path, scale: int, flags: list[str], src: Path, out: Path) -> dict[str, Any]:
    """One ``lightsr upscale`` of ``folder`` with ``src``'s lightsr: wall seconds, peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, "-m", "lightsr", "upscale", str(folder), "-o", str(out)]
    cmd += ["--scale", str(scale), "--quiet", *flags]
    # stderr to a file, not a pipe: a pipe unread until the child ends could fill and stall it
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            stderr.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr.read().decode()}")
    return {"s": wall, "peak_mib": usage.ru_maxrss / 1024, "files": len(list(out.iterdir()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    add_comparison_arguments(parser)
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    args = parser.parse_args()
    folders = {}
    for name, (dataset, scale) in SETS.items():
        folder = SHARED / "data" / dataset / "LR_bicubic_clamp" / f"X{scale}"
        if not folder.is_dir():
            raise SystemExit(
                f"{folder} not found: put ../shared beside the checkout, or point "
                "LIGHTSR_SHARED at it."
            )
        folders[name] = (folder, scale)
    src = (args.src or ROOT / "src").resolve()
    label = label_of(args)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for folder, scale in folders.values():  # the warm-up: fills the caches
            for path in args.paths:
                run_once(folder, scale, PATHS[path], src, Path(tmp) / "out")
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
    out = save_run(
        "batch",
        label,
        record,
        what="lightsr upscale of Set14's LR folders (x4: 14 images 62-180 px a side; x2: "
        "124-362 px) with the bundled default model of the scale, whole command",
        how="min and median wall time of --rounds fresh processes, paths interleaved, "
        "after one unrecorded warm-up round (caches filled); peak_mib: the largest "
        "ru_maxrss of those processes (os.wait4)",
        command="python benchmarks/bench_batch.py [--src DIR --label T]",
    )
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
