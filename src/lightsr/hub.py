"""Which weights a name means: the bundled files, and the one rule every command uses to turn
``--model`` / ``--checkpoint`` / ``--scale`` into a model.

The rule (:func:`resolve_model`), the same for ``upscale``, ``eval``, ``profile`` and ``export``:

1. ``--checkpoint FILE``: a lightsr checkpoint, or an authors' released file; ``--model`` and
   ``--scale``, when given, must agree with what the file holds.
2. ``--model NAME`` of a model with nothing to learn (``bicubic``): built as is.
3. ``--model NAME``: its bundled weights at the scale (``weights/<name>_x<s>.safetensors``, or
   the bundled default when the default is that architecture).
4. ``--model NAME`` with no weights anywhere: an error, unless the command accepts random
   weights (``eval`` does, for a floor; it says so).
5. nothing: the bundled default model at the scale (x4 unless ``--scale``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import load, load_any, read_metadata
from .errors import CheckpointError, ConfigError, LightSRError
from .models.base import SRModel
from .registry import create_model, get_spec

#: Checkpoints shipped inside the package.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The scale a command means when none is given.
DEFAULT_SCALE = 4


@dataclass
class ResolvedModel:
    """A model and where its weights came from, in words (printed by the commands)."""

    model: SRModel
    source: str


def bundled_weights(name: str, scale: int) -> Path | None:
    """The path of a checkpoint shipped with the package (``weights/<name>_x<scale>.safetensors``),
    or None."""
    path = WEIGHTS_DIR / f"{name}_x{int(scale)}.safetensors"
    return path if path.is_file() else None


def default_model(scale: int = DEFAULT_SCALE) -> SRModel:
    """The bundled default model for ``scale`` (``weights/default_x<scale>.safetensors``)."""
    path = bundled_weights("default", scale)
    if path is None:
        raise CheckpointError(
            f"no bundled default weights for x{scale} in this installation ({WEIGHTS_DIR}). "
            "Pass --checkpoint PATH (a lightsr checkpoint, or the authors' file such as "
            "a2f_sd_x4.pt), or --model bicubic."
        )
    return load(path, expect_scale=scale)


def check_scale(scale: int | None) -> int | None:
    """``scale`` as given, validated: None, or a positive integer (``--scale 0`` is an error,
    never a silent default)."""
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"scale must be a positive integer (2, 3 or 4), not {scale!r}.")
    return scale


def resolve_model(
    *,
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    scale: int | None = None,
    allow_random: bool = False,
    exact: bool = False,
) -> ResolvedModel:
    """The model a command means (the rule is in the module docstring).

    ``allow_random``: a learned model without weights is built with random weights (with a
    note on stderr) instead of refused. ``exact``: models with an exact reference path
    (bicubic's float64 MATLAB arithmetic) use it; evaluation asks for it.
    """
    scale = check_scale(scale)
    if checkpoint is not None:
        if model is not None and not get_spec(model).learned:
            raise LightSRError(f"--model {model} has no weights: it takes no --checkpoint.")
        loaded = load_any(checkpoint, expect_arch=model or None, expect_scale=scale)
        return ResolvedModel(loaded, f"{loaded.arch_name} ({Path(checkpoint).name})")
    s = scale or DEFAULT_SCALE
    if model is None:
        default = default_model(s)
        return ResolvedModel(default, f"{default.arch_name} (bundled default x{s})")
    spec = get_spec(model)  # unknown names fail here, with suggestions
    if not spec.learned:
        options = {"exact": True} if exact else {}
        return ResolvedModel(create_model(spec.name, scale=s, **options), spec.name)
    path = bundled_weights(spec.name, s)
    default_path = bundled_weights("default", s)
    # `--model a2f_sd` means the bundled weights when the default model is an A2F-SD
    if (
        path is None
        and default_path is not None
        and read_metadata(default_path)["arch"] == spec.name
    ):
        path = default_path
    if path is not None:
        return ResolvedModel(load(path, expect_scale=s), f"{spec.name} (bundled, x{s})")
    if allow_random:
        if scale is None:
            raise LightSRError(f"--model {model} without a checkpoint needs --scale.")
        print(
            f"note: {spec.name} has random weights (no --checkpoint); its scores are a floor.",
            file=sys.stderr,
        )
        return ResolvedModel(create_model(spec.name, scale=s), f"{spec.name} (random weights)")
    raise CheckpointError(
        f"--model {model} without --checkpoint would upscale with random weights. Pass "
        f"--checkpoint PATH with trained {spec.name} weights, or --model bicubic."
    )


__all__ = [
    "DEFAULT_SCALE",
    "WEIGHTS_DIR",
    "ResolvedModel",
    "bundled_weights",
    "check_scale",
    "default_model",
    "resolve_model",
]
