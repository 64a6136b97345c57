"""Cost of a model, measured the way the papers and the NTIRE efficient-SR challenges measure it.

One report type, :class:`ProfileReport`, made by :func:`profile`:

* **Parameters** — ``sum(p.numel())`` of the model as given (training form: weight-normalised
  convs count ``weight_g`` and ``weight_v``, FMEN counts its RRRB expansions and BatchNorms),
  and of its folded form (:func:`lightsr.reparameterize`).
* **Multi-Adds** (the papers' column) — multiply-accumulates of one forward pass producing a
  1280x720 output: the LR input is ``ceil(720/s) x ceil(1280/s)``. At x2 and x4 that is exactly
  360x640 and 180x320; at x3 there is no integer LR size, and we use 240x427 (a 1281x720 output),
  the ceiling, as the papers' x3 figures imply.
* **NTIRE protocol** — at a 256x256 LR input: FLOPs *reported as multiply-accumulates*,
  activations (number of elements of every convolution output), number of convolution calls.
* **Peak memory** of one forward pass and **runtime** (median of repeated forward passes after
  warm-up) on the chosen device and thread count, and the achieved FLOP/s against the machine's
  measured matmul peak (fp32, and bf16 where the hardware has it).

What is counted (and what is not)
---------------------------------
Counting happens at the ATen dispatcher (a ``TorchDispatchMode``), not with module hooks, so
convolutions called as functions (``F.conv2d``: weight-normalised convs, training-form FMEN,
dynamic convs) are seen — hook-based counters (thop, ptflops, the NTIRE ``model_summary``)
count those as 0. Only the outermost op of each call is seen (the mode is off while an op
runs), so an ``aten.conv2d`` that decomposes into ``aten.convolution`` counts once.

* Convolution (any of ``aten.conv{1,2,3}d``, ``aten.convolution``, ``aten._convolution``, the
  cuDNN/MKL-DNN/slow/depthwise variants, and the transposed ones):
  MACs = output elements x (in_channels / groups) x kernel elements; transposed convolutions
  count input elements x (out_channels / groups) x kernel elements. Bias adds are not counted.
* Matrix products (``linear``, ``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``matmul``, ``mv``,
  ...): output elements x contraction length.
* **Not counted**: element-wise arithmetic, activations (ReLU, sigmoid, ...), pooling,
  interpolation (the bicubic image path of MAFFSRN), normalisation, pixel shuffle, padding,
  concatenation, and the weight-normalisation arithmetic (g·v/‖v‖). This is the convention of
  the papers' Multi-Adds and of the NTIRE FLOPs, and it is the headline figure. It is not tuned
  to match any paper: where a paper's figure differs from a full count, the test says so.
* Activations are the elements of every convolution output only (the NTIRE definition);
  matrix-product outputs are not included.

Against the published figures (Multi-Adds at 720p, G = 1e9 MACs)
------------------------------------------------------------------
* A²F: SD 70.64 / 31.68 / 18.02 (x2/x3/x4; paper 71.2 / 31.9 / 18.2), S x4 18.50 (18.6),
  M x4 56.48 (56.7), L x4 76.89 (77.2): within 1%.
* FMEN-S x4 folded at 256x256: 22.28 G MACs, 72.09 M activations, 34 convs, as NTIRE 2022.
* MAFFSRN: the full count is 86.07 / 39.96 / 23.77 (MAFFSRN-L x4 44.49); the paper prints
  77.2 / 34.2 / 19.3 (38.6). Leaving out exactly the *weight-normalised* convolutions (the
  head, the three 1x1 fusion convs of every group, both tail branches) gives 77.20 / 34.34 /
  19.30 (38.60), which reproduces all four figures (x3: 34.26 with a 240x426 input). No other
  omission tried comes as close (the 5x5 tail alone, the attention gates, or only the 3x3
  convs do not), so the authors' counter evidently did not see weight-normalised convs.
  The full count is what :func:`profile` reports; the test pins both.

Counting runs on PyTorch's ``meta`` device (shapes only, no arithmetic), so counting even a
720p forward pass of RCAN takes seconds, not minutes. A model whose forward cannot run on
``meta`` (e.g. it calls ``.item()``) is counted on the CPU under ``inference_mode`` instead;
the report names the device.

Peak memory
-----------
* CUDA: ``torch.cuda.max_memory_allocated`` over one forward pass after
  ``reset_peak_memory_stats``. ``peak_memory_mb`` is the increase over what was allocated before
  the forward (weights and input excluded: activations, workspace and output);
  ``peak_memory_allocated_mb`` is the absolute figure the NTIRE challenges report.
* CPU: the increase of the process's peak resident memory (``VmHWM``) during one forward pass,
  measured in a fresh ``spawn``-ed process so that nothing else this process did pollutes it.
  In that process: glibc's mmap threshold is pinned to 64 KiB (large buffers are returned to
  the OS when freed), one warm-up forward pass absorbs one-time costs (thread pools, oneDNN
  kernels), then ``VmHWM`` is reset (``/proc/self/clear_refs``), the baseline ``VmRSS`` is read
  (weights, input, libraries), one forward pass runs, and ``VmHWM`` minus the baseline is the
  figure. Without ``clear_refs`` (non-Linux, or restricted) the warm-up is skipped and the figure
  is an upper bound (``memory_method`` says which).

Runtime
-------
Median over ``reps`` forward passes after ``warmup`` passes, under ``inference_mode``, fp32,
batch 1, random input. CUDA: CUDA events around the forward pass only. CPU:
``time.perf_counter`` at the stated thread count (``torch.set_num_threads``). Runtime and
memory are measured at ``runtime_size`` (default the NTIRE 256x256 LR input). Achieved
GFLOP/s = 2 x MACs at that size / median time.
"""

from __future__ import annotations

import copy
import csv
import gc
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import ConfigError, LightSRError

aten = torch.ops.aten

#: Output size (width, height) of the papers' Multi-Adds figure.
HD_OUTPUT = (1280, 720)
#: LR input side of the NTIRE efficient-SR protocol.
NTIRE_SIZE = 256


# ---------------------------------------------------------------------------------------------
# Counting at the dispatcher
# ---------------------------------------------------------------------------------------------


def _packets(*names: str) -> frozenset:
    # Some backend ops do not exist in every build; keep those that do.
    return frozenset(
        getattr(aten, n) for n in names if hasattr(aten, n)
    )  # OpOverloadPacket objects


# Convolutions whose third-from-left "transposed" flag lives at args[6].
_CONV_GENERIC = _packets("convolution", "_convolution", "convolution_overrideable")
_CONV_OPS = _CONV_GENERIC | _packets(
    # seen under inference_mode, before CompositeImplicit decomposition
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "_convolution_mode",
    # backend kernels (seen only if called directly)
    "mkldnn_convolution",
    "cudnn_convolution",
    "cudnn_convolution_transpose",
    "miopen_convolution",
    "miopen_convolution_transpose",
    "miopen_depthwise_convolution",
    "_slow_conv2d_forward",
    "thnn_conv2d",
    "slow_conv3d",
    "slow_conv3d_forward",
    "slow_conv_dilated2d",
    "slow_conv_dilated3d",
    "slow_conv_transpose2d",
    "slow_conv_transpose3d",
    "_conv_depthwise2d",
    "conv_depthwise3d",
    "_nnpack_spatial_convolution",
)
# Matrix products: (packet, index of the left operand); MACs = out elements x its last dim.
_MM_OPS = {
    p: i
    for names, i in (
        (("mm", "bmm", "matmul", "mv", "dot", "vdot", "inner"), 0),
        (("addmm", "baddbmm", "addbmm", "addmv", "_addmm_activation"), 1),
    )
    for p in _packets(*names)
}
_LINEAR_OPS = _packets("linear", "mkldnn_linear")


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    return None


@dataclass
class ConvRecord:
    """One counted convolution or matrix-product call."""

    scope: str  # qualified name of the innermost module that was running ("" for the root)
    op: str  # the ATen op, e.g. "aten.convolution.default"
    kind: str  # "conv" or "matmul"
    kernel: tuple[int, ...]  # spatial kernel size (convs), () for matmul
    groups: int
    in_channels: int
    out_channels: int
    transposed: bool
    out_shape: tuple[int, ...]
    macs: int


@dataclass
class OpCount:
    """Multiply-accumulates, conv activations and conv calls of one forward pass."""

    input_shape: tuple[int, ...]
    device: str  # where the forward pass ran for counting: "meta" or "cpu"
    records: list[ConvRecord] = field(default_factory=list)

    @property
    def macs(self) -> int:
        """All counted multiply-accumulates (convolutions + matrix products)."""
        return sum(r.macs for r in self.records)

    @property
    def conv_macs(self) -> int:
        return sum(r.macs for r in self.records if r.kind == "conv")

    @property
    def matmul_macs(self) -> int:
        return sum(r.macs for r in self.records if r.kind == "matmul")

    @property
    def activations(self) -> int:
        """Elements of every convolution output (the NTIRE definition)."""
        return sum(math.prod(r.out_shape) for r in self.records if r.kind == "conv")

    @property
    def convs(self) -> int:
        """Number of convolution calls (the NTIRE "#Conv")."""
        return sum(1 for r in self.records if r.kind == "conv")

    def by_scope(self, depth: int | None = None) -> dict[str, int]:
        """MACs grouped by module name, truncated to ``depth`` dotted components."""
        out: dict[str, int] = {}
        for r in self.records:
            key = r.scope if depth is None else ".".join(r.scope.split(".")[:depth])
            out[key] = out.get(key, 0) + r.macs
        return out


class _CountingMode(TorchDispatchMode):
    """Records every convolution / matrix product that reaches the dispatcher."""

    def __init__(self, scopes: list[str]) -> None:
        super().__init__()
        self.records: list[ConvRecord] = []
        self._scopes = scopes  # live stack maintained by module hooks (labels only)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)  # the mode is off inside: nested ops are not seen twice
        packet = func.overloadpacket
        if packet in _CONV_OPS:
            self._conv(func, packet, args, kwargs, out)
        elif packet in _MM_OPS:
            a = args[_MM_OPS[packet]]
            self._matmul(func, out, int(a.shape[-1]) if a.dim() else 1)
        elif packet in _LINEAR_OPS:
            w = args[1] if len(args) > 1 else kwargs["weight"]
            self._matmul(func, out, int(w.shape[-1]))
        return out

    def _scope(self) -> str:
        return self._scopes[-1] if self._scopes else ""

    def _conv(self, func, packet, args, kwargs, out) -> None:
        x = args[0]
        w = args[1] if len(args) > 1 else kwargs["weight"]
        y = _first_tensor(out)
        if y is None:
            return
        if packet in _CONV_GENERIC:
            transposed = bool(args[6]) if len(args) > 6 else bool(kwargs.get("transposed"))
        else:
            transposed = "transpose" in packet.__name__
        kernel = tuple(int(k) for k in w.shape[2:])
        per_element = int(w.shape[1]) * math.prod(kernel)
        if transposed:
            # weight (C_in, C_out/groups, k...): each input element feeds C_out/groups x k taps
            macs = x.numel() * per_element
            in_ch, out_ch = int(w.shape[0]), int(y.shape[1])
        else:
            # weight (C_out, C_in/groups, k...): each output element sums C_in/groups x k taps
            macs = y.numel() * per_element
            in_ch, out_ch = int(x.shape[1]), int(w.shape[0])
        groups = max(1, (out_ch if transposed else in_ch) // int(w.shape[1]))
        self.records.append(
            ConvRecord(
                scope=self._scope(),
                op=str(func),
                kind="conv",
                kernel=kernel,
                groups=groups,
                in_channels=in_ch,
                out_channels=out_ch,
                transposed=transposed,
                out_shape=tuple(int(s) for s in y.shape),
                macs=int(macs),
            )
        )

    def _matmul(self, func, out, contraction: int) -> None:
        y = _first_tensor(out)
        if y is None:
            return
        self.records.append(
            ConvRecord(
                scope=self._scope(),
                op=str(func),
                kind="matmul",
                kernel=(),
                groups=1,
                in_channels=contraction,
                out_channels=int(y.shape[-1]) if y.dim() else 1,
                transposed=False,
                out_shape=tuple(int(s) for s in y.shape),
                macs=int(y.numel() * contraction),
            )
        )


def _run_counted(model: nn.Module, x: torch.Tensor) -> list[ConvRecord]:
    names = {id(m): n for n, m in model.named_modules()}
    scopes: list[str] = []

    # Global module hooks only *label* records with the running module; counting itself is
    # done by the dispatch mode, which also sees F.conv2d calls that no module hook would.
    def pre(module, _args):
        name = names.get(id(module))
        if name is not None:
            scopes.append(name)

    def post(module, _args, _out):
        name = names.get(id(module))
        if name is not None and scopes and scopes[-1] == name:
            scopes.pop()

    from torch.nn.modules.module import (
        register_module_forward_hook,
        register_module_forward_pre_hook,
    )

    handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
    mode = _CountingMode(scopes)
    try:
        with mode:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return mode.records


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def count_ops(
    model: nn.Module,
    input_size: int | Sequence[int],
    *,
    in_channels: int | None = None,
    device: str = "meta",
) -> OpCount:
    """Count MACs, conv activations and conv calls of one forward pass at ``input_size``.

    ``input_size`` is the LR (H, W) (or one int for a square), batch 1. ``in_channels``
    defaults to ``model.in_channels`` or 3. ``device="meta"`` runs on shapes only (fast) and
    falls back to the CPU under ``inference_mode`` when the forward cannot run there;
    ``device="cpu"`` always runs for real. ``model`` itself is never modified.
    """
    h, w = _size2(input_size)
    c = int(in_channels or getattr(model, "in_channels", 3))
    if device not in ("meta", "cpu"):
        raise ConfigError(f"count_ops runs on 'meta' or 'cpu', not {device!r}.")
    if device == "meta":
        try:
            # deepcopy then .to("meta") drops the storage: the copy holds shapes only.
            meta_model = copy.deepcopy(model).eval().to("meta")
            with torch.no_grad():
                records = _run_counted(meta_model, torch.zeros(1, c, h, w, device="meta"))
            return OpCount(input_shape=(1, c, h, w), device="meta", records=records)
        except LightSRError:
            raise  # e.g. input too small: the CPU would say the same
        except Exception:  # noqa: BLE001  (any op without a meta kernel, .item(), ...)
            pass
    cpu_model = copy.deepcopy(model).eval().to("cpu")
    with torch.inference_mode():
        records = _run_counted(cpu_model, torch.zeros(1, c, h, w))
    return OpCount(input_shape=(1, c, h, w), device="cpu", records=records)


def lr_size_for_output(scale: int, output: tuple[int, int] = HD_OUTPUT) -> tuple[int, int]:
    """LR (H, W) whose x``scale`` output covers ``output`` = (width, height): the ceiling.

    x2 -> (360, 640), x3 -> (240, 427), x4 -> (180, 320) for the 1280x720 output.
    """
    width, height = output
    return (math.ceil(height / scale), math.ceil(width / scale))


def multi_adds_720p(model: nn.Module, *, scale: int | None = None, device: str = "meta") -> int:
    """The papers' Multi-Adds: MACs of one forward pass producing a 1280x720 output."""
    s = _scale_of(model, scale)
    return count_ops(model, lr_size_for_output(s), device=device).macs


# ---------------------------------------------------------------------------------------------
# Runtime, memory and machine peak
# ---------------------------------------------------------------------------------------------


class _Threads:
    """Set torch's intra-op thread count for a block, then restore it."""

    def __init__(self, n: int | None) -> None:
        self.n = n

    def __enter__(self) -> int:
        self.old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(int(self.n))
        return torch.get_num_threads()

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.old)


def _check_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' was asked for but PyTorch sees no CUDA GPU here "
            f"(torch {torch.__version__}). Use --device cpu."
        )
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"profiling runs on 'cpu' or 'cuda', not {device!r}.")
    return dev


def measure_runtime(
    model: nn.Module,
    input_size: int | Sequence[int],
    *,
    device: str = "cpu",
    threads: int | None = None,
    warmup: int = 3,
    reps: int = 10,
    min_reps: int = 3,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Median wall time (ms) of a forward pass of ``model`` (fp32, batch 1) on ``device``.

    ``warmup`` untimed passes first. Then up to ``reps`` timed passes; with ``budget_s`` the
    timing stops once that many seconds are spent and at least ``min_reps`` passes ran.
    CUDA passes are timed with CUDA events around the forward call only. A copy of ``model``
    runs (in eval mode, on ``device``); ``model`` itself is not changed.
    """
    dev = _check_device(device)
    h, w = _size2(input_size)
    c = int(getattr(model, "in_channels", 3))
    model = copy.deepcopy(model).eval().to(dev)
    x = torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(0)).to(dev)
    times: list[float] = []
    with _Threads(threads) as n_threads, torch.inference_mode():
        for _ in range(warmup):
            model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        for i in range(reps):
            if dev.type == "cuda":
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                model(x)
                e1.record()
                e1.synchronize()
                times.append(e0.elapsed_time(e1))
            else:
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
            if (
                budget_s is not None
                and i + 1 >= min_reps
                and time.perf_counter() - start > budget_s
            ):
                break
    return {
        "runtime_ms": statistics.median(times),
        "runtime_min_ms": min(times),
        "runtime_reps": len(times),
        "runtime_warmup": warmup,
        "threads": n_threads if dev.type == "cpu" else None,
    }


def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # "5" resets the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def _pin_malloc() -> None:
    """Make glibc return big freed buffers to the OS (fixed 64 KiB mmap threshold)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD; setting it also disables auto-growth
    except (OSError, AttributeError):
        pass


def _memory_worker(blob: bytes, shape: tuple[int, ...], threads: int | None, conn) -> None:
    """Runs in a fresh spawned process: peak RSS increase of one forward pass (bytes)."""
    try:
        _pin_malloc()
        if threads:
            torch.set_num_threads(int(threads))
        model = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False).eval()
        del blob
        x = torch.rand(*shape)
        with torch.inference_mode():
            can_reset = _reset_hwm()
            if can_reset:
                model(x)  # warm-up: one-time allocations (thread pool, oneDNN kernels)
                gc.collect()
                _reset_hwm()
                method = "cpu VmHWM increase over one forward pass (fresh process, after warm-up)"
            else:
                method = "cpu peak RSS minus RSS before the forward (no VmHWM reset: upper bound)"
            before = _proc_status_kb("VmRSS")
            if before is None:  # not Linux: ru_maxrss (KiB on Linux/BSD, bytes on macOS)
                import resource

                unit = 1 if sys.platform == "darwin" else 1024
                before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit // 1024
                model(x)
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit // 1024
                method = "cpu ru_maxrss increase over one forward pass (upper bound)"
            else:
                model(x)
                peak = _proc_status_kb("VmHWM")
        conn.send({"peak_memory_mb": max(0, peak - before) / 1024.0, "memory_method": method})
    except BaseException as exc:  # report, never hang the parent
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def measure_peak_memory(
    model: nn.Module,
    input_size: int | Sequence[int],
    *,
    device: str = "cpu",
    threads: int | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Peak memory of one forward pass (MiB); see the module docstring for the method.

    A copy of ``model`` runs (in another process on the CPU); ``model`` itself is not changed.
    """
    dev = _check_device(device)
    h, w = _size2(input_size)
    c = int(getattr(model, "in_channels", 3))
    if dev.type == "cuda":
        model = copy.deepcopy(model).eval().to(dev)
        x = torch.rand(1, c, h, w, device=dev)
        with torch.inference_mode():
            model(x)  # warm-up: cuDNN workspaces and autotuning happen once
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            before = torch.cuda.memory_allocated(dev)
            model(x)
            torch.cuda.synchronize(dev)
            peak = torch.cuda.max_memory_allocated(dev)
        return {
            "peak_memory_mb": (peak - before) / 2**20,
            "peak_memory_allocated_mb": peak / 2**20,
            "memory_method": "cuda max_memory_allocated over one forward pass after warm-up",
        }
    import multiprocessing as mp

    buf = io.BytesIO()
    torch.save(copy.deepcopy(model).eval().cpu(), buf)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_memory_worker, args=(buf.getvalue(), (1, c, h, w), threads, child), daemon=True
    )
    proc.start()
    child.close()
    try:
        if parent.poll(timeout_s):
            result = parent.recv()
        else:
            result = {"error": f"no answer within {timeout_s:.0f} s"}
    except EOFError:
        result = {"error": f"memory subprocess died (exit code {proc.exitcode})"}
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if "error" in result:
        return {"peak_memory_mb": None, "memory_method": f"failed: {result['error']}"}
    return result


_PEAK_CACHE: dict[tuple[str, int | None], dict[str, float | None]] = {}


def _matmul_gflops(dev: torch.device, dtype: torch.dtype, n: int, seconds: float) -> float:
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    best = math.inf
    flops = 2.0 * n**3
    with torch.inference_mode():
        torch.mm(a, b)  # warm-up
        deadline = time.perf_counter() + seconds
        reps = 0
        while reps < 3 or time.perf_counter() < deadline:
            if dev.type == "cuda":
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                torch.mm(a, b)
                e1.record()
                e1.synchronize()
                dt = e0.elapsed_time(e1) / 1e3
            else:
                t0 = time.perf_counter()
                torch.mm(a, b)
                dt = time.perf_counter() - t0
            best = min(best, dt)
            reps += 1
    return flops / best / 1e9


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def measure_peak_flops(device: str = "cpu", *, threads: int | None = None) -> dict[str, Any]:
    """The machine's measured matmul peak in GFLOP/s: fp32 and bf16 (``None`` where absent).

    Best time of a square matmul (2048 on CPU, 8192 on CUDA) over about half a second; measured
    once per process, device and thread count. fp32 on CUDA follows
    ``torch.backends.cuda.matmul.allow_tf32`` (off by default: true fp32).
    """
    dev = _check_device(device)
    key = (str(dev), threads if dev.type == "cpu" else None)
    if key not in _PEAK_CACHE:
        n = 8192 if dev.type == "cuda" else 2048
        with _Threads(threads if dev.type == "cpu" else None):
            fp32 = _matmul_gflops(dev, torch.float32, n, 0.5)
            has_bf16 = torch.cuda.is_bf16_supported() if dev.type == "cuda" else _cpu_has_bf16()
            bf16 = _matmul_gflops(dev, torch.bfloat16, n, 0.5) if has_bf16 else None
        _PEAK_CACHE[key] = {"peak_gflops_fp32": fp32, "peak_gflops_bf16": bf16}
    return dict(_PEAK_CACHE[key])


def _cpu_flags() -> set[str] | None:
    """The CPU feature flags of /proc/cpuinfo; None where it cannot be read (macOS, Windows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AMX-BF16 or AVX512-BF16 in /proc/cpuinfo).

    Without it oneDNN emulates bf16 through fp32 and bf16 inference is several times slower
    than fp32. Where the flags cannot be read, False: callers then keep fp32, which is never
    the slow choice."""
    return bool({"amx_bf16", "avx512_bf16"} & (_cpu_flags() or set()))


def device_name(device: str = "cpu") -> str:
    """A human description of ``device`` (GPU name, or CPU model)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


@dataclass
class ProfileReport:
    """Cost figures of one model in one form. Sizes are (H, W) of the LR input; MACs are
    multiply-accumulates (1 MAC = 2 FLOPs); memory in MiB; times in milliseconds."""

    model: str
    scale: int
    form: str  # "training" or "folded"
    options: dict[str, Any]
    params: int  # of the form profiled
    params_training: int | None  # None when only the folded form was given
    params_folded: int | None  # None when the model cannot be folded
    multi_adds_720p: int  # MACs for a 1280x720 output (the papers' Multi-Adds)
    lr_size_720p: tuple[int, int]
    ntire_input: tuple[int, int]
    ntire_macs: int  # NTIRE "FLOPs", counted as MACs
    ntire_activations: int
    ntire_convs: int
    count_device: str  # "meta" or "cpu"
    device: str | None = None  # where runtime/memory were measured
    device_name: str | None = None
    threads: int | None = None
    runtime_input: tuple[int, int] | None = None
    runtime_ms: float | None = None
    runtime_min_ms: float | None = None
    runtime_reps: int | None = None
    runtime_warmup: int | None = None
    peak_memory_mb: float | None = None
    peak_memory_allocated_mb: float | None = None
    memory_method: str | None = None
    achieved_gflops: float | None = None
    peak_gflops_fp32: float | None = None
    peak_gflops_bf16: float | None = None
    fraction_of_peak_fp32: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("lr_size_720p", "ntire_input", "runtime_input"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    def summary(self) -> str:
        """A few human-readable lines."""
        g = 1e9
        forms = [
            f"{name} {n:,}"
            for name, n in (("training", self.params_training), ("folded", self.params_folded))
            if n is not None and self.form != name
        ]
        lines = [
            f"{self.model} x{self.scale} ({self.form})",
            f"  params            {self.params:,}" + (f"  ({', '.join(forms)})" if forms else ""),
            f"  Multi-Adds 720p   {self.multi_adds_720p / g:.2f} G  "
            f"(LR {self.lr_size_720p[0]}x{self.lr_size_720p[1]})",
            f"  NTIRE @{self.ntire_input[0]}x{self.ntire_input[1]}  "
            f"{self.ntire_macs / g:.2f} G MACs, {self.ntire_activations / 1e6:.2f} M activations, "
            f"{self.ntire_convs} convs",
        ]
        if self.runtime_ms is not None:
            where = self.device or ""
            if self.threads:
                where += f", {self.threads} thread{'s' if self.threads > 1 else ''}"
            lines.append(
                f"  runtime           {self.runtime_ms:.2f} ms median of {self.runtime_reps} "
                f"({where}; {self.device_name})"
            )
        if self.achieved_gflops is not None and self.peak_gflops_fp32:
            bf = (
                f", bf16 peak {self.peak_gflops_bf16:.0f}"
                if self.peak_gflops_bf16 is not None
                else ""
            )
            lines.append(
                f"  achieved          {self.achieved_gflops:.1f} GFLOP/s = "
                f"{100 * (self.fraction_of_peak_fp32 or 0):.1f}% of fp32 matmul peak "
                f"{self.peak_gflops_fp32:.0f}{bf}"
            )
        if self.peak_memory_mb is not None:
            lines.append(
                f"  peak memory       {self.peak_memory_mb:.1f} MiB ({self.memory_method})"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _scale_of(model: nn.Module, scale: int | None) -> int:
    own = getattr(model, "scale", None)
    if scale is None:
        if own is None:
            raise ConfigError("the model has no .scale attribute: pass scale=... to profile it.")
        return int(own)
    if own is not None and int(own) != int(scale):
        raise ConfigError(f"scale={scale} was given but the model is a x{own} model.")
    return int(scale)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def profile(
    model: nn.Module,
    *,
    scale: int | None = None,
    device: str = "cpu",
    threads: int | None = None,
    runtime: bool = True,
    memory: bool = True,
    flops_peak: bool = True,
    runtime_size: int | Sequence[int] = NTIRE_SIZE,
    ntire_size: int | Sequence[int] = NTIRE_SIZE,
    warmup: int = 3,
    reps: int = 10,
    budget_s: float | None = None,
    count_device: str = "meta",
) -> ProfileReport:
    """Profile ``model`` (in the form given: training, or folded by :func:`lightsr.reparameterize`).

    ``scale`` defaults to ``model.scale``. ``device`` ("cpu" or "cuda") and ``threads`` (CPU
    intra-op threads; default: torch's current setting) apply to runtime and memory, which are
    measured at ``runtime_size`` (LR H, W). ``runtime``/``memory``/``flops_peak`` switch those
    measurements off (counts only take milliseconds). ``model`` is not modified.
    """
    from .deploy import reparameterize

    s = _scale_of(model, scale)
    folded = bool(getattr(model, "folded", False))
    notes: list[str] = []
    params = _n_params(model)
    try:
        params_folded = params if folded else _n_params(reparameterize(model))
    except Exception as exc:  # noqa: BLE001  (a model that cannot fold is still profiled)
        params_folded = None
        notes.append(f"reparameterize failed: {type(exc).__name__}: {exc}")
    lr720 = lr_size_for_output(s)
    hd = count_ops(model, lr720, device=count_device)
    nt_size = _size2(ntire_size)
    nt = count_ops(model, nt_size, device=count_device)
    if hd.device != count_device:
        notes.append(f"counted on {hd.device}: the forward pass does not run on {count_device}")
    report = ProfileReport(
        model=str(getattr(model, "arch_name", type(model).__name__.lower())),
        scale=s,
        form="folded" if folded else "training",
        options=dict(getattr(model, "arch_options", {}) or {}),
        params=params,
        params_training=None if folded else params,
        params_folded=params_folded,
        multi_adds_720p=hd.macs,
        lr_size_720p=lr720,
        ntire_input=nt_size,
        ntire_macs=nt.macs,
        ntire_activations=nt.activations,
        ntire_convs=nt.convs,
        count_device=hd.device,
        notes=notes,
    )
    if not (runtime or memory):
        return report
    dev = _check_device(device)
    rt_size = _size2(runtime_size)
    report.device, report.device_name, report.runtime_input = str(dev), device_name(device), rt_size
    if dev.type == "cpu":
        report.threads = threads or torch.get_num_threads()
    if memory:
        # Before the runtime loop, so the CUDA figure is not inflated by cached timing state.
        report.__dict__.update(
            measure_peak_memory(model, rt_size, device=device, threads=report.threads)
        )
    if runtime:
        report.__dict__.update(
            measure_runtime(
                model,
                rt_size,
                device=device,
                threads=threads,
                warmup=warmup,
                reps=reps,
                budget_s=budget_s,
            )
        )
        macs = (
            nt.macs if rt_size == nt_size else count_ops(model, rt_size, device=count_device).macs
        )
        report.achieved_gflops = 2.0 * macs / (report.runtime_ms / 1e3) / 1e9
        if flops_peak:
            report.__dict__.update(measure_peak_flops(device, threads=threads))
            report.fraction_of_peak_fp32 = report.achieved_gflops / report.peak_gflops_fp32
            # Only when the flags were read: an unreadable cpuinfo proves no emulation.
            flags_read = _cpu_flags() is not None
            if (
                dev.type == "cpu"
                and report.peak_gflops_bf16 is not None
                and flags_read
                and not cpu_has_native_bf16()
            ):
                report.notes.append(
                    "the CPU flags show no avx512_bf16/amx_bf16: the bf16 peak is emulated"
                )
    return report


# ---------------------------------------------------------------------------------------------
# Every registered model, and the results files
# ---------------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "model",
    "scale",
    "form",
    "params",
    "params_training",
    "params_folded",
    "multi_adds_720p",
    "ntire_macs",
    "ntire_activations",
    "ntire_convs",
    "runtime_ms",
    "runtime_reps",
    "threads",
    "peak_memory_mb",
    "achieved_gflops",
    "fraction_of_peak_fp32",
    "count_device",
)


def profile_all(
    *,
    models: Iterable[str] | None = None,
    scales: Iterable[int] | None = None,
    forms: Sequence[str] = ("training", "folded"),
    progress: bool = False,
    **kwargs: Any,
) -> list[ProfileReport]:
    """:func:`profile` of every registered model (or ``models``) at each of its scales (or
    those of ``scales`` it supports), in each of ``forms``; ``kwargs`` go to :func:`profile`.

    Models are built with seed 0 (random weights: costs do not depend on them). Where folding
    changes nothing (same module tree, parameters and counts: the plain baselines), the folded
    row reuses the training row's runtime and memory instead of measuring the same network
    twice, and says so in its notes.
    """
    from .deploy import reparameterize
    from .registry import create_model, get_spec, list_models

    bad = set(forms) - {"training", "folded"}
    if bad:
        raise ConfigError(f"forms are 'training' and 'folded', not {sorted(bad)}.")
    reports: list[ProfileReport] = []
    for name in list(models) if models is not None else list_models():
        spec = get_spec(name)
        for s in spec.scales:
            if scales is not None and s not in set(scales):
                continue
            torch.manual_seed(0)
            trained = create_model(spec.name, scale=s)
            measured: ProfileReport | None = None
            measures = kwargs.get("runtime", True) or kwargs.get("memory", True)
            for form in forms:
                m = trained if form == "training" else reparameterize(trained)
                if progress:
                    print(f"profiling {spec.name} x{s} {form} ...", file=sys.stderr, flush=True)
                if (
                    form == "folded"
                    and measured is not None
                    and measures
                    and repr(m) == repr(trained)
                ):
                    counts = {**kwargs, "runtime": False, "memory": False}
                    report = profile(m, **counts)
                    same = (report.params, report.multi_adds_720p, report.ntire_macs) == (
                        measured.params,
                        measured.multi_adds_720p,
                        measured.ntire_macs,
                    )
                    if same:
                        for k in _MEASURED_FIELDS:
                            setattr(report, k, getattr(measured, k))
                        report.notes += [n for n in measured.notes if n not in report.notes]
                        report.notes.append(
                            "folding leaves this network unchanged: runtime and memory are "
                            "those of the training form"
                        )
                        reports.append(report)
                        continue
                report = profile(m, **kwargs)
                if form == "training":
                    measured = report
                reports.append(report)
    return reports


_MEASURED_FIELDS = (
    "device",
    "device_name",
    "threads",
    "runtime_input",
    "runtime_ms",
    "runtime_min_ms",
    "runtime_reps",
    "runtime_warmup",
    "peak_memory_mb",
    "peak_memory_allocated_mb",
    "memory_method",
    "achieved_gflops",
    "peak_gflops_fp32",
    "peak_gflops_bf16",
    "fraction_of_peak_fp32",
)


def write_results(
    reports: Sequence[ProfileReport],
    json_path: str | os.PathLike | None,
    *,
    csv_path: str | os.PathLike | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write ``reports`` as JSON ({"metadata", "results"}) and/or CSV, atomically; a ``None``
    path skips that format."""
    from .checkpoint import atomic_write

    meta = {
        "lightsr_version": _lightsr_version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": device_name("cpu"),
        "cpu_count": os.cpu_count(),
        "units": {
            "multi_adds_720p": "MACs for a 1280x720 output (x3: 240x427 LR, i.e. 1281x720)",
            "ntire_macs": "MACs at a 256x256 LR input",
            "ntire_activations": "elements of every conv output at 256x256 LR",
            "runtime_ms": "median ms per forward pass (fp32, batch 1)",
            "peak_memory_mb": "MiB above the pre-forward baseline (see memory_method)",
        },
        **(metadata or {}),
    }
    payload = {"metadata": meta, "results": [r.to_dict() for r in reports]}

    def write_json(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=1)
            f.write("\n")

    if json_path is not None:
        atomic_write(json_path, write_json)
    if csv_path is not None:

        def write_csv(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                wr = csv.writer(f)
                wr.writerow(CSV_COLUMNS)
                for r in reports:
                    d = r.to_dict()
                    wr.writerow(
                        [
                            (f"{d[c]:.4g}" if isinstance(d[c], float) else d[c])
                            if d[c] is not None
                            else ""
                            for c in CSV_COLUMNS
                        ]
                    )

        atomic_write(csv_path, write_csv)


def read_results(json_path: str | os.PathLike) -> list[ProfileReport]:
    """The reports of a file written by :func:`write_results`."""
    data = json.loads(Path(json_path).read_text())
    reports = []
    for d in data["results"]:
        for k in ("lr_size_720p", "ntire_input", "runtime_input"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        reports.append(ProfileReport(**d))
    return reports


def _lightsr_version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------------------------------------
# PSNR against Multi-Adds (the MAFFSRN paper's Figure 1)
# ---------------------------------------------------------------------------------------------

_MODEL_KEYS = ("model", "arch", "arch_name", "name")
_PSNR_KEYS = ("psnr_y", "psnr", "PSNR")
_SKIP_KEYS = ("images", "per_image", "failures")  # per-image PSNRs are not the set's


def _psnr_records(obj: Any, context: dict[str, Any]) -> Iterable[tuple[dict, dict]]:
    """Yield (dict, context) for every dict; the context holds its ancestors' scalar fields
    and, under ``"_keys"``, the dict keys on the path to it (e.g. "x4", "Set5")."""
    if isinstance(obj, dict):
        yield obj, context
        here = {**context, **{k: v for k, v in obj.items() if isinstance(v, (str, int, float))}}
        for k, v in obj.items():
            if k in _SKIP_KEYS or not isinstance(v, (dict, list)):
                continue
            keys = here.get("_keys", ()) + ((k,) if isinstance(v, dict) else ())
            yield from _psnr_records(v, {**here, "_keys": keys})
    elif isinstance(obj, list):
        for v in obj:
            yield from _psnr_records(v, context)


def load_psnr_results(
    results_dir: str | os.PathLike, *, dataset: str = "Set5", scale: int = 4
) -> dict[str, float]:
    """PSNR-Y (dB) per model on ``dataset`` at ``scale`` from evaluation JSON files.

    Reads every ``*.json`` in ``results_dir`` except the ``profile*`` files and accepts any
    nesting in which a dict has its own PSNR (``psnr_y``/``psnr``) and, on itself or its
    ancestors, a model name (``model``/``arch``), a ``scale`` (or an ``xN`` key on the path)
    and a ``dataset`` (or a key on the path equal to ``dataset``): e.g. the ``to_dict()`` of
    :class:`lightsr.evaluate.EvalResult`. Per-image lists (``images``) are not read. When a
    model appears more than once, the last file (sorted by name) wins.
    """
    out: dict[str, float] = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        if path.name.startswith("profile"):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for own, ctx in _psnr_records(data, {}):
            psnr = next((own[k] for k in _PSNR_KEYS if isinstance(own.get(k), (int, float))), None)
            if psnr is None or not math.isfinite(psnr):
                continue
            rec = {**ctx, **own}
            keys = [str(k) for k in ctx.get("_keys", ())]
            model = next((rec[k] for k in _MODEL_KEYS if isinstance(rec.get(k), str)), None)
            ds = rec.get("dataset", rec.get("set"))
            if ds is None:
                ds = next((k for k in keys if k.lower() == dataset.lower()), None)
            sc = rec.get("scale")
            if sc is None:
                sc = next((int(k[1:]) for k in keys if k[:1] in "xX" and k[1:].isdigit()), None)
            if (
                model
                and isinstance(ds, str)
                and ds.lower() == dataset.lower()
                and sc is not None
                and int(sc) == scale
            ):
                out[model.lower().replace("-", "_")] = float(psnr)
    return out


def require_matplotlib() -> None:
    """Raise ConfigError naming the fix when matplotlib is missing (checked before long runs)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(
            "plotting needs matplotlib, which is not installed: pip install 'lightsr[plot]' "
            "(or pip install matplotlib)."
        )


def plot_psnr_vs_multiadds(
    reports: Sequence[ProfileReport],
    psnr: dict[str, float],
    path: str | os.PathLike,
    *,
    scale: int = 4,
    dataset: str = "Set5",
) -> int:
    """Scatter PSNR (``psnr``: model -> dB) against Multi-Adds at 720p of the *folded* reports
    at ``scale`` (the network that is deployed: FMEN's training form costs three times its
    folded form); marker area grows with the folded parameter count. Returns the number of
    points. Needs matplotlib (``pip install 'lightsr[plot]'``)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from .checkpoint import atomic_write

    points = [r for r in reports if r.scale == scale and r.form == "folded" and r.model in psnr]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in points:
        x, y = r.multi_adds_720p / 1e9, psnr[r.model]
        ax.scatter(x, y, s=20 + r.params / 5e3, alpha=0.7, edgecolors="k", linewidths=0.5)
        ax.annotate(r.model, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    # plain numbers (5, 10, 20, ...) rather than 10^1 on the log axis
    plain = matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("Multi-Adds (G) of the folded network, 1280x720 output")
    ax.margins(x=0.15, y=0.15)  # room for the labels
    ax.set_ylabel(f"PSNR-Y (dB), {dataset} x{scale}")
    ax.set_title(f"{dataset} x{scale}: PSNR against Multi-Adds (marker area ~ parameters)")
    ax.grid(True, which="both", alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, "no evaluation results found", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    suffix = Path(path).suffix or ".png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix.lstrip(".")))
    plt.close(fig)
    return len(points)


__all__ = [
    "HD_OUTPUT",
    "NTIRE_SIZE",
    "ConvRecord",
    "OpCount",
    "ProfileReport",
    "count_ops",
    "cpu_has_native_bf16",
    "device_name",
    "load_psnr_results",
    "lr_size_for_output",
    "measure_peak_flops",
    "measure_peak_memory",
    "measure_runtime",
    "multi_adds_720p",
    "plot_psnr_vs_multiadds",
    "profile",
    "profile_all",
    "read_results",
    "require_matplotlib",
    "write_results",
]
