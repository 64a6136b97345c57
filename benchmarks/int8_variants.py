"""int8 variants side by side: activation sign x weight range x engine, Set5 quality and speed.

For A2F-SD and FMEN-S x4 with the authors' weights (MAFFSRN with ``--maffsrn-weights``), each
:func:`lightsr.quantize.quantize_int8` variant

- ``s8/full``: signed int8 activations, 8-bit weights (lightsr's default),
- ``s8/reduce``: signed activations, 7-bit weights (``reduce_range=True``; ONNX Runtime's
  7-bit grid is [-64, 64]),
- ``u8/full``: unsigned activations, 8-bit weights,
- ``u8/reduce``: unsigned activations, 7-bit weights (ONNX Runtime's documented AVX2 path: u8
  times a 7-bit weight cannot saturate VPMADDUBSW's 16-bit pair sums, 2 * 255 * 64 < 32767),

run by ONNX Runtime (``ort``: the :class:`~lightsr.quantize.Int8Model` itself, no busy-wait)
and by OpenVINO (``ov``: the same QDQ file, as ``ov_int8`` in benchmarks/bench_backends.py,
precision hint f32 for the kept convs). Per path: Set5 x4 PSNR-Y (border 4, as
bench_backends.py measures it) and its difference from lightsr's fp32 (torch eager, the
reference of bench_backends.py), the PSNR of the output against that fp32 output, and min /
median ms on a 256 x 256 LR input over interleaved rounds (a 20 ms pause after each call).
Reference timings: ``fp32_ort`` (``Upscaler(backend="onnxruntime")``, lightsr's fastest fp32
path on a CPU without native bf16) and ``ov_fp32`` (OpenVINO on the fp32 export).
Each variant's largest quantized weight magnitude is recorded (64 for 7 bits, 127 for 8).

    python benchmarks/int8_variants.py [--rounds 5] [--threads 2] [--models a2f_sd fmen_s]
        [--maffsrn-weights training/maffsrn_x4/last_ema.safetensors]

Writes benchmarks/results/int8_variants/<cpu-slug>.json (one file per CPU model, slug as
bench_backends.py) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_backends as bb  # noqa: E402  (load, quality, engines, cpu_slug, PAUSE_S)
import bench_upscale as bu  # noqa: E402

import lightsr  # noqa: E402
from lightsr.atomic import atomic_write_text  # noqa: E402
from lightsr.export import export_model  # noqa: E402
from lightsr.hardware import cpu_flags, cpu_int8_dot, cpu_kind, machine_record  # noqa: E402
from lightsr.quantize import quantize_int8  # noqa: E402
from lightsr.upscale import Upscaler  # noqa: E402

RESULTS = bu.ROOT / "benchmarks" / "results" / "int8_variants"
VARIANTS = {
    "s8/full": ("s8", False),
    "s8/reduce": ("s8", True),
    "u8/full": ("u8", False),
    "u8/reduce": ("u8", True),
}
ENGINES = {"ort": "onnxruntime", "ov": "openvino"}


def max_abs_weight(onnx_bytes: bytes) -> int:
    """The largest |q| over the graph's int8 weight initializers (those a DequantizeLinear
    reads with a per-channel axis or of rank 4: the conv weights)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    inits = {i.name: i for i in graph.initializer}
    best = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[0]])
        if w.dtype == np.int8 and w.ndim == 4:
            best = max(best, int(np.abs(w.astype(np.int32)).max()))
    return best


def bench_model(name: str, args, ov: dict) -> dict:
    model, weights, trained = bb.load(name, args.maffsrn_weights)
    folded = lightsr.reparameterize(model)
    x = bu.bench_input()
    notes: dict[str, str] = {}
    variants: dict[str, dict] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = Upscaler(folded, tile=None, precision="fp32")._forward
        ort_fp32 = Upscaler(folded, tile=None, precision="fp32", backend="onnxruntime")
        paths = {"fp32_ort": ort_fp32._forward}
    with tempfile.TemporaryDirectory(prefix="int8-variants-") as tmp:
        onnx_path = Path(tmp) / "fp32.onnx"
        export_model(folded, onnx_path, check=False, overwrite=True)
        if ov["available"]:
            paths["ov_fp32"] = bb._openvino(str(onnx_path), args.threads, "f32")
        for label, (activations, reduce_range) in VARIANTS.items():
            t = time.perf_counter()
            q = quantize_int8(
                folded, activations=activations, reduce_range=reduce_range, threads=args.threads
            )
            variants[label] = {
                "activations": q.report.activations,
                "reduce_range": q.report.reduce_range,
                "quantize_s": round(time.perf_counter() - t, 1),
                "max_abs_weight_q": max_abs_weight(q.onnx),
                "convs_int8": len(q.report.quantized),
                "convs_fp32": len(q.report.kept_fp32),
            }
            print(f"{name} {label}: quantized, {variants[label]}", flush=True)
            paths[f"ort {label}"] = q
            if ov["available"]:
                paths[f"ov {label}"] = bb._openvino(q.onnx, args.threads, "f32")
        if not ov["available"]:
            notes["openvino"] = ov["note"]

        _, times, _ = bu.interleaved_times(paths, x, args.rounds, pause_s=bb.PAUSE_S, progress=name)

        base = bb.quality(reference, True, None) if trained and not args.no_quality else {}
        fp32_set5 = base.get("set5_psnr_y")
        rows: dict[str, dict] = {}
        for k, ts in times.items():
            row: dict = {
                "min_ms": round(min(ts) * 1000, 1),
                "median_ms": round(statistics.median(ts) * 1000, 1),
            }
            if not args.no_quality:
                row.update(bb.quality(paths[k], trained, reference))
                if fp32_set5 is not None and "set5_psnr_y" in row:
                    row["set5_delta_db"] = round(row["set5_psnr_y"] - fp32_set5, 4)
            label = k.split(" ", 1)[1] if " " in k else None
            if label:
                row["variant"] = variants[label]
            rows[k] = row
    return {
        "weights": weights,
        "fp32_set5_psnr_y": fp32_set5,
        "notes": notes,
        "paths": rows,
        "summary": summarize(rows),
    }


def summarize(rows: dict) -> dict:
    """Per engine: the int8 variants within 0.1 dB of fp32, the fastest overall and the fastest
    of those; and the ratio of ORT's best int8 to OpenVINO's best int8 (the issue's bar)."""
    out: dict = {}
    measured = any("set5_delta_db" in row for row in rows.values())
    for short in ENGINES:
        ks = [k for k in rows if k.startswith(short + " ")]
        ok = [k for k in ks if rows[k].get("set5_delta_db", -1e9) >= -0.1]
        out[short] = {
            "within_0.1db": [k.split(" ", 1)[1] for k in ok] if measured else None,
            "fastest": min(ks, key=lambda k: rows[k]["min_ms"]).split(" ", 1)[1] if ks else None,
            "fastest_within_0.1db": (
                min(ok, key=lambda k: rows[k]["min_ms"]).split(" ", 1)[1] if ok else None
            ),
        }
    best = {
        short: min((rows[k]["min_ms"] for k in rows if k.startswith(short + " ")), default=None)
        for short in ENGINES
    }
    if best["ort"] and best["ov"]:
        out["ort_best_over_ov_best_int8"] = round(best["ort"] / best["ov"], 3)
    return out


def table(name: str, res: dict) -> str:
    head = f"{name} x4 ({res['weights']}; fp32 Set5 PSNR-Y {res['fp32_set5_psnr_y']})"
    lines = [
        head,
        f"{'path':<16} {'min ms':>8} {'median':>8} {'Set5':>8} {'delta dB':>9} {'vs fp32':>8} "
        f"{'max|w|':>6}",
    ]
    for k, row in res["paths"].items():
        d = row.get("set5_delta_db")
        lines.append(
            f"{k:<16} {row['min_ms']:>8.0f} {row['median_ms']:>8.0f} "
            f"{row.get('set5_psnr_y', float('nan')):>8.3f} "
            f"{'' if d is None else f'{d:+.3f}':>9} {str(row.get('psnr_y_vs_fp32', '')):>8} "
            f"{row.get('variant', {}).get('max_abs_weight_q', ''):>6}"
        )
    lines.append("summary: " + json.dumps(res["summary"]))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["a2f_sd", "fmen_s"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--maffsrn-weights", help="a trained MAFFSRN x4 checkpoint (no release)")
    ap.add_argument("--no-quality", action="store_true", help="skip the Set5 measurements")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.maffsrn_weights and "maffsrn" not in args.models:
        args.models.append("maffsrn")
    ov = bb.openvino_info()
    import onnxruntime

    flags = cpu_flags()
    out: dict = {
        "machine": machine_record(args.threads),
        "cpu_kind": cpu_kind(),
        "int8_dot": cpu_int8_dot(),
        "cpu_flags_all": None if flags is None else sorted(flags),
        "load_average_at_start": os.getloadavg()[0],
        "versions": {"onnxruntime": onnxruntime.__version__}
        | ({"openvino": ov["version"]} if ov["available"] else {}),
        "openvino": ov,
        "protocol": (
            f"x{bu.SCALE}, {bu.SIZE}x{bu.SIZE} LR input, batch 1, {args.rounds} interleaved "
            f"rounds after warm-up ({bb.PAUSE_S * 1000:.0f} ms pause after each call), "
            f"{args.threads} threads; min and median wall time. Set5 x4 PSNR-Y, border 4; "
            "delta against lightsr's fp32 (torch eager, folded)"
        ),
        "models": {},
    }
    for name in args.models:
        res = bench_model(name, args, ov)
        out["models"][name] = res
        print(table(name, res), flush=True)
    out["load_average_at_end"] = os.getloadavg()[0]
    out["command"] = "python benchmarks/int8_variants.py " + " ".join(sys.argv[1:])
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{bb.cpu_slug(cpu_kind())}.json"
        atomic_write_text(path, json.dumps(out, indent=2) + "\n", overwrite=True)
        print(f"wrote {path.relative_to(bu.ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
