"""The one model registry.

Model files register *variant builders* with :func:`register_model`; the registry is filled by
the explicit imports in :mod:`lightsr.models`, never by scanning the file system. A builder is
a keyword-only function ``builder(*, scale, **options) -> SRModel``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, UnknownModelError, UnsupportedScaleError


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model name."""

    name: str
    builder: Callable[..., Any]
    scales: tuple[int, ...]
    paper: str
    summary: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, paper: str, summary: str = "", scales: tuple[int, ...] = (2, 3, 4)
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``builder`` under ``name``. A duplicate name is a programming error."""

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise RuntimeError(f"model name {name!r} registered twice")
        doc = summary or (builder.__doc__ or "").strip().splitlines()[0:1]
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            scales=tuple(scales),
            paper=paper,
            summary=doc if isinstance(doc, str) else (doc[0] if doc else ""),
        )
        return builder

    return decorator


def _ensure_loaded() -> None:
    from . import models  # noqa: F401  (explicit imports register every model)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; an unknown name raises with the closest names."""
    _ensure_loaded()
    key = name.lower().replace("-", "_")
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Run `lightsr list` to see all {len(_REGISTRY)} models."
        )
    return _REGISTRY[key]


def create_model(name: str, *, scale: int, **options: Any):
    """Build model ``name`` at ``scale`` (random weights, training form).

    The returned :class:`~lightsr.models.base.SRModel` maps float RGB in [0, 1] of shape
    (N, 3, H, W) to float RGB in [0, 1] (unclamped) of shape (N, 3, scale*H, scale*W).
    ``options`` are the variant's keyword arguments (e.g. ``ggas=True`` for baselines); they
    are stored on the model so that :func:`lightsr.save` can rebuild it.
    """
    spec = get_spec(name)
    if scale not in spec.scales:
        raise UnsupportedScaleError(
            f"model {spec.name!r} supports scales {list(spec.scales)}, not {scale!r}."
        )
    _check_options(spec, scale, options)
    model = spec.builder(scale=scale, **options)
    model.arch_name = spec.name
    model.arch_options = dict(options)
    return model


def _check_options(spec: ModelSpec, scale: int, options: dict[str, Any]) -> None:
    """Raise ConfigError when the builder does not accept ``options`` (a bad keyword would
    otherwise surface as a bare TypeError from inside the builder). Builders taking
    ``**options`` accept any name here and validate their options themselves."""
    signature = inspect.signature(spec.builder)
    try:
        signature.bind(scale=scale, **options)
    except TypeError as exc:
        named = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "scale"
        ]
        bad = [k for k in options if k not in named]
        problem = f"the option(s) {', '.join(bad)}" if bad else f"these options ({exc})"
        valid = ", ".join(named) if named else "none besides scale"
        raise ConfigError(
            f"model {spec.name!r} does not accept {problem}; its options are: {valid}."
        ) from None
