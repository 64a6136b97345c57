"""Measuring a forward pass: runtime, peak memory, and the machine's matmul peak (see the
package docstring for the methods)."""

from __future__ import annotations

import copy
import ctypes
import gc
import io
import math
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..hardware import cpu_can_run_bf16, proc_status_kb, reset_peak_rss, resolve_device
from .counting import _size2

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


def _pin_malloc() -> None:
    """Make glibc return big freed buffers to the OS (fixed 64 KiB mmap threshold)."""
    try:
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
            can_reset = reset_peak_rss()
            if can_reset:
                model(x)  # warm-up: one-time allocations (thread pool, oneDNN kernels)
                gc.collect()
                reset_peak_rss()
                method = "cpu VmHWM increase over one forward pass (fresh process, after warm-up)"
            else:
                method = "cpu peak RSS minus RSS before the forward (no VmHWM reset: upper bound)"
            before = proc_status_kb("VmRSS")
            if before is None:  # not Linux: ru_maxrss (KiB on Linux/BSD, bytes on macOS)
                import resource

                unit = 1 if sys.platform == "darwin" else 1024
                before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit // 1024
                model(x)
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit // 1024
                method = "cpu ru_maxrss increase over one forward pass (upper bound)"
            else:
                model(x)
                hwm = proc_status_kb("VmHWM")
                assert hwm is not None  # /proc/self/status gave VmRSS just before
                peak = hwm
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
            has_bf16 = torch.cuda.is_bf16_supported() if dev.type == "cuda" else cpu_can_run_bf16()
            bf16 = _matmul_gflops(dev, torch.bfloat16, n, 0.5) if has_bf16 else None
        _PEAK_CACHE[key] = {"peak_gflops_fp32": fp32, "peak_gflops_bf16": bf16}
    return dict(_PEAK_CACHE[key])


def _check_device(device: str | torch.device) -> torch.device:
    """The device to measure on (:func:`lightsr.hardware.resolve_device`: one rule everywhere)."""
    return resolve_device(device)
