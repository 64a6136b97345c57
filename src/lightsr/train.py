"""Training: one readable loop, :func:`train`, driven by a :class:`~lightsr.config.TrainConfig`.

- The learning rate is a pure function of the step (:func:`lr_at`); the data of a step is a
  pure function of ``(seed, step)`` (:mod:`lightsr.data.training`). A resumed run therefore only
  needs the step, the weights, the optimiser and EMA state and the RNG states, all of which
  ``state.pt`` holds; resuming at step ``k`` gives bit-identical weights to an unbroken run.
- Run folder: ``last.safetensors`` / ``best.safetensors`` (``lightsr.save`` format, loadable by
  ``lightsr eval --checkpoint``), ``last_ema.safetensors`` with EMA, ``state.pt`` (resume),
  ``config.json`` (the resolved config), ``log.jsonl`` (and TensorBoard events when installed).
- Several processes (``torchrun --nproc_per_node N -m lightsr train ...``): DDP, each process
  takes its contiguous share of the same global batch; rank 0 logs, validates and writes.
  NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import hub
from .atomic import FolderLock, atomic_write, atomic_write_bytes
from .checkpoint import load_any, save
from .config import TrainConfig, apply_overrides, config_from_dict, read_config_dict
from .data.benchmark import open_benchmark
from .data.training import (
    PairStore,
    PatchDataset,
    StepBatchSampler,
    default_steps_per_epoch,
    degradation_from_table,
    find_training_images,
    make_loader,
    to_unit,
    with_downscaled_copies,
)
from .errors import CheckpointError, ConfigError, DatasetError, DivergedError
from .evaluate import evaluate
from .hardware import resolve_device
from .models.base import SRModel
from .optim import AdamP
from .registry import create_model

STATE_FORMAT = "lightsr-train-state-v1"
STATE_FILE = "state.pt"

# Config keys that may change when a run is resumed: they do not change the update of any step.
# `length` is the exception that needs a rule: with a step, multistep or constant schedule it
# only moves the end of the run (so a run can be extended), but a schedule whose shape is
# stretched over the whole run (cosine) would give every remaining step another learning rate;
# check_resumable refuses that (see _LENGTH_DEPENDENT_SCHEDULES).
_RESUME_MUTABLE = (
    "length",
    "log_every",
    "ckpt_every",
    "progress",
    "tensorboard",
    "device",
    "channels_last",
    "init_from",
    "out_dir",
    "name",
    "data.num_workers",
    "data.cache_dir",
    "data.hr_dirs",
    "data.lr_dirs",
    "val.",
)
# Schedule kinds whose learning rate at a step depends on the run's total length (lr_at uses
# Schedule.total). Warm-up is counted in absolute units, so it never does.
_LENGTH_DEPENDENT_SCHEDULES = ("cosine",)

# ---------------------------------------------------------------------------------------------
# Schedule, loss, optimiser
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """The learning rate at each step, everything converted to steps."""

    base_lr: float
    kind: str
    every: int
    milestones: tuple[int, ...]
    gamma: float
    warmup: int
    total: int
    min_lr_ratio: float

    def __call__(self, step: int) -> float:
        return lr_at(step, self)


def lr_at(step: int, s: Schedule) -> float:
    """Learning rate of the update that takes the weights from ``step`` to ``step + 1``."""
    if s.warmup and step < s.warmup:
        return s.base_lr * (step + 1) / s.warmup
    if s.kind == "constant":
        factor = 1.0
    elif s.kind == "step":
        factor = s.gamma ** (step // s.every)
    elif s.kind == "multistep":
        factor = s.gamma ** sum(step >= m for m in s.milestones)
    elif s.kind == "cosine":
        t = min(1.0, (step - s.warmup) / max(1, s.total - s.warmup))
        factor = s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    else:  # pragma: no cover - the config's Literal type excludes it
        raise ConfigError(f"unknown schedule kind {s.kind!r}")
    return s.base_lr * factor


def make_schedule(cfg: TrainConfig, steps_per_epoch: int) -> Schedule:
    sc = cfg.schedule
    return Schedule(
        base_lr=cfg.optim.lr * cfg.optim.lr_scale,
        kind=sc.kind,
        every=cfg.steps(sc.every, steps_per_epoch),
        milestones=tuple(cfg.steps(m, steps_per_epoch) for m in sc.milestones),
        gamma=sc.gamma,
        warmup=cfg.steps(sc.warmup, steps_per_epoch),
        total=cfg.steps(cfg.length, steps_per_epoch),
        min_lr_ratio=sc.min_lr_ratio,
    )


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    o = cfg.optim
    lr = o.lr * o.lr_scale
    if o.name == "adamp":
        return AdamP(
            params,
            lr=lr,
            betas=o.betas,
            eps=o.eps,
            weight_decay=o.weight_decay,
            delta=o.adamp_delta,
            wd_ratio=o.adamp_wd_ratio,
            nesterov=o.nesterov,
        )
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    # foreach=False: the single-tensor path gives the same bits on every device count
    # and is as fast for these small models.
    return cls(params, lr=lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, foreach=False)


def loss_fn(kind: str, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Pixel loss on [0, 1] images (computed in float32)."""
    sr, hr = sr.float(), hr.float()
    if kind == "l1":
        return F.l1_loss(sr, hr)
    if kind == "mse":
        return F.mse_loss(sr, hr)
    return torch.sqrt((sr - hr) ** 2 + 1e-6).mean()  # charbonnier, eps = 1e-3


def ema_decay_at(update: int, decay: float, *, warmup: bool) -> float:
    """The EMA decay of update number ``update`` (0-based): ``decay``, or with warm-up the
    smaller of it and (1 + update) / (10 + update), TensorFlow's ``num_updates`` rule."""
    return min(decay, (1.0 + update) / (10.0 + update)) if warmup else decay


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (BN statistics) copied."""
    params = dict(model.named_parameters())
    for name, p in ema.named_parameters():
        p.lerp_(params[name].detach(), 1.0 - decay)
    buffers = dict(model.named_buffers())
    for name, b in ema.named_buffers():
        b.copy_(buffers[name])


# ---------------------------------------------------------------------------------------------
# Processes, RNG, state files
# ---------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def _init_distributed(device_pref: str) -> _Dist:
    """Join the process group torchrun (or a test) describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    owns = False
    if not torch.distributed.is_initialized():
        use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return _Dist(
        rank=torch.distributed.get_rank(),
        world=torch.distributed.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        owns_group=owns,
    )


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # the legacy form, as the global MT19937 state gives
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def read_state(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The training state of a run folder (raises CheckpointError if it has none)."""
    run_dir = Path(run_dir)
    path = run_dir / STATE_FILE if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise CheckpointError(
            f"{str(run_dir)!r} holds no resumable training state ({STATE_FILE}); pass the run "
            "folder a `lightsr train` run wrote (its out_dir)."
        )
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read training state {str(path)!r}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a lightsr training state.")
    return state


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "model_options":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _resume_mutable(key: str) -> bool:
    return any(key.startswith(m) if m.endswith(".") else key == m for m in _RESUME_MUTABLE)


def check_resumable(cfg: TrainConfig, state: dict[str, Any], run_dir: str | os.PathLike) -> None:
    """Raise ConfigError when ``cfg`` would not continue the run saved in ``state``."""
    saved = state["config"]
    want = (cfg.model.lower().replace("-", "_"), cfg.scale, cfg.model_options)
    have = (state["arch"], state["scale"], state["options"])
    if want != have:
        raise ConfigError(
            f"{str(run_dir)!r} holds a run of {have[0]} x{have[1]} (options {have[2]}), but this "
            f"config trains {want[0]} x{want[1]} (options {want[2]}). Resume without a config "
            "(`lightsr train --resume RUN_DIR`) or start a new run in another out_dir."
        )
    now, before = _flatten(cfg.to_dict()), _flatten(saved)
    # A setting added to lightsr after the run was saved is absent from its record; at its
    # default it does what the run did before the setting existed, so the run resumes.
    defaults = _flatten(TrainConfig().to_dict())
    for k in set(now) - set(before):
        if k in defaults and now[k] == defaults[k]:
            before[k] = now[k]
    changed = [
        k
        for k in sorted(set(now) | set(before))
        if now.get(k) != before.get(k) and not _resume_mutable(k)
    ]
    if changed:
        detail = ", ".join(
            f"{k} ({before.get(k)!r} in the run, {now.get(k)!r} now)" for k in changed
        )
        raise ConfigError(
            f"cannot resume {str(run_dir)!r} exactly: these settings differ from the run's: "
            f"{detail}. Only {', '.join(m.rstrip('.') for m in _RESUME_MUTABLE)} may change."
        )
    if now["length"] != before.get("length") and cfg.schedule.kind in _LENGTH_DEPENDENT_SCHEDULES:
        raise ConfigError(
            f"cannot resume {str(run_dir)!r} with length {now['length']} (the run has "
            f"{before.get('length')}): {cfg.schedule.kind} schedules depend on length, so every "
            "remaining step would get another learning rate than the run was following. Start "
            "a new run or keep length."
        )


def resume_config(
    run_dir: str | os.PathLike, overrides: Sequence[str] = (), config_path: str | None = None
) -> TrainConfig:
    """The config to resume ``run_dir`` with: the run's own (or ``config_path``'s), plus
    ``overrides``; checked to continue the run exactly."""
    state = read_state(run_dir)
    raw = read_config_dict(config_path) if config_path else state["config"]
    raw = apply_overrides(raw, overrides)
    raw["out_dir"] = str(run_dir)
    cfg = config_from_dict(raw)
    check_resumable(cfg, state, run_dir)
    return cfg


# ---------------------------------------------------------------------------------------------
# Logging and validation
# ---------------------------------------------------------------------------------------------


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run's ``log.jsonl`` (``path``: the file or its run folder), in order.

    Lines that are not a JSON object (a torn last line left by a process killed in the middle
    of an append, or an empty line) are skipped.
    """
    path = Path(path)
    return [record for _, record in _log_lines(path / "log.jsonl" if path.is_dir() else path)]


def _log_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line as written, its record) for each line of ``path`` that holds a JSON object."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append((line, record))
    return out


def _strict_json(value: Any, key: str = "") -> tuple[Any, dict[str, str]]:
    """``value`` with every non-finite float replaced by None, and {dotted key: "nan"/"inf"/
    "-inf"} of what was replaced."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, {key: str(value)}
    if isinstance(value, dict):
        out, bad = {}, {}
        for k, v in value.items():
            out[k], b = _strict_json(v, f"{key}.{k}" if key else str(k))
            bad.update(b)
        return out, bad
    if isinstance(value, (list, tuple)):
        items, bad = [], {}
        for i, v in enumerate(value):
            item, b = _strict_json(v, f"{key}[{i}]")
            items.append(item)
            bad.update(b)
        return items, bad
    return value, {}


def _nonfinite_count(*parts: nn.Module | torch.optim.Optimizer | None) -> int:
    """NaN/Inf values in the floating-point parameters and buffers of modules, and in an
    optimiser's state (its moments are saved for resuming, so they must be finite too)."""
    total = 0
    for part in parts:
        if part is None:
            continue
        if isinstance(part, nn.Module):
            tensors = list(part.state_dict().values())
        else:
            tensors = [t for st in part.state.values() for t in st.values()]
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                total += int((~torch.isfinite(t)).sum())
    return total


def _divergence_fixes(cfg: TrainConfig, run_dir: Path, saved_at: int | None, lr: float) -> str:
    """What to do about a diverged run, in words (for the error message); ``lr``: the learning
    rate of the last update (the schedule's, which may differ from optim.lr)."""
    clip = (
        f"lower optim.grad_clip (now {cfg.optim.grad_clip:g})"
        if cfg.optim.grad_clip > 0
        else "set optim.grad_clip (e.g. 1.0)"
    )
    keep = (
        f"The checkpoint of step {saved_at} in {str(run_dir)!r} is kept as it was"
        if saved_at is not None
        else "No checkpoint was written"
    )
    start = (
        f"; init_from='{run_dir / 'last.safetensors'}' starts a new run from it"
        if saved_at is not None
        else ""
    )
    scheduled = f", {lr:g} at this step" if lr != cfg.optim.lr else ""
    return (
        f"{keep}. Likely fixes: lower optim.lr (now {cfg.optim.lr:g}{scheduled}; try 10x "
        f"lower) or {clip}, in a new out_dir{start}."
    )


class _Log:
    """JSONL records (rank 0), plus TensorBoard scalars when tensorboard is installed."""

    def __init__(self, run_dir: Path, *, enabled: bool, resume_step: int | None, tb: bool):
        self.path = run_dir / "log.jsonl"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            # A killed run may have logged steps past its last checkpoint; they are redone. A
            # run killed in the middle of an append leaves a torn last line: it is dropped
            # too (rewriting also ends the file with a newline, so the next record does not
            # land on the torn one).
            keep = [line for line, r in _log_lines(self.path) if r.get("step", 0) <= resume_step]
            text = "".join(line + "\n" for line in keep)
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(text), overwrite=True)
        if tb:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)
            except ImportError:
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line of strict JSON: a NaN/Inf value (which ``json.dumps``
        would write as the bare, invalid token ``NaN``) is written as null, and the record
        says so under ``"nonfinite"`` ({key: "nan" | "inf" | "-inf"})."""
        if not self.enabled:
            return
        clean, nonfinite = _strict_json(record)
        if nonfinite:
            clean["nonfinite"] = nonfinite
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean, sort_keys=True, allow_nan=False) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            for key, value in _flatten(record).items():
                if (
                    key != "step"
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and math.isfinite(value)
                ):
                    self.tb.add_scalar(key.replace(".", "/"), value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def validate(model: nn.Module, cfg: TrainConfig) -> dict[str, dict[str, float]]:
    """PSNR-Y / SSIM-Y (crop = scale) of ``model`` on each of ``cfg.val.sets``."""

    results: dict[str, dict[str, float]] = {}
    for name in cfg.val.sets:
        path = Path(cfg.val.root) / name if cfg.val.root else Path(name)
        dataset = open_benchmark(path, scale=cfg.scale, lr_source=cfg.val.lr_source)
        r = evaluate(model, dataset)  # runs where the model's parameters are; restores train()
        if not r.images:
            raise DatasetError(f"validation on {name!r} failed for every image: {r.failures[:2]}")
        results[name] = {"psnr": r.psnr, "ssim": r.ssim, "images": len(r.images)}
    return results


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a finished (or stopped) run leaves: the run folder, the step reached, the raw and
    EMA models (on the training device), the last logged loss and the best validation PSNR."""

    run_dir: Path
    step: int
    model: nn.Module
    ema: nn.Module | None
    last_loss: float | None
    best_psnr: float | None
    stopped: bool = False


class _StopRequest:
    """SIGINT/SIGTERM set a flag that the loop checks between steps, so a stop request writes
    a consistent state (never one from the middle of an optimiser step)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # second signal: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def resolve_init_source(value: str | os.PathLike) -> dict[str, Any]:
    """``init_from``'s value -> ``{"path", "weights", "sha256"}``: an existing file is used as
    it is (``weights`` None); otherwise a weights name of the hub (``lightsr list --weights``)
    is fetched and verified like ``--weights NAME``, and its name and the sha256 of its source
    file are returned for the run's lineage. A path that exists wins over a name."""

    path = Path(value)
    if path.is_file():
        return {"path": path, "weights": None, "sha256": None}
    names = [entry.name for entry in hub.list_weights()]
    if str(value) in names:
        entry = hub.get_weights(str(value))
        if entry.precision:
            raise ConfigError(
                f"`init_from` = {entry.name!r} is {entry.base} run at {entry.precision}; "
                f"training starts from fp32 weights: init_from = {entry.base!r}."
            )
        return {
            "path": hub.fetch_weights(entry.name),
            "weights": entry.name,
            "sha256": entry.sha256,
        }
    raise ConfigError(
        f"`init_from` = {str(value)!r} is neither a checkpoint file nor a weights name; give a "
        f"file path or one of: {', '.join(names)} (see `lightsr list --weights`)."
    )


def init_weights_from(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Copy into ``model`` every tensor of the checkpoint at ``path`` whose name and shape match.

    The checkpoint may hold another scale of the same architecture (its body transfers, its
    upsampling tail does not) or the authors' release. Raises :class:`ConfigError` when the
    file is missing or nothing matches (another architecture). Returns what was copied and
    what was left at its fresh initialisation, for the run's log.
    """

    named = resolve_init_source(path)
    path = named["path"]
    source = load_any(path).state_dict()
    target = model.state_dict()
    copied = [k for k, v in source.items() if k in target and target[k].shape == v.shape]
    if not copied:
        raise ConfigError(
            f"`init_from` = {str(path)!r} shares no tensor (name and shape) with "
            f"{getattr(model, 'arch_name', type(model).__name__)}; is it another architecture?"
        )
    with torch.no_grad():
        for k in copied:
            target[k].copy_(source[k])
    kept = sorted(set(target) - set(copied))
    return {
        "source": str(path),
        **({"weights": named["weights"], "sha256": named["sha256"]} if named["weights"] else {}),
        "copied": len(copied),
        "kept_fresh": kept,
        "copied_params": int(sum(source[k].numel() for k in copied)),
    }


#: Files a run writes besides its state: a folder holding any of them holds a run.
_RUN_FILES = (
    "config.json",
    "log.jsonl",
    "last.safetensors",
    "last_ema.safetensors",
    "best.safetensors",
)


def _refuse_existing_run(run_dir: Path) -> None:
    """A new run never starts in a folder that holds one: it would replace its weights and
    config and mix its log in."""
    if (run_dir / STATE_FILE).exists():
        raise ConfigError(
            f"{str(run_dir)!r} already holds a run; continue it with "
            f"`lightsr train --resume {run_dir}` or set another out_dir."
        )
    found = [name for name in _RUN_FILES if (run_dir / name).exists()]
    if found:
        raise ConfigError(
            f"{str(run_dir)!r} holds files of an earlier run ({', '.join(found)}) but no "
            f"{STATE_FILE} to resume from (it stopped before its first checkpoint); a new run "
            "would replace them. Remove those files (or the folder) or set another out_dir."
        )


def _save_weights(model: SRModel, path: Path, cfg: TrainConfig, step: int, **extra: Any) -> None:
    # The run's own files, replaced at every checkpoint. A run on degraded LR also records the
    # resolved pipeline: the config names a preset, whose values a later version may change.
    degradation = degradation_from_table(cfg.data.degradation)
    if degradation is not None:
        extra = {"degradation": asdict(degradation), **extra}
    save(model, path, extra={"step": step, "config": cfg.to_dict(), **extra}, overwrite=True)


def train(
    cfg: TrainConfig,
    *,
    resume: str | os.PathLike | None = None,
    hooks: Sequence[Callable[[int, nn.Module], None]] = (),
    stop_at: int | None = None,
) -> TrainResult:
    """Train ``cfg.model`` as ``cfg`` says; with ``resume`` (a run folder) continue that run.

    ``stop_at``: stop after this step as a stop signal would (state saved, resumable), to split
    a long run across sessions or end it early on purpose; not part of the recipe.
    ``hooks`` are called after every step as ``hook(step, raw_model)`` (after any checkpoint
    of that step). Returns a :class:`TrainResult`. Errors in the config, the data folders or a
    resume from an incompatible run raise :class:`~lightsr.errors.LightSRError` subclasses.
    """

    cfg.validate()
    # Checked before anything is touched: a typo in an override fails at once.
    degradation = degradation_from_table(cfg.data.degradation)
    if stop_at is not None and stop_at < 1:
        raise ConfigError(f"--stop-at must be a step number of at least 1, got {stop_at}.")
    dist = _init_distributed(cfg.device)
    lock: FolderLock | None = None
    try:
        device = resolve_device(cfg.device, local_rank=dist.local_rank)
        run_dir = Path(resume) if resume is not None else cfg.run_dir
        # One process per run folder (rank 0 holds the lock for every rank): a second
        # `lightsr train` on it, new or --resume, fails here at once. An existing folder is
        # locked before anything in it is read; a new one once the cheap checks below pass.
        lock = FolderLock(run_dir, fix="or set another out_dir") if dist.main else None
        if lock is not None and run_dir.is_dir():
            lock.acquire()
        state = read_state(run_dir) if resume is not None else None
        if state is not None:
            check_resumable(cfg, state, run_dir)
        else:
            _refuse_existing_run(run_dir)

        if cfg.val.sets and dist.main:
            # Fail now, not after the first thousand steps, when a set is missing.

            for name in cfg.val.sets:
                path = Path(cfg.val.root) / name if cfg.val.root else Path(name)
                open_benchmark(path, scale=cfg.scale, lr_source=cfg.val.lr_source)
        if lock is not None and not lock.acquired:
            lock.acquire()  # creates the folder
            _refuse_existing_run(run_dir)  # another run may have claimed it meanwhile

        # -- model (the same initial weights in every process: same seed) ---------------------
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        model = create_model(cfg.model, scale=cfg.scale, **cfg.model_options).to(device)
        model.train()
        min_size = getattr(model, "min_input_size", 1)
        if cfg.lr_patch < min_size:
            raise ConfigError(
                f"{cfg.model} needs LR inputs of at least {min_size}x{min_size}; the LR patch is "
                f"{cfg.lr_patch}. Raise `data.lr_patch` (or `data.hr_patch`)."
            )
        init_report = None
        if cfg.init_from and state is None:
            init_report = init_weights_from(model, cfg.init_from)
        layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model.to(memory_format=layout)
        ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay > 0 else None

        # -- data ----------------------------------------------------------------------------
        images = find_training_images(
            cfg.data.hr_dirs,
            scale=cfg.scale,
            lr_dirs=cfg.data.lr_dirs,
            # Degraded LR is made from the HR patches: LR files beside the HR are not read.
            lr_source="resize" if degradation is not None else cfg.data.lr_source,
        )
        images = with_downscaled_copies(images, cfg.data.hr_downscales)
        store = PairStore(
            images,
            scale=cfg.scale,
            boundary=cfg.data.boundary,
            cache_dir=cfg.data.cache_dir or None,
            min_lr_size=cfg.lr_patch,
            small=cfg.data.small_images,
            threads=max(1, cfg.data.num_workers),
            rank=dist.rank,
            world_size=dist.world,
            barrier=dist.barrier,
            progress=dist.main and cfg.progress,
            make_lr=degradation is None,
        )
        spe = cfg.steps_per_epoch or default_steps_per_epoch(len(store), cfg.batch_size)
        schedule = make_schedule(cfg, spe)
        total = schedule.total

        optimizer = make_optimizer(cfg, model.parameters())
        step = 0
        best: dict[str, Any] = {"psnr": None, "step": None}
        if state is not None:
            if state["steps_per_epoch"] != spe:
                raise ConfigError(
                    f"the run had {state['steps_per_epoch']} steps per epoch, now {spe} (the "
                    "training images changed?); set `steps_per_epoch` or restore the images."
                )
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as exc:
                raise CheckpointError(f"{str(run_dir)!r}: weights do not fit: {exc}") from None
            optimizer.load_state_dict(state["optimizer"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            _set_rng_state(state["rng"])
            step = int(state["step"])
            best = dict(state["best"])
            if stop_at is not None and stop_at <= step:
                raise ConfigError(
                    f"the run is already at step {step}; --stop-at {stop_at} would stop it "
                    f"without training. Name a later step, or leave --stop-at out."
                )

        train_model: nn.Module = model
        if dist.world > 1:
            if device.type == "cuda":
                # Batch statistics over the global batch, as in a one-process run.
                train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
            elif any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
                warnings.warn(
                    "BatchNorm on CPU with several processes uses per-process batch statistics; "
                    "results differ slightly from a one-process run.",
                    stacklevel=2,
                )
            train_model = nn.parallel.DistributedDataParallel(
                train_model, device_ids=[device.index] if device.type == "cuda" else None
            )

        sampler = StepBatchSampler(
            n_images=len(store),
            batch_size=cfg.batch_size,
            steps_per_epoch=spe,
            seed=cfg.seed,
            start_step=step,
            rank=dist.rank,
            world_size=dist.world,
        )
        dataset = PatchDataset(
            store,
            lr_patch=cfg.lr_patch,
            seed=cfg.seed,
            augment=cfg.data.augment,
            degradation=degradation,
        )
        loader = make_loader(
            dataset, sampler, num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda"
        )

        # -- run folder ----------------------------------------------------------------------
        if dist.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            text = json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n"
            # A new run's folder holds no config.json (refused above); a resumed run's is updated.
            atomic_write(
                run_dir / "config.json", lambda tmp: Path(tmp).write_text(text), overwrite=True
            )
        log = _Log(
            run_dir, enabled=dist.main, resume_step=step if state else None, tb=cfg.tensorboard
        )
        log.write(
            {
                "event": "resume" if state else "start",
                "step": step,
                "total_steps": total,
                "steps_per_epoch": spe,
                "images": len(store),
                "world_size": dist.world,
                "device": str(device),
                "params": sum(p.numel() for p in model.parameters()),
            }
        )
        if init_report is not None:
            log.write({"event": "init_from", "step": step, **init_report})

        def save_state(at: int) -> None:
            # Rank 0 only; every rank holds the same weights, optimiser and EMA.
            _save_weights(model, run_dir / "last.safetensors", cfg, at)
            if ema is not None:
                _save_weights(
                    ema, run_dir / "last_ema.safetensors", cfg, at, ema_decay=cfg.ema_decay
                )
            epoch, batch = sampler.position(at)
            payload = {
                "format": STATE_FORMAT,
                "arch": model.arch_name,
                "scale": model.scale,
                "options": dict(model.arch_options),
                "config": cfg.to_dict(),
                "step": at,
                "epoch": epoch,
                "batch_in_epoch": batch,
                "steps_per_epoch": spe,
                "total_steps": total,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "rng": _rng_state(),
                "best": best,
                "world_size": dist.world,
            }
            # Into memory first: torch.save to a path turns a full disk into a RuntimeError
            # about its file writer; written from Python it is an OSError naming the file.
            buf = io.BytesIO()
            torch.save(payload, buf)
            atomic_write_bytes(run_dir / STATE_FILE, buf.getbuffer(), overwrite=True)

        def run_validation(at: int) -> None:
            if not cfg.val.sets:
                return
            if dist.main:
                net = ema if ema is not None else model
                results = validate(net, cfg)
                key = cfg.val.best_on or cfg.val.sets[0]
                log.write({"event": "val", "step": at, "sets": results, "ema": ema is not None})
                if best["psnr"] is None or results[key]["psnr"] > best["psnr"]:
                    best.update(psnr=results[key]["psnr"], step=at, set=key)
                    _save_weights(net, run_dir / "best.safetensors", cfg, at, val=results)
                if bar is not None:
                    bar.write(
                        f"step {at}: "
                        + ", ".join(
                            f"{n} {r['psnr']:.3f} dB / {r['ssim']:.4f}" for n, r in results.items()
                        )
                    )
            dist.barrier()

        # -- loop ----------------------------------------------------------------------------
        bar = None
        if dist.main and cfg.progress:
            # disable=None: a bar only on a terminal; on a pipe or a log file a short line per
            # `log_every` steps is printed instead of \r frames
            bar = tqdm(
                total=total,
                initial=step,
                unit="it",
                dynamic_ncols=True,
                file=sys.stderr,
                disable=None,
            )
        amp = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp == "bf16" else None
        loss_sum = torch.zeros((), device=device)
        n_sum, wait, t_mark = 0, 0.0, time.perf_counter()
        last_loss: float | None = None
        stopped = False
        # The step of the checkpoint files on disk: what a divergence leaves untouched.
        saved_at: int | None = step if state is not None else None

        def diverged(at: int, what: str, **event: Any) -> DivergedError:
            """Log the divergence, close the log, and the error to raise (on every rank: all
            reach the same verdict, so none is left waiting in a collective)."""
            log.write({"event": "diverged", "step": at, "saved_step": saved_at, **event})
            if bar is not None:
                bar.close()
            log.close()
            return DivergedError(
                f"training diverged at step {at}: {what}; stopped without saving it. "
                + _divergence_fixes(cfg, run_dir, saved_at, schedule(max(at - 1, 0)))
            )

        def guard_weights(at: int) -> None:
            """Before anything is saved: never write NaN/Inf weights (or optimiser moments)."""
            bad = _nonfinite_count(model, ema, optimizer)
            if bad:
                raise diverged(
                    at,
                    f"the weights (or optimiser state) hold {bad:,} NaN/Inf values",
                    nonfinite_values=bad,
                )

        it = iter(loader)
        with _StopRequest() as stop:
            while step < total:
                t0 = time.perf_counter()
                lr_batch, hr_batch = next(it)
                lr_batch = to_unit(lr_batch.to(device, non_blocking=True), dataset.peak)
                hr_batch = to_unit(hr_batch.to(device, non_blocking=True), dataset.peak)
                lr_batch = lr_batch.contiguous(memory_format=layout)
                wait += time.perf_counter() - t0

                lr = schedule(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with amp if amp is not None else contextlib.nullcontext():
                    sr = train_model(lr_batch)
                loss = loss_fn(cfg.loss, sr, hr_batch)
                # Every step, before the update: a non-finite loss would make every weight NaN.
                # (One flag per step; with several processes they agree first.)
                bad_loss = (~torch.isfinite(loss.detach())).to(torch.int32).reshape(1)
                if dist.world > 1:
                    torch.distributed.all_reduce(bad_loss)
                if bool(bad_loss.item()):
                    value = float(loss.detach())
                    whose = "" if not math.isfinite(value) else " in another process"
                    raise diverged(
                        step + 1,
                        f"the loss is {value if whose == '' else 'not finite'}{whose} on the "
                        f"weights of step {step}",
                        loss=value,
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                optimizer.step()
                if ema is not None:
                    ema_update(ema, model, ema_decay_at(step, cfg.ema_decay, warmup=cfg.ema_warmup))
                step += 1
                loss_sum += loss.detach()
                n_sum += 1
                if bar is not None:
                    bar.update()

                if step % cfg.log_every == 0 or step == total:
                    mean = loss_sum / n_sum
                    if dist.world > 1:
                        torch.distributed.all_reduce(mean)
                        mean /= dist.world
                    elapsed = time.perf_counter() - t_mark
                    last_loss = float(mean)
                    epoch, _ = sampler.position(step - 1)
                    log.write(
                        {
                            "event": "train",
                            "step": step,
                            "epoch": epoch,
                            "loss": last_loss,
                            "lr": lr,
                            "it_per_s": n_sum / elapsed,
                            "data_wait": wait / elapsed,
                        }
                    )
                    if bar is not None:
                        bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                        if bar.disable:
                            print(
                                f"step {step}/{total} loss {last_loss:.4f} lr {lr:.2e} "
                                f"{n_sum / elapsed:.2f} it/s",
                                file=sys.stderr,
                                flush=True,
                            )
                    loss_sum.zero_()
                    n_sum, wait, t_mark = 0, 0.0, time.perf_counter()
                t_pause = time.perf_counter()
                if cfg.val.every and step % cfg.val.every == 0 and step != total:
                    guard_weights(step)
                    run_validation(step)
                stop_now = stop.requested or (stop_at is not None and step >= stop_at)
                if dist.world > 1:
                    flag = torch.tensor([int(stop_now)], device=device)
                    torch.distributed.all_reduce(flag)
                    stop_now = bool(flag.item())
                if step % cfg.ckpt_every == 0 or step == total or stop_now:
                    guard_weights(step)
                    if dist.main:
                        save_state(step)
                    saved_at = step
                    dist.barrier()
                t_mark += time.perf_counter() - t_pause  # it/s counts training time only
                for hook in hooks:
                    hook(step, model)
                if stop_now:
                    stopped = True
                    log.write({"event": "stopped", "step": step})
                    if bar is not None:
                        bar.write(f"stopped at step {step}; resume with --resume {run_dir}")
                    break
        if not stopped and cfg.val.sets:
            guard_weights(step)
            run_validation(step)
            if dist.main:
                save_state(step)  # records the final best
        if bar is not None:
            bar.close()
        log.close()
        del it
        return TrainResult(
            run_dir=run_dir,
            step=step,
            model=model,
            ema=ema,
            last_loss=last_loss,
            best_psnr=best["psnr"],
            stopped=stopped,
        )
    finally:
        if lock is not None:
            lock.release()
        if dist.owns_group:
            torch.distributed.destroy_process_group()


__all__ = [
    "Schedule",
    "TrainResult",
    "check_resumable",
    "lr_at",
    "make_optimizer",
    "make_schedule",
    "read_log",
    "read_state",
    "resume_config",
    "train",
    "validate",
]
