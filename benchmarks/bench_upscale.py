"""Inference speed on this CPU: the authors' way vs lightsr's paths, side by side in one run.

For A2F-SD, FMEN-S and MAFFSRN at x4 on a 256 x 256 LR input (the NTIRE protocol size):

- ``authors``: A2F-SD and MAFFSRN in their training form (weight norm recomputed every
  forward), FMEN-S in its released folded form; fp32, eager, NCHW.
- ``fold_cl``: folded, channels_last, fp32, eager (``Upscaler(pad_narrow=False)``).
- ``fold_cl_pad``: the same with feature maps narrower than 16 channels widened to 16 by zero
  filters (``Upscaler()``'s default, ``lightsr.deploy.pad_channels``); ``fold_cl`` is without.
- ``compiled``/``compiled_pad``: the same two plus ``torch.compile`` (inductor, weights frozen
  so conv + pointwise ops fuse) (``Upscaler(compile=True)``).
- ``bf16``: folded, channels_last, bf16 autocast with the image-producing convs in fp32
  (``Upscaler(precision="bf16")``).

Timings are interleaved (each round runs every path once) and summarised by the median and the
minimum: the machine is shared, so the minimum is the better estimate of the undisturbed time.
Achieved GFLOP/s (2 FLOPs per multiply-accumulate, counted with FlopCounterMode) are set against
the machine's fp32 and bf16 peaks, measured here with large matmuls.

Quality: Set5 x4 PSNR-Y (border 4) with the authors' released A2F-SD and FMEN-S weights for the
``authors``, ``fold_cl`` and ``bf16`` paths; every path's largest deviation from the authors'
output, and the share of identical uint8 pixels, on the benchmark image (a 256 x 256 crop of
Set14 baboon). MAFFSRN has no released weights: bf16 vs fp32 deviation of a
seeded random model is reported instead.

    python benchmarks/bench_upscale.py [--rounds 7] [--threads 2] [--models a2f_sd fmen_s maffsrn]

Writes benchmarks/results/upscale_speed.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import lightsr
from lightsr.data.io import image_to_tensor, read_image, tensor_to_image
from lightsr.data.resize import modcrop
from lightsr.hardware import cpu_has_native_bf16, device_name
from lightsr.metrics import psnr
from lightsr.upscale import Upscaler

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", ROOT.parent / "shared"))
OFFICIAL = {"a2f_sd": "a2f_sd_x4.pt", "fmen_s": "fmen_s_x4.pt"}
SCALE = 4
SIZE = 256


def interleaved_times(
    runs: dict, x: torch.Tensor, rounds: int, *, pause_s: float = 0.0, progress: str | None = None
) -> tuple[float, dict[str, list[float]], dict]:
    """Run every path once (compilation, allocation), then ``rounds`` rounds of one call per
    path, ``pause_s`` rest after each, so that drift (and one engine's spinning threads, with a
    pause) fall on all paths alike. Returns (warm-up seconds, per path the seconds of each timed
    call, per path the warm-up output); ``progress``: a label to print a line per round under."""
    t = time.perf_counter()
    outputs = {k: run(x) for k, run in runs.items()}
    warmup_s = time.perf_counter() - t
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        for k, run in runs.items():
            t = time.perf_counter()
            run(x)
            times[k].append(time.perf_counter() - t)
            time.sleep(pause_s)
        if progress:
            print(f"{progress} round {r + 1}/{rounds}", flush=True)
    return warmup_s, times, outputs


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of an n x n x n matmul (best of ``reps``)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def bench_input() -> torch.Tensor:
    """A natural 256 x 256 crop (Set14 baboon HR) when the shared data is present, else noise;
    content does not change the speed, but output deviations are only meaningful on images."""
    path = SHARED / "data" / "Set14" / "HR" / "baboon.png"
    if path.is_file():
        return image_to_tensor(read_image(path)[:SIZE, :SIZE, :3])
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def load_model(name: str):
    """(training-form model, weights description)."""
    path = SHARED / "weights" / "official" / OFFICIAL.get(name, "-")
    if path.is_file():
        return lightsr.load_official(path), f"official {path.name}"
    torch.manual_seed(0)
    return lightsr.create_model(name, scale=SCALE).eval(), "random (seed 0)"


def authors_path(model):
    """The authors' way: training form with weight norm, or the released folded FMEN-S."""
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(False)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return m(x)

    return run


def set5_psnr(run, *, lr_dir: Path, hr_dir: Path) -> float:
    values = []
    for hr_path in sorted(hr_dir.glob("*.png")):
        hr = modcrop(read_image(hr_path), SCALE)
        lr = read_image(lr_dir / f"{hr_path.stem}x{SCALE}.png")
        sr = tensor_to_image(run(image_to_tensor(lr)))
        values.append(psnr(sr, hr, crop_border=SCALE, y_channel=True))
    return float(np.mean(values))


def bench_model(name: str, rounds: int, peaks: dict) -> dict:
    model, weights = load_model(name)
    folded = lightsr.reparameterize(model)
    x = bench_input()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        folded(x)
    flops = counter.get_total_flops()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a CPU without native support
        runners = {
            "fold_cl": Upscaler(folded, tile=None, pad_narrow=False),
            "fold_cl_pad": Upscaler(folded, tile=None),
            "compiled": Upscaler(folded, tile=None, compile=True, pad_narrow=False),
            "compiled_pad": Upscaler(folded, tile=None, compile=True),
            "bf16": Upscaler(folded, tile=None, precision="bf16"),
        }
    paths = {"authors": authors_path(model if name != "fmen_s" else folded)}
    paths.update({k: r._forward for k, r in runners.items()})

    compile_s, times, outputs = interleaved_times(paths, x, rounds)  # warm-up compiles

    ref = outputs["authors"]
    result: dict = {
        "weights": weights,
        "params_training": sum(p.numel() for p in model.parameters()),
        "params_folded": sum(p.numel() for p in folded.parameters()),
        "gmacs_256": round(flops / 2e9, 3),
        "receptive_field": runners["fold_cl"].receptive_field.__dict__,
        "warmup_incl_compile_s": round(compile_s, 1),
        "paths": {},
    }
    for k, ts in times.items():
        med, best = statistics.median(ts), min(ts)
        result["paths"][k] = {
            "median_ms": round(med * 1000, 1),
            "min_ms": round(best * 1000, 1),
            "gflops_at_min": round(flops / best / 1e9, 1),
            "pct_fp32_peak_at_min": round(100 * flops / best / 1e9 / peaks["fp32_gflops"], 1),
            "max_abs_diff_vs_authors": float((outputs[k] - ref).abs().max()),
            "uint8_equal_frac_vs_authors": round(
                float((tensor_to_image(outputs[k]) == tensor_to_image(ref)).mean()), 6
            ),
        }
    p = result["paths"]
    fastest = min(
        ("fold_cl", "fold_cl_pad", "compiled", "compiled_pad", "bf16"),
        key=lambda k: p[k]["median_ms"],
    )
    result["padding"] = runners["fold_cl_pad"].padding.__dict__
    result["fastest_path"] = fastest
    result["speedup_median"] = round(p["authors"]["median_ms"] / p[fastest]["median_ms"], 2)
    result["speedup_min"] = round(p["authors"]["min_ms"] / p[fastest]["min_ms"], 2)
    result["bf16_pct_bf16_peak_at_min"] = round(
        100 * p["bf16"]["gflops_at_min"] / peaks["bf16_gflops"], 1
    )

    lr_dir = SHARED / "data" / "Set5" / "LR_bicubic" / f"X{SCALE}"
    hr_dir = SHARED / "data" / "Set5" / "HR"
    if weights.startswith("official") and lr_dir.is_dir():
        q = {
            "authors_fp32": set5_psnr(paths["authors"], lr_dir=lr_dir, hr_dir=hr_dir),
            "fold_cl_fp32": set5_psnr(runners["fold_cl"]._forward, lr_dir=lr_dir, hr_dir=hr_dir),
            "bf16": set5_psnr(runners["bf16"]._forward, lr_dir=lr_dir, hr_dir=hr_dir),
        }
        result["set5_psnr_y"] = {k: round(v, 4) for k, v in q.items()}
        result["set5_psnr_y"]["bf16_minus_fp32_db"] = round(q["bf16"] - q["authors_fp32"], 4)
    elif lr_dir.is_dir():
        # no weights: how far bf16 moves the output of a (random) model, on Set5 LR images
        diffs, psnrs = [], []
        for lr_path in sorted(lr_dir.glob("*.png")):
            lr = image_to_tensor(read_image(lr_path))
            a = runners["fold_cl"]._forward(lr)
            b = runners["bf16"]._forward(lr)
            diffs.append(float((a - b).abs().max()))
            psnrs.append(psnr(tensor_to_image(b), tensor_to_image(a), crop_border=SCALE))
        result["bf16_vs_fp32_set5"] = {
            "max_abs_diff_0_1": round(max(diffs), 6),
            "mean_psnr_y_bf16_vs_fp32_db": round(float(np.mean(psnrs)), 2),
        }
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["a2f_sd", "fmen_s", "maffsrn"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    peaks = {
        "fp32_gflops": round(matmul_peak(torch.float32), 1),
        "bf16_gflops": round(matmul_peak(torch.bfloat16), 1),
    }
    print(json.dumps(peaks), flush=True)
    out = {
        "machine": {
            "cpu": device_name(),
            "native_bf16": cpu_has_native_bf16(),
            "threads": args.threads,
            "torch": torch.__version__,
            "load_average_at_start": os.getloadavg()[0],
            # PASSIVE makes compiled code (many short OpenMP regions) several times slower
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: ACTIVE)"),
        },
        "peaks": peaks,
        "protocol": (
            f"x{SCALE}, {SIZE}x{SIZE} LR input, batch 1, {args.rounds} interleaved rounds after "
            "warm-up; median and min wall time of the forward pass"
        ),
        "models": {},
    }
    for name in args.models:
        out["models"][name] = bench_model(name, args.rounds, peaks)
        print(name, json.dumps(out["models"][name]), flush=True)
    out["machine"]["load_average_at_end"] = os.getloadavg()[0]
    out["command"] = "python benchmarks/bench_upscale.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items()
        if k != "no_save"
    )
    if not args.no_save:
        path = ROOT / "benchmarks" / "results" / "upscale_speed.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
