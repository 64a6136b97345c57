"""How long ``lightsr upscale`` takes on a small image: the README's first command, end to end.

On a small image the fixed costs dominate: importing torch, loading the weights, preparing the
backend (``auto``: the ONNX export OpenVINO runs), then the model and the file. Each round runs
``python -m lightsr upscale examples/sample.png -o DIR --quiet --overwrite`` in a fresh process
(wall time, min and median of ``--rounds``), and once more a fresh process times the stages
one by one (import, load, prepare, upscale and write) with the library calls the command makes.

``--weights NAME`` runs a named entry instead of the default (an int8 one starts from its
cached quantized graph after the first run). ``--src DIR`` times another checkout's ``src``
(``PYTHONPATH``), e.g. a ``git worktree`` of an earlier commit, recorded under ``--label``;
results accumulate per label in ``benchmarks/results/startup/<cpu>.json``.

    python benchmarks/bench_startup.py
    git worktree add /tmp/before HEAD~3
    python benchmarks/bench_startup.py --src /tmp/before/src --label "before: HEAD~3"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from labelled_runs import commit_of, save_run  # noqa: E402

SAMPLE = ROOT / "examples" / "sample.png"

_STAGES = """
import json, sys, time
t0 = time.perf_counter()
import lightsr
from lightsr.hub import resolve_model
from lightsr.upscale import Upscaler, upscale_files
t1 = time.perf_counter()
resolved = resolve_model(weights=sys.argv[3] or None)
t2 = time.perf_counter()
precision = resolved.precision or "auto"
runner = Upscaler(resolved.model, precision=precision, backend="auto", progress=False)
runner.describe()
t3 = time.perf_counter()
upscale_files([sys.argv[1]], sys.argv[2], model=runner, overwrite=True, progress=False)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "prepare_s": t3 - t2,
                  "upscale_and_write_s": t4 - t3, "backend": runner.backend,
                  "precision": runner.precision,
                  "dynamo_imported": "torch._dynamo" in sys.modules}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the lightsr to time")
    parser.add_argument("--label", help="default: this checkout (and the weights)")
    parser.add_argument("--weights", help="a named entry (default: the bundled default)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.label is None:
        args.label = "this checkout" + (f", --weights {args.weights}" if args.weights else "")
    env = dict(os.environ, PYTHONPATH=str(args.src.resolve()))
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "lightsr", "upscale", str(SAMPLE), "-o", tmp]
        command += ["--quiet", "--overwrite"]
        if args.weights:
            command += ["--weights", args.weights]
        for _ in range(args.rounds):
            start = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
        done = subprocess.run(
            [sys.executable, "-c", _STAGES, str(SAMPLE), tmp, args.weights or ""],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    stages = json.loads(done.stdout.strip().splitlines()[-1])
    record = {
        "src": str(args.src),
        "weights": args.weights,
        "commit": commit_of(args.src),
        "wall_s_min": round(min(walls), 2),
        "wall_s_median": round(statistics.median(walls), 2),
        "walls_s": [round(w, 2) for w in walls],
        "stages_s": {k: round(v, 2) for k, v in stages.items() if k.endswith("_s")},
        "backend": stages["backend"],
        "precision": stages["precision"],
        "dynamo_imported": stages["dynamo_imported"],
        "load_average": list(os.getloadavg()),
    }
    print(args.label, json.dumps(record))
    if args.no_save:
        return 0
    path = save_run(
        "startup",
        args.label,
        record,
        indent=1,
        what="lightsr upscale examples/sample.png (x4, the bundled default), fresh "
        "processes: wall time, and the stages of one run",
        command="python benchmarks/bench_startup.py [--weights NAME] [--src DIR --label T]",
    )
    print("wrote", path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
