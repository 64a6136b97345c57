"""Checkpoints are untrusted input: bounded memory and work, no code execution, CheckpointError
(naming the field, the value and the fix) instead of tracebacks.

The fuzz test corrupts a small lightsr checkpoint (fsrcnn x2) and official-style files of the
three families lightsr reads (A2F-SD in an old-style pickle, FMEN-S in a zip archive, IMDN in an
old-style pickle with DataParallel prefixes), in a child process whose address space is limited,
and checks every outcome: a LightSRError, or a model whose weights differ from the original's in
at most as many values as bits were flipped (and whose output is the original's when none do).

Run by hand for a longer fuzz: ``python tests/test_untrusted_checkpoints.py --fuzz DIR SEED N``.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import resource
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import lightsr
from lightsr import checkpoint
from lightsr.hardware import proc_status_kb, reset_peak_rss
from lightsr.models import a2f, fmen, imdn
from lightsr.registry import list_models, official_converters

# ---------------------------------------------------------------------------------------------
# Small files of every kind lightsr reads
# ---------------------------------------------------------------------------------------------

INPUT = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(7))


def _seeded(name: str, scale: int = 2) -> Any:
    torch.manual_seed(0)
    return lightsr.create_model(name, scale=scale)


def make_fsrcnn(path: Path) -> Path:
    lightsr.save(_seeded("fsrcnn"), path, overwrite=True)
    return path


def official_state(family: str) -> dict[str, torch.Tensor]:
    """A state dict in the authors' layout, built with the model file's own exporter."""
    if family == "a2f":
        return {k: v.clone() for k, v in a2f.to_official_state(_seeded("a2f_sd")).items()}
    if family == "fmen":
        folded = lightsr.reparameterize(_seeded("fmen_s"))
        return {k: v.clone() for k, v in fmen.to_official_state(folded).items()}
    state = imdn.to_official_state(_seeded("imdn"))
    return {"module." + k: v.clone() for k, v in state.items()}  # as the authors' files have


#: The authors' file formats: A2F and IMDN released old-style pickles, FMEN a zip archive.
LEGACY = {"a2f": True, "fmen": False, "imdn": True}


def torch_save(state: Any, path: Path, *, legacy: bool) -> Path:
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def make_official(family: str, path: Path) -> Path:
    return torch_save(official_state(family), path, legacy=LEGACY[family])


def _header(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _with_header(header: dict[str, Any], data: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


def with_metadata(src: Path, dst: Path, **fields: str) -> Path:
    """``src`` with metadata fields replaced (the tensors' bytes untouched)."""
    header, data = _header(src)
    header["__metadata__"] = {**header["__metadata__"], **fields}
    dst.write_bytes(_with_header(header, data))
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("untrusted")
    out = {"fsrcnn": make_fsrcnn(folder / "fsrcnn_x2.safetensors")}
    folded = lightsr.reparameterize(_seeded("fmen_s"))
    out["fmen_s"] = folder / "fmen_s_x2.safetensors"
    lightsr.save(folded, out["fmen_s"])
    for family in ("a2f", "fmen", "imdn"):
        out[f"official_{family}"] = make_official(family, folder / f"{family}_x2.pth")
    return out


def _error(fn: Callable[[], Any]) -> str:
    with pytest.raises(lightsr.CheckpointError) as info:
        fn()
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# The description: every field typed and bounded, named in the error with the fix
# ---------------------------------------------------------------------------------------------

HUGE_LIST = json.dumps({"attention_erbs": [1] * 10**6})


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("scale", "abc", "must be an integer scale factor"),
        ("scale", "8", r"fsrcnn supports scales \[2, 3, 4\]"),
        ("scale", "9" * 400, "must be an integer scale factor"),
        ("arch", "fsrcnnn", "unknown model 'fsrcnnn'. Did you mean fsrcnn"),
        ("arch", "", "must name a registered model"),
        ("options", "{not json", "not valid JSON"),
        ("options", "[1, 2]", "must be a JSON object"),
        ("options", '{"ggas_kernel_size": 100000}', "'ggas_kernel_size' is beyond"),
        ("options", '{"cwss_init": NaN}', "must be a finite number"),
        ("options", '{"ggas": {"a": 1}}', "must be a number, string, boolean or null"),
        ("options", '{"x": [[1]]}', "flat list of scalars"),
        ("options", HUGE_LIST, "a list of 1000000 entries, more than 256"),
        ("options", "[" * 100_000, "nested too deeply"),
        ("folded", "1", "must be true or false"),
        ("folded", "yes", "not valid JSON"),
        ("extra", "[1, 2]", "must be a JSON object"),
        ("extra", "1" * 5000, "not valid JSON"),  # int() refuses 5000 digits: a ValueError
    ],
)
def test_metadata_fields_are_checked(
    files: dict[str, Path], tmp_path: Path, field: str, value: str, problem: str
) -> None:
    forged = with_metadata(files["fsrcnn"], tmp_path / "forged.safetensors", **{field: value})
    for reader in (checkpoint.read_metadata, lightsr.load, lightsr.load_any):
        message = _error(lambda: reader(forged))  # noqa: B023 (called at once)
        assert f"checkpoint field {field!r}" in message, message
        assert re.search(problem, message), message
        assert "use an intact copy" in message  # the fix
        assert len(message) < 700  # a megabyte-long value is shown truncated


def test_missing_fields_are_named(files: dict[str, Path], tmp_path: Path) -> None:
    header, data = _header(files["fsrcnn"])
    for field in ("arch", "scale", "options", "folded"):
        meta = {k: v for k, v in header["__metadata__"].items() if k != field}
        forged = tmp_path / f"no_{field}.safetensors"
        forged.write_bytes(_with_header({**header, "__metadata__": meta}, data))
        assert f"checkpoint field {field!r} is None" in _error(lambda: lightsr.load(forged))  # noqa: B023


def test_a_valid_description_reads_back(files: dict[str, Path]) -> None:
    meta = checkpoint.read_metadata(files["fmen_s"])
    assert meta == {
        "arch": "fmen_s",
        "scale": 2,
        "options": {},
        "folded": True,
        "lightsr_version": lightsr.__version__,
        "extra": {},
    }


# ---------------------------------------------------------------------------------------------
# The safetensors header
# ---------------------------------------------------------------------------------------------


def test_header_length_is_checked_against_the_file_size(
    files: dict[str, Path], tmp_path: Path
) -> None:
    raw = files["fsrcnn"].read_bytes()
    n = int.from_bytes(raw[:8], "little")
    forged = tmp_path / "forged.safetensors"
    for declared, expected in [
        (len(raw) - 7, f"declare a {len(raw) - 7}-byte safetensors header, but the file has"),
        (10**11, "declare a 100000000000-byte"),
        (2**64 - 1, "declare a 18446744073709551615-byte"),
        (n - 8, "not a readable safetensors file"),  # safetensors' own check: not covered
        (n + 8, "not a readable safetensors file"),
    ]:
        forged.write_bytes(struct.pack("<Q", declared) + raw[8:])
        before = forged.read_bytes()
        assert expected in _error(lambda: lightsr.load(forged))  # noqa: B023
        assert forged.read_bytes() == before  # reading never writes


def test_header_larger_than_lightsr_writes_is_refused(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "_MAX_HEADER_BYTES", 64)
    assert "more than the 64 any lightsr checkpoint needs" in _error(
        lambda: lightsr.load(files["fsrcnn"])
    )


def test_header_claiming_a_100_gb_tensor(files: dict[str, Path], tmp_path: Path) -> None:
    header, data = _header(files["fsrcnn"])
    first = next(k for k in header if k != "__metadata__")
    header[first] = {"dtype": "F32", "shape": [25 * 10**9], "data_offsets": [0, 10**11]}
    forged = tmp_path / "forged.safetensors"
    forged.write_bytes(_with_header(header, data))
    assert "invalid offset" in _error(lambda: lightsr.load(forged))


def test_header_dtype_must_match_the_model(files: dict[str, Path], tmp_path: Path) -> None:
    """Same shapes in float64: twice the model's bytes, refused before loading."""
    state = {k: v.double() for k, v in load_file(str(files["fsrcnn"])).items()}
    forged = tmp_path / "f64.safetensors"
    save_file(state, str(forged), metadata=_header(files["fsrcnn"])[0]["__metadata__"])
    message = _error(lambda: lightsr.load(forged))
    assert "dtype mismatch" in message and "torch.float64 vs torch.float32" in message


# ---------------------------------------------------------------------------------------------
# Work and memory are bounded before anything is allocated
# ---------------------------------------------------------------------------------------------


def _load_bounded(path: Path) -> tuple[str, float, int | None]:
    """The error message, seconds taken and peak RSS growth (kB; None where not measurable)."""
    measurable = reset_peak_rss()
    before = proc_status_kb("VmHWM")
    start = time.perf_counter()
    message = _error(lambda: lightsr.load(path))
    seconds = time.perf_counter() - start
    after = proc_status_kb("VmHWM")
    grown = after - before if measurable and after is not None and before is not None else None
    return message, seconds, grown


@pytest.mark.parametrize(
    ("options", "folded", "expected"),
    [
        ({"channels": 6000}, "true", r"option 'channels' is beyond \+-4096"),
        ({"channels": 4096}, "true", r"takes 22709288024 bytes to build: more than 11443136, 8x"),
        ({"num_blocks": 4000}, "true", "needs more than 1072 module/tensor registrations"),
        ({"expansion": 4000}, "true", "takes 13032166894192 bytes to build: more than"),
        ({"attention_erbs": [4096] * 5}, "true", "needs more than 1072"),
        ({"attention_erbs": [1] * 10**6}, "true", "a list of 1000000 entries"),
        ({"channels": "x"}, "true", "cannot be built .TypeError"),
        ({"num_blocks": -1}, "false", "is invalid: FMEN attention_erbs needs"),
    ],
)
def test_forged_options_are_refused_before_allocating(
    files: dict[str, Path], tmp_path: Path, options: dict[str, Any], folded: str, expected: str
) -> None:
    forged = with_metadata(
        files["fmen_s"], tmp_path / "forged.safetensors", options=json.dumps(options), folded=folded
    )
    message, seconds, grown_kb = _load_bounded(forged)
    assert re.search(expected, message), message
    # Before: channels=6000 tried to allocate ~5 GB, num_blocks=4000 built for minutes.
    assert seconds < 20, seconds
    if grown_kb is not None:
        assert grown_kb < 64 * 1024, grown_kb


def test_every_registered_model_builds_within_its_budget() -> None:
    """The bounds admit every registered model: the training form on the meta device (GGAS/CWSS
    variants too) within 8192 registrations and 12 per saved tensor; for the families whose
    folds shrink the state most, the real build + fold within 12 per folded tensor. The meta
    skeleton's state is the real model's (tests/test_models.py's save/load round trip covers
    every model through lightsr.load)."""
    most = 0
    for name in [n for n in list_models() if not n.startswith("_")]:  # not test doubles
        variants: list[dict[str, Any]] = [{}]
        if name in ("carn", "edsr_baseline", "idn", "imdn", "memnet", "rcan"):
            variants.append({"ggas": True, "ggas_per_block": True, "cwss": True})
        for options in variants:
            skeleton, count = checkpoint._build(
                name, 4, options, False, meta=True, budget=8192, source="x"
            )
            assert count <= 12 * len(skeleton.state_dict()) + 256, (name, options, count)
            assert all(p.device.type == "meta" for p in skeleton.parameters())
            most = max(most, count)
    assert 3000 < most < 4000, most  # rcan with GGAS+CWSS
    samples = [("fmen_s", {}), ("a2f_l", {}), ("maffsrn", {}), ("imdn", {"ggas": True})]
    for name, options in samples:
        skeleton, meta_count = checkpoint._build(
            name, 2, options, False, meta=True, budget=8192, source="x"
        )
        real = lightsr.create_model(name, scale=2, **options)
        shapes = {k: (v.shape, v.dtype) for k, v in real.state_dict().items()}
        assert {k: (v.shape, v.dtype) for k, v in skeleton.state_dict().items()} == shapes
        folded, count = checkpoint._build(
            name, 2, options, True, meta=False, budget=8192, source="x"
        )
        n = len(folded.state_dict())
        assert meta_count <= 12 * n + 256 and count <= 7.1 * n, (name, meta_count, count, n)


def test_valid_checkpoints_still_load_bit_exactly(files: dict[str, Path]) -> None:
    for key, name in (("fsrcnn", "fsrcnn"), ("fmen_s", "fmen_s")):
        original = _seeded(name)
        original = lightsr.reparameterize(original) if key == "fmen_s" else original
        back = lightsr.load(files[key])
        for k, v in original.state_dict().items():
            assert torch.equal(v, back.state_dict()[k]), k
    for family, arch in (("a2f", "a2f_sd"), ("fmen", "fmen_s"), ("imdn", "imdn")):
        back = lightsr.load_official(files[f"official_{family}"])
        assert (back.arch_name, back.scale) == (arch, 2)
        expected = official_state(family)
        match = checkpoint.convert_official_state(
            {k.removeprefix("module."): v for k, v in expected.items()}
        )
        for k, v in match.state_dict.items():
            assert torch.equal(v, back.state_dict()[k]), k


# ---------------------------------------------------------------------------------------------
# The authors' files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "key", "expected"),
    [
        ("fmen", "head.weight", "option 'channels' is beyond +-4096"),
        ("a2f", "head.0.weight_v", "C=30000, N=8, inner width 128 is none of the released"),
        ("imdn", "module.fea_conv.weight", "IMDN checkpoint with C=30000"),
    ],
)
def test_a_30000_wide_official_conv_is_refused(
    tmp_path: Path, family: str, key: str, expected: str
) -> None:
    state = official_state(family)
    state[key] = torch.zeros(30000, 3, 3, 3)  # 3.2 MB: before, FMEN allocated ~32 GB from it
    path = torch_save(state, tmp_path / "forged.pth", legacy=LEGACY[family])
    message, seconds, grown_kb = "", 0.0, None
    measurable = reset_peak_rss()
    before = proc_status_kb("VmHWM")
    start = time.perf_counter()
    message = _error(lambda: lightsr.load_official(path))
    seconds = time.perf_counter() - start
    if measurable and before is not None:
        grown_kb = (proc_status_kb("VmHWM") or 0) - before
    assert expected in message, message
    assert seconds < 20
    if grown_kb is not None:
        assert grown_kb < 64 * 1024, grown_kb  # the file's 3.2 MB, read whole for pickles


def test_a_wider_fmen_within_bounds_is_sized_against_the_file(tmp_path: Path) -> None:
    """channels=4000 passes the option bound: the training form, built on the meta device, is
    sized against the file before anything real is built."""
    state = official_state("fmen")
    state["head.weight"] = torch.zeros(4000, 3, 3, 3)
    path = torch_save(state, tmp_path / "wide.pt", legacy=False)
    size = path.stat().st_size
    message = _error(lambda: lightsr.load_official(path))
    assert re.search(
        rf"which takes \d{{11}} bytes to build: more than {8 * size + 2**20},", message
    )


def test_shapes_are_compared_before_the_tensors_are_read(tmp_path: Path) -> None:
    """An A2F-SD x2 file described as x4, and an authors'-layout one whose tail is 3*3^2 wide:
    named shape mismatches (the training forms are compared on the meta device)."""
    state = official_state("a2f")
    state["tail.0.weight_v"] = torch.zeros(27, 16, 3, 3)
    state["skip.0.weight_v"] = torch.zeros(27, 3, 3, 3)
    path = torch_save(state, tmp_path / "x3.pth", legacy=True)
    message = _error(lambda: lightsr.load_official(path))
    assert "do not fit a2f_sd x3: shape mismatch" in message
    assert "skip.bias: (12,) vs (27,)" in message


def test_another_layout_names_the_known_families(tmp_path: Path) -> None:
    path = torch_save(
        {"features.0.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "x.pt", legacy=False
    )
    message = _error(lambda: lightsr.load_official(path))
    families = [f for f, _ in official_converters()]
    assert families == ["A2F", "FMEN", "IMDN"]
    assert f"supported: {', '.join(families)}" in message


class _Payload:
    """Unpickling this would create ``marker``: code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("legacy", [False, True])
def test_no_code_is_run_from_a_pickle(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    state = {"head.weight": torch.zeros(2), "x": _Payload(marker)}
    path = torch_save(state, tmp_path / "evil.pt", legacy=legacy)
    message = _error(lambda: lightsr.load_official(path))
    assert "(UnpicklingError: 'Trying to load unsupported GLOBAL posix.mkdir" in message, message
    assert "lightsr never unpickles" in message and "weights_only" not in message
    assert "not a lightsr checkpoint" in _error(lambda: lightsr.load_any(path))
    assert not marker.exists()


def _legacy_with_numel(numel_bytes: bytes) -> bytes:
    """An old-style file of one 54321-element tensor whose storage declares another size."""
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(54321)}, buffer, _use_new_zipfile_serialization=False)
    raw = buffer.getvalue()
    pattern = b"M" + struct.pack("<H", 54321)  # BININT2: the storage size, then the shape
    assert raw.count(pattern) == 2
    return raw.replace(pattern, numel_bytes, 1)


@pytest.mark.parametrize("numel", [2**31 - 1, 2**40])
def test_old_style_storages_larger_than_the_file_are_refused_unread(
    tmp_path: Path, numel: int
) -> None:
    """torch.load would allocate the declared size first (512 GB here: a failed allocation,
    or 8 GB of address space); the scan refuses it from the pickle alone."""
    encoded = (
        b"J" + struct.pack("<i", numel)
        if numel < 2**31
        else b"\x8a\x06" + numel.to_bytes(6, "little")
    )
    path = tmp_path / "forged.pth"
    path.write_bytes(_legacy_with_numel(encoded))
    size = path.stat().st_size
    message = _error(lambda: lightsr.load_official(path))
    assert f"declares {numel * 4} bytes of tensor storage but holds only" in message
    assert size < 300_000


def test_a_compressed_zip_entry_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "deflated.pt"
    with (
        zipfile.ZipFile(files["official_fmen"]) as src,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    assert "compressed entries" in _error(lambda: lightsr.load_official(path))


def test_views_into_storage_are_refused(tmp_path: Path) -> None:
    """A changed stride or offset would load scrambled weights without an error."""
    state = official_state("a2f")
    state["head.0.weight_v"] = torch.zeros(2 * 16 * 27)[16 * 27 :].view(16, 3, 3, 3)
    path = torch_save(state, tmp_path / "view.pth", legacy=True)
    assert "is a view into 3456 bytes of storage" in _error(lambda: lightsr.load_official(path))


def test_oversized_foreign_files_are_refused_unread(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "_MAX_FOREIGN_BYTES", 1000)
    message = _error(lambda: lightsr.load_official(files["official_imdn"]))
    assert "it reads none over 1000 bytes" in message


def test_converter_failures_become_checkpoint_errors(tmp_path: Path) -> None:
    """A recogniser meeting a malformed tensor (0-d, thousand-digit indices) names its family."""
    state = {k.removeprefix("module."): v for k, v in official_state("imdn").items()}
    state["upsampler.0.weight"] = torch.zeros(())
    with pytest.raises(lightsr.CheckpointError, match="upsampler weight has shape"):
        checkpoint.convert_official_state(state)
    state = official_state("fmen")
    state["HFABs.0.squeeze.weight"] = torch.zeros(())
    with pytest.raises(lightsr.CheckpointError, match="authors' FMEN checkpoint.*IndexError"):
        checkpoint.convert_official_state(state)
    state = official_state("a2f")
    state["body." + "9" * 5000 + ".body.0.bias"] = torch.zeros(1)
    with pytest.raises(lightsr.CheckpointError, match="unexpected"):
        lightsr.load_official(torch_save(state, tmp_path / "x.pth", legacy=True))


# ---------------------------------------------------------------------------------------------
# Fuzzing, in a child process with a bounded address space
# ---------------------------------------------------------------------------------------------

#: The child may grow its address space by this much past what it maps after loading every
#: clean file once (torch alone maps ~0.65 GB here; a clean load adds a few MB).
ADDRESS_HEADROOM = 1 * 2**30
#: ... and its resident peak by this much past the same point: 22-30 MB measured over 14 seeds
#: x 387 cases (Python objects of the forged metadata: 100k-entry lists, a 100k-character
#: arch; IMDN's 2.8 MB pickle read whole). A 30000-wide conv built for real would be ~32 GB,
#: a flipped C-pickle memo index 256 MB (the reason the scan uses the Python unpickler).
RSS_HEADROOM_KB = 96 * 1024


def _flip(data: bytes, rng: random.Random, count: int) -> tuple[bytes, int]:
    out = bytearray(data)
    for _ in range(count):
        pick = rng.random()
        if pick < 0.5:  # the headers / pickles are at the start: where structure is
            pos = rng.randrange(min(len(out), 8192))
        elif pick < 0.65:  # zip central directory
            pos = len(out) - 1 - rng.randrange(min(len(out), 2048))
        else:
            pos = rng.randrange(len(out))
        out[pos] ^= 1 << rng.randrange(8)
    return bytes(out), count


BAD_METADATA: list[tuple[str, str]] = [
    ("scale", "abc"),
    ("scale", "-2"),
    ("scale", "2.0"),
    ("scale", "99999999999999999999"),
    ("arch", "fmen"),
    ("arch", "a" * 100_000),
    ("arch", ""),
    ("options", "[]"),
    ("options", "1"),
    ("options", '{"channels": 1e308}'),
    ("options", '{"ggas_kernel_size": 1000000000}'),
    ("options", json.dumps({"ggas": [True] * 100_000})),
    ("options", '{"ggas": true, "ggas_kernel_size": 4095}'),  # in bounds: shapes refuse it
    ("options", "{" * 50_000),
    ("folded", "null"),
    ("folded", "2"),
    ("extra", "[" * 50_000),
    ("extra", "1e999999"),
    ("extra", json.dumps(list(range(100_000)))),
    ("format", "lightsr-checkpoint-v2"),
]


def _structural(state: dict[str, torch.Tensor], rng: random.Random) -> dict[str, Any]:
    """The state with one key or shape corrupted (every one of them must be refused)."""
    out: dict[str, Any] = dict(state)
    key = rng.choice(sorted(out))
    kind = rng.randrange(6)
    if kind == 0:
        del out[key]
    elif kind == 1:
        out[key + rng.choice(["_", ".x", "0"])] = out.pop(key)
    elif kind == 2:
        out["extra." + key] = out[key].clone()
    elif kind == 3:
        shape = list(out[key].shape) or [1]
        dim = rng.randrange(len(shape))
        shape[dim] = rng.choice([0, shape[dim] + 1, 30000, 3 * 5 * 5])
        numel = 1
        for n in shape:
            numel *= n
        out[key] = torch.zeros(shape if numel <= 10**6 else [30000])
    elif kind == 4:
        out[key] = out[key].to(torch.int64)
    else:
        out[key] = rng.choice([1, "x", [1, 2], None])
    return out


def _outcome(load: Callable[[], Any], reference: Any, flips: int) -> tuple[str, str]:
    """('error' | 'loaded' | 'bad', detail)."""
    try:
        model = load()
    except lightsr.LightSRError as exc:
        text = str(exc)
        if "memory" in text.lower() or "alloc" in text.lower():  # an attempt hit the limit
            return "bad", f"allocation attempted: {text[:300]}"
        return "error", text[:200]
    except BaseException as exc:  # noqa: BLE001 - what the fuzz looks for
        return "bad", f"{type(exc).__name__}: {str(exc)[:300]}"
    ours, theirs = model.state_dict(), reference.state_dict()
    if (model.arch_name, model.scale) != (reference.arch_name, reference.scale):
        return "bad", f"loaded as {model.arch_name} x{model.scale}"
    if list(ours) != list(theirs) or any(ours[k].shape != theirs[k].shape for k in ours):
        return "bad", "loaded with other keys or shapes"
    differing = sum(int((ours[k] != theirs[k]).sum()) for k in ours)
    if differing > flips:
        return "bad", f"{differing} values differ after {flips} flipped bits"
    if differing == 0:
        with torch.no_grad():
            if not torch.equal(model(INPUT), reference(INPUT)):
                return "bad", "same weights, different output"
    return "loaded", f"{differing} values differ"


def fuzz(folder: Path, seed: int, cases: int) -> dict[str, Any]:
    """Run ``cases`` corruptions of each base file; returns counts, failures and memory."""
    torch.set_num_threads(1)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    bases: dict[str, tuple[Path, Callable[[Path], Any]]] = {
        "fsrcnn": (make_fsrcnn(folder / "fsrcnn.safetensors"), lightsr.load),
    }
    for family in ("a2f", "fmen", "imdn"):
        bases[family] = (make_official(family, folder / f"{family}.pth"), lightsr.load_official)
    references = {name: load(path) for name, (path, load) in bases.items()}
    with torch.no_grad():  # the first forward maps oneDNN's kernels: not the loader's memory
        for model in references.values():
            model(INPUT)
    reset_peak_rss()
    baseline_kb = proc_status_kb("VmHWM") or 0
    limit = (proc_status_kb("VmSize") or 0) * 1024 + ADDRESS_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    counts: dict[str, int] = {"error": 0, "loaded": 0, "bad": 0}
    failures: list[str] = []
    target = folder / "case.bin"

    def run(name: str, label: str, data: bytes, flips: int, must_fail: bool) -> None:
        path, load = bases[name]
        target_path = target.with_suffix(path.suffix)
        target_path.write_bytes(data)
        kind, detail = _outcome(lambda: load(target_path), references[name], flips)
        if must_fail and kind == "loaded":
            kind, detail = "bad", f"loaded: {detail}"
        counts[kind] += 1
        if kind == "bad":
            failures.append(f"{name} {label}: {detail}")

    start = time.perf_counter()
    for name, (path, _load) in bases.items():
        raw = path.read_bytes()
        share = cases if name == "fsrcnn" else max(1, cases // 2)
        for i in range(share):
            data, flips = _flip(raw, rng, rng.choice([1, 1, 2, 4, 8]))
            run(name, f"flip#{i}", data, flips, must_fail=False)
        for i in range(max(1, share // 4)):
            run(name, f"truncate#{i}", raw[: rng.randrange(len(raw))], 0, must_fail=True)
        if name == "fsrcnn":
            n = int.from_bytes(raw[:8], "little")
            for value in (0, n - 8, n + 8, n + 1, len(raw), 10**11, 2**64 - 1, rng.getrandbits(64)):
                run(name, f"length={value}", value.to_bytes(8, "little") + raw[8:], 0, True)
            for field, value in BAD_METADATA:
                header, data = _header(path)
                header["__metadata__"][field] = value
                run(name, f"{field}={value[:20]}", _with_header(header, data), 0, must_fail=True)
        else:
            state = official_state(name)
            for i in range(max(1, share // 3)):
                buffer = io.BytesIO()
                torch.save(
                    _structural(state, rng), buffer, _use_new_zipfile_serialization=not LEGACY[name]
                )
                run(name, f"structure#{i}", buffer.getvalue(), 0, must_fail=True)
    return {
        "counts": counts,
        "failures": failures,
        "seconds": time.perf_counter() - start,
        "rss_growth_kb": (proc_status_kb("VmHWM") or 0) - baseline_kb,
        "address_limit_bytes": limit,
    }


def test_fuzzed_checkpoints_fail_cleanly_in_bounded_memory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, __file__, "--fuzz", str(tmp_path), "1234", "24"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failures"] == [], report["failures"]
    counts = report["counts"]
    assert counts["error"] > 60 and counts["loaded"] > 5, counts  # both outcomes exercised
    assert report["rss_growth_kb"] < RSS_HEADROOM_KB, report


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--fuzz":
    print(json.dumps(fuzz(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
