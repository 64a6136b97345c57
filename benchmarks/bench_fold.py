"""CPU forward time of the training form vs the folded (re-parameterised) form.

For ``fmen_s`` the training form has RRRBs and BatchNorms; for the weight-normalised models
(``a2f_sd``, ``maffsrn``, when registered) it recomputes w = g * v / ||v|| on every call. Each
model runs at x4 on a 1x3x128x128 input in eval mode under ``torch.no_grad``, with a fixed
number of torch threads; the figure is the median wall time of ``--repeats`` passes after
``--warmup`` passes. Writes ``benchmarks/results/fold_speed.json``.

    python benchmarks/bench_fold.py [--threads 2] [--repeats 7] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import lightsr
from lightsr.checkpoint import atomic_write

MODELS = ("fmen_s", "a2f_sd", "maffsrn")
RESULTS = Path(__file__).resolve().parent / "results" / "fold_speed.json"


def median_ms(model: torch.nn.Module, x: torch.Tensor, *, warmup: int, repeats: int) -> float:
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--size", type=int, default=128, help="LR input side, pixels")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(1, 3, args.size, args.size)
    available = set(lightsr.list_models())
    rows = []
    for name in MODELS:
        if name not in available:
            print(f"{name}: not registered, skipped")
            continue
        model = lightsr.create_model(name, scale=args.scale).eval()
        folded = lightsr.reparameterize(model)
        with torch.no_grad():
            max_diff = (model(x) - folded(x)).abs().max().item()
        t_train = median_ms(model, x, warmup=args.warmup, repeats=args.repeats)
        t_fold = median_ms(folded, x, warmup=args.warmup, repeats=args.repeats)
        row = {
            "model": name,
            "params_training_form": sum(p.numel() for p in model.parameters()),
            "params_folded": sum(p.numel() for p in folded.parameters()),
            "training_form_ms": round(t_train, 2),
            "folded_ms": round(t_fold, 2),
            "speedup": round(t_train / t_fold, 3),
            "max_abs_output_diff": max_diff,
        }
        rows.append(row)
        print(
            f"{name:8s} training form {t_train:9.1f} ms   folded {t_fold:9.1f} ms   "
            f"speed-up x{t_train / t_fold:.2f}   max |diff| {max_diff:.2e}"
        )

    result = {
        "what": "CPU forward wall time, training form vs folded form (median of repeats)",
        "input": [1, 3, args.size, args.size],
        "scale": args.scale,
        "threads": args.threads,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
        },
        "note": "Shared machine: other processes may have been running; compare ratios.",
        "results": rows,
    }
    text = json.dumps(result, indent=2) + "\n"
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
