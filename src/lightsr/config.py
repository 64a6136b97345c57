"""Typed training configuration: dataclasses read from TOML (or JSON) plus ``key=value`` overrides.

A recipe file sets only what differs from the defaults below; ``inherit = "other.toml"`` at its
top level starts from another recipe (paths relative to the file). Unknown keys are errors
naming the closest valid keys, every value is type-checked, and derived values (the HR patch is
the LR patch times the scale, the step counts of an epoch-based schedule) are computed, never
written twice.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

try:  # Python 3.11+; on 3.10 the optional tomli package (JSON configs need neither)
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Training images and how patches are cut from them."""

    #: Folders of HR images (png/jpg/bmp/tif...), or DIV2K roots holding ``DIV2K_train_HR``.
    hr_dirs: list[str] = field(default_factory=list)
    #: Optional LR folders, one per entry of ``hr_dirs`` ("" = make LR from HR). DIV2K's
    #: ``DIV2K_train_LR_bicubic/X{s}`` beside ``DIV2K_train_HR`` is found automatically.
    lr_dirs: list[str] = field(default_factory=list)
    #: Where LR comes from: "auto" (a given/found LR folder, else made from HR), "resize"
    #: (always made from HR with the exact MATLAB bicubic), "folder" (LR folders required).
    lr_source: Literal["auto", "resize", "folder"] = "auto"
    #: LR patch side in pixels. Give this or ``hr_patch`` (the other is derived from the scale).
    lr_patch: int | None = None
    #: HR patch side in pixels; must be a multiple of the scale.
    hr_patch: int | None = None
    #: Boundary rule of the MATLAB bicubic used to make LR: "mirror" (MATLAB, DIV2K's files) or
    #: "replicate" (the SelfExSR/RCAN benchmark files).
    boundary: Literal["mirror", "replicate"] = "mirror"
    #: The 8 flips/rotations (dihedral group), applied identically to LR and HR patches.
    augment: bool = True
    #: DataLoader worker processes (0 = load in the training process).
    num_workers: int = 4
    #: Folder for the decoded HR/LR cache (.npy, memory-mapped); "" = keep it in memory.
    cache_dir: str = ""
    #: Images smaller than the HR patch: "skip" (with a warning) or "error".
    small_images: Literal["skip", "error"] = "skip"
    #: Extra copies of every HR image, downscaled by each factor (0 < f < 1) with the MATLAB
    #: bicubic before the LR is made: the classic augmentation of the 291 images (VDSR, MemNet:
    #: [0.9, 0.8, 0.7, 0.6]). Empty (the default) = the images as they are. Copies smaller than
    #: the patch are dropped like small images.
    hr_downscales: list[float] = field(default_factory=list)
    #: Synthetic real-world LR instead of the bicubic one: each LR patch is made on the fly from
    #: its HR patch by :func:`lightsr.data.degrade.degrade`. A table naming a preset, whose
    #: other keys override the preset's ``DegradationConfig`` fields, e.g. ``{preset =
    #: "realesrgan", final_jpeg_range = [60, 95]}``; ``orders`` as a table keyed by order
    #: number (``{2 = {noise_prob = 0.5}}``) changes the preset's orders, as a list replaces
    #: them; ``kernel`` inside an order changes its blur kernel. Checked against the
    #: dataclasses when the run starts (:func:`lightsr.data.training.degradation_from_table`).
    #: Empty (the default) = the clean bicubic pairs.
    degradation: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimiser. The learning rate actually used is ``lr * lr_scale`` times the schedule."""

    name: Literal["adam", "adamw", "adamp"] = "adam"
    lr: float = 1e-4
    #: Multiplier on ``lr``: GGAS/CWSS train with twice their baseline's rate (lr_scale = 2).
    lr_scale: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    #: AdamP (Heo et al. 2021): cosine threshold delta and weight-decay ratio for projected weights.
    adamp_delta: float = 0.1
    adamp_wd_ratio: float = 0.1
    nesterov: bool = False
    #: Clip the global gradient norm to this value; 0 = off.
    grad_clip: float = 0.0


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, a pure function of the step. ``every``, ``milestones`` and
    ``warmup`` are in the run's ``unit`` (steps or epochs), converted to steps."""

    kind: Literal["step", "multistep", "cosine", "constant"] = "step"
    #: "step": multiply by ``gamma`` every ``every`` units.
    every: int = 200
    #: "multistep": multiply by ``gamma`` at each of these (in units).
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.5
    #: Linear warm-up from 0 over this many units.
    warmup: int = 0
    #: "cosine": final learning rate as a fraction of the initial one.
    min_lr_ratio: float = 0.0


@dataclass
class ValConfig:
    """Validation on benchmark sets (PSNR-Y/SSIM-Y, crop = scale)."""

    #: Benchmark sets: folders (``Set5`` with ``HR/`` and ``LR_bicubic[_clamp]/X{s}/``, DIV2K's
    #: ``DIV2K_valid_HR``, or plain HR folders), relative to ``root``; empty = no validation.
    sets: list[str] = field(default_factory=list)
    #: Folder holding the sets ("" = paths in ``sets`` are used as they are).
    root: str = ""
    #: Which LR to validate on (see lightsr.data.benchmark): "auto" = the set's LR folder
    #: (replicate-boundary files first) or, without one, imresize with the replicate rule.
    lr_source: Literal[
        "auto", "folder", "folder-clamp", "folder-mirror", "imresize-mirror", "imresize-replicate"
    ] = "auto"
    #: Validate every this many steps (0 = only at the end of the run).
    every: int = 0
    #: The set whose PSNR-Y picks ``best.safetensors`` ("" = the first of ``sets``).
    best_on: str = ""


@dataclass
class TrainConfig:
    """One training run. ``length`` and the schedule are counted in ``unit``."""

    model: str = ""
    scale: int = 4
    #: Keyword options of the model builder (e.g. {ggas = true} for a baseline).
    model_options: dict[str, Any] = field(default_factory=dict)
    #: Start from the weights of this checkpoint (a file, lightsr or the authors', or a weights
    #: name of `lightsr list --weights`, fetched and verified), copying every
    #: tensor whose name and shape match and keeping the fresh initialisation elsewhere: how a
    #: x2 or x3 model starts from a trained x4 body (only the upsampling tail differs), or a
    #: finished run is annealed with a new schedule. Used when a run starts, not on resume.
    init_from: str = ""
    #: Global batch size (all processes together); must divide by the number of processes.
    batch_size: int = 16
    #: Run length in ``unit``.
    length: int = 1000
    unit: Literal["step", "epoch"] = "step"
    #: Steps per epoch; 0 = one pass over the training images (len // batch_size). EDSR-derived
    #: code bases (MAFFSRN's, A2F's) define an epoch as 1000 batches.
    steps_per_epoch: int = 0
    loss: Literal["l1", "mse", "charbonnier"] = "l1"
    seed: int = 0
    device: str = "auto"
    #: Mixed precision: "bf16" autocast, or "none" (fp32).
    amp: Literal["none", "bf16"] = "none"
    #: Train in the channels-last memory layout (NHWC). Same arithmetic up to float rounding;
    #: on CPU, oneDNN's convolutions run faster in it (1.13x A2F-SD, 1.25x MAFFSRN steps per
    #: second at one thread: benchmarks/results/train_speed.json).
    channels_last: bool = True
    #: EMA decay of the weights (e.g. 0.999); 0 = no EMA.
    ema_decay: float = 0.0
    #: Warm the EMA up: the decay at update t is min(ema_decay, (1 + t) / (10 + t)), so early on
    #: the EMA averages the steps so far instead of holding the starting weights for about
    #: 1 / (1 - ema_decay) steps. Matters when a run starts partly random (a fine-tune whose
    #: upsampling tail is fresh): without it the EMA of such a run reads far below the raw
    #: weights for thousands of steps.
    ema_warmup: bool = False
    #: Run folder (checkpoints, logs, state). "" = runs/<name or model_xscale>.
    out_dir: str = ""
    name: str = ""
    log_every: int = 100
    #: Write last.safetensors and the resumable state every this many steps (and at the end).
    ckpt_every: int = 1000
    #: Show a tqdm progress bar (rank 0 only).
    progress: bool = True
    #: Also write TensorBoard events when tensorboard is installed.
    tensorboard: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    val: ValConfig = field(default_factory=ValConfig)

    # -- derived values ---------------------------------------------------------------------

    @property
    def lr_patch(self) -> int:
        """LR patch side (pixels), from ``data.lr_patch`` or ``data.hr_patch / scale``."""
        if self.data.lr_patch is not None:
            return self.data.lr_patch
        assert self.data.hr_patch is not None  # validate() guarantees one of them
        return self.data.hr_patch // self.scale

    @property
    def hr_patch(self) -> int:
        """HR patch side (pixels) = LR patch x scale."""
        return self.lr_patch * self.scale

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir or Path("runs") / (self.name or f"{self.model}_x{self.scale}"))

    def steps(self, n: int, steps_per_epoch: int) -> int:
        """``n`` units of this run converted to steps."""
        return n * steps_per_epoch if self.unit == "epoch" else n

    def validate(self) -> TrainConfig:
        """Check cross-field rules (types were checked on reading); returns self."""
        if not self.model:
            raise ConfigError("config sets no `model`; name one (see `lightsr list`).")
        d = self.data
        if (d.lr_patch is None) == (d.hr_patch is None):
            raise ConfigError(
                "give exactly one of `data.lr_patch` and `data.hr_patch` (the other is derived: "
                f"HR patch = LR patch x scale); got lr_patch={d.lr_patch}, hr_patch={d.hr_patch}."
            )
        if d.hr_patch is not None and d.hr_patch % self.scale:
            raise ConfigError(
                f"`data.hr_patch` = {d.hr_patch} is not a multiple of the scale {self.scale}; "
                f"use {d.hr_patch - d.hr_patch % self.scale} or set `data.lr_patch`."
            )
        if self.lr_patch < 1:
            raise ConfigError(f"the LR patch must be at least 1 pixel, got {self.lr_patch}.")
        if d.degradation and (any(d.lr_dirs) or d.lr_source == "folder"):
            raise ConfigError(
                "`data.degradation` makes every LR patch from its HR patch, so no LR files are "
                f"read: remove `data.lr_dirs` (now {d.lr_dirs}) and leave `data.lr_source` at "
                f"'auto' (now {d.lr_source!r}), or remove `data.degradation` to train on them."
            )
        if d.lr_dirs and len(d.lr_dirs) != len(d.hr_dirs):
            raise ConfigError(
                f"`data.lr_dirs` has {len(d.lr_dirs)} entries but `data.hr_dirs` has "
                f'{len(d.hr_dirs)}; give one LR folder (or "") per HR folder.'
            )
        positive = {
            "batch_size": self.batch_size,
            "length": self.length,
            "log_every": self.log_every,
            "ckpt_every": self.ckpt_every,
            "schedule.every": self.schedule.every,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"`{key}` must be at least 1, got {value}.")
        nonneg = {
            "steps_per_epoch": self.steps_per_epoch,
            "data.num_workers": d.num_workers,
            "val.every": self.val.every,
            "schedule.warmup": self.schedule.warmup,
        }
        for key, value in nonneg.items():
            if value < 0:
                raise ConfigError(f"`{key}` must be >= 0, got {value}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"`ema_decay` must be in [0, 1), got {self.ema_decay}.")
        if self.optim.lr <= 0 or self.optim.lr_scale <= 0:
            raise ConfigError("`optim.lr` and `optim.lr_scale` must be positive.")
        if self.val.best_on and self.val.best_on not in self.val.sets:
            raise ConfigError(
                f"`val.best_on` = {self.val.best_on!r} is not one of `val.sets` {self.val.sets}."
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


# ---------------------------------------------------------------------------------------------
# Reading, type checking, overrides
# ---------------------------------------------------------------------------------------------


def _closest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} Valid keys here: {', '.join(sorted(valid))}."


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (ints accepted for floats; lists for
    tuples); raises ConfigError naming ``key``."""

    def bad() -> ConfigError:
        return ConfigError(
            f"`{key}` must be {_type_name(tp)}, got {value!r} ({type(value).__name__})."
        )

    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool):
            raise bad()
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise bad()
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad()
        return _build(tp, value, prefix=f"{key}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            # 1e6 in a file is a float; accept integral floats for step counts.
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if not math.isfinite(float(value)):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad()
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad()
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise bad()
        return dict(value)
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")  # programming error


def _build(cls: type, raw: Mapping[str, Any], *, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            where = f"section [{prefix[:-1]}]" if prefix else "the top level"
            raise ConfigError(
                f"unknown config key `{prefix}{key}` in {where}.{_closest(key, names)}"
            )
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def config_from_dict(raw: Mapping[str, Any]) -> TrainConfig:
    """A validated :class:`TrainConfig` from a nested dict (unknown keys raise ConfigError)."""
    return _build(TrainConfig, raw).validate()


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist.")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{str(path)!r} is not valid JSON: {exc}") from None
    if tomllib is None:
        raise ConfigError(
            "reading TOML configs needs Python 3.11+ or `pip install tomli`; or use a .json config."
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{str(path)!r} is not valid TOML: {exc}") from None


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def read_config_dict(path: str | Path, *, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw nested dict of a recipe file, with its ``inherit`` chain merged in."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config inheritance loops back to {str(path)!r}.")
    raw = _read_file(path)
    parent = raw.pop("inherit", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"`inherit` in {str(path)!r} must be a file name, got {parent!r}.")
    base = read_config_dict(path.parent / parent, _seen=(*_seen, path))
    return _merge(base, raw)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-3"`` -> (["optim", "lr"], 0.001). The value is read as a TOML value
    (numbers, booleans, ``["a", "b"]``, ``{k = 1}``), falling back to a plain string."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.lr=1e-3).")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key.")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except Exception:
        parsed = value.strip()
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``raw`` with each ``key=value`` override set (the key is checked when building)."""
    out = json.loads(json.dumps(raw, default=list))  # deep copy of plain data
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: `{part}` is not a section.")
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a recipe file (TOML or JSON; ``None`` = defaults only), apply ``key=value``
    overrides, type-check and validate."""
    raw = read_config_dict(path) if path is not None else {}
    return config_from_dict(apply_overrides(raw, overrides))


__all__ = [
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "ValConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "parse_override",
    "read_config_dict",
]
