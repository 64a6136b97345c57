"""Export to ONNX and TorchScript, from the folded (inference) model, with a parity check.

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
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from ._version import __version__
from .atomic import atomic_write_bytes
from .deploy import reparameterize
from .errors import LightSRError, OutputExistsError
from .models.base import SRModel

FORMATS = ("onnx", "torchscript")
#: Largest acceptable |exported - PyTorch| on the [0, 1] output scale.
PARITY_TOLERANCE = 1e-4
ONNX_OPSET = 17


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

    @property
    def ok(self) -> bool:
        """False only when a parity check ran and exceeded the tolerance."""
        return self.parity_status != "failed"


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
) -> ExportReport:
    """Fold ``model`` and export it to ``path`` (format from ``format`` or the suffix:
    ``.onnx`` -> ONNX, ``.pt``/``.ts``/``.torchscript`` -> TorchScript); write the JSON sidecar
    ``<path>.json`` and return its content as an :class:`ExportReport`.

    An existing ``path`` or sidecar is replaced only with ``overwrite`` (else
    :class:`~lightsr.errors.OutputExistsError`, before anything is exported). Both files are
    serialised in memory and written from Python, so a full disk is an ``OSError`` naming the
    file (onnx's own file writer aborts the process)."""

    path = Path(path)
    fmt = format or _format_from_suffix(path)
    if fmt not in FORMATS:
        raise LightSRError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}.")
    sidecar = path.with_name(path.name + ".json")
    taken = [str(p) for p in (path, sidecar) if os.path.lexists(p)]
    if taken and not overwrite:
        raise OutputExistsError(
            f"{' and '.join(repr(t) for t in taken)} exist{'s' if len(taken) == 1 else ''} and "
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
    )

    if fmt == "onnx":
        run = _export_onnx(folded, xs[0], path, opset, report, overwrite)
    else:
        run = _export_torchscript(folded, xs[0], path, overwrite)

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
                _remove(path)
                raise LightSRError(
                    f"the exported {fmt} model fails on input {tuple(x.shape)} "
                    f"({type(exc).__name__}: {exc}); removed {str(path)!r}."
                ) from exc
            if tuple(y.shape) != tuple(ref.shape):
                _remove(path)
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
        _remove(path)  # without its sidecar it would look like a finished export
        raise
    return report


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _format_from_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pt", ".ts", ".torchscript", ".jit"):
        return "torchscript"
    raise LightSRError(
        f"cannot tell the export format from {str(path)!r}: name it .onnx or .pt, or pass "
        "--onnx / --torchscript."
    )


def _export_onnx(
    folded: SRModel,
    x: torch.Tensor,
    path: Path,
    opset: int,
    report: ExportReport,
    overwrite: bool,
):
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
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The tracer warns about Python ints taken from shapes; the parity check at a
        # second size is what tells whether the graph stayed dynamic.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            copy.deepcopy(folded),
            (x,),
            cast(Any, buf),
            input_names=["lr"],
            output_names=["sr"],
            dynamic_axes={
                "lr": {0: "batch", 2: "height", 3: "width"},
                "sr": {0: "batch", 2: "out_height", 3: "out_width"},
            },
            opset_version=opset,
            dynamo=False,
        )
    atomic_write_bytes(path, buf.getbuffer(), overwrite=overwrite)
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


def _export_torchscript(folded: SRModel, x: torch.Tensor, path: Path, overwrite: bool):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(copy.deepcopy(folded), x, check_trace=False)
    with warnings.catch_warnings():
        # torch 2.10+ flags TorchScript as deprecated in favour of torch.export; it still is
        # the format C++ (libtorch) and mobile deployments load.
        warnings.simplefilter("ignore", DeprecationWarning)
        buf = io.BytesIO()  # written from Python: a full disk is an OSError naming the file
        torch.jit.save(traced, buf)
        atomic_write_bytes(path, buf.getbuffer(), overwrite=overwrite)
        loaded = torch.jit.load(str(path), map_location="cpu")  # check the file, not the object

    def run(inp: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(inp)

    return run


__all__ = ["FORMATS", "PARITY_TOLERANCE", "ExportReport", "export_model"]
