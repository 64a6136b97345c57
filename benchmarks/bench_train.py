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

``--degrade-sweep``: the same measures for one recipe (``a2f_sd`` x4: batch 16, HR patch 96)
with the LR made on the fly by a degradation preset (``data.degradation``) and without it
(bicubic LR cut from the cached pairs), for each of ``--workers-list`` DataLoader workers,
plus the cost of degrading one HR patch per preset (ms, one thread, as in a data worker).
Writes ``benchmarks/results/train_degrade_speed.json``.

    python benchmarks/bench_train.py --degrade-sweep [--degrade-presets realesrgan]
        [--workers-list 0 1 2] [--iters 8] [--warmup 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from lightsr.atomic import atomic_write
from lightsr.config import load_config
from lightsr.data.degrade import PRESETS, degrade, get_preset, rng_for
from lightsr.data.training import (
    PairStore,
    PatchDataset,
    StepBatchSampler,
    degradation_from_table,
    find_training_images,
    make_loader,
)
from lightsr.hardware import device_name, machine_record
from lightsr.train import train

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results" / "train_speed.json"
DEGRADE_RESULTS = REPO / "benchmarks" / "results" / "train_degrade_speed.json"
RECIPES = ("maffsrn", "a2f_sd", "fmen_s")


def _loader_rate(cfg, n: int) -> float:
    """Batches per second of the data pipeline alone (same store, sampler, workers and
    degradation as the run)."""
    degradation = degradation_from_table(cfg.data.degradation)
    lr_source = "resize" if degradation is not None else "auto"
    images = find_training_images(cfg.data.hr_dirs, scale=cfg.scale, lr_source=lr_source)
    store = PairStore(
        images,
        scale=cfg.scale,
        cache_dir=cfg.data.cache_dir,
        min_lr_size=cfg.lr_patch,
        make_lr=degradation is None,
    )
    sampler = StepBatchSampler(
        n_images=len(store), batch_size=cfg.batch_size, steps_per_epoch=1000, seed=0
    )
    ds = PatchDataset(store, lr_patch=cfg.lr_patch, seed=0, degradation=degradation)
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
    degradation: str | None = None,
    loader_batches: int | None = None,
) -> dict:
    data = [str(SHARED / "data" / "T91" / "HR"), str(SHARED / "data" / "BSD200" / "HR")]
    degrade_override = [f"data.degradation.preset='{degradation}'"] if degradation else []
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
            *degrade_override,
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
        loader = _loader_rate(cfg, n=loader_batches or max(20, iters))
    return {
        "model": cfg.model,
        "channels_last": channels_last,
        "degradation": degradation,
        "num_workers": workers,
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


def patch_cost_ms(preset: str, patches: list[np.ndarray], *, scale: int) -> dict:
    """Milliseconds to degrade one HR patch with ``preset`` (each patch with its own generator,
    as the training items): mean and median over ``patches``, after one untimed call."""
    config = get_preset(preset)
    degrade(patches[0], scale=scale, config=config, rng=rng_for(0, "warm-up"))
    times = []
    for i, patch in enumerate(patches):
        t0 = time.perf_counter()
        degrade(patch, scale=scale, config=config, rng=rng_for(0, "train-degrade", 0, i))
        times.append(1000 * (time.perf_counter() - t0))
    return {
        "mean_ms": statistics.fmean(times),
        "median_ms": statistics.median(times),
        "patches": len(times),
    }


def _hr_patches(store: PairStore, *, hr_patch: int, n: int) -> list[np.ndarray]:
    """``n`` HR patches (float32 in [0, 1]) cut at random from the store's images."""
    rng = np.random.default_rng(0)
    large = [hr for hr in store.hr if min(hr.shape[:2]) >= hr_patch]
    out = []
    for i in range(n):
        hr = large[i % len(large)]
        y = int(rng.integers(0, hr.shape[0] - hr_patch + 1))
        x = int(rng.integers(0, hr.shape[1] - hr_patch + 1))
        out.append(hr[y : y + hr_patch, x : x + hr_patch].astype(np.float32) / np.float32(255))
    return out


def degrade_sweep(args: argparse.Namespace) -> None:
    """Training speed and data wait with and without on-the-fly degradation, per worker count."""
    recipe = args.sweep_recipe
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        data = [SHARED / "data" / "T91" / "HR", SHARED / "data" / "BSD200" / "HR"]
        t0 = time.perf_counter()
        store = PairStore(find_training_images(data, scale=4), scale=4, cache_dir=cache)
        prepare = time.perf_counter() - t0
        probe = load_config(REPO / "configs" / f"{recipe}.toml", ["scale=4"])
        patches = _hr_patches(store, hr_patch=probe.hr_patch, n=args.cost_patches)
        # Every preset (cheap), not only the ones trained with below.
        cost = {preset: patch_cost_ms(preset, patches, scale=4) for preset in sorted(PRESETS)}
        for preset, c in cost.items():
            print(
                f"degrade {preset:<16} {probe.hr_patch}^2 HR patch: {c['mean_ms']:.2f} ms "
                f"(median {c['median_ms']:.2f}) -> {probe.batch_size * c['mean_ms']:.0f} ms "
                f"per batch of {probe.batch_size}",
                flush=True,
            )
        for degradation in [None, *args.degrade_presets]:
            for workers in args.workers_list:
                r = bench(
                    recipe,
                    iters=args.iters,
                    warmup=args.warmup,
                    workers=workers,
                    budget_s=args.budget,
                    cache=cache,
                    tmp=tmp,
                    degradation=degradation,
                    loader_batches=max(4, args.iters),
                )
                print(
                    f"{recipe} {degradation or 'clean':<12} workers {workers}: "
                    f"{r['it_per_s']:.3f} it/s ({r['seconds_per_it']:.2f} s/it), data wait "
                    f"{100 * r['data_wait_share']:.1f}%, loader alone "
                    f"{r['loader_batches_per_s']:.2f} batches/s",
                    flush=True,
                )
                results.append(r)
    out = {
        "benchmark": "training speed and data wait with on-the-fly degradation vs clean LR "
        f"({recipe} x4), CPU",
        "command": "python benchmarks/bench_train.py " + " ".join(sys.argv[1:]),
        "data": "T91 + BSD200 HR (291 images; those smaller than the HR patch skipped); clean: "
        "LR = exact MATLAB bicubic (mirror) cached once and cut; degraded: LR made from each HR "
        "patch by lightsr.data.degrade.degrade in the data loader",
        "definitions": {
            "data_wait_share": "time the training loop waited for the next batch / total "
            "step time, over the timed steps",
            "loader_batches_per_s": "the loader alone (no model), same workers",
            "patch_cost_ms": "one degrade() call on one HR patch in this process, --threads "
            "torch threads (1: as in a data worker); 'bicubic' is the preset that only resizes",
        },
        "note": "short run on a shared 2-core machine: few timed steps, the DataLoader's "
        "prefetch (4 batches per worker) filled during the warm-up hides part of the wait; "
        "loader_batches_per_s against it_per_s is the steady-state view",
        "prepare_s": prepare,
        "machine": {
            **machine_record(args.threads),
            "python": platform.python_version(),
            "load_average_before": load_before,
        },
        "warmup_steps": args.warmup,
        "patch_cost_ms": {"hr_patch": probe.hr_patch, "scale": 4, **cost},
        "results": results,
    }
    text = json.dumps(out, indent=2) + "\n"
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(text), overwrite=True)
    print(f"wrote {args.out}")


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
    parser.add_argument(
        "--degrade-sweep",
        action="store_true",
        help="time --sweep-recipe with and without on-the-fly degradation for each of "
        "--workers-list, instead of the recipe table",
    )
    parser.add_argument("--sweep-recipe", default="a2f_sd", help="the recipe --degrade-sweep times")
    parser.add_argument("--degrade-presets", nargs="+", default=["realesrgan"])
    parser.add_argument("--workers-list", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cost-patches", type=int, default=24, help="HR patches timed per preset")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not (SHARED / "data" / "T91" / "HR").is_dir():
        sys.exit(f"needs {SHARED / 'data'} (T91, BSD200); set LIGHTSR_SHARED")
    torch.set_num_threads(args.threads)
    if args.degrade_sweep:
        args.out = args.out or DEGRADE_RESULTS
        for preset in args.degrade_presets:
            get_preset(preset)  # an unknown name fails before any run
        degrade_sweep(args)
        return
    args.out = args.out or RESULTS
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        t0 = time.perf_counter()
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
