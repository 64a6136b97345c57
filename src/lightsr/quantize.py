"""int8 inference: static post-training quantization of a folded model, run by ONNX Runtime.

:func:`quantize_int8` folds the model, exports it to ONNX (opset 17, any height and width),
calibrates the activation ranges on LR patches, and rewrites the graph with ONNX Runtime's
static quantizer in QDQ form: per-channel symmetric int8 weights, int8 activations, only the
convolutions quantized (the pointwise ops between them, sigmoid gates, residual adds, stay
fp32: quantizing them too cost FMEN-S another 0.2 dB on Set5 for no speed). The result, an
:class:`Int8Model`, maps float RGB (N, 3, H, W) to float RGB like the model; ONNX Runtime runs it
(``engine="onnxruntime"``, the ``lightsr[onnx]`` extra), or OpenVINO (``engine="openvino"``,
the ``lightsr[openvino]`` extra) from the same QDQ graph.

**Mixed precision.** Some convolutions lose much more than others when quantized. Kept in fp32
(``keep_fp32``, module names) by default: the convolutions that read the image (``head``;
A2F's ``skip``) and those that produce image values (:func:`lightsr.probe.output_convs`: the
tail before the pixel shuffle), plus each model's most sensitive layers in
:data:`KEEP_FP32`, found by quantizing one conv at a time and measuring Set5 PSNR-Y
(``benchmarks/bench_backends.py --sensitivity``: FMEN-S x4 with the authors' weights, A2F-SD
x2-x4 with lightsr's). FMEN-S's ``lr_conv``
alone costs 0.32 dB: its output is a small correction added to the head's features, so an
8-bit grid over its range is coarse where it matters.

**Why this engine** (measured on an AMD EPYC Zen 1, AVX2 without VNNI; see docs/BACKENDS.md):
PyTorch's own int8 (``torch.ao`` FX graph mode, x86 backend, per-channel weights) is deprecated
in favour of the separate torchao package, broke FMEN-S (7.6 dB on Set5) and ran A2F-SD 4x
slower than fp32 eager (every scalar-weighted residual became a quantize/dequantize pair).
ONNX Runtime's QDQ graph runs in ONNX Runtime and OpenVINO alike, and the calibration and
exclusion lists are explicit. Activations are unsigned int8 by default (``activations="u8"``,
full-range weights): ``benchmarks/int8_variants.py`` measured all four variants (u8/s8
activations, 8/7-bit weights) with both engines on that CPU, and u8 ran A2F-SD about 20%
faster than s8 in ONNX Runtime at the same Set5 loss on FMEN-S (-0.15 vs -0.14 dB; A2F-SD -0.09
vs -0.07), while OpenVINO lost 2.1 dB on A2F-SD with s8 activations and 0.09 with u8. 7-bit
weights (``reduce_range=True``) cost FMEN-S another 0.37 dB and bought no speed. Measured on
AVX2 only; on VNNI and AMX, u8 x s8 is the instructions' native operand order.

**Memory and the cache.** ONNX Runtime's calibrator holds every intermediate activation of
every calibration patch at once; ``isolate=True`` runs it in a child process, and
``cache_dir`` keeps the quantized graph so a second run with the same model skips the export
and calibration, and needs no onnx import (``Upscaler`` does both).

**Calibration.** Static quantization needs representative inputs. ``calibration`` takes LR
tensors or HR images (:func:`calibration_patches` cuts and downscales them); by default
lightsr generates its own (:func:`synthetic_calibration`: smooth gradients, sharp-edged
shapes, gratings and noise, rendered at HR and bicubic-downscaled; no image files are shipped),
so the same model always gets the same int8 parameters. Quantization parameters are fixed once
made: a tiled image uses the same scales in every tile, and a tile-exact model gives the same
int8 output tiled and untiled (``tests/test_int8.py``).

**fp32 through ONNX Runtime.** :func:`onnxruntime_model` runs the fp32 folded model the same
way, with no quantization: an :class:`OrtModel` (which :class:`Int8Model` extends) of the plain
export. It is ``Upscaler(backend="onnxruntime")``: on a CPU without native bf16, ONNX Runtime's
fp32 kernels ran A2F-SD x4 about 1.9x faster than torch eager (AMD EPYC Zen 1, a 1-round
smoke run of ``benchmarks/bench_backends.py`` on a loaded machine; docs/BACKENDS.md).
:func:`openvino_model` is the same export run by OpenVINO (``Upscaler(backend="openvino")``),
in fp32 or, where the CPU computes it natively, bf16.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._version import __version__
from .atomic import atomic_write_bytes
from .data.io import image_header, image_to_tensor, list_images, read_image
from .data.resize import imresize
from .deploy import reparameterize
from .errors import LightSRError
from .hardware import cpu_int8_dot
from .models.base import SRModel
from .probe import output_convs

ENGINES = ("onnxruntime", "openvino")
#: OpenVINO's INFERENCE_PRECISION_HINT per precision of a graph's float parts (an int8
#: graph's convs kept out of int8: its ``floats``). Always given: OpenVINO's default on a CPU
#: with native bf16 is bf16, which a caller that asked for fp32 must not get.
_OPENVINO_HINT = {"fp32": "f32", "bf16": "bf16"}
#: What an int8 graph's float parts (the convs kept out of int8) may compute in.
INT8_FLOATS = tuple(_OPENVINO_HINT)
#: Activation types :func:`quantize_int8` offers: signed (ONNX Runtime's QInt8) or unsigned
#: (QUInt8) 8-bit activations; the weights are always signed.
ACTIVATIONS = ("s8", "u8")
#: Calibration methods of ONNX Runtime's quantizer that lightsr offers.
METHODS = ("minmax", "percentile")
ONNX_OPSET = 17

#: Per model, the convolutions (module names of the folded model) kept in fp32 besides the
#: image convs, chosen by measured sensitivity (module docstring). Names absent from a
#: model (another variant's layout) are ignored.
KEEP_FP32: dict[str, tuple[str, ...]] = {
    # FMEN-S, one conv at a time int8 (u8 activations), Set5 x4 PSNR-Y change with the authors'
    # weights (benchmarks/results/int8_sensitivity/fmen_s.json): head -4.73 (kept as an
    # image conv), lr_conv -0.32, warmup.0 -0.18, warmup.1.squeeze -0.10, tail.0 -0.07, then
    # HFABs.3.excitate -0.028, ERBs.3.conv2 -0.027, ERBs.0.conv1 -0.020, ERBs.3.conv1 -0.019;
    # every other conv -0.017 or less. With the first three only, the whole graph lost 0.146 dB
    # on Set5; keeping the next four too, 0.056 (4 of FMEN-S's 33 convs more in fp32).
    "fmen_s": (
        "lr_conv",
        "warmup.0",
        "warmup.1.squeeze",
        "HFABs.3.excitate",
        "ERBs.3.conv2",
        "ERBs.0.conv1",
        "ERBs.3.conv1",
    ),
    # A2F-SD, one conv at a time int8, Set5 PSNR-Y change with lightsr's bundled weights
    # (benchmarks/results/int8_sensitivity/a2f_sd_x{2,3,4}.json): layers.0.expand is the worst
    # body conv at every scale (x2 -0.036, x3 -0.017, x4 -0.009), layers.7.expand second at x2
    # (-0.026) and third at x3/x4; the rest add up to the remainder (the losses are additive:
    # at x2 they sum to -0.135 against -0.132 for the whole graph). Without these two the x2
    # entry lost 0.13 dB on Set5, over the 0.1 dB a named int8 entry may cost; with them,
    # 0.08, for 2-5% more time on an AVX2 CPU (benchmarks/int8_tradeoffs.py: each is 1/16 of
    # the body's MACs). Weights are not the cause: int8 weights alone cost 0.001 dB.
    "a2f_sd": ("layers.0.expand", "layers.7.expand"),
    # FMEN (no released weights, not measured): FMEN-S's first three, which sit at the same
    # places in the larger network (the ERB/HFAB indices do not carry over)
    "fmen": ("lr_conv", "warmup.0", "warmup.1.squeeze"),
}

_PERCENTILE = 99.999


# ---------------------------------------------------------------------------------------------
# Calibration data
# ---------------------------------------------------------------------------------------------


def synthetic_calibration(
    *, scale: int, count: int = 32, size: int = 48, seed: int = 0
) -> list[torch.Tensor]:
    """``count`` generated LR patches (1, 3, ``size``, ``size``) in [0, 1], the same for a
    given ``seed``: scenes rendered at ``size * scale`` (a smooth colour gradient, sharp-edged
    discs and half-planes in random colours, a sinusoidal grating, fine noise texture) and
    downscaled by MATLAB bicubic, the degradation the models were trained on."""
    rng = np.random.default_rng(seed)
    n = size * scale
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) / n
    out = []
    for _ in range(count):
        c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        a = rng.uniform(0, 2 * np.pi)
        t = (np.cos(a) * xx + np.sin(a) * yy + 1.5) / 3.0
        img = c0 + (c1 - c0) * t[..., None]
        for _ in range(rng.integers(2, 7)):
            colour = rng.uniform(0, 1, 3)
            if rng.random() < 0.5:
                cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.05, 0.4)]
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            else:
                b = rng.uniform(0, 2 * np.pi)
                mask = (
                    np.cos(b) * (xx - rng.uniform(0, 1)) + np.sin(b) * (yy - rng.uniform(0, 1)) > 0
                )
            img[mask] = colour
        f = rng.uniform(4, n / 6)  # cycles per patch, up to a 6-pixel period at HR
        b = rng.uniform(0, 2 * np.pi)
        grating = np.sin(2 * np.pi * f * (np.cos(b) * xx + np.sin(b) * yy))
        img = img + rng.uniform(0, 0.25) * grating[..., None]
        img = img + rng.uniform(0, 0.05) * rng.standard_normal((n, n, 1))
        hr = np.clip(img, 0, 1).astype(np.float32)
        lr = np.clip(imresize(hr, 1 / scale), 0, 1)
        out.append(image_to_tensor(lr))
    return out


def _as_rgb(image: np.ndarray) -> np.ndarray:
    im = np.asarray(image)
    if im.ndim == 2:
        im = im[..., None]
    im = im[..., :3]
    return np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im


def _patch_plan(eligible: int, *, count: int, seed: int) -> list[tuple[int, float, float]]:
    """Per patch: which eligible image, and where (fractions of the free height and width),
    drawn with ``seed``; the same plan whether the images are in memory or read one by one."""
    rng = np.random.default_rng(seed)
    return [
        (int(rng.integers(eligible)), float(rng.random()), float(rng.random()))
        for _ in range(count)
    ]


def _cut(hr: np.ndarray, at_y: float, at_x: float, *, side: int, scale: int) -> torch.Tensor:
    y = int(at_y * (hr.shape[0] - side + 1))
    x = int(at_x * (hr.shape[1] - side + 1))
    return image_to_tensor(imresize(hr[y : y + side, x : x + side], 1 / scale))


def _no_calibration_image(side: int, size: int, scale: int) -> LightSRError:
    return LightSRError(
        f"no calibration image is at least {side}x{side} pixels (patches of {size} LR pixels "
        f"at x{scale}); pass larger images or a smaller size."
    )


def calibration_patches(
    images: Iterable[np.ndarray], *, scale: int, count: int = 32, size: int = 48, seed: int = 0
) -> list[torch.Tensor]:
    """LR calibration patches (1, 3, ``size``, ``size``) from HR ``images`` (H x W x C arrays,
    uint8/uint16/float): ``count`` random crops of ``size * scale`` pixels (from images at
    least that large; drawn with ``seed``), bicubic-downscaled by ``scale``."""
    side = size * scale
    hrs = [im for im in map(_as_rgb, images) if min(im.shape[:2]) >= side]
    if not hrs:
        raise _no_calibration_image(side, size, scale)
    return [
        _cut(hrs[i], u, v, side=side, scale=scale)
        for i, u, v in _patch_plan(len(hrs), count=count, seed=seed)
    ]


class CalibrationPatches(list):
    """LR calibration patches (a list of tensors) that know their origin: ``source`` becomes
    :attr:`Int8Report.calibration`, so an exported int8 graph's sidecar names the images."""

    source: str = ""


def calibration_from_files(
    paths: Sequence[str | os.PathLike],
    *,
    scale: int,
    count: int = 32,
    size: int = 48,
    seed: int = 0,
) -> CalibrationPatches:
    """:func:`calibration_patches` of image files (a folder stands for the images in it, see
    :func:`lightsr.data.io.list_images`), as :class:`CalibrationPatches` naming them. Equal to
    it on the decoded images, but holding one decoded image at a time: which files are large
    enough is read from their headers, and each file a patch is drawn from is decoded once.
    ``lightsr upscale/eval/export --int8-calibration PATH``."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise LightSRError(f"{str(p)!r} holds no image files to calibrate int8 on.")
            files += found
        else:
            files.append(p)
    side = size * scale
    headers = [image_header(f) for f in files]  # sizes without decoding: bounded memory
    eligible = [h.path for h in headers if min(h.width, h.height) >= side]
    if not eligible:
        raise _no_calibration_image(side, size, scale)
    plan = _patch_plan(len(eligible), count=count, seed=seed)
    out: list[torch.Tensor | None] = [None] * len(plan)
    for index in sorted({i for i, _, _ in plan}):
        hr = _as_rgb(read_image(eligible[index]))
        for k, (i, u, v) in enumerate(plan):
            if i == index:
                out[k] = _cut(hr, u, v, side=side, scale=scale)
    patches = CalibrationPatches(t for t in out if t is not None)
    named = ", ".join(str(p) for p in paths)
    patches.source = (
        f"{len(patches)} patches of {len(eligible)} HR image(s) from {named} "
        f"(lightsr.quantize.calibration_from_files, seed {seed})"
    )
    return patches


# ---------------------------------------------------------------------------------------------
# The quantized model
# ---------------------------------------------------------------------------------------------


@dataclass
class Int8Report:
    """How an :class:`Int8Model` was made: the convs quantized and kept, the calibration."""

    arch: str
    engine: str
    method: str
    quantized: list[str] = field(default_factory=list)
    kept_fp32: list[str] = field(default_factory=list)
    calibration: str = ""
    calibration_patches: int = 0
    activations: str = "u8"
    reduce_range: bool = False
    #: True when the quantized graph came from :func:`quantize_int8`'s cache.
    cached: bool = False
    int8_dot: str | None = None
    #: What the convs kept out of int8 compute in: "fp32", or "bf16" (OpenVINO on a CPU with
    #: native bf16; ``Upscaler``'s choice there for a model measured safe in OpenVINO's bf16
    #: at its scale, :func:`lightsr.upscale.int8_floats`).
    floats: str = "fp32"
    versions: dict[str, str] = field(default_factory=dict)


class OrtModel:
    """An ONNX graph (lightsr's I/O: input ``lr``, output ``sr``, any height and width) run on
    the CPU: ``model(x)`` maps float RGB (N, 3, H, W) in [0, 1] to float RGB (N, 3, sH, sW),
    unclamped. ``engine``: ``"onnxruntime"`` or ``"openvino"``. ``precision``: ``"fp32"``,
    ``"bf16"`` (OpenVINO only) or ``"int8"`` (a quantized graph, :class:`Int8Model`).
    ``floats``: what the graph's float parts compute in, ``"fp32"`` or ``"bf16"`` (OpenVINO
    only); the precision itself for fp32 and bf16, fp32 unless told for int8. ``threads``:
    intra-op threads; None follows ``torch.get_num_threads()`` (checked per call, so
    ``--threads`` and a later ``torch.set_num_threads`` apply to the engine as to torch).
    ``onnx`` holds the graph (bytes: write it to a file to run it elsewhere)."""

    def __init__(
        self,
        onnx_model: bytes,
        *,
        scale: int,
        min_input_size: int,
        engine: str = "onnxruntime",
        precision: str = "fp32",
        threads: int | None = None,
        what: str = "the ONNX model",
        floats: str | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise LightSRError(f"engine {engine!r} is not one of {', '.join(ENGINES)}.")
        if floats is None:
            floats = "fp32" if precision == "int8" else precision
        if precision not in (*_OPENVINO_HINT, "int8") or floats not in _OPENVINO_HINT:
            raise LightSRError(
                f"an ONNX graph runs in fp32, bf16 or int8 with fp32 or bf16 float parts, not "
                f"{precision!r} with {floats!r} ones."
            )
        if engine == "onnxruntime" and floats == "bf16":
            raise LightSRError(
                "ONNX Runtime has no bf16 CPU kernels: run bf16 with OpenVINO "
                "(--backend openvino), or use fp32."
            )
        self.onnx = onnx_model
        self.precision = precision
        self.floats = floats
        self.scale = int(scale)
        self.min_input_size = int(min_input_size)
        self.engine = engine
        self.what = what
        self._fixed_threads = int(threads) if threads else None
        self.threads = self._fixed_threads or torch.get_num_threads()
        self._run = self._make_runner()

    def _make_runner(self) -> Callable[[np.ndarray], np.ndarray]:
        if self.engine == "openvino":
            return openvino_runner(self.onnx, self.threads, _OPENVINO_HINT[self.floats])
        return _onnxruntime_runner(self.onnx, self.threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise LightSRError(f"{self.what} expects (N, 3, H, W), got {tuple(x.shape)}.")
        if min(x.shape[-2:]) < self.min_input_size:
            raise LightSRError(
                f"{self.what} needs an LR input of at least {self.min_input_size} pixels a "
                f"side, got {tuple(x.shape[-2:])}."
            )
        wanted = self._fixed_threads or torch.get_num_threads()
        if wanted != self.threads:  # a session's thread pool is fixed when it is made
            self.threads = wanted
            self._run = self._make_runner()
        arr = np.ascontiguousarray(x.detach().cpu().float().numpy())
        return torch.from_numpy(self._run(arr))


class Int8Model(OrtModel):
    """A statically quantized model (an :class:`OrtModel` of the QDQ graph): ``model(x)`` maps
    float RGB (N, 3, H, W) in [0, 1] to float RGB (N, 3, sH, sW), unclamped, on the CPU;
    ``report`` says what was quantized."""

    def __init__(
        self,
        onnx_model: bytes,
        *,
        scale: int,
        min_input_size: int,
        report: Int8Report,
        engine: str = "onnxruntime",
        threads: int | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise LightSRError(f"int8 engine {engine!r} is not one of {', '.join(ENGINES)}.")
        self.report = report
        super().__init__(
            onnx_model,
            scale=scale,
            min_input_size=min_input_size,
            engine=engine,
            precision="int8",
            threads=threads,
            what="the int8 model",
            floats=report.floats,
        )

    def with_engine(self, engine: str, *, floats: str = "fp32") -> Int8Model:
        """The same quantized graph run by another engine (``"openvino"``: same parameters),
        its kept convs computing in ``floats`` (``"bf16"``: OpenVINO only)."""
        report = copy.deepcopy(self.report)
        report.engine, report.floats = engine, floats
        return Int8Model(
            self.onnx,
            scale=self.scale,
            min_input_size=self.min_input_size,
            report=report,
            engine=engine,
            threads=self._fixed_threads,
        )


def onnxruntime_available() -> bool:
    """True when the ``lightsr[onnx]`` extra is installed: ONNX Runtime, and the onnx package
    torch's exporter needs. Looked up, not imported (importing ONNX Runtime costs ~0.2 s)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def openvino_available() -> bool:
    """True when the ``lightsr[openvino]`` extra is installed: OpenVINO, and the onnx package
    torch's exporter needs (lightsr hands OpenVINO its ONNX export). Looked up, not imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "openvino"))


def onnxruntime_model(
    model: SRModel, *, threads: int | None = None, cache_dir: str | os.PathLike | None = None
) -> OrtModel:
    """The fp32 folded ``model`` exported to ONNX (opset 17, any height and width) and run by
    ONNX Runtime: the same function as the model up to float rounding (ONNX Runtime's MLAS
    kernels sum in another order than oneDNN's). On a CPU without native bf16 this is
    lightsr's fastest fp32 path (docs/BACKENDS.md). ``threads`` as :class:`OrtModel`;
    ``cache_dir``: where the export is kept (:func:`exported_graph_bytes`)."""
    _import_onnxruntime("the onnxruntime backend")
    return _exported(
        model, engine="onnxruntime", precision="fp32", threads=threads, cache_dir=cache_dir
    )


def openvino_model(
    model: SRModel,
    *,
    precision: str = "fp32",
    threads: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> OrtModel:
    """The folded ``model``'s ONNX export (as :func:`onnxruntime_model`) run by OpenVINO's CPU
    plugin, in ``precision`` ``"fp32"`` or ``"bf16"`` (OpenVINO's own bf16 inference, every
    layer included; only where the CPU has native bf16, else OpenVINO quietly computes f32, so
    callers check :func:`lightsr.hardware.cpu_has_native_bf16` first). ``threads`` and
    ``cache_dir`` as :func:`onnxruntime_model`."""
    _import_openvino("the openvino backend")
    return _exported(
        model, engine="openvino", precision=precision, threads=threads, cache_dir=cache_dir
    )


def _exported(
    model: SRModel,
    *,
    engine: str,
    precision: str,
    threads: int | None,
    cache_dir: str | os.PathLike | None,
) -> OrtModel:
    folded = reparameterize(model).cpu().float().eval()
    for p in folded.parameters():
        p.requires_grad_(False)
    runtime = "ONNX Runtime" if engine == "onnxruntime" else "OpenVINO"

    def run(graph: bytes) -> OrtModel:
        return OrtModel(
            graph,
            scale=int(folded.scale),
            min_input_size=int(getattr(folded, "min_input_size", 1)),
            engine=engine,
            precision=precision,
            threads=threads,
            what=f"the {runtime} {getattr(folded, 'arch_name', type(folded).__name__)}",
        )

    graph, cached = exported_graph_bytes(folded, cache_dir=cache_dir)
    if cached:
        try:
            return run(graph)
        except Exception:  # noqa: BLE001 - a cache entry the engine cannot load is made again
            graph, _ = exported_graph_bytes(folded, cache_dir=cache_dir, refresh=True)
    return run(graph)


def _export_example(model: nn.Module) -> torch.Tensor:
    # Any size works (dynamic axes); a small one keeps the trace cheap.
    side = max(int(getattr(model, "min_input_size", 1)), 16)
    return torch.full((1, 3, side, side), 0.5)


def exported_graph_bytes(
    folded: nn.Module, *, cache_dir: str | os.PathLike | None = None, refresh: bool = False
) -> tuple[bytes, bool]:
    """:func:`onnx_graph_bytes` of the folded model, and whether it came from ``cache_dir``.

    Exporting costs ~1.4 s, most of it importing the onnx package torch's exporter needs, on
    every run of an engine backend: kept in ``cache_dir`` (None: not kept), the next run with
    the same model loads it instead. The name is a hash of everything the graph depends on
    (:func:`_export_key`: the model's structure and every tensor, lightsr's model and export
    code, the torch version), plus a hash of the graph itself, checked when it is read: a
    damaged entry is exported again. ``refresh``: export again whatever the cache holds."""
    example = _export_example(folded)
    if cache_dir is None:
        return onnx_graph_bytes(folded, example), False
    folder = Path(cache_dir)
    key = _export_key(folded, example)
    cached = None if refresh else _read_hashed(folder, key)
    if cached is not None:
        return cached, True
    data = onnx_graph_bytes(folded, example)
    _write_hashed(folder, key, data)
    return data, False


def _read_hashed(folder: Path, key: str) -> bytes | None:
    """The cache entry ``<key>-<hash of its bytes>.onnx``, or None when absent, unreadable or
    damaged (its bytes no longer match the hash in its name)."""
    for path in sorted(folder.glob(f"{key}-*.onnx")):
        with contextlib.suppress(OSError):
            data = path.read_bytes()
            if path.stem.endswith("-" + hashlib.sha256(data).hexdigest()[:16]):
                return data
    return None


def _write_hashed(folder: Path, key: str, data: bytes) -> None:
    """Keep ``data`` as ``key``'s entry, replacing any earlier one (damaged, or refused by an
    engine)."""
    for stale in folder.glob(f"{key}-*.onnx"):
        with contextlib.suppress(OSError):
            stale.unlink()
    _write_cached(folder / f"{key}-{hashlib.sha256(data).hexdigest()[:16]}.onnx", data)


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    """A hash of the lightsr code an exported graph depends on: the models, their layers,
    folding, and this module (the export's settings)."""
    package = Path(__file__).resolve().parent
    files = sorted([*(package / "models").glob("*.py"), *(package / "layers").glob("*.py")])
    files += [package / "deploy.py", Path(__file__).resolve()]
    digest = hashlib.sha256()
    for f in files:
        # (an install without sources, .pyc only, keys by the version alone)
        if f.is_file():
            digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


def _export_key(model: nn.Module, example: torch.Tensor) -> str:
    digest = hashlib.sha256()
    head = [
        type(model).__module__,
        type(model).__qualname__,
        repr(model),  # every layer's configuration
        list(example.shape),
        ONNX_OPSET,
        torch.__version__,
        __version__,
        _code_digest(),
    ]
    digest.update(json.dumps(head).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def _onnxruntime_runner(model: bytes, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    ort = _import_onnxruntime("int8 inference")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # No busy-waiting between ops: ONNX Runtime shares the process (and the cores) with
    # PyTorch's own threads, and spinning workers slow both down.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Memory: ONNX Runtime keeps a pre-planned block per input shape (the memory pattern) and
    # its arena holds the largest tile's activations after the run, so with both a 4000x3000
    # x4 photo peaked at 2.40 GiB against torch's ~1.6 (benchmarks/bench_memory.py). Without
    # the pattern and with the arena shrunk after each run, one A2F-SD 468^2 window peaks as
    # torch does (884 vs 875 MiB) and leaves 481 MiB instead of 1222 for writing the image;
    # measured no slower within the noise of a loaded machine (12.6 vs 12.1 s for 2 runs).
    options.enable_mem_pattern = False
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    run_options = ort.RunOptions()
    run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x}, run_options)[0]

    return run


#: Compiled OpenVINO models kept, one per input shape (see openvino_runner).
_OPENVINO_SHAPES_KEPT = 2
#: Inputs of at most this many pixels run in one model compiled for any height and width
#: (see openvino_runner). Its buffers are not planned: at 180x180 it holds ~110 MiB more than
#: a model compiled for that shape (A2F-SD x2), at 256x256 ~220 MiB more
#: (benchmarks/bench_openvino_shapes.py).
_OPENVINO_ANY_SHAPE_MAX_PIXELS = 180 * 180


_OPENVINO_CORE: Any = None


def openvino_core(what: str = "the openvino backend") -> Any:
    """The one ``openvino.Core`` lightsr uses in this process, made on first use and kept.

    Why one, kept: each Core's CPU plugin points the calling thread's alternate signal stack
    (``sigaltstack``) at a stack of its own while it lives and puts the previous one back when
    it goes. Two Cores that go in the order they came (the first runner dropped before the
    second) leave the thread pointing at a freed stack, and the next signal Python handles
    there (Ctrl-C: its handlers run on the alternate stack) kills the process with SIGSEGV,
    with no traceback and no clean-up (tests/test_backend.py). ``what`` names the feature in
    the error when OpenVINO is not installed."""
    global _OPENVINO_CORE
    ov = _import_openvino(what)  # checked on every call: the error names the feature
    if _OPENVINO_CORE is None:
        _OPENVINO_CORE = ov.Core()
    return _OPENVINO_CORE


def openvino_runner(
    model: bytes | str, threads: int, hint: str
) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` (ONNX bytes, or the path of an ONNX file or OpenVINO IR) run by OpenVINO's CPU
    plugin on ``threads`` threads at precision ``hint`` (``"f32"``, ``"bf16"``): float32 NCHW
    array in, array out."""
    ov = _import_openvino("the openvino backend")
    core = openvino_core()
    source = core.read_model(model)
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint}
    # Compiled per input shape, the last two kept. With the export's fully dynamic height and
    # width OpenVINO's CPU plugin cannot plan buffer reuse: a 4000x3000 x4 photo peaked at
    # 2.69 GiB that way, 1.96 with fixed shapes (benchmarks/bench_memory.py, path fp32_ov;
    # results/memory/). Tiles come in rows of one full-window shape and one right-edge shape,
    # so two compiled shapes cover a row. Small inputs (a folder of web pictures, a benchmark
    # set's LR images: each its own size) share one model compiled for any shape instead
    # (key None), one of the two kept: a compile per shape costs 2-3x the inference of a
    # 120x125 picture, and at this size the planned buffers save little
    # (benchmarks/bench_openvino_shapes.py; a folder's wall time: bench_batch.py).
    requests: OrderedDict[tuple[int, ...] | None, Any] = OrderedDict()

    def run(x: np.ndarray) -> np.ndarray:
        small = x.shape[-2] * x.shape[-1] <= _OPENVINO_ANY_SHAPE_MAX_PIXELS
        key: tuple[int, ...] | None = None if small else tuple(x.shape)
        request = requests.pop(key, None)
        if request is None:
            while len(requests) >= _OPENVINO_SHAPES_KEPT:  # freed before the next compile
                requests.popitem(last=False)
            shaped = source.clone()
            if key is not None:
                shaped.reshape({0: ov.PartialShape(list(key))})
            request = core.compile_model(shaped, "CPU", config).create_infer_request()
        requests[key] = request
        return np.array(request.infer({0: x})[0], copy=True)

    return run


def _import_openvino(what: str):
    try:
        import openvino as ov
    except ImportError:
        raise LightSRError(
            f"{what} needs OpenVINO: pip install openvino  (or lightsr[openvino])."
        ) from None
    return ov


def _import_onnxruntime(what: str = "int8 inference"):
    try:
        import onnxruntime as ort
    except ImportError:
        raise LightSRError(
            f"{what} needs ONNX Runtime: pip install onnx onnxruntime  (or lightsr[onnx])."
        ) from None
    return ort


# ---------------------------------------------------------------------------------------------
# Quantization
# ---------------------------------------------------------------------------------------------


def image_convs(model: nn.Module) -> list[str]:
    """Module names of the convs that read the input image (3 input channels) and of those
    that produce image values (:func:`lightsr.probe.output_convs`)."""
    outputs = {id(c) for c in output_convs(model)}
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and (m.in_channels == 3 or id(m) in outputs)
    ]


def default_keep_fp32(model: nn.Module) -> list[str]:
    """The convs :func:`quantize_int8` keeps in fp32 unless told otherwise: the image convs and
    the model's entry in :data:`KEEP_FP32` (the names it has)."""
    names = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    arch = getattr(model, "arch_name", "")
    keep = image_convs(model) + [n for n in KEEP_FP32.get(arch, ()) if n in names]
    return list(dict.fromkeys(keep))


def onnx_graph_bytes(model: nn.Module, example: torch.Tensor, *, opset: int = ONNX_OPSET) -> bytes:
    """``model`` as an ONNX graph in memory: input ``lr``, output ``sr``, batch, height and
    width dynamic (the one ONNX export of lightsr: ``lightsr export`` writes these bytes)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python ints taken from shapes
        torch.onnx.export(
            copy.deepcopy(model),
            (example,),
            buf,  # type: ignore[arg-type]  # a file object works; the hint names paths
            input_names=["lr"],
            output_names=["sr"],
            dynamic_axes={
                "lr": {0: "batch", 2: "height", 3: "width"},
                "sr": {0: "batch", 2: "out_height", 3: "out_width"},
            },
            opset_version=opset,
            dynamo=False,
        )
    return buf.getvalue()


def _conv_nodes(graph: Any) -> dict[str, str]:
    """ONNX Conv node name -> module name (from its weight initializer, ``<module>.weight``)."""
    found = {}
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1].endswith(".weight"):
            found[node.name] = node.input[1].removesuffix(".weight")
    return found


def quantize_int8(
    model: SRModel,
    *,
    calibration: Sequence[torch.Tensor] | Sequence[np.ndarray] | None = None,
    keep_fp32: Sequence[str] | None = None,
    method: str = "percentile",
    engine: str = "onnxruntime",
    threads: int | None = None,
    activations: str = "u8",
    reduce_range: bool = False,
    cache_dir: str | os.PathLike | None = None,
    isolate: bool = False,
    floats: str = "fp32",
) -> Int8Model:
    """A statically quantized int8 copy of ``model`` (see the module docstring).

    Args:
        model: an :class:`SRModel` (folded here, on a copy).
        calibration: LR tensors (1, 3, h, w) in [0, 1] of one size, or HR image arrays (cut
            into patches by :func:`calibration_patches`); None: :func:`synthetic_calibration`.
        keep_fp32: module names of convs to keep in fp32; None: :func:`default_keep_fp32`.
        method: activation ranges from the ``"percentile"`` (99.999th, robust to outliers) or
            the ``"minmax"`` of the calibration activations.
        engine: ``"onnxruntime"`` or ``"openvino"`` runs the quantized graph.
        threads: intra-op threads (default: ``torch.get_num_threads()``).
        activations: ``"u8"`` (unsigned int8 activations, ONNX Runtime's QUInt8; the
            default, see the module docstring) or ``"s8"`` (signed, QInt8).
        reduce_range: weights on a 7-bit grid (ONNX Runtime's: [-64, 64]) instead of 8 bits:
            u8 activations times such weights cannot saturate AVX2's 16-bit pair sums
            (VPMADDUBSW: 2 * 255 * 64 < 32767), at the cost of one bit of weight precision.
        cache_dir: a folder where the quantized graph is kept (with the names of the convs
            it quantized, and checked by a hash of its bytes when read), named by a hash of
            everything that determines it (what the fp32 export depends on, the calibration
            inputs, options, the quantizer's versions), so the next call with the same model
            skips the export and calibration; None: no cache. ``Upscaler`` uses
            ``<lightsr cache>/int8``.
        isolate: run ONNX Runtime's calibration in a child process. The calibrator holds every
            intermediate activation of every calibration patch at once (about 1.1 GiB for
            A2F-SD's 32 patches of 48x48): in a child, that memory is gone before the image
            is upscaled instead of adding to the process's peak.
        floats: what the convs kept out of int8 compute in: ``"fp32"``, or ``"bf16"``
            (OpenVINO only; native bf16 only, else OpenVINO quietly computes fp32). The graph
            is the same either way; only the engine's setting differs.
    """
    if method not in METHODS:
        raise LightSRError(f"calibration method {method!r} is not one of {', '.join(METHODS)}.")
    if engine not in ENGINES:
        raise LightSRError(f"int8 engine {engine!r} is not one of {', '.join(ENGINES)}.")
    if activations not in ACTIVATIONS:
        raise LightSRError(
            f"int8 activations {activations!r} is not one of {', '.join(ACTIVATIONS)}."
        )
    if floats not in INT8_FLOATS or (floats == "bf16" and engine != "openvino"):
        raise LightSRError(
            f"int8 floats {floats!r}: the kept convs compute in fp32, or in bf16 with "
            "engine='openvino' (ONNX Runtime has no bf16 CPU kernels)."
        )
    ort = _import_onnxruntime()

    folded = reparameterize(model).cpu().float().eval()
    for p in folded.parameters():
        p.requires_grad_(False)
    scale = int(folded.scale)
    if calibration is None:
        patches = synthetic_calibration(scale=scale)
        source = "synthetic (lightsr.quantize.synthetic_calibration, seed 0)"
    elif len(calibration) and isinstance(calibration[0], np.ndarray):
        patches = calibration_patches(calibration, scale=scale)  # type: ignore[arg-type]
        source = f"{len(calibration)} HR image(s), random patches"
    else:
        patches = [torch.as_tensor(t).float() for t in calibration]
        # calibration_from_files says where its patches came from (CalibrationPatches.source)
        source = getattr(calibration, "source", None) or f"{len(patches)} LR tensor(s) given"
    if not patches:
        raise LightSRError("quantize_int8 needs at least one calibration input.")
    shapes = {tuple(t.shape) for t in patches}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4:
        raise LightSRError(
            f"calibration tensors must all be (1, 3, h, w) of one size, got {sorted(shapes)}."
        )

    keep = list(default_keep_fp32(folded) if keep_fp32 is None else keep_fp32)
    conv_names = {n for n, m in folded.named_modules() if isinstance(m, nn.Conv2d)}
    unknown = [k for k in keep if k not in conv_names]
    if unknown:
        raise LightSRError(
            f"keep_fp32 names {unknown} are not convs of this {folded.arch_name}; its convs "
            f"are e.g. {sorted(conv_names)[:6]}."
        )
    options = {
        "keep_fp32": keep,
        "method": method,
        "activations": activations,
        "reduce_range": bool(reduce_range),
    }
    versions = {"onnxruntime": ort.__version__, "onnx": _package_version("onnx")}
    folder = Path(cache_dir) if cache_dir is not None else None
    # Keyed without exporting: a hit needs neither the export nor the onnx package (~1.1 s).
    key = _int8_cache_key(folded, patches, options, versions)
    hit = _read_int8_cache(folder, key) if folder is not None else None

    def built(graph: bytes, quantized: list[str], cached: bool) -> Int8Model:
        report = Int8Report(
            arch=getattr(folded, "arch_name", type(folded).__name__),
            engine=engine,
            method=method if method == "minmax" else f"percentile {_PERCENTILE}",
            quantized=quantized,
            kept_fp32=keep,
            calibration=source,
            calibration_patches=len(patches),
            activations=activations,
            reduce_range=bool(reduce_range),
            cached=cached,
            int8_dot=cpu_int8_dot(),
            versions=versions,
            floats=floats,
        )
        return Int8Model(
            graph,
            scale=scale,
            min_input_size=int(getattr(folded, "min_input_size", 1)),
            report=report,
            engine=engine,
            threads=threads,
        )

    if hit is not None:
        with contextlib.suppress(Exception):  # an entry the engine cannot load is made again
            return built(*hit, cached=True)
    quantized_bytes, quantized = _quantized_graph(folded, patches, keep, options, isolate)
    if folder is not None:
        _write_int8_cache(folder, key, quantized_bytes, quantized)
    return built(quantized_bytes, quantized, cached=False)


def _quantized_graph(
    folded: nn.Module,
    patches: Sequence[torch.Tensor],
    keep: Sequence[str],
    options: dict[str, Any],
    isolate: bool,
) -> tuple[bytes, list[str]]:
    """Export, find the convs to keep in the graph, calibrate and quantize: the QDQ graph
    and the (module) names of the convs it quantized."""
    onnx = _import_onnx()
    graph_bytes = onnx_graph_bytes(folded, patches[0])
    nodes = _conv_nodes(onnx.load_from_string(graph_bytes).graph)
    exclude = [node for node, module in nodes.items() if module in keep]
    missing = sorted(set(keep) - {nodes[n] for n in exclude})
    if missing:
        raise LightSRError(f"convs {missing} were not found in the exported ONNX graph.")
    quantizer_options = {
        "exclude": sorted(exclude),
        "method": options["method"],
        "activations": options["activations"],
        "reduce_range": options["reduce_range"],
    }
    arrays = [np.ascontiguousarray(t.numpy(), dtype=np.float32) for t in patches]
    if isolate:
        quantized_bytes = _quantize_in_child(graph_bytes, arrays, quantizer_options)
    else:
        quantized_bytes = _quantize_graph(graph_bytes, arrays, quantizer_options)
    return quantized_bytes, sorted(m for n, m in nodes.items() if n not in exclude)


def _package_version(name: str) -> str | None:
    """An installed package's version, looked up without importing it."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _import_onnx():
    try:
        import onnx
        import onnxruntime.quantization  # noqa: F401 - checked here, used by _quantize_graph
    except ImportError:
        raise LightSRError(
            "int8 quantization needs the onnx package beside onnxruntime: pip install onnx "
            "onnxruntime  (or lightsr[onnx])."
        ) from None
    return onnx


def _int8_cache_key(
    folded: nn.Module,
    patches: Sequence[torch.Tensor],
    options: dict[str, Any],
    versions: dict[str, str | None],
) -> str:
    """Everything the quantized graph depends on: the fp32 export's (:func:`_export_key`),
    the calibration inputs, the options and the quantizer's versions."""
    digest = hashlib.sha256(_export_key(folded, patches[0]).encode())
    for t in patches:
        digest.update(np.ascontiguousarray(t.numpy(), dtype=np.float32).tobytes())
    digest.update(json.dumps([options, versions, _PERCENTILE], sort_keys=True).encode())
    return digest.hexdigest()[:32]


def _read_int8_cache(folder: Path, key: str) -> tuple[bytes, list[str]] | None:
    """The cached graph and the convs it quantized, or None when absent or damaged (then it
    is made again)."""
    try:
        quantized = json.loads((folder / f"{key}.json").read_text())["quantized"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(quantized, list) or not all(isinstance(q, str) for q in quantized):
        return None
    data = _read_hashed(folder, key)
    return None if data is None else (data, quantized)


def _write_int8_cache(folder: Path, key: str, data: bytes, quantized: list[str]) -> None:
    _write_hashed(folder, key, data)
    _write_cached(folder / f"{key}.json", json.dumps({"quantized": quantized}).encode())


def _write_cached(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data, overwrite=True)  # the cache's own file
    except OSError as exc:  # a read-only cache costs speed next time, never this run
        warnings.warn(f"cache not written ({exc}); made again next run: {path}", stacklevel=3)


def _quantize_graph(graph: bytes, patches: Sequence[np.ndarray], options: dict[str, Any]) -> bytes:
    """ONNX Runtime's static QDQ quantization of the fp32 ``graph`` (lightsr's I/O), calibrated
    on ``patches``; ``options`` as :func:`quantize_int8` builds them."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(patches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            t = next(self._it, None)
            return None if t is None else {"lr": t}

    percentile = options["method"] == "percentile"
    quiet = logging.getLogger().level
    with tempfile.TemporaryDirectory(prefix="lightsr-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(graph)
        logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing": not needed
        try:
            quantize_static(
                str(src),
                str(dst),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=(
                    QuantType.QUInt8 if options["activations"] == "u8" else QuantType.QInt8
                ),
                weight_type=QuantType.QInt8,
                reduce_range=bool(options["reduce_range"]),
                op_types_to_quantize=["Conv"],
                nodes_to_exclude=list(options["exclude"]),
                calibrate_method=(
                    CalibrationMethod.Percentile if percentile else CalibrationMethod.MinMax
                ),
                extra_options={"CalibPercentile": _PERCENTILE} if percentile else {},
            )
        finally:
            logging.getLogger().setLevel(quiet)
        return dst.read_bytes()


def _quantize_in_child(
    graph: bytes, patches: Sequence[np.ndarray], options: dict[str, Any]
) -> bytes:
    """:func:`_quantize_graph` in a fresh Python (``python -m lightsr.quantize``), so the
    calibrator's memory never adds to this process's peak. A new interpreter, not
    multiprocessing: spawning would re-run an unguarded ``__main__`` of the caller's script."""
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="lightsr-int8-") as tmp:
        work = Path(tmp)
        (work / "fp32.onnx").write_bytes(graph)
        np.save(work / "patches.npy", np.concatenate(list(patches), axis=0))
        (work / "options.json").write_text(json.dumps(options))
        proc = subprocess.run(
            [sys.executable, "-m", "lightsr.quantize", "--worker", str(work)],
            env=env,
            capture_output=True,
            text=True,
        )
        out = work / "int8.onnx"
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise LightSRError(
                f"int8 quantization failed in its child process (exit {proc.returncode}): "
                f"{' | '.join(tail)}. Try quantize_int8(..., isolate=False) to see it here."
            )
        return out.read_bytes()


def _worker(folder: Path) -> None:
    patches = np.load(folder / "patches.npy", allow_pickle=False)
    options = json.loads((folder / "options.json").read_text())
    graph = (folder / "fp32.onnx").read_bytes()
    data = _quantize_graph(graph, [p[None] for p in patches], options)
    atomic_write_bytes(folder / "int8.onnx", data, overwrite=True)


def save_int8(model: Int8Model, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write the quantized QDQ graph of ``model`` as an ``.onnx`` file (any ONNX runtime runs
    it; inputs ``lr``, outputs ``sr`` as :mod:`lightsr.export` describes)."""
    atomic_write_bytes(Path(path), model.onnx, overwrite=overwrite)


__all__ = [
    "ACTIVATIONS",
    "ENGINES",
    "INT8_FLOATS",
    "KEEP_FP32",
    "METHODS",
    "Int8Model",
    "Int8Report",
    "OrtModel",
    "calibration_patches",
    "CalibrationPatches",
    "calibration_from_files",
    "default_keep_fp32",
    "image_convs",
    "onnxruntime_available",
    "onnxruntime_model",
    "openvino_available",
    "openvino_core",
    "openvino_model",
    "openvino_runner",
    "quantize_int8",
    "save_int8",
    "synthetic_calibration",
]


if __name__ == "__main__":  # the isolated calibration worker of _quantize_in_child
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]))
    else:
        raise SystemExit("usage: python -m lightsr.quantize --worker FOLDER (internal)")
