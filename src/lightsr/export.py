"""Export to ONNX, TorchScript and OpenVINO IR, from the folded (inference) model, with a
parity check.

Both formats take float32 RGB in [0, 1], NCHW, any height and width (at least the model's
``min_input_size``), and return float32 RGB (unclamped) at ``scale`` times the size, like the
PyTorch model. Next to the exported file a JSON sidecar (``<file>.json``) records what it is and
the largest absolute difference from PyTorch at two input sizes (the second not the one traced,
so a size baked into the graph shows up as a failure).

- ONNX: the TorchScript-based exporter (``dynamo=False``; the dynamo exporter needs
  ``onnxscript``), opset 17, dynamic axes ``height``/``width``. torch's exporter itself needs the
  ``onnx`` package; the parity check needs ``onnxruntime`` and is recorded as skipped, with the
  reason, without it (``pip install lightsr[onnx]`` installs both).
- TorchScript: ``torch.jit.trace`` of the folded model (``SRModel.check_input`` is skipped while
  tracing), checked at another size.
- OpenVINO IR (``lightsr export --openvino``; ``<name>.xml`` and its weights ``<name>.bin``):
  the ONNX export converted by OpenVINO (``pip install lightsr[openvino]``), weights kept in
  fp32 (OpenVINO's ``save_model`` would halve them to fp16 by default), dynamic height and
  width; checked by OpenVINO's CPU plugin at f32 (its default on a CPU with native bf16 would
  be bf16), as ``lightsr upscale --backend openvino`` runs it. The .bin is published before
  the .xml that names it, each atomically.

Both files describe themselves (:func:`export_metadata`; read back with
:func:`read_export_metadata`): architecture, builder options, scale, input/output range and
layout, the lightsr version, the sha256 of the source weights and, for named weights, their name.
ONNX holds them as ``metadata_props`` (``onnxruntime``:
``session.get_modelmeta().custom_metadata_map``), OpenVINO IR in its ``rt_info`` under
``lightsr`` (``core.read_model(path).get_rt_info(["lightsr"]).value``), TorchScript as the
extra file
``lightsr_metadata.json`` (``torch.jit.load(path, _extra_files={"lightsr_metadata.json": ""})``;
libtorch: ``torch::jit::load(path, device, extra_files)``). The check reads them back from the
written file and fails when they differ from what was meant to be written.

**int8** (``precision="int8"``; ``lightsr export --weights NAME_int8 --onnx``): the statically
quantized QDQ graph of :func:`lightsr.quantize.quantize_int8`, the one ``lightsr upscale
--precision int8`` runs (made, or read from lightsr's cache, with the same settings), written
as ONNX or OpenVINO IR (TorchScript cannot hold it) with ``precision: int8`` in its metadata.
Its parity is checked against that quantized graph run in memory by the same engine (ONNX
Runtime for ONNX, OpenVINO for IR): the written file must compute the same values (what int8
costs against fp32 is measured on images, docs/ZOO.md, not here).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .atomic import atomic_write_bytes
from .deploy import reparameterize
from .errors import LightSRError, OutputExistsError
from .hub import cache_dir
from .models.base import SRModel
from .quantize import (
    ONNX_OPSET,
    Int8Model,
    onnx_graph_bytes,
    openvino_core,
    openvino_runner,
    quantize_int8,
)

#: The section of an OpenVINO IR's rt_info that holds lightsr's metadata.
OPENVINO_METADATA_SECTION = "lightsr"

FORMATS = ("onnx", "torchscript", "openvino")
#: What :func:`export_model` writes: the fp32 folded model, or its int8 quantization (ONNX).
EXPORT_PRECISIONS = ("fp32", "int8")
#: The TorchScript extra file holding the metadata (JSON object of strings).
TORCHSCRIPT_METADATA_FILE = "lightsr_metadata.json"
INPUT_RANGE = "[0, 1]"
INPUT_LAYOUT = "NCHW float32 RGB"
OUTPUT_RANGE = "[0, 1], unclamped (clamp before converting to 8 bits)"
OUTPUT_LAYOUT = "NCHW float32 RGB, scale x the input height and width"
#: Largest acceptable |exported - PyTorch| on the [0, 1] output scale.
PARITY_TOLERANCE = 1e-4


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and how closely the export matches PyTorch."""

    path: str
    format: str
    arch: str
    scale: int
    params: int
    input: dict[str, Any]
    output: dict[str, Any]
    parity: list[dict[str, Any]] = field(default_factory=list)
    parity_status: str = "skipped"  # "ok", "failed", or "skipped: <reason>"
    tolerance: float = PARITY_TOLERANCE
    versions: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    metadata_status: str = "skipped"  # "ok", "failed: <what differs>", or "skipped: <reason>"
    precision: str = "fp32"
    #: For int8: what was quantized and how (:class:`lightsr.quantize.Int8Report`).
    int8: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """False only when a check ran and failed: the parity exceeded the tolerance, or the
        metadata read back from the file is not what was written."""
        return self.parity_status != "failed" and not self.metadata_status.startswith("failed")


def export_metadata(
    model: SRModel,
    *,
    source_sha256: str | None = None,
    weights: str | None = None,
    precision: str = "fp32",
) -> dict[str, str]:
    """What an exported file says about itself (string keys and values, as ONNX's
    ``metadata_props`` hold them): ``arch``, ``options`` (JSON of the builder options),
    ``scale``, ``form`` ("folded"), ``input_range``, ``input_layout``, ``output_range``,
    ``output_layout``, ``lightsr_version``, and when known ``source_sha256`` (of the weights file
    the model was read from; for named weights, the published file's) and ``weights`` (the
    name). Unknown ones default to what the model's checkpoint recorded (``lightsr.load`` of
    named weights records both); random weights have neither. An int8 export also says
    ``precision`` ("int8"; fp32 files carry no such key); a blend of named weights
    (``--denoise-strength``) says ``denoise_strength`` and ``blended_with``."""
    extra = dict(getattr(model, "checkpoint_extra", None) or {})
    sha = source_sha256 or extra.get("source_sha256")
    name = weights or extra.get("weights")
    meta = {
        "arch": str(getattr(model, "arch_name", type(model).__name__)),
        "options": json.dumps(dict(getattr(model, "arch_options", {}) or {}), sort_keys=True),
        "scale": str(int(model.scale)),
        "form": "folded",
        "input_range": INPUT_RANGE,
        "input_layout": INPUT_LAYOUT,
        "output_range": OUTPUT_RANGE,
        "output_layout": OUTPUT_LAYOUT,
        "lightsr_version": __version__,
    }
    if sha:
        meta["source_sha256"] = str(sha)
    if name:
        meta["weights"] = str(name)
    if "denoise_strength" in extra:  # a photo model blended with its clean partner
        meta["denoise_strength"] = f"{float(extra['denoise_strength']):g}"
        meta["blended_with"] = str(extra.get("blended_with", ""))
    if precision != "fp32":
        meta["precision"] = precision
    return meta


def read_export_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a file written by :func:`export_model` (see :func:`export_metadata`),
    from an ONNX file's ``metadata_props``, an OpenVINO IR's ``rt_info`` (a ``.xml`` file) or a
    TorchScript file's extra file. The TorchScript archive is read as a zip (no module is
    loaded); ONNX needs the ``onnx`` package, IR the ``openvino`` one.

    Raises :class:`~lightsr.errors.LightSRError` for a file that is neither, or that holds no
    lightsr metadata (exported by another tool or an older lightsr)."""
    path = Path(path)
    if not path.is_file():
        raise LightSRError(f"{str(path)!r} does not exist (or is not a file).")
    if path.suffix.lower() == ".xml":
        return _read_openvino_metadata(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [
                n for n in archive.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_METADATA_FILE}")
            ]
            if not names:
                raise LightSRError(
                    f"{str(path)!r} is a TorchScript (zip) file without lightsr metadata: it was "
                    "not written by `lightsr export` (or by an older lightsr): export it again."
                )
            raw = archive.read(names[0]).decode("utf-8")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise LightSRError(
                f"the lightsr metadata of {str(path)!r} is not JSON ({exc}): export it again."
            ) from None
        if not isinstance(data, dict):
            raise LightSRError(f"the lightsr metadata of {str(path)!r} is not a JSON object.")
        return {str(k): str(v) for k, v in data.items()}
    try:
        import onnx
    except ImportError:
        raise LightSRError(
            f"{str(path)!r} is not a TorchScript file; reading an ONNX file's metadata needs the "
            "onnx package: pip install onnx  (or lightsr[onnx])."
        ) from None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError types
        raise LightSRError(
            f"{str(path)!r} is neither a TorchScript nor an ONNX file ({type(exc).__name__}: "
            f"{exc})."
        ) from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if "arch" not in meta:
        raise LightSRError(
            f"{str(path)!r} holds no lightsr metadata: it was not written by `lightsr export`; "
            "export it again."
        )
    return meta


def _read_openvino_metadata(path: Path) -> dict[str, str]:
    core = openvino_core(f"reading {str(path)!r} (an OpenVINO IR)")
    try:
        model = core.read_model(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own exception types
        raise LightSRError(
            f"{str(path)!r} is not an OpenVINO IR that OpenVINO can read (with its .bin "
            f"beside it): {type(exc).__name__}: {exc}"
        ) from None
    if not model.has_rt_info([OPENVINO_METADATA_SECTION, "arch"]):
        raise LightSRError(
            f"{str(path)!r} holds no lightsr metadata: it was not written by `lightsr export`; "
            "export it again."
        )
    section = model.get_rt_info([OPENVINO_METADATA_SECTION]).value
    return {str(k): str(v) for k, v in section.items()}


def _metadata_difference(written: dict[str, str], read: dict[str, str]) -> str:
    keys = sorted(set(written) | set(read))
    diffs = [
        f"{k}: wrote {written.get(k)!r}, read {read.get(k)!r}"
        for k in keys
        if written.get(k) != read.get(k)
    ]
    return "; ".join(diffs)


def _sizes(model: SRModel) -> tuple[tuple[int, int], tuple[int, int]]:
    # Traced at the first size, checked at both; the second is non-square and odd so that a
    # height/width mix-up or a baked-in size cannot pass.
    m = max(int(getattr(model, "min_input_size", 1)), 1)
    return (max(32, m), max(32, m)), (max(45, m + 7), max(61, m + 19))


def _inputs(sizes: tuple[tuple[int, int], ...]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(1, 3, h, w, generator=g) for h, w in sizes]


def export_model(
    model: SRModel,
    path: str | os.PathLike,
    *,
    format: str | None = None,
    opset: int = ONNX_OPSET,
    check: bool = True,
    overwrite: bool = False,
    source_sha256: str | None = None,
    weights: str | None = None,
    precision: str = "fp32",
    calibration: Any = None,
) -> ExportReport:
    """Fold ``model`` and export it to ``path`` (format from ``format`` or the suffix:
    ``.onnx`` -> ONNX, ``.pt``/``.ts``/``.torchscript`` -> TorchScript, ``.xml`` -> OpenVINO IR,
    with its weights in the ``.bin`` beside it); write the JSON sidecar
    ``<path>.json`` and return its content as an :class:`ExportReport`.

    The file carries :func:`export_metadata` (``source_sha256``: of the weights file;
    ``weights``: their name, when named). With ``check``, the metadata is read back from the
    written file (``metadata_status``) and the outputs compared with PyTorch's
    (``parity_status``); either failing makes ``report.ok`` False.

    ``precision``: "fp32" (the folded model as it is) or "int8" (ONNX or IR: the quantized
    graph ``lightsr upscale --precision int8`` runs, see the module docstring); ``calibration``:
    what int8 calibrates on, as :func:`lightsr.quantize.quantize_int8` takes it (None: generated
    patches, the graph ``upscale`` runs by default).

    An existing ``path`` or sidecar is replaced only with ``overwrite`` (else
    :class:`~lightsr.errors.OutputExistsError`, before anything is exported). Both files are
    serialised in memory and written from Python, so a full disk is an ``OSError`` naming the
    file (onnx's own file writer aborts the process)."""

    path = Path(path)
    fmt = format or _format_from_suffix(path)
    if fmt not in FORMATS:
        raise LightSRError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}.")
    if precision not in EXPORT_PRECISIONS:
        raise LightSRError(
            f"export precision {precision!r} is not one of {', '.join(EXPORT_PRECISIONS)}."
        )
    if precision == "int8" and fmt == "torchscript":
        raise LightSRError(
            "int8 exports to ONNX or OpenVINO IR only (the quantized QDQ graph the engines "
            "run): use --onnx or --openvino, or export the fp32 weights to TorchScript."
        )
    if fmt == "openvino" and path.suffix.lower() != ".xml":
        raise LightSRError(
            f"an OpenVINO IR is a .xml file with its weights in a .bin beside it: name it "
            f"{path.with_suffix('.xml').name!r}, not {path.name!r}."
        )
    if precision == "int8" and opset != ONNX_OPSET:
        raise LightSRError(f"the int8 graph is made at opset {ONNX_OPSET}: drop --opset {opset}.")
    sidecar = path.with_name(path.name + ".json")
    written = [path, sidecar] + ([path.with_suffix(".bin")] if fmt == "openvino" else [])
    taken = [str(p) for p in written if os.path.lexists(p)]
    if taken and not overwrite:
        raise OutputExistsError(
            f"{', '.join(repr(t) for t in taken)} exist{'s' if len(taken) == 1 else ''} and "
            "lightsr replaces files only when told to: pass --overwrite (overwrite=True in "
            "Python) or choose another -o."
        )
    folded = reparameterize(model).cpu().float().eval()
    for p in folded.parameters():
        p.requires_grad_(False)
    sizes = _sizes(folded)
    xs = _inputs(sizes)
    with torch.no_grad():
        refs = [folded(x) for x in xs]
    quantized: Int8Model | None = None
    if precision == "int8":
        # the settings and cache of Upscaler(precision="int8"): the graph `upscale` runs
        quantized = quantize_int8(
            folded, calibration=calibration, cache_dir=cache_dir() / "int8", isolate=True
        )
        refs = [quantized(x) for x in xs]

    s = folded.scale
    report = ExportReport(
        path=str(path),
        format=fmt,
        arch=getattr(folded, "arch_name", type(folded).__name__),
        scale=s,
        params=sum(p.numel() for p in folded.parameters()),
        input={
            "name": "lr",
            "shape": ["N", 3, "height", "width"],
            "dtype": "float32",
            "range": "RGB in [0, 1]",
            "min_size": int(getattr(folded, "min_input_size", 1)),
        },
        output={
            "name": "sr",
            "shape": ["N", 3, f"{s}*height", f"{s}*width"],
            "dtype": "float32",
            "range": "RGB in [0, 1], unclamped",
        },
        versions={"lightsr": __version__, "torch": torch.__version__},
        metadata=export_metadata(
            model, source_sha256=source_sha256, weights=weights, precision=precision
        ),
        precision=precision,
    )
    if quantized is not None:
        report.int8 = asdict(quantized.report)
        report.int8.pop("cached", None)  # how this run got it, not what the file holds

    if fmt == "onnx":
        graph = quantized.onnx if quantized is not None else None
        run = _export_onnx(folded, xs[0], path, opset, report, overwrite, graph=graph)
    elif fmt == "openvino":
        openvino_core("OpenVINO IR export")  # before exporting: the error names the extra
        if quantized is not None:
            graph = quantized.onnx
        else:
            graph = onnx_graph_bytes(folded, xs[0], opset=opset)
        report.versions["opset"] = str(opset)  # the int8 graph's is checked to be the same
        run, reference = _export_openvino(graph, path, report, overwrite)
        if quantized is not None:
            # the int8 graph as the openvino backend runs it, not as ONNX Runtime does
            refs = [reference(x) for x in xs]
    else:
        run = _export_torchscript(folded, xs[0], path, overwrite, report.metadata)

    if check:
        try:
            read = read_export_metadata(path)
        except LightSRError as exc:
            _remove(path, fmt)  # a file that cannot describe itself is not a finished export
            raise LightSRError(
                f"the metadata of the exported {fmt} file cannot be read back ({exc}); removed "
                f"{str(path)!r}."
            ) from exc
        differ = _metadata_difference(report.metadata, read)
        report.metadata_status = f"failed: {differ}" if differ else "ok"
    else:
        report.metadata_status = "skipped: disabled (--no-check)"
    if not check:
        report.parity_status = "skipped: disabled (--no-check)"
    elif run is None:
        pass  # the exporter set the reason
    else:
        worst = 0.0
        for x, ref in zip(xs, refs):
            # A file that cannot run, or gives the wrong shape, is removed: left in place
            # without a sidecar it would look like a finished export.
            try:
                y = run(x)
            except Exception as exc:  # noqa: BLE001 - any runtime failure means a broken file
                _remove(path, fmt)
                raise LightSRError(
                    f"the exported {fmt} model fails on input {tuple(x.shape)} "
                    f"({type(exc).__name__}: {exc}); removed {str(path)!r}."
                ) from exc
            if tuple(y.shape) != tuple(ref.shape):
                _remove(path, fmt)
                raise LightSRError(
                    f"the exported {fmt} model gives shape {tuple(y.shape)} for input "
                    f"{tuple(x.shape)}, PyTorch {tuple(ref.shape)}: the size was baked into the "
                    "graph; this model cannot be exported with dynamic sizes. Removed "
                    f"{str(path)!r}."
                )
            diff = float((y - ref).abs().max())
            worst = max(worst, diff)
            report.parity.append({"input_hw": list(x.shape[-2:]), "max_abs_diff": diff})
        report.parity_status = "ok" if worst <= PARITY_TOLERANCE else "failed"

    text = json.dumps(asdict(report), indent=2) + "\n"
    try:
        atomic_write_bytes(sidecar, text.encode("utf-8"), overwrite=overwrite)
    except BaseException:
        _remove(path, fmt)  # without its sidecar it would look like a finished export
        raise
    return report


def _remove(path: Path, fmt: str) -> None:
    """Remove what the export of ``path`` wrote (an IR's .bin too)."""
    for written in [path] + ([path.with_suffix(".bin")] if fmt == "openvino" else []):
        with contextlib.suppress(FileNotFoundError):
            written.unlink()


def _format_from_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".xml":
        return "openvino"
    if suffix in (".pt", ".ts", ".torchscript", ".jit"):
        return "torchscript"
    raise LightSRError(
        f"cannot tell the export format from {str(path)!r}: name it .onnx, .pt or .xml "
        "(OpenVINO IR), or pass --onnx / --torchscript / --openvino."
    )


def _export_onnx(
    folded: SRModel,
    x: torch.Tensor,
    path: Path,
    opset: int,
    report: ExportReport,
    overwrite: bool,
    *,
    graph: bytes | None = None,
):
    """Write ``folded`` exported to ONNX (or ``graph``, an ONNX graph of it already made: the
    int8 one) with the report's metadata; return a runner of the written file for the check,
    or None where ONNX Runtime is not installed."""
    try:
        import onnx
    except ImportError:
        raise LightSRError(
            "ONNX export needs the onnx package (torch's exporter uses it): "
            "pip install onnx onnxruntime  (or lightsr[onnx])."
        ) from None
    report.versions["onnx"] = onnx.__version__
    report.input["dynamic_axes"] = ["height", "width"]

    # Into memory, then written from Python: onnx's C++ file writer aborts the whole process
    # on a full disk, where a Python write raises an OSError naming the file. (The TorchScript
    # exporter writes to file objects too; its type hint names paths only, hence the cast.)
    if graph is None:
        graph = onnx_graph_bytes(folded, x, opset=opset)
    proto = onnx.load_model_from_string(graph)
    del proto.metadata_props[:]  # the quantizer's own ("onnx.infer"): the file says lightsr's
    for key, value in report.metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write_bytes(path, proto.SerializeToString(), overwrite=overwrite)
    report.versions["opset"] = str(opset)
    try:
        import onnxruntime as ort
    except ImportError:
        report.parity_status = (
            "skipped: onnxruntime is not installed (pip install onnxruntime to check parity)"
        )
        return None
    report.versions["onnxruntime"] = ort.__version__
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(inp: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"lr": inp.numpy()})[0])

    return run


def _export_openvino(graph: bytes, path: Path, report: ExportReport, overwrite: bool):
    """Write the ONNX ``graph`` (the folded model's export, or the int8 one) converted to
    OpenVINO IR (``path`` and its .bin) with the report's metadata in its rt_info; return a
    runner of the written file and one of the same graph converted in memory (the int8
    reference)."""
    core = openvino_core("OpenVINO IR export")
    import openvino as ov  # importable: openvino_core has made its Core

    model = core.read_model(graph)
    for key, value in report.metadata.items():
        model.set_rt_info(value, [OPENVINO_METADATA_SECTION, key])
    report.versions["openvino"] = ov.get_version()
    report.input["dynamic_axes"] = ["height", "width"]
    binary = path.with_suffix(".bin")
    with tempfile.TemporaryDirectory(prefix="lightsr-ir-") as tmp:
        # saved, then published from Python: each file atomically, the .bin before the .xml
        # that names it, so no reader ever finds an IR without its weights
        staged = Path(tmp) / "model.xml"
        ov.save_model(model, str(staged), compress_to_fp16=False)
        atomic_write_bytes(binary, staged.with_suffix(".bin").read_bytes(), overwrite=overwrite)
        try:
            atomic_write_bytes(path, staged.read_bytes(), overwrite=overwrite)
        except BaseException:
            # only the .bin is this call's: an .xml that appeared meanwhile is someone else's
            with contextlib.suppress(FileNotFoundError):
                binary.unlink()
            raise

    def runner(source: bytes | str) -> Any:
        # f32: the file is checked against the graph it was made from (the backend may run an
        # int8 graph's kept convs in bf16 on a CPU with native bf16: the same graph, run so)
        run = openvino_runner(source, torch.get_num_threads(), "f32")
        return lambda inp: torch.from_numpy(run(inp.numpy()))

    return runner(str(path)), runner(graph)


def _export_torchscript(
    folded: SRModel, x: torch.Tensor, path: Path, overwrite: bool, metadata: dict[str, str]
):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(copy.deepcopy(folded), x, check_trace=False)
    with warnings.catch_warnings():
        # torch 2.10+ flags TorchScript as deprecated in favour of torch.export; it still is
        # the format C++ (libtorch) and mobile deployments load.
        warnings.simplefilter("ignore", DeprecationWarning)
        buf = io.BytesIO()  # written from Python: a full disk is an OSError naming the file
        extra = {TORCHSCRIPT_METADATA_FILE: json.dumps(metadata, sort_keys=True)}
        torch.jit.save(traced, buf, _extra_files=extra)
        atomic_write_bytes(path, buf.getbuffer(), overwrite=overwrite)
        loaded = torch.jit.load(str(path), map_location="cpu")  # check the file, not the object

    def run(inp: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(inp)

    return run


__all__ = [
    "EXPORT_PRECISIONS",
    "FORMATS",
    "PARITY_TOLERANCE",
    "TORCHSCRIPT_METADATA_FILE",
    "ExportReport",
    "export_metadata",
    "export_model",
    "read_export_metadata",
]
