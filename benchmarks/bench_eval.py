"""Wall time of a full benchmark evaluation: Set5 + Set14 + B100 at x4 with A2F-SD.

    python benchmarks/bench_eval.py [--threads 2] [--data ../shared/data] [--checkpoint PATH]

Times everything `lightsr eval` does per image (read HR/LR, model forward, clamp/round,
PSNR-Y and SSIM-Y) on the CPU at a fixed thread count; the target is under 60 s on 2 threads.
Uses the authors' A2F-SD x4 weights when present (random weights otherwise: same cost).
Writes benchmarks/results/eval_speed.json with the machine, thread count and load average,
since on a shared machine the wall time depends on what else runs.

OMP_WAIT_POLICY defaults to PASSIVE here: with more runnable threads than cores, OpenMP's
spinning workers make 2-thread inference several times slower than 1 thread (measured on the
shared 2-core machine at load 7: Set14 36.6 s active vs 5.9 s passive).
"""

from __future__ import annotations

import os

# Must be set before torch (and its OpenMP runtime) is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import lightsr  # noqa: E402
from lightsr.atomic import atomic_write  # noqa: E402
from lightsr.data.benchmark import open_benchmark  # noqa: E402
from lightsr.evaluate import evaluate  # noqa: E402
from lightsr.hardware import device_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO.parent / "shared"))
LIMIT_S = 60.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=SHARED / "data")
    ap.add_argument("--checkpoint", type=Path, default=SHARED / "weights/official/a2f_sd_x4.pt")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/eval_speed.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.checkpoint.is_file():
        model, weights = lightsr.load_any(args.checkpoint), args.checkpoint.name
    else:
        model, weights = lightsr.create_model("a2f_sd", scale=4).eval(), "random"
    sets = [open_benchmark(args.data / name, scale=4) for name in ("Set5", "Set14", "B100")]

    load_before = os.getloadavg()
    cpu0, t0 = time.process_time(), time.perf_counter()
    per_set = []
    for ds in sets:
        start = time.perf_counter()
        r = evaluate(model, ds)
        per_set.append(
            {
                "dataset": ds.name,
                "lr_source": r.lr_source,
                "images": len(r.images),
                "failures": len(r.failures),
                "psnr_y": round(r.psnr, 4),
                "ssim_y": round(r.ssim, 4),
                "wall_s": round(time.perf_counter() - start, 2),
                "model_s": round(r.seconds, 2),
            }
        )
        print(
            f"{ds.name:<6} {len(r.images):>3} images  {r.psnr:.3f}/{r.ssim:.4f}  "
            f"{per_set[-1]['wall_s']:.1f} s (model {r.seconds:.1f} s)"
        )
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    record = {
        "task": "evaluate A2F-SD x4 on Set5+Set14+B100 (PSNR-Y and SSIM-Y)",
        "weights": weights,
        "threads": args.threads,
        "wall_s": round(wall, 2),
        "process_cpu_s": round(cpu, 2),
        "limit_s": LIMIT_S,
        "under_limit": wall < LIMIT_S,
        "sets": per_set,
        "machine": {
            "cpu": device_name(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "lightsr": lightsr.__version__,
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        },
        "command": "python benchmarks/bench_eval.py " + " ".join(sys.argv[1:]),
    }
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(text), overwrite=True)
    print(f"total {wall:.1f} s wall ({cpu:.1f} s CPU) on {args.threads} threads -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
