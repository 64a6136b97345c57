"""Every CPU inference path on the machine at hand, side by side: speed, GFLOP/s, Set5 quality.

For A2F-SD, FMEN-S and MAFFSRN at x4 on a 256 x 256 LR input, in one run (interleaved rounds,
median and min; the minimum is the better estimate on a shared machine):

- ``authors``: as benchmarks/bench_upscale.py runs it (training form with weight norm for
  A2F-SD and MAFFSRN, the released folded form for FMEN-S; fp32, eager, NCHW);
- lightsr's paths through ``Upscaler``: ``fp32`` (folded, channels_last, eager, narrow widths
  padded), ``compiled`` (+ torch.compile), ``bf16`` (autocast, image convs fp32; emulated, and
  marked so, where the CPU has no native bf16), ``int8`` (lightsr.quantize: ONNX Runtime
  static QDQ, per-channel int8 weights, the sensitive convs in fp32), ``fp32_ort``
  (``backend="onnxruntime"``: the folded fp32 model run by ONNX Runtime inside ``Upscaler``,
  what ``lightsr upscale --backend auto`` runs on a CPU at fp32); ``fp32_ov``, ``bf16_ov``
  (where the CPU has native bf16) and ``int8_ov`` (``backend="openvino"``: the same export,
  or ``int8``'s QDQ graph, run by OpenVINO inside ``Upscaler``; ``int8_ov`` is what ``--backend
  auto`` runs at int8 where OpenVINO is installed);
- ``ort_fp32``: plain ONNX Runtime on the fp32 ONNX export (no Upscaler);
- ``ov_fp32``, ``ov_bf16`` (only where OpenVINO reports native bf16), ``ov_int8`` (the same QDQ
  graph as ``int8``): OpenVINO, where it is importable (skipped with a note otherwise).

Per precision, ``vs_openvino_min`` is lightsr's fastest path of that precision over OpenVINO's
own (``ov_*``) time: the issue's bar is at most 1.10.

Quality per path: Set5 x4 PSNR-Y (border 4; authors' weights where released, else a bundled
``maffsrn_x4`` or ``--maffsrn-weights``), and for every path the PSNR of its output against the
fp32 output (which is what a seeded MAFFSRN without weights can say). ``compiled`` shares
fp32's graph and recompiles per image size, so its Set5 is not rerun.
Achieved GFLOP/s (2 FLOPs per MAC, FlopCounterMode) against matmul peaks measured here
(fp32, bf16, and int8 via ``torch._int_mm`` where it runs). ONNX Runtime runs without
busy-waiting and every timed call is followed by a 20 ms pause, so one engine's spinning
threads do not steal the next one's cores.

    python benchmarks/bench_backends.py [--rounds 7] [--threads 2] [--models a2f_sd fmen_s maffsrn]
    python benchmarks/bench_backends.py --table-only     # regenerate docs/BACKENDS.md
    python benchmarks/bench_backends.py --sensitivity fmen_s   # per-conv int8 loss on Set5,
                                                               # results/int8_sensitivity/
    python benchmarks/bench_backends.py --sensitivity a2f_sd_x2   # the same for hub weights,
                                                                  # at the entry's scale

Writes benchmarks/results/backends/<cpu-slug>.json (one file per CPU model; a rerun on the same
kind replaces it) and regenerates docs/BACKENDS.md from all of them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_upscale as bu  # noqa: E402  (shared helpers: peaks, input, weights, Set5)

import lightsr  # noqa: E402
from lightsr import hub  # noqa: E402
from lightsr.atomic import atomic_write_text  # noqa: E402
from lightsr.data.io import image_to_tensor, read_image, tensor_to_image  # noqa: E402
from lightsr.data.resize import modcrop  # noqa: E402
from lightsr.export import export_model  # noqa: E402
from lightsr.hardware import cpu_has_native_bf16, cpu_int8_dot, cpu_kind, machine_record  # noqa: E402
from lightsr.hub import bundled_weights  # noqa: E402
from lightsr.metrics import psnr  # noqa: E402
from lightsr.quantize import (  # noqa: E402
    default_keep_fp32,
    image_convs,
    openvino_core,
    quantize_int8,
)
from lightsr.upscale import Upscaler  # noqa: E402

RESULTS = bu.ROOT / "benchmarks" / "results" / "backends"
#: ``--sensitivity MODEL`` writes ``<MODEL>.json`` here (not beside the per-CPU tables).
SENSITIVITY = bu.ROOT / "benchmarks" / "results" / "int8_sensitivity"
#: ``benchmarks/int8_tradeoffs.py`` writes here; its tables go into docs/BACKENDS.md.
TRADEOFFS = bu.ROOT / "benchmarks" / "results" / "int8_tradeoffs"
DOC = bu.ROOT / "docs" / "BACKENDS.md"
PAUSE_S = 0.02
SET5_LR = bu.SHARED / "data" / "Set5" / "LR_bicubic" / f"X{bu.SCALE}"
SET5_HR = bu.SHARED / "data" / "Set5" / "HR"


def _label(run: dict) -> str:
    """A results file's CPU in words: model name with family/model numbers where recorded."""
    return run.get("cpu_kind") or run["machine"]["cpu"]


def cpu_slug(name: str) -> str:
    """A file name for a CPU model: lower case, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown-cpu"


def int8_peak(n: int = 2048, reps: int = 5) -> float | None:
    """GOP/s of an n^3 int8 matmul (torch._int_mm), or None where it does not run here."""
    try:
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        b = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        torch._int_mm(a, b)
    except (RuntimeError, AttributeError):
        return None
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch._int_mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def load(name: str, maffsrn_weights: str | None):
    """(training-form model, weights description, trained?)."""
    if name == "maffsrn":
        path = Path(maffsrn_weights) if maffsrn_weights else bundled_weights("maffsrn", bu.SCALE)
        if path is not None and path.is_file():
            return lightsr.load(str(path)), f"lightsr {path.name}", True
    model, weights = bu.load_model(name)
    return model, weights, weights.startswith("official")


def _onnxruntime(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"lr": np.ascontiguousarray(x.numpy())})[0])

    return run


def _openvino(source, threads: int, precision: str):
    # lightsr's one Core (quantize.openvino_core says why Cores are not made per model)
    core = openvino_core()
    model = core.read_model(source)
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision}
    request = core.compile_model(model, "CPU", config).create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        out = request.infer({0: np.ascontiguousarray(x.numpy())})[0]
        return torch.from_numpy(np.array(out, copy=True))

    return run


def openvino_info() -> dict:
    try:
        import openvino as ov
    except ImportError:
        return {"available": False, "note": "openvino not importable: pip install openvino"}
    caps = list(openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return {"available": True, "version": ov.__version__, "cpu_capabilities": caps}


def build_paths(model, folded, threads: int, tmp: Path, ov: dict) -> tuple[dict, dict]:
    """name -> run(x) for every path, and name -> note (skips, emulation)."""
    notes: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # emulated bf16
        runners = {
            "fp32": Upscaler(folded, tile=None, precision="fp32"),
            "compiled": Upscaler(folded, tile=None, precision="fp32", compile=True),
            "bf16": Upscaler(folded, tile=None, precision="bf16"),
            "fp32_ort": Upscaler(folded, tile=None, precision="fp32", backend="onnxruntime"),
        }
        t = time.perf_counter()
        runners["int8"] = Upscaler(folded, tile=None, precision="int8")
        notes["int8"] = f"quantized in {time.perf_counter() - t:.1f} s; " + ", ".join(
            f"{k}={v}" for k, v in vars(runners["int8"].int8.report).items() if k != "quantized"
        )
        if ov["available"]:
            runners["fp32_ov"] = Upscaler(folded, tile=None, precision="fp32", backend="openvino")
            if cpu_has_native_bf16():
                runners["bf16_ov"] = Upscaler(
                    folded, tile=None, precision="bf16", backend="openvino"
                )
            # the quantized graph comes from the cache int8 just filled
            runners["int8_ov"] = Upscaler(folded, tile=None, precision="int8", backend="openvino")
    if not cpu_has_native_bf16():
        notes["bf16"] = "emulated: this CPU has no native bf16"
    paths = {"authors": bu.authors_path(model if model.arch_name != "fmen_s" else folded)}
    paths.update({k: r._forward for k, r in runners.items()})
    onnx_path = tmp / "fp32.onnx"
    export_model(folded, onnx_path, check=False, overwrite=True)
    paths["ort_fp32"] = _onnxruntime(onnx_path, threads)
    if ov["available"]:
        paths["ov_fp32"] = _openvino(str(onnx_path), threads, "f32")
        if "BF16" in ov["cpu_capabilities"]:
            paths["ov_bf16"] = _openvino(str(onnx_path), threads, "bf16")
        else:
            notes["ov_bf16"] = "skipped: OpenVINO reports no native bf16 on this CPU"
        int8 = runners["int8"].int8
        assert int8 is not None
        # OpenVINO's own run of the QDQ graph, its float parts as int8_ov runs them (bf16 on a
        # CPU with native bf16 where the model is declared safe so, as OpenVINO's default
        # would be there; else f32, which keeps the kept convs fp32)
        floats = runners["int8_ov"].int8.report.floats if "int8_ov" in runners else "fp32"
        paths["ov_int8"] = _openvino(int8.onnx, threads, "bf16" if floats == "bf16" else "f32")
        notes["int8_ov"] = f"kept convs in {floats}"
    else:
        notes["openvino"] = ov["note"]
    return paths, notes


def quality(
    run, trained: bool, reference, *, scale: int = bu.SCALE, lr_dir: str = "LR_bicubic"
) -> dict:
    """Set5 PSNR-Y (LR from ``lr_dir``) against HR (trained weights) and against the fp32
    path's output."""
    out: dict = {}
    lr_folder = SET5_HR.parent / lr_dir / f"X{scale}"
    if not lr_folder.is_dir():
        return {"note": f"{lr_folder} absent"}
    vs_hr, vs_fp32 = [], []
    for hr_path in sorted(SET5_HR.glob("*.png")):
        lr = image_to_tensor(read_image(lr_folder / f"{hr_path.stem}x{scale}.png"))
        sr = tensor_to_image(run(lr))
        if trained:
            hr = modcrop(read_image(hr_path), scale)
            vs_hr.append(psnr(sr, hr, crop_border=scale, y_channel=True))
        if reference is not None:
            ref = tensor_to_image(reference(lr))
            vs_fp32.append(psnr(sr, ref, crop_border=scale, y_channel=True))
    if vs_hr:
        out["set5_psnr_y"] = round(float(np.mean(vs_hr)), 4)
    if vs_fp32:  # identical outputs: "identical" (JSON has no infinity)
        mean = float(np.mean(vs_fp32))
        out["psnr_y_vs_fp32"] = round(mean, 2) if np.isfinite(mean) else "identical"
    return out


def bench_model(name: str, rounds: int, threads: int, peaks: dict, ov: dict, args) -> dict:
    model, weights, trained = load(name, args.maffsrn_weights)
    folded = lightsr.reparameterize(model)
    x = bu.bench_input()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        folded(x)
    flops = counter.get_total_flops()
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        paths, notes = build_paths(model, folded, threads, Path(tmp), ov)
        warmup_s, times, _ = bu.interleaved_times(paths, x, rounds, pause_s=PAUSE_S)
        result: dict = {
            "weights": weights,
            "gmacs_256": round(flops / 2e9, 3),
            "warmup_incl_compile_s": round(warmup_s, 1),
            "notes": notes,
            "paths": {},
        }
        fp32 = paths["fp32"]
        for k, ts in times.items():
            best = min(ts)
            # Against the fp32 peak for every path (as bench_upscale.py): the bf16/int8 matmul
            # peaks are recorded too, but where they are not native they measure slow generic
            # kernels that ONNX Runtime and OpenVINO do not use.
            peak = peaks["fp32_gflops"]
            row = {
                "median_ms": round(statistics.median(ts) * 1000, 1),
                "min_ms": round(best * 1000, 1),
                "gflops_at_min": round(flops / best / 1e9, 1),
                "pct_fp32_peak_at_min": round(100 * flops / best / 1e9 / peak, 1),
            }
            if not args.no_quality and k != "compiled":
                row.update(quality(paths[k], trained, None if k == "fp32" else fp32))
            result["paths"][k] = row
    p = result["paths"]
    result["speedup_vs_authors_min"] = {
        k: round(p["authors"]["min_ms"] / v["min_ms"], 2) for k, v in p.items()
    }
    result["fastest_min"] = min(p, key=lambda k: p[k]["min_ms"])
    result["vs_openvino_min"] = vs_openvino(p)
    return result


#: Per precision, lightsr's paths (Upscaler) and OpenVINO's own.
PRECISION_PATHS = {
    "fp32": (("fp32", "compiled", "fp32_ort", "fp32_ov"), "ov_fp32"),
    "bf16": (("bf16", "bf16_ov"), "ov_bf16"),
    "int8": (("int8", "int8_ov"), "ov_int8"),
}


def vs_openvino(paths: dict) -> dict:
    """precision -> {lightsr's fastest path, its min time over OpenVINO's}, where both ran."""
    out = {}
    for precision, (ours, theirs) in PRECISION_PATHS.items():
        ran = [k for k in ours if k in paths]
        if not ran or theirs not in paths:
            continue
        best = min(ran, key=lambda k: paths[k]["min_ms"])
        ratio = paths[best]["min_ms"] / paths[theirs]["min_ms"]
        out[precision] = {"lightsr_path": best, "ratio": round(ratio, 3)}
    return out


# ---------------------------------------------------------------------------------------------
# Per-conv int8 sensitivity
# ---------------------------------------------------------------------------------------------


def sensitivity(name: str, limit: int | None) -> dict:
    """Set5 PSNR-Y change when only one conv is int8 (the others fp32), per conv.

    ``name``: a model (the authors' weights, x4, Set5 ``LR_bicubic`` like the speed tables) or
    a hub weights entry (``a2f_sd_x2``: its scale, Set5 ``LR_bicubic_clamp`` like
    ``benchmarks/zoo_table.py``, so the figures add up to the zoo's int8 costs)."""
    if name in {e.name for e in hub.list_weights()}:
        entry = hub.get_weights(name)
        model, weights, trained = lightsr.load(name), f"hub {name}", True
        scale, lr_dir = entry.scale, "LR_bicubic_clamp"
    else:
        model, weights, trained = load(name, None)
        scale, lr_dir = bu.SCALE, "LR_bicubic"
    if not trained:
        raise SystemExit(f"{name}: needs trained weights for a Set5 measurement")
    folded = lightsr.reparameterize(model)
    convs = [n for n, m in folded.named_modules() if isinstance(m, torch.nn.Conv2d)]
    measure = functools.partial(quality, trained=True, reference=None, scale=scale, lr_dir=lr_dir)
    base = measure(Upscaler(folded, tile=None, precision="fp32")._forward)
    keep = default_keep_fp32(folded)
    whole = {  # the whole graph int8: what the per-conv losses add up to, and the default
        "image_convs_only": measure(quantize_int8(folded, keep_fp32=image_convs(folded))),
        "default": measure(quantize_int8(folded, keep_fp32=keep)),
    }
    out = {
        "weights": weights,
        "scale": scale,
        "lr": lr_dir,
        "fp32_set5_psnr_y": base["set5_psnr_y"],
        "image_convs_only_int8_set5_change": round(
            whole["image_convs_only"]["set5_psnr_y"] - base["set5_psnr_y"], 4
        ),
        "default_keep_fp32": keep,
        "default_int8_set5_change": round(whole["default"]["set5_psnr_y"] - base["set5_psnr_y"], 4),
        "only_this_conv_int8": {},
    }
    print({k: v for k, v in out.items() if k.endswith("change")}, flush=True)
    for conv in convs[:limit]:
        q = quantize_int8(folded, keep_fp32=[c for c in convs if c != conv])
        s = measure(q)["set5_psnr_y"]
        out["only_this_conv_int8"][conv] = round(s - base["set5_psnr_y"], 4)
        print(conv, out["only_this_conv_int8"][conv], flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# docs/BACKENDS.md
# ---------------------------------------------------------------------------------------------

_DOC_HEAD = """# CPU backends and precisions

Regenerated by `python benchmarks/bench_backends.py` (or `--table-only`) from
`benchmarks/results/backends/*.json`, one file per CPU model: do not edit the tables by hand.

## `--precision auto|fp32|bf16|fp16|int8`

`lightsr upscale --precision ...` and `Upscaler(precision=...)`:

- **auto** (the default): bf16 where the device computes bf16 natively (a CPU with
  AVX512-BF16 or AMX-BF16 in its flags; a GPU that reports bf16 support) **and** the model is
  declared bf16-safe (`register_model(..., bf16_safe=True)`, set only from a measurement:
  Set5 PSNR-Y within 0.02 dB of fp32, re-measured by `tests/test_precision.py`: A2F-SD
  -0.0003 dB at x4, FMEN-S -0.008 dB, MAFFSRN -0.003/-0.000/+0.0004 at x2/x3/x4 with
  lightsr's weights); fp32 everywhere else. Emulated bf16 is several times slower than fp32,
  so auto never picks it. The choice and the reason are printed, e.g. `fp32 (auto: no native
  bf16 on this CPU)`.
- **fp32**: the folded model, channels_last, eager (or `--compile`); on the CPU run by ONNX
  Runtime or OpenVINO instead where `--backend` says so (below).
- **bf16** / **fp16**: autocast, with the convs that produce image values kept in fp32; or,
  bf16 on a CPU with native bf16, OpenVINO's bf16 inference (`--backend openvino`, or auto
  at the scales declared for it, below), which rounds the image convs to bf16 too.
- **int8** (CPU only; `pip install lightsr[onnx]`, and `lightsr[openvino]` for OpenVINO):
  static post-training quantization
  (`lightsr.quantize.quantize_int8`): per-channel int8 weights, unsigned int8 activations
  calibrated on generated patches (or your photos: `--int8-calibration PATH`, a file or a
  folder, decoded one at a time), only the convolutions quantized, and the
  image convs plus each model's most sensitive convs kept out of int8 (in fp32; in bf16 where
  OpenVINO runs them on a CPU with native bf16 and the model is declared safe in OpenVINO's
  bf16 at its scale, `lightsr.upscale.int8_floats`: FMEN-S x4 118 ms against 189 with fp32
  floats, for 0.016 dB more Set5 loss); ONNX Runtime or OpenVINO runs the QDQ graph
  (`--backend`). Quantizing takes ~10-40 s the first time a model is
  used, in a child process (the calibrator holds every activation of every patch); the graph
  is then cached (`<lightsr cache>/int8`, `$LIGHTSR_CACHE`), so later runs start at once. It
  costs quality (Set5 x4 PSNR-Y with the authors' weights, ONNX Runtime / OpenVINO: A2F-SD
  -0.06 / -0.06 dB, FMEN-S -0.06 / -0.06 dB, `tests/test_int8.py`; every named int8 entry's
  cost on Set5, Set14 and B100 is in docs/ZOO.md, with fp32 and with bf16 kept convs);
  whether it is faster than
  fp32 depends on the CPU's int8 dot-product instructions (the `int8 dot` column: AMX, VNNI,
  or plain AVX2 with 16-bit intermediates): see the tables. Tiles use the same quantization
  parameters, so tiled equals untiled (bit for bit, in either engine) for tile-exact models,
  except where the kept convs run in bf16: there OpenVINO's kernels for each tile shape round
  apart by one bf16 step, and the 8-bit output by at most one level (4% of the values in
  `tests/test_int8.py`; OpenVINO's plain bf16 path was bit-exact in the same check).

### Which convs int8 keeps in fp32

`python benchmarks/bench_backends.py --sensitivity NAME` quantizes one conv at a time (the
others fp32) and records each one's Set5 PSNR-Y change (`benchmarks/results/int8_sensitivity/`:
FMEN-S with the authors' weights; A2F-SD with lightsr's at x2, x3 and x4), beside the whole
graph's change with only the image convs fp32 and with the default list. The losses add up: for
`a2f_sd_x2` they sum to -0.135 dB against -0.132 for the whole graph, image convs only. For
A2F-SD the activations are the cause, not the weights (the weights alone: the figure with each
table).
`python benchmarks/int8_tradeoffs.py --weights a2f_sd_x2` puts the remedies side by side
(Set5 PSNR-Y change from fp32; min ms at 256x256 LR, on the CPU named with each table;
`benchmarks/results/int8_tradeoffs/`):

{TRADEOFFS}

`default` is what `--weights NAME_int8` runs; `image convs only`, what it ran before the
list below; `real patches`, calibrated on patches of the T91 + BSD200 HR images (the training
images, not shipped; `--int8-calibration PATH` on upscale, eval and export takes your own)
instead
of generated ones; `+2 fp32`, the next two most sensitive convs kept too. The `fp32_ov` column
runs the same fp32 graph in every row: its spread is these runs' noise.

Min/max ranges lose more than percentile ones. A2F-SD's first and last `expand`
convs (each 1/16 of the body's multiply-adds) are the most sensitive at every scale, so they
stay fp32 by default (`lightsr.quantize.KEEP_FP32`): the x2 entry went from -0.13 to -0.08 dB
on Set5 (every named int8 entry now costs at most 0.08 dB on each set with fp32 kept convs,
0.09 with them in bf16, docs/ZOO.md). Their
time, `default` against `image convs only` in the same run: in OpenVINO, which `auto` picks
for int8, +9% at x2 and none at x4 (-3%); in ONNX Runtime +18% and +8%. Runs on this machine
vary by about 10% (the `fp32_ov` spread), so these are rough. At x4 they buy nothing for
lightsr's weights on Set5 (-0.04 either way) but 0.03 dB for the authors' (-0.09 -> -0.06,
ONNX Runtime and OpenVINO alike), so the list is one per architecture. Keeping the
next two fp32 gains another 0.02 dB at x2; calibrating on the training photographs 0.006 dB
at x2 and 0.012 at x4 in these runs (which patches are drawn moves it by a few hundredths:
README's `--int8-calibration` example, T91 only, gained 0.013 at x2). On a CPU with VNNI or
AMX, where int8 convs run several times faster than fp32 ones, the convs kept out of int8 weigh
more: on the AVX512-BF16/VNNI machine below, FMEN-S's nine kept convs made int8 in OpenVINO
slower than its bf16 (189 against 150 ms at x4) until they ran in bf16 (118 ms).

On that AVX512-BF16/VNNI machine the kept convs are what int8 waits on (the tables above): with
them in fp32, `a2f_sd_x2`'s default ran 100 ms in OpenVINO against 74 with only the image convs
kept; with them in bf16, 80 against 71, for 0.02 dB more Set5 loss than fp32 kept convs (-0.088
against -0.067; x4: -0.025 against -0.021). There the next two convs cost 2 ms more and gain
0.011 dB at x2, and calibrating on the training photographs gains 0.024 dB. The defaults stay:
every named int8 entry is within 0.1 dB on each set either way (docs/ZOO.md).

### Where OpenVINO's bf16 is used

OpenVINO's bf16 has no per-layer exceptions that lightsr could set (marking the image convs
with the `precise_0` runtime attribute changed nothing in OpenVINO 2026.4), so its bf16
rounds the image convs that torch's autocast keeps in fp32. That costs more at higher PSNR:
MAFFSRN x2 lost 0.054 dB on Set5 in OpenVINO's bf16 against 0.003 in torch's, while x3 and
x4 lost under 0.01. So each model declares the scales at which OpenVINO's bf16 was measured
within 0.02 dB (`register_model(..., bf16_engine_scales=...)`, re-measured by
`tests/test_precision.py` on a CPU with native bf16: A2F-SD x2-x4, FMEN-S x4, MAFFSRN x3-x4);
elsewhere `auto` runs bf16 in torch, and int8's kept convs stay fp32.

## `--backend auto|torch|onnxruntime|openvino`

`lightsr upscale --backend ...` and `Upscaler(backend=...)` (library default `torch`, CLI
default `auto`) choose what runs the model:
- `torch`: eager or `--compile`, fp32/bf16/fp16 (int8 has no torch path: it runs in ONNX
  Runtime).
- `onnxruntime`: the folded model exported to ONNX and run in an ONNX Runtime session, fp32 or
  int8 (CPU only, `pip install lightsr[onnx]`).
- `openvino`: the same export (or int8's QDQ graph) run by OpenVINO's CPU plugin, fp32, int8,
  or bf16 where the CPU has native bf16 (refused elsewhere: OpenVINO would quietly compute
  f32); `pip install lightsr[openvino]`. Its precision hint is f32 for fp32 and int8 graphs,
  so the convs int8 keeps stay fp32 on a bf16 CPU, except where `auto` would run the model
  in OpenVINO's bf16 (above): there they run in bf16. `lightsr export --openvino`
  writes that model as an OpenVINO IR (`.xml` + `.bin`, fp32 weights; `--weights
  NAME_int8`: the int8 graph, equal to what this backend runs, `tests/test_int8_entries.py`)
  for deployments that load IR with OpenVINO alone.
- `auto`, on the CPU: OpenVINO where installed, else ONNX Runtime, else torch, for fp32, int8
  and native bf16. Why: on a quiet machine (AMD EPYC Zen 1, the tables below) OpenVINO ran
  fp32 fastest of every path for all three models (`fp32_ov`), and int8 faster than ONNX
  Runtime for FMEN-S and MAFFSRN (5% slower for A2F-SD). On the second CPU measured (AMD EPYC
  family 25 model 17, whose VM shows AVX2 but no AVX-512) OpenVINO's int8 ran 1.3-1.5x ONNX
  Runtime's for all three models, and its fp32 was the fastest fp32 path (for FMEN-S level
  with `compiled`, which pays a compile per image size). When the same VM showed
  AVX512-BF16 and VNNI, OpenVINO's bf16 ran 1.16-1.42x torch's bf16 autocast and was the
  fastest path within 0.02 dB for all three models (2.85-3.18x the authors' way at x4), and
  its int8 3.6-3.8x the authors' way. torch on a GPU, for
  fp16, with `--compile`, for emulated bf16, and for a model with no network to export (bicubic), or
  when no engine is installed or the exporter cannot trace the model.

OpenVINO compiles the model for each input shape it meets (the last two kept), so that it can
plan the reuse of its buffers: a large image's tiles all have one window shape. Inputs of at
most 180x180 LR pixels share one model compiled for any shape instead: there a compile costs
more than the inference (A2F-SD x2 on a 120x125 picture: compile 0.21 s, inference 0.09 s; the
any-shape model takes 0.12 s on a shape it has not seen), and the any-shape model holds ~110 MiB
more than a per-shape one at 180x180 (~220 at 256x256) (`python
benchmarks/bench_openvino_shapes.py`, `benchmarks/results/openvino_shapes/`). `lightsr upscale`
of Set14's LR folders (14 pictures, each its own size;
min of 3 fresh processes after a warm-up, `python benchmarks/bench_batch.py`, the earlier figures
with `--src` on a worktree of 18a45f2; AMD EPYC family 25 model 17 showing AVX2 only, 2 threads):

| folder | path | 18a45f2 | now | torch (now) |
|---|---|---|---|---|
| x4 (62-180 px a side) | auto (OpenVINO fp32) | 5.44 s | 4.13 s | 3.80 s |
| x4 | `--precision int8` | 11.46 s | 4.61 s | - |
| x2 (124-362 px) | auto (OpenVINO fp32) | 8.81 s | 8.24 s | 8.34 s |
| x2 | `--precision int8` | 13.03 s | 11.42 s | - |

Peak memory: x4 auto 429 -> 488 MiB, x2 auto 606 -> 577 MiB. On folders this small torch's
eager path is as fast (OpenVINO's import and first compile are ~0.5 s of each command); on
large images OpenVINO stays the faster fp32 path (the tables below). On the AVX512-BF16/VNNI
VM (`python benchmarks/bench_openvino_shapes.py --precision bf16|int8`), a bf16 graph
compiles in 0.13-0.17 s a shape and an int8 one in 0.5-0.9 s. Raising the any-shape limit to
360x360 was tried and not kept:
- int8: the Set14 x2 folder at `--precision int8` took 4.75 s instead of 8.44
  (`python benchmarks/bench_batch.py`), but the any-shape model ran 256x256 x4 inputs 1.1-1.4x
  slower (A2F-SD 140 against 108 ms), which a large image's tiles and the speed bar pay;
- bf16: the default `lightsr upscale` of that folder went from 7.1-7.5 s to 5.1-5.9 s, but
  `bf16_ov` at 256x256 lost the ~5% a compiled shape gives and came to 1.09x OpenVINO's own.
Compiling a shape when it repeats, running its first use in the any-shape model, would take
both gains.

With both engines, intra-op threads follow `--threads` / `torch.get_num_threads()`; tiles,
alpha, 16-bit and self-ensemble work as with torch, fp32 outputs equal torch's to 1e-4
(`tests/test_backend.py`). The start line says which and why, e.g.
`fp32 (auto: no native bf16 on this CPU), openvino (auto: fp32 on the CPU)` or
`int8 (openvino, 25 convs int8, 9 fp32)` (on a CPU with native bf16: `9 in native bf16`). In
the tables the paths are `fp32_ort`, `fp32_ov`,
`bf16_ov`, `int8` (ONNX Runtime) and `int8_ov`; `ort_fp32` and `ov_*` are the engines run
directly, without lightsr. The fp32 export is cached (`<lightsr cache>/export`, named by a
hash of the model's structure and weights, lightsr's model code and torch's version, and
checked against a hash of its bytes when read): exporting cost ~1.3 s of the start, most of
it importing the onnx package, and the next run with the same weights loads the graph
instead (`python benchmarks/bench_startup.py`: the stages of `lightsr upscale` on the sample).

Why ONNX Runtime for int8: PyTorch's own FX graph-mode int8 (deprecated in torch 2.13 in
favour of torchao) broke FMEN-S (7.6 dB) and ran A2F-SD 4x slower than fp32 on the machine
where the engine was chosen. Which int8 variant (`python benchmarks/int8_variants.py`,
`benchmarks/results/int8_variants/`): unsigned activations with full-range weights ran A2F-SD
about 20% faster in ONNX Runtime than signed ones at nearly the same Set5 cost (A2F-SD -0.09
vs -0.07 dB, before its two `expand` convs were kept in fp32; FMEN-S -0.15 vs -0.14), and
only unsigned activations run correctly in OpenVINO
(signed: -2.1 dB on A2F-SD); 7-bit weights cost FMEN-S 0.37 dB more for no speed. An earlier
reading that u8 activations lose 5 dB on FMEN-S through AVX2's 16-bit pair sums did not
reproduce. The int8 variants were measured on AVX2 (AMD EPYC Zen 1) only.
"""


def _per_machine(values: list[str]) -> str:
    """One figure where every machine measured the same (or only one did), else each
    machine's, in column order."""
    measured = [v for v in values if v != "-"]
    if not measured:
        return "-"
    return measured[0] if len(set(measured)) == 1 else " / ".join(values)


def tradeoff_tables() -> str:
    """The tables of ``benchmarks/int8_tradeoffs.py``'s results, one per weights and CPU."""
    out = []
    for f in sorted(TRADEOFFS.glob("*.json")):
        r = json.loads(f.read_text())
        out.append(
            f"`{r['weights']}` (fp32 Set5 {r['fp32_set5_psnr_y']:.2f}; the default's int8 "
            f"weights alone, activations fp32: {r['weights_only_int8_set5_psnr_y_change']:+.3f}"
            f" dB), {r['cpu_kind']}, {r['machine']['torch_threads']} threads, "
            f"`{r['command']}`:\n"
        )
        # on a CPU with native bf16: the kept convs in bf16 too (what int8 runs there)
        bf16 = all("ov_bf16_min_ms" in v for v in r["variants"].values())
        out.append(
            "| variant | fp32 convs | Set5 change | int8 (ONNX Runtime) ms | "
            "int8_ov ms | fp32_ov ms |"
            + (" Set5 change, kept convs bf16 | int8_ov ms, kept convs bf16 |" if bf16 else "")
        )
        out.append("|---|---|---|---|---|---|" + ("---|---|" if bf16 else ""))
        for label, v in r["variants"].items():
            out.append(
                f"| {label} | {len(v['kept_fp32'])} | {v['set5_psnr_y_change']:+.3f} | "
                f"{v['ort_min_ms']:.0f} | {v['ov_min_ms']:.0f} | {v['ov_fp32_min_ms']:.0f} |"
                + (
                    f" {v['set5_psnr_y_change_bf16_floats']:+.3f} | {v['ov_bf16_min_ms']:.0f} |"
                    if bf16
                    else ""
                )
            )
        out.append("")
    return "\n".join(out).rstrip() or "No results yet: run `python benchmarks/int8_tradeoffs.py`."


MEMORY = bu.ROOT / "benchmarks" / "results" / "memory"
# How the runs before bench_memory recorded its writer wrote the PNG.
_OLD_WRITER = "the whole output, then Pillow's PNG encoder"


def memory_tables() -> str:
    """``benchmarks/bench_memory.py``'s results: peak memory and wall time per path, per CPU."""
    out = []
    for f in sorted(MEMORY.glob("*.json")):
        r = json.loads(f.read_text())
        w, h = r["lr_size_wh"]
        out.append(
            f"{r['cpu_kind']}, {r['threads']} threads, {r['weights']['name']}, {w}x{h} -> "
            f"{r['hr_size_wh'][0]}x{r['hr_size_wh'][1]} PNG, written as "
            f"{r.get('png_writer', _OLD_WRITER)} (`python benchmarks/bench_memory.py`; the last "
            f"run: `{r['command'].strip()}`):\n"
        )
        out.append("| path | ran as | peak GiB | wall s | upscale + write s |")
        out.append("|---|---|---|---|---|")
        for p in r["paths"]:
            if not p.get("measured", True):
                out.append(f"| {p['path']} | not measured: {p.get('why', '')} | - | - | - |")
                continue
            ran = f"{p['precision']}, {p['backend']}"
            if p.get("outscale_filter"):  # --outscale: another output size
                ow, oh = p["output_size_wh"]
                ran += f"; to {ow}x{oh} ({p['outscale_filter']})"
            out.append(
                f"| {p['path']} | {ran} | {p['peak_rss_gib']:.2f} | {p['wall_s']:.0f} | "
                f"{p['upscale_and_write_s']:.0f} |"
            )
        out.append("")
    return "\n".join(out).rstrip() or "No results yet: run `python benchmarks/bench_memory.py`."


def write_markdown() -> str:
    files = sorted(RESULTS.glob("*.json"))
    runs = [json.loads(f.read_text()) for f in files]
    lines = [_DOC_HEAD.replace("{TRADEOFFS}", tradeoff_tables())]
    if not runs:
        lines.append("\nNo results yet: run `python benchmarks/bench_backends.py`.\n")
    else:
        lines.append("\n## Machines\n")
        lines.append(
            "| CPU | flags | int8 dot | threads | torch | onnxruntime | openvino | load | command |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in runs:
            m = r["machine"]
            lines.append(
                f"| {_label(r)} | {' '.join(m['cpu_flags'] or [])} | {m.get('int8_dot')} | "
                f"{m['torch_threads']} | {m['torch']} | {r['versions'].get('onnxruntime')} | "
                f"{r['versions'].get('openvino', '-')} | {r['load_average_at_start']:.1f} -> "
                f"{r['load_average_at_end']:.1f} | `{r.get('command', '')}` |"
            )
        models = sorted({name for r in runs for name in r["models"]})
        for name in models:
            lines.append(f"\n## {name} x4, 256x256 LR\n")
            lines.append(
                "min ms (speed-up over the authors' way) and Set5 PSNR-Y, per machine; "
                "`psnr vs fp32`: the path's output against lightsr's fp32 output. Where the "
                "machines' quality figures differ they are given per machine, in column order "
                "(a file replaced between runs, or another CPU's rounding).\n"
            )
            head = ["path"] + [_label(r) for r in runs if name in r["models"]]
            lines.append("| " + " | ".join(head) + " | Set5 PSNR-Y | psnr vs fp32 |")
            lines.append("|" + "---|" * (len(head) + 2))
            names: list[str] = []
            for r in runs:
                for k in r["models"].get(name, {}).get("paths", {}):
                    if k not in names:
                        names.append(k)
            for k in names:
                cells, qs, vs = [], [], []
                for r in runs:
                    res = r["models"].get(name)
                    if res is None:
                        continue
                    row = res["paths"].get(k)
                    if row is None:
                        cells.append(res["notes"].get(k, "-"))
                        continue
                    cells.append(f"{row['min_ms']:.0f} (x{res['speedup_vs_authors_min'][k]})")
                    qs.append(f"{row['set5_psnr_y']:.4f}" if "set5_psnr_y" in row else "-")
                    vs.append(str(row.get("psnr_y_vs_fp32") or "-"))
                quality = f"{_per_machine(qs)} | {_per_machine(vs)}"
                lines.append(f"| {k} | " + " | ".join(cells) + f" | {quality} |")
            ran = [r for r in runs if name in r["models"]]
            if any("vs_openvino_min" in r["models"][name] for r in ran):
                lines.append(
                    "\nlightsr's fastest path over OpenVINO's own, per precision (the bar: at "
                    "most 1.10; `-`: not run on that machine):\n"
                )
                lines.append("| precision | " + " | ".join(_label(r) for r in ran) + " |")
                lines.append("|" + "---|" * (len(ran) + 1))
                for precision in PRECISION_PATHS:
                    cells = []
                    for r in ran:
                        c = r["models"][name].get("vs_openvino_min", {}).get(precision)
                        cells.append(f"{c['ratio']:.2f} ({c['lightsr_path']})" if c else "-")
                    lines.append(f"| {precision} | " + " | ".join(cells) + " |")
    lines.append("\n## Memory: a 4000x3000 photo x4, every path\n")
    lines.append(
        "`python benchmarks/bench_memory.py`: each path upscales one synthetic 4000x3000 photo "
        "to a 16000x12000 PNG in a fresh process (`upscale_files`, automatic tiles); peak: "
        "that process's peak RSS; the bar: under 2 GiB on every path. `auto_outscale` rows: "
        "`--outscale 2`, the x4 output resized to 8000x6000 as its bands come; a row named "
        "PATH@COMMIT ran that earlier commit's lightsr (`--src`), for comparison.\n"
    )
    lines.append(memory_tables())
    text = "\n".join(lines) + "\n"
    DOC.write_text(text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["a2f_sd", "fmen_s", "maffsrn"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--maffsrn-weights", help="a trained MAFFSRN x4 checkpoint (no release)")
    ap.add_argument("--no-quality", action="store_true", help="skip the Set5 measurements")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--table-only", action="store_true", help="only regenerate docs/BACKENDS.md")
    ap.add_argument("--sensitivity", metavar="MODEL", help="per-conv int8 loss on Set5")
    ap.add_argument("--sensitivity-limit", type=int, help="only the first N convs")
    args = ap.parse_args()
    if args.table_only:
        write_markdown()
        return 0
    torch.set_num_threads(args.threads)
    if args.sensitivity:
        out = sensitivity(args.sensitivity, args.sensitivity_limit)
        out["machine"] = machine_record(args.threads)
        path = SENSITIVITY / f"{args.sensitivity}.json"
        if not args.no_save:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(out, indent=2) + "\n", overwrite=True)
        return 0

    # Without native support bf16/int8 matmuls run on slow generic kernels (~1 GFLOP/s on a
    # Zen 1): a 512^3 product measures that in a second where 2048^3 takes minutes.
    native_i8 = cpu_int8_dot() in ("vnni", "amx")
    peaks = {
        "fp32_gflops": round(bu.matmul_peak(torch.float32), 1),
        "bf16_gflops": round(
            bu.matmul_peak(torch.bfloat16, n=2048 if cpu_has_native_bf16() else 512), 1
        ),
        "int8_gops": None,
    }
    i8 = int8_peak(n=2048 if native_i8 else 512)
    peaks["int8_gops"] = None if i8 is None else round(i8, 1)
    print(json.dumps(peaks), flush=True)
    ov = openvino_info()
    import onnxruntime

    out: dict = {
        "machine": machine_record(args.threads),
        "cpu_kind": cpu_kind(),
        "load_average_at_start": os.getloadavg()[0],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: ACTIVE)"),
        "versions": {"onnxruntime": onnxruntime.__version__}
        | ({"openvino": ov["version"]} if ov["available"] else {}),
        "openvino": ov,
        "peaks": peaks,
        "protocol": (
            f"x{bu.SCALE}, {bu.SIZE}x{bu.SIZE} LR input, batch 1, {args.rounds} interleaved "
            f"rounds after warm-up ({PAUSE_S * 1000:.0f} ms pause after each call); median and "
            "min wall time of the forward pass"
        ),
        "models": {},
    }
    for name in args.models:
        out["models"][name] = bench_model(name, args.rounds, args.threads, peaks, ov, args)
        print(name, json.dumps(out["models"][name]), flush=True)
    out["load_average_at_end"] = os.getloadavg()[0]
    out["command"] = "python benchmarks/bench_backends.py " + " ".join(sys.argv[1:])
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{cpu_slug(cpu_kind())}.json"
        atomic_write_text(path, json.dumps(out, indent=2) + "\n", overwrite=True)
        write_markdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
