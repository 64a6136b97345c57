"""What the machine is and has: devices, memory, CPU features, the process's peak memory.

The one place that reads ``/proc/cpuinfo``, ``/proc/meminfo`` and ``/proc/self/status`` and
turns a user's ``--device`` into a ``torch.device``: every command (upscale, eval, profile,
train) and every benchmark resolves devices and detects features here, so they agree. It sits
low in the import order: it imports nothing of lightsr but the errors.

Features are detected, never assumed: the CPUs this project runs on change between sessions
(Intel Ice Lake without bf16, AMD Zen 4 with AVX512-BF16 and VNNI, Sapphire Rapids with AMX).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from typing import Any

import torch

from .errors import ConfigError

#: CPU flags (as /proc/cpuinfo spells them) that decide which kernels are fast; recorded with
#: every benchmark.
FLAGS_OF_INTEREST = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)

_DEVICE_TYPES = ("cpu", "cuda")


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device | None, *, local_rank: int | None = None):
    """The ``torch.device`` a user's choice means: ``None`` or ``"auto"`` -> CUDA when available,
    else CPU; ``"cuda"`` with ``local_rank`` -> that GPU (one process per GPU under torchrun).

    Raises :class:`ConfigError` for a device that is not a torch device (``--device bogus``),
    a type lightsr does not run on, or CUDA asked for where PyTorch sees none.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"device {str(device)!r} is not a torch device: use auto, cpu, cuda or cuda:N."
        ) from None
    if dev.type not in _DEVICE_TYPES:
        raise ConfigError(
            f"device {str(device)!r} is not supported: use auto, cpu, cuda or cuda:N."
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {str(device)!r} was asked for but PyTorch sees no CUDA GPU here "
                f"(torch {torch.__version__}): use --device cpu."
            )
        if dev.index is None and local_rank is not None:
            dev = torch.device("cuda", local_rank)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA "
                "GPU(s), numbered from 0."
            )
    return dev


def device_name(device: str | torch.device = "cpu") -> str:
    """A human description of ``device``: the GPU's name, or the CPU model."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return cpu_model()


# ---------------------------------------------------------------------------------------------
# CPU features
# ---------------------------------------------------------------------------------------------


def _cpuinfo_field(name: str) -> str | None:
    """The value of the first ``name`` line of /proc/cpuinfo; None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name) and ":" in line:
                    key = line.split(":", 1)[0].strip()
                    if key == name:
                        return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def cpu_flags() -> frozenset[str] | None:
    """The CPU feature flags of /proc/cpuinfo; None where they cannot be read (macOS, Windows,
    a restricted /proc)."""
    flags = _cpuinfo_field("flags")
    return None if flags is None else frozenset(flags.split())


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what :mod:`platform` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_isa(flags: Iterable[str] | None = None) -> str | None:
    """The widest instruction set the CPU shows for the kernels inference runs on, as a short
    tag: ``"amx"``, ``"avx512-bf16"`` (AVX-512 with native bf16), ``"avx512"``, ``"avx2"`` or
    ``"sse"``; None where the flags cannot be read. ``flags`` (default: this CPU's) lets a
    benchmark record name the machine it was measured on."""
    have = cpu_flags() if flags is None else frozenset(flags)
    if have is None:
        return None
    if {"amx_tile", "amx_bf16", "amx_int8"} & have:
        return "amx"
    if "avx512_bf16" in have:
        return "avx512-bf16"
    if "avx512f" in have:
        return "avx512"
    return "avx2" if "avx2" in have else "sse"


def cpu_kind() -> str:
    """The model name, the CPU family and model numbers and the instruction set it shows
    (``AMD EPYC (family 25, model 17, avx512-bf16)``): virtual machines often report one bare
    name for several generations (the AMD EPYC seen here was Zen 1 on one day and Zen 4 on
    another), and the same generation with different features hidden (that Zen 4 showed AVX2
    only for weeks, then AVX-512 with bf16 and VNNI), which differ several-fold in speed."""
    family, model = _cpuinfo_field("cpu family"), _cpuinfo_field("model")
    isa = cpu_isa()
    numbers = [f"family {family}", f"model {model}"] if family and model else []
    details = ", ".join(numbers + ([isa] if isa else []))
    return f"{cpu_model()} ({details})" if details else cpu_model()


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AMX-BF16 or AVX512-BF16 in /proc/cpuinfo).

    Without it oneDNN emulates bf16 through fp32 and bf16 inference is several times slower
    than fp32. Where the flags cannot be read, False: callers then keep fp32, which is never
    the slow choice."""
    return bool({"amx_bf16", "avx512_bf16"} & (cpu_flags() or frozenset()))


def cpu_int8_dot() -> str | None:
    """The CPU's int8 dot-product instructions, best first: ``"amx"`` (AMX-INT8), ``"vnni"``
    (AVX512-VNNI or AVX-VNNI), ``"avx2"`` (none: int8 GEMMs multiply through 16-bit
    intermediates, roughly fp32's speed), or None where the flags cannot be read. Recorded with
    every int8 timing, since int8's gain over fp32 depends on it."""
    flags = cpu_flags()
    if flags is None:
        return None
    if "amx_int8" in flags:
        return "amx"
    if {"avx512_vnni", "avx_vnni"} & flags:
        return "vnni"
    return "avx2" if "avx2" in flags else "none"


def device_has_native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and why in words (for the ``auto`` precision
    message): on CPU the AMX-BF16 / AVX512-BF16 flags; on CUDA what the GPU reports
    (``torch.cuda.is_bf16_supported``: compute capability 8.0 and later)."""
    if device.type == "cuda":
        try:
            ok = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch < 2.3 has no including_emulation
            ok = bool(torch.cuda.is_bf16_supported())
        name = torch.cuda.get_device_name(device)
        return ok, f"{'native' if ok else 'no native'} bf16 on {name}"
    if cpu_flags() is None:
        return False, "CPU flags unreadable, bf16 not assumed"
    if cpu_has_native_bf16():
        return True, "native bf16 on this CPU (AVX512-BF16/AMX)"
    return False, "no native bf16 on this CPU"


def auto_precision(device: torch.device, *, bf16_safe: bool | None) -> tuple[str, str]:
    """What ``precision="auto"`` means for a model on ``device``: ``(precision, why)``.

    bf16 only where it is both fast and measured to be harmless: the device computes bf16
    natively (:func:`device_has_native_bf16`; emulated bf16 on a CPU is several times slower
    than fp32) and the model is declared ``bf16_safe`` (measured within 0.02 dB Set5 PSNR of
    fp32; ``tests/test_precision.py``). Everything else runs fp32, which is never slower than
    emulated bf16. ``why`` reads e.g. ``"auto: no native bf16 on this CPU"``."""
    native, why = device_has_native_bf16(device)
    if not native:
        return "fp32", f"auto: {why}"
    if bf16_safe is not True:
        what = "not measured bf16-safe" if bf16_safe is None else "declared not bf16-safe"
        return "fp32", f"auto: {why}, but the model is {what}"
    return "bf16", f"auto: {why} and the model is bf16-safe"


def cpu_can_run_bf16() -> bool:
    """True when oneDNN runs bf16 on this CPU at all (natively, or emulated on AVX-512).

    Not a speed claim: :func:`cpu_has_native_bf16` says whether bf16 is fast here."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def machine_record(threads: int | None = None) -> dict[str, Any]:
    """What a benchmark result must say about where it ran: CPU model, the flags that decide
    kernel speed (or None where unreadable), logical CPUs, torch threads and version, load."""
    flags = cpu_flags()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "cpu": cpu_model(),
        "cpu_flags": None if flags is None else sorted(f for f in FLAGS_OF_INTEREST if f in flags),
        "native_bf16": cpu_has_native_bf16(),
        "int8_dot": cpu_int8_dot(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": load,
    }


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def available_memory(device: torch.device) -> int:
    """Bytes free for inference: CUDA free memory, or MemAvailable from /proc/meminfo (CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4 * 2**30  # no /proc (macOS, Windows): assume a modest machine


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the ways PyTorch reports running out of memory (CUDA, or a failed CPU alloc)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    )


def proc_status_kb(key: str) -> int | None:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``); None where unreadable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (VmHWM) to its current RSS; False where the
    kernel does not allow it (then a later VmHWM reading is an upper bound)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # "5" resets the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False
