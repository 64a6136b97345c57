"""The report type, :func:`profile` (one model), :func:`profile_all` (the registry) and the
results files (JSON, CSV)."""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..atomic import atomic_write
from ..deploy import reparameterize
from ..errors import ConfigError
from ..hardware import cpu_flags, cpu_has_native_bf16, device_name
from ..registry import create_model, get_spec, list_models
from .counting import NTIRE_SIZE, _scale_of, _size2, count_ops, lr_size_for_output
from .measure import _check_device, measure_peak_flops, measure_peak_memory, measure_runtime

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
        assert report.runtime_ms is not None  # set by measure_runtime
        report.achieved_gflops = 2.0 * macs / (report.runtime_ms / 1e3) / 1e9
        if flops_peak:
            report.__dict__.update(measure_peak_flops(device, threads=threads))
            assert report.peak_gflops_fp32 is not None  # set by measure_peak_flops
            report.fraction_of_peak_fp32 = report.achieved_gflops / report.peak_gflops_fp32
            # Only when the flags were read: an unreadable cpuinfo proves no emulation.
            flags_read = cpu_flags() is not None
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
    bad = set(forms) - {"training", "folded"}
    if bad:
        raise ConfigError(f"forms are 'training' and 'folded', not {sorted(bad)}.")
    reports: list[ProfileReport] = []
    # Learned models only by default: bicubic has no cost to profile.
    names = (
        list(models) if models is not None else [n for n in list_models() if get_spec(n).learned]
    )
    for name in names:
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
    overwrite: bool = False,
) -> None:
    """Write ``reports`` as JSON ({"metadata", "results"}) and/or CSV, atomically; a ``None``
    path skips that format. An existing file is replaced only with ``overwrite``."""
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
        atomic_write(json_path, write_json, overwrite=overwrite)
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

        atomic_write(csv_path, write_csv, overwrite=overwrite)


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
    return __version__
