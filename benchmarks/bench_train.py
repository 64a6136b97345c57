"""Training speed of the paper recipes on this machine, and whether data loading keeps up.

For each recipe (``configs/maffsrn.toml``, ``a2f_sd.toml``, ``fmen_s.toml`` at x4, each with its
own batch size and patch size) runs :func:`lightsr.train.train` for ``--warmup`` + ``--iters``
steps (fewer, but at least 2 timed, when ``--budget`` seconds run out) on the 291 classic
training images (T91 + BSD200 from ``../shared/data``; DIV2K is not available here) and
reports, over the steps after the warm-up:

- ``it_per_s``: optimiser steps per second (forward, L1 loss, backward, optimiser, EMA off);
- ``data_wait_share``: the fraction of that time the loop waited for the next batch;
- ``loader_batches_per_s``: the data pipeline alone (the same loader, no model), i.e. the step
  rate it could feed;
- ``prepare_s``: decoding the images and making their exact MATLAB-bicubic LR once (cached on
  disk in a temporary folder, shared by the recipes).

Writes ``benchmarks/results/train_speed.json`` with the machine's description.

    python benchmarks/bench_train.py [--iters 24] [--warmup 1] [--workers 2] [--threads 1]
        [--budget 300]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from lightsr.atomic import atomic_write
from lightsr.config import load_config
from lightsr.hardware import device_name
from lightsr.train import train

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results" / "train_speed.json"
RECIPES = ("maffsrn", "a2f_sd", "fmen_s")


def _loader_rate(cfg, n: int) -> float:
    """Batches per second of the data pipeline alone (same store, sampler and workers)."""
    from lightsr.data.training import (
        PairStore,
        PatchDataset,
        StepBatchSampler,
        find_training_images,
        make_loader,
    )

    images = find_training_images(cfg.data.hr_dirs, scale=cfg.scale)
    store = PairStore(
        images, scale=cfg.scale, cache_dir=cfg.data.cache_dir, min_lr_size=cfg.lr_patch
    )
    sampler = StepBatchSampler(
        n_images=len(store), batch_size=cfg.batch_size, steps_per_epoch=1000, seed=0
    )
    ds = PatchDataset(store, lr_patch=cfg.lr_patch, seed=0)
    it = iter(make_loader(ds, sampler, num_workers=cfg.data.num_workers))
    next(it)  # workers started
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - t0)


class _OutOfBudget(Exception):
    pass


def bench(
    recipe: str,
    *,
    iters: int,
    warmup: int,
    workers: int,
    budget_s: float,
    cache: Path,
    tmp: Path,
    channels_last: bool = True,
) -> dict:
    data = [str(SHARED / "data" / "T91" / "HR"), str(SHARED / "data" / "BSD200" / "HR")]
    cfg = load_config(
        REPO / "configs" / f"{recipe}.toml",
        [
            "scale=4",
            f"data.hr_dirs={json.dumps(data)}",
            f"data.cache_dir='{cache}'",
            f"data.num_workers={workers}",
            "unit='step'",
            f"length={warmup + iters}",
            "log_every=1",
            f"ckpt_every={warmup + iters}",
            "val.sets=[]",
            "progress=false",
            "tensorboard=false",
            f"out_dir='{tmp / recipe}'",
            f"channels_last={str(channels_last).lower()}",
        ],
    )
    t0 = time.perf_counter()
    timed_from: list[float] = []

    def budget(step: int, model) -> None:
        # Stop early (after at least 2 timed steps) once the time budget is spent.
        if step == warmup:
            timed_from.append(time.perf_counter())
        elif step > warmup + 1 and time.perf_counter() - timed_from[0] > budget_s:
            raise _OutOfBudget

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # T91 images smaller than the patch are skipped
        with contextlib.suppress(_OutOfBudget):
            train(cfg, hooks=[budget])
    wall = time.perf_counter() - t0
    log = (tmp / recipe / "log.jsonl").read_text().splitlines()
    shutil.rmtree(tmp / recipe)  # the next layout of the same recipe starts a fresh run
    records = [json.loads(line) for line in log]
    start = next(r for r in records if r["event"] == "start")
    # one record per step (log_every=1); the first `warmup` steps are not timed
    timed = [r for r in records if r["event"] == "train" and r["step"] > warmup]
    seconds = sum(1.0 / r["it_per_s"] for r in timed)
    waited = sum(r["data_wait"] / r["it_per_s"] for r in timed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = _loader_rate(cfg, n=max(20, iters))
    return {
        "model": cfg.model,
        "channels_last": channels_last,
        "scale": cfg.scale,
        "batch_size": cfg.batch_size,
        "lr_patch": cfg.lr_patch,
        "hr_patch": cfg.hr_patch,
        "optimizer": cfg.optim.name,
        "images_used": start["images"],
        "params": start["params"],
        "timed_steps": len(timed),
        "it_per_s": len(timed) / seconds,
        "seconds_per_it": seconds / len(timed),
        "data_wait_share": waited / seconds,
        "loader_batches_per_s": loader,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=24, help="timed steps per recipe")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="seconds of timed steps per recipe; fewer steps are timed when it runs out",
    )
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument(
        "--contiguous",
        nargs="*",
        default=["a2f_sd", "maffsrn"],
        help="recipes also timed in the NCHW (contiguous) layout, to show what channels-last "
        "(the default) gains",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (SHARED / "data" / "T91" / "HR").is_dir():
        sys.exit(f"needs {SHARED / 'data'} (T91, BSD200); set LIGHTSR_SHARED")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        t0 = time.perf_counter()
        from lightsr.data.training import PairStore, find_training_images

        data = [SHARED / "data" / "T91" / "HR", SHARED / "data" / "BSD200" / "HR"]
        PairStore(find_training_images(data, scale=4), scale=4, cache_dir=cache)
        prepare = time.perf_counter() - t0
        runs = [(r, True) for r in args.recipes] + [(r, False) for r in args.contiguous]
        for recipe, channels_last in runs:
            r = bench(
                recipe,
                channels_last=channels_last,
                iters=args.iters,
                warmup=args.warmup,
                workers=args.workers,
                budget_s=args.budget,
                cache=cache,
                tmp=tmp,
            )
            print(
                f"{recipe:<8} {'NHWC' if channels_last else 'NCHW'} "
                f"batch {r['batch_size']:>2} x {r['lr_patch']}^2 LR: "
                f"{r['it_per_s']:.3f} it/s ({r['seconds_per_it']:.2f} s/it), data wait "
                f"{100 * r['data_wait_share']:.1f}%, loader alone "
                f"{r['loader_batches_per_s']:.1f} batches/s",
                flush=True,
            )
            results.append(r)
    out = {
        "benchmark": "training steps per second of the paper recipes (x4), CPU",
        "command": "python benchmarks/bench_train.py " + " ".join(sys.argv[1:]),
        "data": "T91 + BSD200 HR (291 images; those smaller than a recipe's HR patch skipped), "
        "LR = exact MATLAB bicubic (mirror), cached once",
        "prepare_s": prepare,
        "machine": {
            "cpu": device_name(),
            "logical_cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "dataloader_workers": args.workers,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "note": "shared 2-core machine: other jobs ran at the same time (see load averages)",
        },
        "warmup_steps": args.warmup,
        "results": results,
    }
    text = json.dumps(out, indent=2) + "\n"
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(text), overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
