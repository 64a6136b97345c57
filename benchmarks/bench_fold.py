"""CPU forward time of the training form vs the folded (re-parameterised) form.

For ``fmen_s`` the training form has RRRBs and BatchNorms; for the weight-normalised models
(``a2f_sd``, ``maffsrn``, when registered) it recomputes w = g * v / ||v|| on every call. Each
model runs at x4 on a 1x3x128x128 input in eval mode under ``torch.no_grad``, with a fixed
number of torch threads; the figure is the median wall time of ``--repeats`` passes after
``--warmup`` passes, the two forms timed alternately (the minimum is recorded too).
Writes ``benchmarks/results/fold_speed.json``.

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
from lightsr.atomic import atomic_write

MODELS = ("fmen_s", "a2f_sd", "maffsrn")
RESULTS = Path(__file__).resolve().parent / "results" / "fold_speed.json"


def time_pair(
    a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor, *, warmup: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Wall times (ms) of ``a(x)`` and ``b(x)``, interleaved (a, b, b, a, ...) so that both see
    the same background load on a shared machine."""
    times: tuple[list[float], list[float]] = ([], [])
    with torch.no_grad():
        for _ in range(warmup):
            a(x)
            b(x)
        for i in range(repeats):
            order = ((0, a), (1, b)) if i % 2 == 0 else ((1, b), (0, a))
            for k, model in order:
                t0 = time.perf_counter()
                model(x)
                times[k].append(1000.0 * (time.perf_counter() - t0))
    return times


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
    load_at_start = [round(v, 2) for v in os.getloadavg()]
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
        train_ms, fold_ms = time_pair(model, folded, x, warmup=args.warmup, repeats=args.repeats)
        t_train, t_fold = statistics.median(train_ms), statistics.median(fold_ms)
        row = {
            "model": name,
            "params_training_form": sum(p.numel() for p in model.parameters()),
            "params_folded": sum(p.numel() for p in folded.parameters()),
            "training_form_ms": round(t_train, 2),
            "folded_ms": round(t_fold, 2),
            "speedup": round(t_train / t_fold, 3),
            "training_form_min_ms": round(min(train_ms), 2),
            "folded_min_ms": round(min(fold_ms), 2),
            "speedup_of_minima": round(min(train_ms) / min(fold_ms), 3),
            "max_abs_output_diff": max_diff,
        }
        rows.append(row)
        print(
            f"{name:8s} training form {t_train:9.1f} ms   folded {t_fold:9.1f} ms   "
            f"speed-up x{t_train / t_fold:.2f}   max |diff| {max_diff:.2e}"
        )

    result = {
        "what": "CPU forward wall time (ms), training vs folded form, median of interleaved runs",
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
            "load_average_at_start": load_at_start,
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
        "note": "Shared machine: other processes may have been running; compare ratios.",
        "results": rows,
    }
    text = json.dumps(result, indent=2) + "\n"
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(text), overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
