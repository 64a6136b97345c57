"""Self-describing checkpoints, and import of the authors' released files.

A lightsr checkpoint is a safetensors file whose metadata says what it holds: architecture,
its keyword options, scale, whether it is folded, the library version and any extra
information (training config, measured PSNR). ``load(path)`` needs nothing else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ._version import __version__
from .atomic import atomic_write
from .deploy import reparameterize
from .errors import CheckpointError
from .models.base import SRModel
from .registry import OfficialMatch, create_model, official_converters

FORMAT_TAG = "lightsr-checkpoint-v1"


def save(
    model: SRModel, path: str | os.PathLike, *, extra: Mapping[str, Any] | None = None
) -> None:
    """Write ``model``'s weights and description to ``path`` (safetensors, atomically)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT_TAG,
        "arch": model.arch_name,
        "scale": str(model.scale),
        "options": json.dumps(model.arch_options, sort_keys=True),
        "folded": json.dumps(bool(model.folded)),
        "lightsr_version": __version__,
        "extra": json.dumps(dict(extra or {}), sort_keys=True, default=str),
    }
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded description of a lightsr checkpoint (raises CheckpointError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a lightsr checkpoint (not a readable safetensors file: {exc}). "
            "For the authors' released .pt/.pth files use `lightsr convert` or "
            "lightsr.load_official()."
        ) from None
    if raw.get("format") != FORMAT_TAG:
        raise CheckpointError(
            f"{str(path)!r} is a safetensors file without lightsr metadata; it cannot say which "
            "model it holds. Save checkpoints with lightsr.save()."
        )
    return {
        "arch": raw["arch"],
        "scale": int(raw["scale"]),
        "options": json.loads(raw["options"]),
        "folded": json.loads(raw["folded"]),
        "lightsr_version": raw.get("lightsr_version", "?"),
        "extra": json.loads(raw.get("extra", "{}")),
    }


def build_from_description(
    arch: str, scale: int, options: Mapping[str, Any], folded: bool
) -> SRModel:
    """An untrained model with exactly the structure a checkpoint with this description holds."""
    model = create_model(arch, scale=scale, **dict(options))
    return reparameterize(model, inplace=True) if folded else model


def load(
    path: str | os.PathLike,
    *,
    expect_arch: str | None = None,
    expect_scale: int | None = None,
    map_location: str | torch.device = "cpu",
) -> SRModel:
    """Load a lightsr checkpoint into the model it describes (in eval mode).

    ``expect_arch``/``expect_scale`` turn a checkpoint of another model or scale into a clear
    error instead of a wrong result.
    """
    meta = read_metadata(path)
    if expect_arch is not None and meta["arch"] != expect_arch.lower().replace("-", "_"):
        raise CheckpointError(
            f"{str(path)!r} holds a {meta['arch']} model, not {expect_arch}. "
            f"Pass --model {meta['arch']} (or no --model) to use it."
        )
    if expect_scale is not None and meta["scale"] != int(expect_scale):
        raise CheckpointError(
            f"{str(path)!r} holds a x{meta['scale']} model, not x{expect_scale}. "
            f"Use a x{expect_scale} checkpoint, or --scale {meta['scale']}."
        )
    model = build_from_description(meta["arch"], meta["scale"], meta["options"], meta["folded"])
    state = load_file(str(path), device=str(map_location))
    _load_state_strict(model, state, source=str(path))
    model.checkpoint_extra = meta["extra"]
    return model.eval()


def _load_state_strict(model: SRModel, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
        if wrong:
            parts.append(
                "shape mismatch "
                + ", ".join(
                    f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:3]
                )
            )
        raise CheckpointError(
            f"weights in {source!r} do not fit {model.arch_name} x{model.scale}: "
            + "; ".join(parts)
            + ". The file belongs to another architecture, variant or scale."
        )
    model.load_state_dict(dict(state), strict=True)


# ---------------------------------------------------------------------------------------------
# The authors' released checkpoints
# ---------------------------------------------------------------------------------------------


def _read_foreign_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    try:
        if path.suffix == ".safetensors":
            obj: Any = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})."
        ) from None
    # Common wrappers: {"params": sd}, {"params_ema": sd}, {"state_dict": sd}, {"model": sd}.
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{str(path)!r} does not hold a state dict of tensors.")
    # DataParallel prefixes
    return {k.removeprefix("module."): v.float() for k, v in obj.items()}


def convert_official_state(
    state: Mapping[str, torch.Tensor], *, source: str = "<state>"
) -> OfficialMatch:
    """Recognise a foreign state dict; raise CheckpointError naming what is supported."""
    converters = official_converters()
    for _family, fn in converters:
        match = fn(state)
        if match is not None:
            return match
    families = ", ".join(f for f, _ in converters)
    sample = ", ".join(list(state)[:4])
    raise CheckpointError(
        f"{source!r} is not a released checkpoint lightsr recognises (supported: {families}); "
        f"its first keys are {sample}."
    )


def load_official(path: str | os.PathLike) -> SRModel:
    """Load an authors' released checkpoint (A2F any variant/scale, FMEN/FMEN-S inference files)
    into our model, recognising it from key names and tensor shapes. Returns an eval-mode model."""
    path = Path(path)
    state = _read_foreign_state(path)
    match = convert_official_state(state, source=str(path))
    model = build_from_description(match.arch, match.scale, match.options, match.folded)
    _load_state_strict(model, match.state_dict, source=str(path))
    model.checkpoint_extra = {"converted_from": path.name}
    return model.eval()


def load_any(
    path: str | os.PathLike,
    *,
    expect_arch: str | None = None,
    expect_scale: int | None = None,
) -> SRModel:
    """A lightsr checkpoint or, failing that, an authors' released one (eval mode).

    ``expect_arch``/``expect_scale`` (None: anything) turn a checkpoint of another model or
    scale into a :class:`CheckpointError` naming what the file holds and the fix.
    """
    path = Path(path)
    try:
        return load(path, expect_arch=expect_arch, expect_scale=expect_scale)
    except CheckpointError as first:
        if not path.is_file():
            raise
        try:
            model = load_official(path)
        except CheckpointError:
            raise first from None
        if expect_arch and model.arch_name != expect_arch.lower().replace("-", "_"):
            raise CheckpointError(
                f"{str(path)!r} holds {model.arch_name}, not {expect_arch}. "
                f"Pass --model {model.arch_name} (or no --model) to use it."
            ) from None
        if expect_scale and model.scale != int(expect_scale):
            raise CheckpointError(
                f"{str(path)!r} holds a x{model.scale} model, not x{expect_scale}. "
                f"Use a x{expect_scale} checkpoint, or --scale {model.scale}."
            ) from None
        return model


__all__ = [
    "build_from_description",
    "convert_official_state",
    "load",
    "load_any",
    "load_official",
    "read_metadata",
    "save",
]
