"""Self-describing checkpoints, and import of the authors' released files.

A lightsr checkpoint is a safetensors file whose metadata says what it holds: architecture,
its keyword options, scale, whether it is folded, the library version and any extra
information (training config, measured PSNR). ``load(path)`` needs nothing else.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)

from ._version import __version__
from .atomic import atomic_write_bytes
from .deploy import reparameterize
from .errors import CheckpointError, LightSRError
from .models.base import SRModel
from .registry import (
    OfficialMatch,
    create_model,
    get_spec,
    official_converters,
    official_exporter,
    official_exporters,
)

FORMAT_TAG = "lightsr-checkpoint-v1"


def save(
    model: SRModel,
    path: str | os.PathLike,
    *,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> None:
    """Write ``model``'s weights and description to ``path`` (safetensors, atomically).

    An existing ``path`` is replaced only with ``overwrite`` (else
    :class:`~lightsr.errors.OutputExistsError`). The file is built in memory and written from
    Python, so a full disk or a refused folder is an ``OSError`` naming ``path``.
    """
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
    # safetensors' save_file writes from Rust: a full disk would not be a clear OSError.
    atomic_write_bytes(path, safetensors_bytes(state, metadata=metadata), overwrite=overwrite)


# ---------------------------------------------------------------------------------------------
# Checkpoints are untrusted input: every bound below is checked before anything is allocated
# ---------------------------------------------------------------------------------------------

#: Our header is a few kB (rcan's 1,630 tensors: ~170 kB); safetensors itself allows 100 MB.
_MAX_HEADER_BYTES = 16 * 2**20
#: Bounds on builder options, read from every registered builder: the largest real values are
#: FMEN's widths (channels 64, attention_width 32, warmup_width 28), num_blocks 4, expansion 2,
#: attention_erbs (5 entries, each <= 2), ggas_kernel_size 7, rgb_range 255, bicubic's
#: boundary name. 4096 / 256 admit each of them many times over, and widths up to 4096 cost
#: nothing to check: the model is built on the meta device, then sized against the file.
_MAX_OPTION_INT = 4096
_MAX_OPTION_LIST = 256
_MAX_OPTION_COUNT = 64
_MAX_OPTION_STRING = 256
#: Module/parameter/buffer registrations while building a described model on the meta device
#: (what the time to build grows with: FMEN's folds take ~1-3 ms each there). The registered
#: models need at most 7 per tensor they save (FMEN folded: 477 for 68) and 3,935 in all (rcan
#: with GGAS+CWSS, folded), so a file of n tensors allows 12n + 256, and no file more than 8192.
_REGISTRATIONS_PER_TENSOR = 12
_MAX_REGISTRATIONS = 8192
#: The training form built before a fold may be larger than the folded state a file holds
#: (FMEN's RRRBs: 3.1x); more than this multiple of the file's tensor bytes is refused.
_TRAINING_FORM_FACTOR = 8
_SLACK_BYTES = 2**20

_FIX = (
    "The file is damaged, or was written neither by lightsr.save() nor by the authors' released "
    "code; use an intact copy (or re-save the model with lightsr.save())."
)

# safetensors dtype names of the dtypes torch can hold.
_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}

#: (shape, dtype) per tensor name; dtype None where the file's is one torch cannot hold.
TensorSpec = tuple[tuple[int, ...], "torch.dtype | None"]


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, truncated: a forged file's values can be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _bad_field(source: str, name: str, value: Any, problem: str) -> CheckpointError:
    return CheckpointError(
        f"{source!r}: checkpoint field {name!r} is {_show(value)}; {problem}. {_FIX}"
    )


def _check_header_length(path: Path) -> int:
    """The declared safetensors header length, checked against the file's size (and a bound)
    before anything parses it; raises CheckpointError."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        first = f.read(8)
    advice = (
        "For the authors' released .pt/.pth files use `lightsr convert` or lightsr.load_official()."
    )
    if len(first) < 8:
        raise CheckpointError(
            f"{str(path)!r} is not a lightsr checkpoint: it has {size} bytes, fewer than a "
            f"safetensors file's 8-byte header length. {advice}"
        )
    declared = int.from_bytes(first, "little")
    if declared > size - 8:
        raise CheckpointError(
            f"{str(path)!r} is not a lightsr checkpoint: its first 8 bytes declare a "
            f"{declared}-byte safetensors header, but the file has {size} bytes (truncated, or "
            f"not a safetensors file). {advice}"
        )
    if declared > _MAX_HEADER_BYTES:
        raise CheckpointError(
            f"{str(path)!r} is not a lightsr checkpoint: its safetensors header is {declared} "
            f"bytes, more than the {_MAX_HEADER_BYTES} any lightsr checkpoint needs. {_FIX}"
        )
    return declared


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, TensorSpec], int]:
    """(metadata, tensor specs, bytes of tensor data) from the header alone: no tensor is read."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    header_bytes = _check_header_length(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = dict(f.metadata() or {})
            specs: dict[str, TensorSpec] = {}
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                piece = f.get_slice(key)
                shape = tuple(int(n) for n in piece.get_shape())
                specs[key] = (shape, _SAFETENSORS_DTYPES.get(piece.get_dtype()))
    except Exception as exc:  # safetensors raises its own types for every malformed header
        raise CheckpointError(
            f"{str(path)!r} is not a lightsr checkpoint (not a readable safetensors file: "
            f"{_show(str(exc), 200)}). For the authors' released .pt/.pth files use "
            "`lightsr convert` or lightsr.load_official()."
        ) from None
    return raw, specs, path.stat().st_size - 8 - header_bytes


def _parse_json(source: str, name: str, text: Any) -> Any:
    if not isinstance(text, str):
        raise _bad_field(source, name, text, "it must be a JSON string")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested arrays
        problem = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise _bad_field(source, name, text, f"it is not valid JSON ({problem})") from None


def _check_scalar(source: str, name: str, key: str, value: Any) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > _MAX_OPTION_INT:
            raise _bad_field(
                source,
                name,
                value,
                f"option {key!r} is beyond +-{_MAX_OPTION_INT}, more than any lightsr model "
                "takes (the largest real width is 64)",
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _bad_field(source, name, value, f"option {key!r} must be a finite number")
    elif isinstance(value, str):
        if len(value) > _MAX_OPTION_STRING:
            raise _bad_field(
                source,
                name,
                value,
                f"option {key!r} is longer than {_MAX_OPTION_STRING} characters",
            )
    else:
        raise _bad_field(
            source,
            name,
            value,
            f"option {key!r} must be a number, string, boolean or null (or a short list of them)",
        )


def _bounded_options(options: Any, *, source: str, name: str = "options") -> dict[str, Any]:
    """``options`` as builder keyword arguments, or CheckpointError: a JSON object of at most
    64 names, each a JSON scalar (ints within +-4096, finite floats, strings up to 256
    characters) or a list of up to 256 scalars; anything larger describes no real model."""
    if not isinstance(options, Mapping):
        raise _bad_field(source, name, options, "it must be a JSON object of builder options")
    if len(options) > _MAX_OPTION_COUNT:
        raise _bad_field(
            source, name, options, f"it has {len(options)} entries; no model takes more than 16"
        )
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(key, str) or not key.isidentifier() or len(key) > _MAX_OPTION_STRING:
            raise _bad_field(source, name, key, "option names must be Python identifiers")
        if isinstance(value, (list, tuple)):
            if len(value) > _MAX_OPTION_LIST:
                raise _bad_field(
                    source,
                    name,
                    value,
                    f"option {key!r} is a list of {len(value)} entries, more than "
                    f"{_MAX_OPTION_LIST} (the longest real one, FMEN's attention_erbs, has 5)",
                )
            for item in value:
                if isinstance(item, (list, tuple, Mapping)):
                    raise _bad_field(
                        source, name, value, f"option {key!r} must be a flat list of scalars"
                    )
                _check_scalar(source, name, key, item)
            checked[key] = list(value)
        else:
            _check_scalar(source, name, key, value)
            checked[key] = value
    return checked


def _parse_description(raw: Mapping[str, str], *, source: str) -> dict[str, Any]:
    """Type- and range-check a lightsr header's metadata; CheckpointError names the field."""
    if raw.get("format") != FORMAT_TAG:
        raise CheckpointError(
            f"{source!r} is a safetensors file without lightsr metadata; it cannot say which "
            "model it holds. Save checkpoints with lightsr.save()."
        )
    arch = raw.get("arch")
    if not isinstance(arch, str) or not arch or len(arch) > _MAX_OPTION_STRING:
        raise _bad_field(source, "arch", arch, "it must name a registered model")
    try:
        spec = get_spec(arch)
    except LightSRError as exc:
        raise _bad_field(source, "arch", arch, str(exc).rstrip(".")) from None
    scale_text = raw.get("scale")
    if not isinstance(scale_text, str) or not re.fullmatch(r"[0-9]{1,3}", scale_text):
        raise _bad_field(source, "scale", scale_text, "it must be an integer scale factor")
    scale = int(scale_text)
    if scale not in spec.scales:
        raise _bad_field(
            source, "scale", scale_text, f"{spec.name} supports scales {list(spec.scales)}"
        )
    options = _bounded_options(
        _parse_json(source, "options", raw.get("options")), source=source, name="options"
    )
    folded = _parse_json(source, "folded", raw.get("folded"))
    if not isinstance(folded, bool):
        raise _bad_field(source, "folded", raw.get("folded"), "it must be true or false")
    extra = _parse_json(source, "extra", raw.get("extra", "{}"))
    if not isinstance(extra, dict):
        raise _bad_field(source, "extra", raw.get("extra"), "it must be a JSON object")
    version = raw.get("lightsr_version", "?")
    return {
        "arch": spec.name,
        "scale": scale,
        "options": options,
        "folded": folded,
        "lightsr_version": version if isinstance(version, str) else "?",
        "extra": extra,
    }


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded, type- and range-checked description of a lightsr checkpoint (keys arch,
    scale, options, folded, lightsr_version, extra); CheckpointError names a bad field."""
    path = Path(path)
    raw, _specs, _data_bytes = _read_header(path)
    return _parse_description(raw, source=str(path))


class _BuildBudgetExceeded(Exception):
    """Raised from the registration hooks: the description builds more than it may."""


def _state_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _describe_mismatch(own: Mapping[str, TensorSpec], theirs: Mapping[str, TensorSpec]) -> str:
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shared = sorted(set(own) & set(theirs))
    wrong = [k for k in shared if own[k][0] != theirs[k][0]]
    dtype = [k for k in shared if own[k][0] == theirs[k][0] and own[k][1] != theirs[k][1]]
    parts = []
    if missing:
        parts.append(f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}")
    if unexpected:
        parts.append(
            f"unexpected [{', '.join(_show(k, 80) for k in unexpected[:4])}]"
            f"{'...' if len(unexpected) > 4 else ''}"
        )
    if wrong:
        parts.append(
            "shape mismatch "
            + ", ".join(f"{k}: {_show(theirs[k][0], 80)} vs {own[k][0]}" for k in wrong[:3])
        )
    if dtype:
        parts.append(
            "dtype mismatch " + ", ".join(f"{k}: {theirs[k][1]} vs {own[k][1]}" for k in dtype[:3])
        )
    return "; ".join(parts)


def _build(
    arch: str,
    scale: int,
    options: Mapping[str, Any],
    folded: bool,
    *,
    meta: bool,
    budget: int,
    source: str,
) -> tuple[SRModel, int]:
    """The described model (on the meta device: no parameter memory) and the registrations it
    took; building stops with CheckpointError after ``budget`` module/parameter/buffer
    registrations, and a builder's failure on bad option values is a CheckpointError too."""
    owner, count = threading.get_ident(), 0

    def hook(*_args: Any) -> None:
        nonlocal count
        if threading.get_ident() == owner:  # the hooks are global; count this thread only
            count += 1
            if count > budget:
                raise _BuildBudgetExceeded

    handles = [
        register_module_module_registration_hook(hook),
        register_module_parameter_registration_hook(hook),
        register_module_buffer_registration_hook(hook),
    ]
    described = f"{arch} x{scale} with options {_show(dict(options), 120)}"
    try:
        with torch.device("meta" if meta else "cpu"):
            model = create_model(arch, scale=scale, **dict(options))
        if folded:
            model = reparameterize(model, inplace=True)
    except _BuildBudgetExceeded:
        raise CheckpointError(
            f"{source!r} describes {described}, whose construction needs more than {budget} "
            "module/tensor registrations (a file of n tensors allows 12n + 256, at most "
            f"{_MAX_REGISTRATIONS}; the registered models need at most 7 per tensor). {_FIX}"
        ) from None
    except LightSRError as exc:
        raise CheckpointError(
            f"{source!r} describes {described}, which is invalid: {exc}"
        ) from None
    except Exception as exc:  # a builder given option values of the wrong type
        raise CheckpointError(
            f"{source!r} describes {described}, which cannot be built "
            f"({type(exc).__name__}: {_show(str(exc), 200)}). {_FIX}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    return model, count


def _check_state(
    model: SRModel, expected: Mapping[str, TensorSpec], *, exact_dtype: bool, source: str
) -> None:
    own: dict[str, TensorSpec] = {
        k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()
    }
    theirs = dict(expected)
    if not exact_dtype:  # authors' files: any float dtype loads into a float tensor
        own = {k: (s, _kind(d)) for k, (s, d) in own.items()}
        theirs = {k: (s, _kind(d)) for k, (s, d) in theirs.items()}
    problems = _describe_mismatch(own, theirs)
    if problems:
        raise CheckpointError(
            f"weights in {source!r} do not fit {model.arch_name} x{model.scale}: {problems}. The "
            "file belongs to another architecture, variant or scale, or is damaged."
        )


def build_from_description(
    arch: str,
    scale: int,
    options: Mapping[str, Any],
    folded: bool,
    *,
    expected_state: Mapping[str, TensorSpec] | None = None,
    exact_dtype: bool = True,
    max_bytes: int | None = None,
    budget: int = _MAX_REGISTRATIONS,
    source: str = "<description>",
) -> SRModel:
    """An untrained model with exactly the structure a checkpoint with this description holds.

    The description is untrusted. The options are bounded (:func:`_bounded_options`); the
    training form is built first on the meta device (no memory) within ``budget``
    module/tensor registrations, and must take at most ``max_bytes``; its state is compared
    with ``expected_state`` (names, shapes, and dtypes: exactly, or float vs non-float when not
    ``exact_dtype``). Only then is the real model built. A folded description is folded for
    real, after that size check, and its state compared then: folding on the meta device works
    for every registered model, but its first call imports torch's Python meta kernels (dynamo,
    sympy: ~3 s and ~80 MB here), more than the real fold of a bounded model costs. Raises
    CheckpointError.
    """
    options = _bounded_options(options, source=source)
    skeleton, _ = _build(arch, scale, options, False, meta=True, budget=budget, source=source)
    training_bytes = _state_bytes(skeleton)
    if max_bytes is not None and training_bytes > max_bytes:
        raise CheckpointError(
            f"{source!r} describes {arch} x{scale} with options {_show(dict(options), 120)}, "
            f"which takes {training_bytes} bytes to build: more than {max_bytes}, "
            f"{_TRAINING_FORM_FACTOR}x the tensor data the file holds. {_FIX}"
        )
    if expected_state is not None and not folded:
        _check_state(skeleton, expected_state, exact_dtype=exact_dtype, source=source)
    del skeleton
    model, _ = _build(arch, scale, options, folded, meta=False, budget=budget, source=source)
    if expected_state is not None and folded:
        _check_state(model, expected_state, exact_dtype=exact_dtype, source=source)
    return model


def _kind(dtype: torch.dtype | None) -> torch.dtype | None:
    """float32 for every floating dtype (the copy into the model converts), else ``dtype``."""
    return torch.float32 if dtype is not None and dtype.is_floating_point else dtype


def load(
    path: str | os.PathLike,
    *,
    expect_arch: str | None = None,
    expect_scale: int | None = None,
    map_location: str | torch.device = "cpu",
) -> SRModel:
    """Load a lightsr checkpoint into the model it describes (in eval mode).

    ``expect_arch``/``expect_scale`` turn a checkpoint of another model or scale into a clear
    error instead of a wrong result. The file is untrusted: its header (description, tensor
    names, shapes and dtypes) is checked against the described model, built first on the meta
    device, before any memory is allocated; a bad file raises CheckpointError.
    """
    path = Path(path)
    raw, specs, data_bytes = _read_header(path)
    meta = _parse_description(raw, source=str(path))
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
    model = build_from_description(
        meta["arch"],
        meta["scale"],
        meta["options"],
        meta["folded"],
        expected_state=specs,
        max_bytes=_TRAINING_FORM_FACTOR * data_bytes + _SLACK_BYTES,
        budget=min(_MAX_REGISTRATIONS, _REGISTRATIONS_PER_TENSOR * len(specs) + 256),
        source=str(path),
    )
    try:
        state = load_file(str(path), device=str(map_location))
    except Exception as exc:  # the file changed since its header was read, or a bad device
        raise CheckpointError(
            f"{str(path)!r} could not be read ({type(exc).__name__}: {_show(str(exc), 200)})."
        ) from None
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


#: The authors' files are 1-3 MB (IMDN's, the largest, 2.9 MB); files read whole (old pickles,
#: safetensors) or mapped are refused past this, before anything is unpickled.
_MAX_FOREIGN_BYTES = 2**30
#: An old-style (non-zip) torch.save file starts with this pickled number.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: Old-style pickles of state dicts are ~150 bytes per tensor; the scan reads at most this.
_MAX_LEGACY_PICKLES = 64 * 2**20
_STORAGE_ITEM_BYTES = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
}


class _Stub:
    """Stands for every global a scanned pickle names: nothing is imported, nothing called."""

    name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _StorageScanner(pickle._Unpickler):
    """Reads a pickle's structure with every global replaced by a :class:`_Stub`, recording the
    byte sizes that old-style torch files declare for their storages (torch would allocate
    those before reading them).

    The pure-Python unpickler, not the C one: its memo is a dict, where the C one grows an
    array to the largest index a pickle names (a flipped 4-byte memo index: 256 MB, zeroed)."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self.storage_bytes: dict[str, int] = {}

    def find_class(self, module: str, name: str) -> type[_Stub]:
        return type("_Global", (_Stub,), {"name": f"{module}.{name}"[:200]})

    def persistent_load(self, pid: Any) -> None:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {_show(pid)}")
        kind, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"storage size {_show(numel)}")
        item = _STORAGE_ITEM_BYTES.get(str(getattr(kind, "name", "")).rsplit(".", 1)[-1], 8)
        self.storage_bytes[str(key)[:200]] = numel * item


def _check_legacy_pickle(path: Path, size: int) -> None:
    """An old-style torch.save file (magic, protocol, system info, state, storage keys, then the
    raw storages): read its pickles without building anything, and refuse declared storages
    the file cannot hold, before torch.load allocates them."""
    with open(path, "rb") as f:
        head = io.BytesIO(f.read(min(size, _MAX_LEGACY_PICKLES)))
    scanner = _StorageScanner(head)
    try:
        if scanner.load() != _LEGACY_MAGIC:
            raise pickle.UnpicklingError("no torch.save magic number")
        for _ in range(4):  # protocol version, system info, the state, the storage keys
            scanner.load()
    except Exception as exc:  # any malformed or truncated pickle
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch checkpoint (neither a zip archive nor an "
            f"intact old-style torch.save file: {type(exc).__name__}: {_show(str(exc), 120)})."
            " Check that it is the authors' released file, completely downloaded."
        ) from None
    declared = sum(scanner.storage_bytes.values())
    if declared + 8 * len(scanner.storage_bytes) > size - head.tell():
        raise CheckpointError(
            f"{str(path)!r} declares {declared} bytes of tensor storage but holds only "
            f"{size - head.tell()} after its pickles: it is truncated or forged. Check that it "
            "is the authors' released file, completely downloaded."
        )


def _check_zip(path: Path, size: int) -> None:
    """torch.save's zip archives store their entries uncompressed, with CRCs: a compressed entry
    (a zip bomb), entries larger than the file or a failed CRC are refused before torch reads
    any."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            stored = all(e.compress_type == zipfile.ZIP_STORED for e in entries)
            # CRC of every entry (read in 1 MB chunks): torch maps records by their headers'
            # offsets and never checks, so a flipped length there loads shifted weights.
            damaged = archive.testzip() if stored else None
    except Exception as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch checkpoint (a damaged zip archive: "
            f"{_show(str(exc), 120)}). Check that it is completely downloaded."
        ) from None
    if damaged is not None:
        raise CheckpointError(
            f"{str(path)!r} is damaged: its entry {_show(damaged)} fails the zip archive's CRC "
            "check. Use an intact copy (download it again)."
        )
    packed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    total = sum(e.file_size for e in entries)
    if packed or total > size:
        problem = (
            f"compressed entries {_show(packed[:3])}"
            if packed
            else f"entries of {total} bytes in {size}"
        )
        raise CheckpointError(
            f"{str(path)!r} is not a torch.save archive lightsr reads ({problem}; torch.save "
            "stores its entries uncompressed). Check that it is the authors' released file."
        )


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


def _read_foreign_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an authors' file, read without running any code (``weights_only``) and
    within bounds: zip archives are memory-mapped, old-style pickles and safetensors files are
    size-checked first. Tensors keep the file's dtypes (the load into the model converts)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    size = path.stat().st_size
    if size > _MAX_FOREIGN_BYTES:
        raise CheckpointError(
            f"{str(path)!r} is {size} bytes; the authors' released checkpoints lightsr reads are "
            f"a few MB, and it reads none over {_MAX_FOREIGN_BYTES} bytes. Check the path."
        )
    kind = "safetensors" if path.suffix == ".safetensors" else "legacy"
    if kind == "safetensors":
        _check_header_length(path)
    elif _starts_with(path, b"PK\x03\x04"):  # torch.load's own test for its zip format
        kind = "zip"
        _check_zip(path, size)
    else:
        _check_legacy_pickle(path, size)  # old-style files cannot be mapped: read whole
    try:
        obj: Any
        if kind == "safetensors":
            obj = load_file(str(path))
        else:
            # mmap (zip archives only): storages are views of the file, paged in when copied
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=kind == "zip")
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False, i.e. running the file's code: not ours.
        reason = [p for p in str(exc).split("\n\n") if p.strip() and "weights_only" not in p]
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch checkpoint (UnpicklingError: "
            f"{_show((reason or [str(exc)])[0].strip(), 200)}). It holds Python objects besides "
            "tensors and plain containers, which lightsr never unpickles (they can run code); "
            "use the authors' released weights file."
        ) from None
    except Exception as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch checkpoint "
            f"({type(exc).__name__}: {_show(str(exc), 200)})."
        ) from None
    # Common wrappers: {"params": sd}, {"params_ema": sd}, {"state_dict": sd}, {"model": sd}.
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if (
        not isinstance(obj, Mapping)
        or not all(isinstance(k, str) for k in obj)
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        raise CheckpointError(
            f"{str(path)!r} does not hold a state dict of named tensors. Check that it is the "
            "authors' released weights file."
        )
    # torch.save writes a state dict's tensors each in its own storage, as the authors' files
    # are; a view (a changed offset or stride) would load scrambled weights without an error.
    for key, value in obj.items():
        nbytes = value.numel() * value.element_size()
        if (
            not value.is_contiguous()
            or value.storage_offset() != 0
            or value.untyped_storage().nbytes() != nbytes
        ):
            raise CheckpointError(
                f"{str(path)!r}: tensor {_show(key)} of shape {tuple(value.shape)} is a view into "
                f"{value.untyped_storage().nbytes()} bytes of storage (offset "
                f"{value.storage_offset()}, strides {value.stride()}), not a tensor of its own "
                "as torch.save writes them: the file is damaged or forged. Use an intact copy."
            )
    # DataParallel prefixes
    return {k.removeprefix("module."): v for k, v in obj.items()}


def convert_official_state(
    state: Mapping[str, torch.Tensor], *, source: str = "<state>"
) -> OfficialMatch:
    """Recognise a foreign state dict; raise CheckpointError naming what is supported.

    Recognisers read key names and shapes only; one that fails on a malformed file (an
    exception other than CheckpointError) is reported as a CheckpointError naming its family.
    """
    converters = official_converters()
    families = ", ".join(f for f, _ in converters)
    for family, fn in converters:
        try:
            match = fn(state)
        except LightSRError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"{source!r} has the keys of an authors' {family} checkpoint, but its tensors do "
                f"not fit that layout ({type(exc).__name__}: {_show(str(exc), 120)}). The file is "
                f"damaged or from a modified network; lightsr reads the released {families} files."
            ) from None
        if match is not None:
            return match
    sample = ", ".join(_show(k, 60) for k in list(state)[:4])
    raise CheckpointError(
        f"{source!r} is not a released checkpoint lightsr recognises (supported: {families}); "
        f"its first keys are {sample}."
    )


def load_official(path: str | os.PathLike) -> SRModel:
    """Load an authors' released checkpoint (A2F any variant/scale, FMEN/FMEN-S inference files,
    IMDN) into our model, recognising it from key names and tensor shapes. Returns an eval-mode
    model.

    The file is untrusted: nothing is unpickled but tensors and plain containers, its size and
    declared storages are bounded, and the recognised options and converted shapes are checked
    against the model built on the meta device before any real model is built.
    """
    path = Path(path)
    state = _read_foreign_state(path)
    match = convert_official_state(state, source=str(path))
    size = path.stat().st_size
    model = build_from_description(
        match.arch,
        match.scale,
        match.options,
        match.folded,
        expected_state={k: (tuple(v.shape), v.dtype) for k, v in match.state_dict.items()},
        exact_dtype=False,
        max_bytes=_TRAINING_FORM_FACTOR * size + _SLACK_BYTES,
        budget=min(_MAX_REGISTRATIONS, _REGISTRATIONS_PER_TENSOR * len(state) + 256),
        source=str(path),
    )
    _load_state_strict(model, match.state_dict, source=str(path))
    model.checkpoint_extra = {"converted_from": path.name}
    return model.eval()


def _has_lightsr_description(path: Path) -> bool:
    try:
        return _read_header(path)[0].get("format") == FORMAT_TAG
    except CheckpointError:
        return False


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
        if not path.is_file() or _has_lightsr_description(path):
            raise  # a damaged lightsr checkpoint: not worth reading whole as an authors' file
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


def official_state(model: SRModel) -> dict[str, torch.Tensor]:
    """``model``'s weights in its authors' key layout (folded first where their releases are the
    inference form), the inverse of :func:`load_official`: lightsr -> official -> lightsr is
    bit-exact. Raises CheckpointError for architectures without an official layout."""
    layout = official_exporter(model.arch_name)
    if layout is None:
        raise CheckpointError(
            f"{model.arch_name} has no authors' key layout lightsr can write (it can for "
            f"{', '.join(official_exporters())}); save it with lightsr.save instead."
        )
    if layout.folded and not model.folded:
        model = reparameterize(model)
    return layout.export(model)


def save_basicsr(model: SRModel, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write ``{"params_ema": state_dict}`` in the authors' key layout as a ``.pth`` (the form
    BasicSR-style tools load), atomically; an existing ``path`` is kept unless ``overwrite``."""
    state = {k: v.detach().contiguous().cpu().clone() for k, v in official_state(model).items()}
    buffer = io.BytesIO()
    torch.save({"params_ema": state}, buffer)  # in memory: a full disk is an OSError, not abort
    atomic_write_bytes(path, buffer.getvalue(), overwrite=overwrite)


__all__ = [
    "build_from_description",
    "convert_official_state",
    "load",
    "load_any",
    "load_official",
    "read_metadata",
    "save",
]
