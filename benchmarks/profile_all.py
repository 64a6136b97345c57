"""Regenerate the committed cost table of every registered model: one command.

    python benchmarks/profile_all.py [--threads 2] [--size 128] [--reps 5] [--warmup 1]
    python benchmarks/profile_all.py --plot-only   # redraw the plot after new evaluations

For every model x scale x form (training, folded): parameters, Multi-Adds for a 1280x720 output,
NTIRE MACs / activations / convs at a 256x256 LR input (counted on the meta device), and, on
the CPU at a fixed thread count, the median forward time and the peak-memory increase of one
forward pass at a ``--size`` x ``--size`` LR input (128 by default, not the NTIRE 256: RCAN
alone would take the better part of an hour at 256 on two cores), with the achieved GFLOP/s
against the measured fp32 matmul peak. Writes

    benchmarks/results/profile_all.json   (metadata + one record per row)
    benchmarks/results/profile_all.csv    (the headline columns)
    benchmarks/results/psnr_vs_multiadds.png  (Set5 x4 PSNR from the evaluation results in
                                               benchmarks/results/*.json vs Multi-Adds; needs
                                               matplotlib, pip install 'lightsr[plot]')

The counts are exact and machine-independent; the runtimes depend on the machine and on what
else it runs (the load average before and after is recorded in the metadata).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from lightsr.errors import ConfigError
from lightsr.profile import (
    load_psnr_results,
    plot_psnr_vs_multiadds,
    profile_all,
    read_results,
    write_results,
)

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--size", type=int, default=128, help="LR side for runtime/memory")
    ap.add_argument("--reps", type=int, default=5, help="timed passes per row (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed passes first (default 1)")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds of timing per row")
    ap.add_argument("--models", nargs="*", help="only these models (default: all)")
    ap.add_argument("--no-runtime", action="store_true", help="counts only (seconds)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument(
        "--plot-only",
        action="store_true",
        help="only redraw the plot from the existing profile_all.json (after new evaluations)",
    )
    args = ap.parse_args(argv)
    if args.plot_only:
        return plot(read_results(args.out / "profile_all.json"), args.out)

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    t0 = time.time()
    reports = profile_all(
        models=args.models,
        progress=True,
        device="cpu",
        threads=args.threads,
        runtime=not args.no_runtime,
        memory=not args.no_runtime,
        runtime_size=args.size,
        reps=args.reps,
        warmup=args.warmup,
        budget_s=args.budget,
    )
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    busy = load_before is not None and max(load_before[0], load_after[0]) > args.threads
    metadata = {
        "command": "python benchmarks/profile_all.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "threads": args.threads,
        "runtime_input": [args.size, args.size],
        "runtime_protocol": (
            f"median of up to {args.reps} forward passes (at least 3, stopping after "
            f"{args.budget:g} s) after {args.warmup} warm-up pass(es); fp32, batch 1, "
            "inference_mode, time.perf_counter"
        ),
        "load_average_before": list(load_before) if load_before else None,
        "load_average_after": list(load_after) if load_after else None,
        "runtime_noise": (
            "the machine was shared with other jobs (load average above the thread count): "
            "runtimes and achieved GFLOP/s are noisy; counts are exact"
            if busy
            else "load average at or below the thread count"
        ),
        "elapsed_s": round(time.time() - t0, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(
        reports,
        args.out / "profile_all.json",
        csv_path=args.out / "profile_all.csv",
        metadata=metadata,
        overwrite=True,  # the committed results are regenerated
    )
    print(f"wrote {args.out / 'profile_all.json'} and .csv ({len(reports)} rows)")
    return plot(reports, args.out)


def plot(reports: list, out: Path) -> int:
    """PSNR (Set5 x4, from the evaluation JSON files in ``out``) against Multi-Adds."""
    psnr = load_psnr_results(out)
    try:
        n = plot_psnr_vs_multiadds(reports, psnr, out / "psnr_vs_multiadds.png", overwrite=True)
    except ConfigError as exc:  # matplotlib missing: the table is still written
        print(f"no plot: {exc}", file=sys.stderr)
    else:
        print(f"wrote {out / 'psnr_vs_multiadds.png'} ({n} models with a Set5 x4 PSNR)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
