"""The one model registry: model builders and the recognisers of the authors' released files.

Model files register *variant builders* with :func:`register_model` and recognisers of their
family's released state dicts with :func:`register_official_converter`; the registry is filled
by the explicit imports in :mod:`lightsr.models` (which ``import lightsr`` runs), never by
scanning the file system. A builder is a keyword-only function
``builder(*, scale, **options) -> SRModel``. This module imports no model: it sits below them.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import ConfigError, UnknownModelError, UnsupportedScaleError


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model name."""

    name: str
    builder: Callable[..., Any]
    scales: tuple[int, ...]
    paper: str
    summary: str
    #: False for models with nothing to learn (bicubic): they need no weights to run.
    learned: bool = True
    #: Declared for the default options (see :func:`register_model`); None: not declared.
    receptive_field: int | None = None
    tile_exact: bool | None = None
    #: True: measured to keep Set5 PSNR within 0.02 dB of fp32 under bf16 autocast (with the
    #: image convs in fp32), so ``precision="auto"`` may pick bf16; None: not measured.
    bf16_safe: bool | None = None
    #: The scales at which an engine's bf16 (OpenVINO's: every layer, the image convs too) was
    #: measured to keep Set5 PSNR within 0.02 dB of fp32; only there does ``backend="auto"``
    #: run bf16 (and int8's kept convs) in OpenVINO. Empty: not measured.
    bf16_engine_scales: tuple[int, ...] = ()


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    paper: str,
    summary: str = "",
    scales: tuple[int, ...] = (2, 3, 4),
    learned: bool = True,
    receptive_field: int | None = None,
    tile_exact: bool | None = None,
    bf16_safe: bool | None = None,
    bf16_engine_scales: tuple[int, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``builder`` under ``name``. A duplicate name is a programming error.

    ``receptive_field`` (LR pixels, Chebyshev radius) and ``tile_exact`` (False: global
    operations or a field wider than tiles carry) declare what the inference wrapper needs for
    the variant *as registered*, i.e. built with no options: :func:`create_model` sets them on
    such models, so nothing has to be probed at run time. Built with options (which may change
    the structure), the model keeps its class's declarations, and the rest is probed. The tests
    check every declaration against :func:`lightsr.probe.probe_receptive_field`.

    ``bf16_safe=True`` declares, from a measurement with trained (the authors') weights, that
    bf16 autocast keeps Set5 PSNR-Y within 0.02 dB of fp32 (``tests/test_precision.py``
    re-measures every declared model); only such models get bf16 from ``precision="auto"``.
    ``bf16_engine_scales`` declares the same for an engine's bf16, which also rounds the image
    convs, per scale (MAFFSRN x2 lost 0.054 dB that way, x3 and x4 under 0.01): only at those
    scales does ``backend="auto"`` hand bf16 to OpenVINO.
    """

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
            learned=learned,
            receptive_field=receptive_field,
            tile_exact=tile_exact,
            bf16_safe=bf16_safe,
            bf16_engine_scales=tuple(bf16_engine_scales),
        )
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; an unknown name raises with the closest names."""
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
    if not options:
        if spec.receptive_field is not None:
            model.receptive_field = spec.receptive_field
        if spec.tile_exact is not None:
            model.tile_exact = spec.tile_exact
        if spec.bf16_safe is not None:
            model.bf16_safe = spec.bf16_safe
        if spec.bf16_engine_scales:
            model.bf16_in_engines = scale in spec.bf16_engine_scales
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


# ---------------------------------------------------------------------------------------------
# Recognisers of the authors' released checkpoints
# ---------------------------------------------------------------------------------------------


@dataclass
class OfficialMatch:
    """A recognised foreign checkpoint: which of our models it is, and its weights in our keys."""

    arch: str
    scale: int
    folded: bool
    state_dict: dict[str, torch.Tensor]
    options: dict[str, Any] = field(default_factory=dict)


OfficialConverter = Callable[[Mapping[str, torch.Tensor]], "OfficialMatch | None"]
_OFFICIAL_CONVERTERS: list[tuple[str, OfficialConverter]] = []


def register_official_converter(family: str) -> Callable[[OfficialConverter], OfficialConverter]:
    """Decorator for a function that recognises a family's released state dicts by key names and
    tensor shapes and returns an :class:`OfficialMatch`, or None when it is not that family's."""

    def decorator(fn: OfficialConverter) -> OfficialConverter:
        _OFFICIAL_CONVERTERS.append((family, fn))
        return fn

    return decorator


def official_converters() -> list[tuple[str, OfficialConverter]]:
    """The registered (family, recogniser) pairs, in registration order."""
    return list(_OFFICIAL_CONVERTERS)


OfficialExporter = Callable[[Any], "dict[str, torch.Tensor]"]


@dataclass(frozen=True)
class OfficialLayout:
    """How to write a model in its authors' key layout: ``export(model) -> state_dict``, and
    whether that layout is the folded inference form (FMEN-S's release) or the training form."""

    export: OfficialExporter
    folded: bool


_OFFICIAL_EXPORTERS: dict[str, OfficialLayout] = {}


def register_official_exporter(
    *archs: str, folded: bool = False
) -> Callable[[OfficialExporter], OfficialExporter]:
    """Decorator for a function ``fn(model) -> state_dict`` that writes a model of ``archs`` in
    its authors' key layout (the inverse of the family's converter), for interop with their
    code and BasicSR-style tools; ``folded``: the layout holds the inference form."""

    def decorator(fn: OfficialExporter) -> OfficialExporter:
        for arch in archs:
            if arch in _OFFICIAL_EXPORTERS:
                raise RuntimeError(f"an official-layout exporter for {arch!r} registered twice")
            _OFFICIAL_EXPORTERS[arch] = OfficialLayout(fn, folded)
        return fn

    return decorator


def official_exporter(arch: str) -> OfficialLayout | None:
    """The authors' key layout of ``arch``, or None where lightsr knows none."""
    return _OFFICIAL_EXPORTERS.get(arch)


def official_exporters() -> list[str]:
    """Architectures with an authors' key layout lightsr can write."""
    return sorted(_OFFICIAL_EXPORTERS)
