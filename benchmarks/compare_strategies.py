"""GGAS / CWSS on a small budget: each baseline trained as is, +GGAS, +CWSS and +both, side by
side with the gains of the paper's Table 2 ("Two strategies...", x4). One command:

    python benchmarks/compare_strategies.py [--baselines edsr_baseline imdn] [--steps 5000]
        [--batch 16] [--lr-patch 48] [--seeds 0] [--device auto] [--threads N]

For every baseline x variant x seed it trains ``lightsr.train.train`` with the same budget
(steps, batch, LR patch, schedule shape, seed = same initial draw order and same batches), the
strategy variants at ``--strategy-lr-scale`` (2) times the baseline's learning rate as the paper
does (Sec. 3.2: "We adopt two times larger learning rate than that of the original method"),
then evaluates the final weights (no checkpoint picked on a test set) on Set5/Set14/B100 x4:
LR = the ``LR_bicubic_clamp`` files (MATLAB imresize, replicate boundary), SR clamped and
rounded to uint8, PSNR/SSIM on Y with ``scale`` pixels cropped. Training data: the 291 classic
images (T91 + BSD200, ``../shared/data`` beside the repo), LR made by the exact MATLAB bicubic
with the same replicate boundary. Writes

    benchmarks/results/strategies_x4.json   every run (per-image PSNR too) and the summary
    docs/STRATEGIES.md                      ours beside the paper's gains, verdict per baseline
                                            (none for a smoke budget: under 1000 steps, or a
                                            --label that says "smoke")

Resumable: each run lives in ``<runs-dir>/<baseline>/<variant>/seed<k>/`` (default under
``runs/strategies_x4/<budget tag>``); a run with ``result.json`` is skipped (sets it lacks are
evaluated from its ``last.safetensors``), a run with a ``state.pt`` is continued. Ctrl-C stops
at a consistent step; rerunning the same command (later, or with ``--device cuda`` on a GPU
machine, after copying ``runs/strategies_x4``) continues where it stopped; under a time limit
use ``timeout -s INT <seconds> python ...`` so the run stops cleanly. ``--max-runs`` trains at
most that many runs per call; ``--report-only`` only rebuilds the JSON and the page from the run
folders; ``--from-json FILE`` rebuilds them from a written JSON alone (no run folders). A finished
run keeps ``result.json``, ``fingerprint.json`` and ``last.safetensors`` (its ``state.pt`` is
dropped unless ``--keep-state``): those are all a later session needs to skip it. ``--sets``
with no names trains only; a later call naming sets evaluates the saved weights (train on a GPU
machine, bring the run folders back, evaluate here).

Absolute numbers are not the paper's (300+ epochs of DIV2K there, a few thousand steps of 291
images here): only the direction of each gain over our own baseline is comparable.
"""

from __future__ import annotations

import os

# Before torch is imported: spinning OpenMP workers are very slow on a shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

# The pure report (Table 2, gains, verdicts, the page) is a module of the package.
from lightsr.strategies.report import (  # noqa: E402
    DEFAULT_VARIANTS,
    PAPER_PARAMS_K,
    PAPER_SOURCE,
    PAPER_TABLE2,
    SCALE,
    VARIANTS,
    paper_rows,
    rebuild_report,
    smoke_reason,
    summarize,
    verdict_lines,
    write_json,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results" / "strategies_x4.json"
DOC = REPO / "docs" / "STRATEGIES.md"

# ---------------------------------------------------------------------------------------------
# What is trained
# ---------------------------------------------------------------------------------------------

# Base learning rate of each baseline's own recipe (the paper trains the strategies at twice
# this). EDSR-baseline: the EDSR-PyTorch default (configs/edsr_baseline.toml); IMDN: the
# default of the authors' train_IMDN.py (Adam 2e-4, halved every 200 epochs). Others: --lr.
BASELINE_LR = {"edsr_baseline": 1e-4, "imdn": 2e-4}


@dataclass(frozen=True)
class Budget:
    """What every run of the comparison shares (steps are optimiser steps; patch in LR pixels)."""

    steps: int
    batch: int
    lr_patch: int
    schedule: str  # "step" (halve once at 2/3, the EDSR recipe's 200/300 shape), cosine, constant
    strategy_lr_scale: float
    hr_dirs: tuple[str, ...]
    boundary: str = "replicate"
    amp: str = "none"

    @property
    def tag(self) -> str:
        """Folder name that keeps runs of different budgets apart."""
        lr = f"{self.strategy_lr_scale:g}".replace(".", "p")
        amp = "" if self.amp == "none" else f"_{self.amp}"
        return f"s{self.steps}_b{self.batch}_p{self.lr_patch}_{self.schedule}_lrx{lr}{amp}"


@dataclass(frozen=True)
class Job:
    """One training run: baseline x variant x seed under a budget."""

    baseline: str
    variant: str
    seed: int
    base_lr: float
    budget: Budget
    run_dir: Path

    @property
    def lr_scale(self) -> float:
        return self.budget.strategy_lr_scale if VARIANTS[self.variant].strategy_lr else 1.0

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes what a run computes (not where it runs): a stored run with a
        different fingerprint is never reused."""
        b = self.budget
        return {
            "model": self.baseline,
            "scale": SCALE,
            "options": dict(VARIANTS[self.variant].options),
            "seed": self.seed,
            "steps": b.steps,
            "batch": b.batch,
            "lr_patch": b.lr_patch,
            "lr": self.base_lr,
            "lr_scale": self.lr_scale,
            "schedule": b.schedule,
            "boundary": b.boundary,
            "amp": b.amp,
            # folder names only: the same data at another path is the same run
            "train_data": [Path(d).parent.name + "/" + Path(d).name for d in b.hr_dirs],
        }

    def config(
        self, *, device: str, workers: int, cache_dir: str, ckpt_every: int, progress: bool = False
    ) -> dict:
        """The ``lightsr.config`` dict of this run (validated by ``config_from_dict``)."""
        b = self.budget
        if b.schedule == "step":
            # The recipes' shape: EDSR halves at epoch 200 of 300; here once, at 2/3 of the run.
            schedule = {"kind": "step", "every": max(1, round(2 * b.steps / 3)), "gamma": 0.5}
        else:
            schedule = {"kind": b.schedule}
        return {
            "model": self.baseline,
            "scale": SCALE,
            "model_options": dict(VARIANTS[self.variant].options),
            "batch_size": b.batch,
            "length": b.steps,
            "unit": "step",
            "loss": "l1",
            "seed": self.seed,
            "device": device,
            "amp": b.amp,
            "out_dir": str(self.run_dir),
            "name": f"{self.baseline}_{self.variant}_seed{self.seed}",
            "log_every": max(1, min(100, b.steps)),
            "ckpt_every": max(1, min(ckpt_every, b.steps)),
            "progress": progress,
            "tensorboard": False,
            "data": {
                "hr_dirs": list(b.hr_dirs),
                "lr_source": "resize",
                "boundary": b.boundary,
                "lr_patch": b.lr_patch,
                "augment": True,
                "num_workers": workers,
                "cache_dir": cache_dir,
            },
            "optim": {"name": "adam", "lr": self.base_lr, "lr_scale": self.lr_scale},
            "schedule": schedule,
            "val": {"sets": []},
        }


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def _read_log(run_dir: Path) -> tuple[dict, dict | None]:
    """(the first "start" record, the last "train" record) of a run's log.jsonl."""
    from lightsr.train import read_log  # skips a torn last line of a killed run

    start, last = {}, None
    for rec in read_log(run_dir):
        if rec.get("event") == "start" and not start:
            start = rec
        elif rec.get("event") == "train":
            last = rec
    return start, last


def _evaluate_sets(model, sets: Sequence[str], root: Path, lr_source: str) -> dict[str, Any]:
    from lightsr.data.benchmark import open_benchmark
    from lightsr.errors import DatasetError
    from lightsr.evaluate import evaluate

    out = {}
    for name in sets:
        r = evaluate(model, open_benchmark(root / name, scale=SCALE, lr_source=lr_source))
        if not r.images:
            raise DatasetError(f"evaluation on {name} failed for every image: {r.failures[:2]}")
        out[name] = {
            "psnr": r.psnr,
            "ssim": r.ssim,
            "images": len(r.images),
            "lr_source": r.lr_source,
            "requested_lr_source": lr_source,
            "eval_s": r.seconds,
            "per_image_psnr": {i.name: i.psnr for i in r.images},
        }
    return out


class Stopped(Exception):
    """A run was stopped (Ctrl-C / SIGTERM) at a consistent step; rerun to continue."""


def run_job(job: Job, args: argparse.Namespace, cache_dir: Path) -> tuple[dict, bool]:
    """Train (or continue) ``job`` and evaluate it; returns (result record, trained now?).
    A finished run is only evaluated on the sets it lacks."""
    import torch

    import lightsr
    from lightsr.config import config_from_dict
    from lightsr.errors import ConfigError
    from lightsr.train import train

    run_dir = job.run_dir
    fp = job.fingerprint()
    fp_path, result_path = run_dir / "fingerprint.json", run_dir / "result.json"
    stored = json.loads(fp_path.read_text()) if fp_path.is_file() else fp
    if stored != fp:
        diff = ", ".join(
            f"{k} {stored.get(k)!r} there, {fp.get(k)!r} now"
            for k in sorted(set(stored) | set(fp))
            if stored.get(k) != fp.get(k)
        )
        raise ConfigError(
            f"{run_dir} holds a run of another budget ({diff}); pass another --runs-dir "
            "or delete that folder."
        )
    root = Path(args.bench_root)
    if result_path.is_file():
        rec = json.loads(result_path.read_text())
        missing = [
            s
            for s in args.sets
            if rec["sets"].get(s, {}).get("requested_lr_source") != args.eval_lr_source
        ]
        if not missing:
            return rec, False
        model = lightsr.load(
            run_dir / "last.safetensors", expect_arch=job.baseline, expect_scale=SCALE
        )
        model = model.to(args.device if args.device != "auto" else _auto_device())
        t0 = time.perf_counter()
        rec["sets"].update(_evaluate_sets(model, missing, root, args.eval_lr_source))
        rec["eval_s"] += time.perf_counter() - t0
        write_json(result_path, rec)
        return rec, False

    cfg = config_from_dict(
        job.config(
            device=args.device,
            workers=args.workers,
            cache_dir=str(cache_dir),
            ckpt_every=args.ckpt_every,
            progress=args.progress,
        )
    )
    resume = run_dir if (run_dir / "state.pt").is_file() else None
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(fp_path, fp)
    timing_path = run_dir / "timing.json"
    prior = json.loads(timing_path.read_text())["train_s"] if timing_path.is_file() else 0.0
    t0 = time.perf_counter()

    def keep_time(step: int, model) -> None:
        # Written right after each checkpoint, so a resumed run adds only the time since it.
        if step % cfg.ckpt_every == 0 or step == cfg.length:
            write_json(timing_path, {"train_s": prior + time.perf_counter() - t0, "step": step})

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*smaller than the patch.*")
        result = train(cfg, resume=resume, hooks=[keep_time])
    if result.stopped:  # the state was saved at result.step: count the time up to it
        write_json(timing_path, {"train_s": prior + time.perf_counter() - t0, "step": result.step})
        raise Stopped(f"stopped at step {result.step} of {run_dir}; rerun to continue")
    train_s = json.loads(timing_path.read_text())["train_s"] if timing_path.is_file() else prior
    start, last = _read_log(run_dir)
    device = next(result.model.parameters()).device
    t0 = time.perf_counter()
    sets = _evaluate_sets(result.model, args.sets, root, args.eval_lr_source)
    eval_s = time.perf_counter() - t0
    rec = {
        "baseline": job.baseline,
        "variant": job.variant,
        "seed": job.seed,
        "fingerprint": fp,
        "lr": job.base_lr * job.lr_scale,
        "params": start.get("params", sum(p.numel() for p in result.model.parameters())),
        "train_images": start.get("images"),
        "steps": result.step,
        "final_loss": last["loss"] if last else None,
        "train_s": train_s,
        "eval_s": eval_s,
        "device": str(device),
        "device_name": _device_name(device),
        "torch_threads": torch.get_num_threads(),
        "sets": sets,
    }
    write_json(result_path, rec)
    if not args.keep_state:
        # Finished and measured: the optimiser state is dead weight (3x the model); the run is
        # skipped from result.json and re-evaluated from last.safetensors.
        (run_dir / "state.pt").unlink(missing_ok=True)
    return rec, True


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _device_name(device) -> str:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()} ({os.cpu_count()} logical)"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()}"


def _prepare_pairs(hr_dirs: Sequence[str], boundary: str, cache_dir: Path, workers: int) -> float:
    """Decode the training images and make their LR once (disk cache shared by every run)."""
    from lightsr.data.training import PairStore, find_training_images

    t0 = time.perf_counter()
    images = find_training_images(hr_dirs, scale=SCALE, lr_source="resize")
    PairStore(images, scale=SCALE, boundary=boundary, cache_dir=cache_dir, threads=max(1, workers))
    return time.perf_counter() - t0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baselines", nargs="+", default=["edsr_baseline", "imdn"])
    ap.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        choices=list(VARIANTS),
        help="baseline_lr2x: control, the baseline at the strategies' learning rate",
    )
    ap.add_argument("--steps", type=int, default=5000, help="optimiser steps per run")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr-patch", type=int, default=48, help="LR patch side (HR = 4x)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--lr",
        type=float,
        default=None,
        help="base learning rate for every baseline "
        f"(default: each baseline's own recipe, {BASELINE_LR})",
    )
    ap.add_argument(
        "--strategy-lr-scale",
        type=float,
        default=2.0,
        help="learning-rate multiplier of the GGAS/CWSS variants (paper Sec. 3.2: 2)",
    )
    ap.add_argument("--schedule", choices=["step", "cosine", "constant"], default="step")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument(
        "--train-data",
        nargs="+",
        default=[str(SHARED / "data" / "T91" / "HR"), str(SHARED / "data" / "BSD200" / "HR")],
    )
    ap.add_argument("--bench-root", default=str(SHARED / "data"))
    ap.add_argument(
        "--sets",
        nargs="*",
        default=["Set5", "Set14", "B100"],
        help="benchmark sets under --bench-root; none: train only (evaluate in a later call)",
    )
    ap.add_argument(
        "--eval-lr-source",
        default="folder-clamp",
        help="see lightsr.data.benchmark (folder-clamp = the replicate-boundary LR files)",
    )
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--progress", action="store_true", help="a progress bar per training run")
    ap.add_argument("--ckpt-every", type=int, default=500, help="steps between resumable states")
    ap.add_argument("--runs-dir", type=Path, default=None, help="default runs/strategies_x4/<tag>")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--doc", type=Path, default=DOC)
    ap.add_argument("--label", default="", help="headline of the page, e.g. 'SMOKE RUN ...'")
    ap.add_argument(
        "--keep-state", action="store_true", help="keep state.pt of finished runs (default: drop)"
    )
    ap.add_argument("--max-runs", type=int, default=None, help="train at most this many now")
    ap.add_argument("--report-only", action="store_true", help="train nothing; rebuild outputs")
    ap.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="rebuild --json and --doc from this written JSON alone (no run folders needed)",
    )
    return ap


def _write_outputs(report: Mapping[str, Any], json_path: Path, doc_path: Path) -> None:
    write_report(report, json_path, doc_path)
    print("\n".join(report["verdicts"]))
    print(f"wrote {json_path} and {doc_path}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.from_json is not None:
        command = "python benchmarks/compare_strategies.py " + shlex.join(
            sys.argv[1:] if argv is None else argv
        )
        report = json.loads(args.from_json.read_text(encoding="utf-8"))
        _write_outputs(rebuild_report(report, command), args.json, args.doc)
        return 0
    import torch

    import lightsr
    from lightsr.errors import ConfigError, LightSRError

    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = [b for b in args.baselines if b not in lightsr.list_models()]
    if unknown:
        sys.exit(f"unknown baseline(s) {unknown}; see `lightsr list`.")
    base_lr = {}
    for b in args.baselines:
        if args.lr is None and b not in BASELINE_LR:
            sys.exit(f"no recipe learning rate is known for {b}; give --lr.")
        base_lr[b] = args.lr if args.lr is not None else BASELINE_LR[b]
    variants = list(dict.fromkeys(["baseline", *args.variants]))  # gains need the baseline
    budget = Budget(
        steps=args.steps,
        batch=args.batch,
        lr_patch=args.lr_patch,
        schedule=args.schedule,
        strategy_lr_scale=args.strategy_lr_scale,
        hr_dirs=tuple(str(Path(d)) for d in args.train_data),
        amp=args.amp,
    )
    runs_root = args.runs_dir or REPO / "runs" / "strategies_x4" / budget.tag
    cache_dir = (args.runs_dir or REPO / "runs" / "strategies_x4") / "cache"
    jobs = [
        Job(b, v, seed, base_lr[b], budget, runs_root / b / v / f"seed{seed}")
        for b in args.baselines
        for v in variants
        for seed in args.seeds
    ]

    records, missing, trained, prepare_s = [], [], 0, None
    try:
        from lightsr.data.benchmark import open_benchmark

        for name in args.sets:  # a missing set fails now, not after hours of training
            open_benchmark(Path(args.bench_root) / name, scale=SCALE, lr_source=args.eval_lr_source)
        for job in jobs:
            done = (job.run_dir / "result.json").is_file()
            if not done and (
                args.report_only or (args.max_runs is not None and trained >= args.max_runs)
            ):
                missing.append(f"{job.baseline}/{job.variant}/seed{job.seed}")
                continue
            if not done and prepare_s is None:
                prepare_s = _prepare_pairs(budget.hr_dirs, budget.boundary, cache_dir, args.workers)
                print(f"training pairs ready ({prepare_s:.1f} s)", flush=True)
            print(f"{job.baseline} {job.variant} seed {job.seed}: ", end="", flush=True)
            rec, now = run_job(job, args, cache_dir)
            trained += now
            records.append(rec)
            print(
                ("trained " if now else "done before; ")
                + f"{rec['train_s']:.1f} s train, "
                + ", ".join(f"{s} {rec['sets'][s]['psnr']:.3f}" for s in args.sets),
                flush=True,
            )
    except Stopped as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 130
    except (LightSRError, ConfigError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2

    smoke = smoke_reason(budget.steps, args.label)
    summary = summarize(
        records, baselines=args.baselines, variants=variants, sets=args.sets, judge=smoke is None
    )
    first = records[0] if records else {}
    report = {
        "benchmark": "GGAS/CWSS vs baseline at a fixed small budget, x4, beside paper Table 2",
        "label": args.label,
        "command": "python benchmarks/compare_strategies.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "budget": {
            "steps": budget.steps,
            "batch": budget.batch,
            "lr_patch": budget.lr_patch,
            "hr_patch": budget.lr_patch * SCALE,
            "schedule": budget.schedule,
            "schedule_note": {
                "step": "x0.5 once at 2/3 of the run",
                "cosine": "cosine to 0",
                "constant": "no decay",
            }[budget.schedule],
            "base_lr": base_lr,
            "strategy_lr_scale": budget.strategy_lr_scale,
            "seeds": args.seeds,
            "train_data": [str(d) for d in budget.hr_dirs],
            "train_images_note": (
                f"T91 + BSD200 ({first.get('train_images', '?')} of 291 images at least as "
                f"large as the {budget.lr_patch * SCALE}-pixel HR patch; LR = exact MATLAB "
                "bicubic, replicate boundary; flips/rotations)"
            ),
            "boundary": budget.boundary,
            "amp": budget.amp,
            "eval_sets": args.sets,
            "eval_lr_source": args.eval_lr_source,
        },
        "machine": {
            # every device the runs trained on (a comparison may be continued elsewhere)
            "device_name": "; ".join(
                dict.fromkeys(r["device_name"] for r in records)
                or [_device_name(_auto_device() if args.device == "auto" else args.device)]
            ),
            "torch_threads": torch.get_num_threads(),
            "workers": args.workers,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "lightsr": lightsr.__version__,
            "logical_cpus": os.cpu_count(),
            "prepare_s_this_call": prepare_s,
        },
        "totals": {
            "runs": len(records),
            "train_s": sum(r["train_s"] for r in records),
            "eval_s": sum(r["eval_s"] for r in records),
        },
        "paper": {
            "source": PAPER_SOURCE,
            "table2": {b: paper_rows(b) for b in args.baselines if b in PAPER_TABLE2},
            "params_k": {b: PAPER_PARAMS_K[b] for b in args.baselines if b in PAPER_PARAMS_K},
        },
        "verdicts": verdict_lines(summary, smoke=smoke),
        "summary": summary,
        "missing": missing,
        "runs": records,
    }
    _write_outputs(report, args.json, args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
