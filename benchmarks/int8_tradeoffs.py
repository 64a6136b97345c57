"""What an int8 entry's quality would cost in speed: calibration and fp32-island variants.

For one hub weights entry (default ``a2f_sd_x2``, whose default int8 loses 0.13 dB on Set5,
over #18's 0.1 dB bar), each :func:`lightsr.quantize.quantize_int8` variant

- ``default``: what ``--weights NAME_int8`` runs (synthetic calibration, percentile ranges,
  the default fp32 convs: :func:`lightsr.quantize.default_keep_fp32`),
- ``image convs only``: the same with only the convs that read or write the image in fp32
  (what A2F-SD kept before its two most sensitive convs joined them),
- ``minmax``: the same with min/max activation ranges,
- ``real patches``: calibrated on random patches of the T91 + BSD200 HR images in
  ``../shared/data`` (the models' training images; skipped where they are absent) instead of
  the generated ones, as ``--int8-calibration`` reads them
  (:func:`lightsr.quantize.calibration_from_files`),
- ``+N fp32``: the default plus the N convs that lose most when quantized alone, read from
  ``benchmarks/results/int8_sensitivity/<NAME>.json`` (written by
  ``python benchmarks/bench_backends.py --sensitivity NAME``),

with its Set5 PSNR-Y change from the fp32 model (and, to tell weights from activations, the
change with only the weights of the default's int8 convs rounded to their per-channel int8
grid, in torch, activations left fp32) (LR from ``LR_bicubic_clamp``, as
``benchmarks/zoo_table.py`` measures the entry's cost), and min ms on a 256 x 256 LR input run
by ONNX Runtime (``ort``, the :class:`~lightsr.quantize.Int8Model` itself) and by OpenVINO
(``ov``, the same QDQ graph), beside the fp32 export run by OpenVINO (``ov_fp32``: lightsr's
fastest fp32 path on the CPUs measured so far). On a CPU with native bf16, for a model
declared safe in OpenVINO's bf16 at its scale, also ``ov_bf16``: the same graph in OpenVINO
with the kept convs in bf16 (what ``--precision int8`` runs there,
:func:`lightsr.upscale.int8_floats`), with its own Set5 change. Rounds are interleaved, with a
20 ms pause after each call.

    python benchmarks/int8_tradeoffs.py [--weights a2f_sd_x2] [--top 2 4] [--rounds 5]

Writes benchmarks/results/int8_tradeoffs/<NAME>-<cpu-slug>.json, prints a table, and
regenerates docs/BACKENDS.md (which shows these tables) with ``bench_backends.py --table-only``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_backends as bb  # noqa: E402  (quality, cpu_slug, PAUSE_S, SENSITIVITY)
import bench_upscale as bu  # noqa: E402

import lightsr  # noqa: E402
from lightsr import hub  # noqa: E402
from lightsr.atomic import atomic_write_text  # noqa: E402
from lightsr.hardware import cpu_kind, machine_record  # noqa: E402
from lightsr.quantize import (  # noqa: E402
    calibration_from_files,
    default_keep_fp32,
    image_convs,
    openvino_model,
    quantize_int8,
)
from lightsr.upscale import int8_floats  # noqa: E402

RESULTS = bb.TRADEOFFS
TRAINING_SETS = ("T91", "BSD200")


def most_sensitive(name: str, keep: list[str], n: int) -> list[str]:
    """The ``n`` convs outside ``keep`` whose int8 alone cost most on Set5, from the committed
    sensitivity file of ``name``."""
    path = bb.SENSITIVITY / f"{name}.json"
    if not path.is_file():
        raise SystemExit(
            f"{path} is missing: run python benchmarks/bench_backends.py --sensitivity {name}"
        )
    losses = json.loads(path.read_text())["only_this_conv_int8"]
    ranked = sorted((v, k) for k, v in losses.items() if k not in keep)
    return [k for _, k in ranked[:n]]


def real_folders() -> list[Path]:
    """The training sets' HR folders that are present."""
    return [f for s in TRAINING_SETS if (f := bu.SHARED / "data" / s / "HR").is_dir()]


def weights_only_int8(model: torch.nn.Module, keep: list[str]) -> torch.nn.Module:
    """A copy of the folded ``model`` whose int8 convs' weights (those not in ``keep``) are
    rounded to the symmetric per-output-channel int8 grid the quantizer uses; nothing else
    changes, so its loss is the weights' share of int8's."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, conv in out.named_modules():
            if isinstance(conv, torch.nn.Conv2d) and name not in keep:
                step = conv.weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12) / 127
                conv.weight.copy_(torch.round(conv.weight / step).clamp(-127, 127) * step)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="a2f_sd_x2", help="a hub entry with weights of its own")
    ap.add_argument("--top", type=int, nargs="+", default=[2, 4], help="fp32-island sizes")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    entry = hub.get_weights(args.weights)
    if entry.precision == "int8":
        raise SystemExit(f"--weights {entry.name}: name its base, {entry.base}")
    model = lightsr.reparameterize(lightsr.load(entry.name)).eval()
    measure = functools.partial(
        bb.quality, trained=True, reference=None, scale=entry.scale, lr_dir="LR_bicubic_clamp"
    )
    with torch.no_grad():
        fp32 = measure(lambda x: model(x))["set5_psnr_y"]
    keep = default_keep_fp32(model)
    with torch.no_grad():
        weights_only = weights_only_int8(model, keep)
        weights_change = round(measure(lambda x: weights_only(x))["set5_psnr_y"] - fp32, 4)
    print("int8 weights only:", weights_change, flush=True)
    variants: dict[str, dict] = {
        "default": {},
        "image convs only": {"keep_fp32": image_convs(model)},
        "minmax": {"method": "minmax"},
    }
    folders = real_folders()
    if folders:  # as --int8-calibration reads them: one image at a time
        patches = calibration_from_files(folders, scale=entry.scale)
        variants["real patches"] = {"calibration": patches}
    for n in args.top:
        variants[f"+{n} fp32"] = {"keep_fp32": keep + most_sensitive(entry.name, keep, n)}

    x = torch.rand(1, 3, bu.SIZE, bu.SIZE, generator=torch.Generator().manual_seed(0))
    rows: dict[str, dict] = {}
    reference = openvino_model(model, threads=args.threads)
    bf16_floats = int8_floats("openvino", bf16_in_engines=model.bf16_in_engines) == "bf16"
    for label, options in variants.items():
        q = quantize_int8(model, **options)
        change = round(measure(q)["set5_psnr_y"] - fp32, 4)
        runs = {"ort": q, "ov": q.with_engine("openvino"), "ov_fp32": reference}
        if bf16_floats:
            runs["ov_bf16"] = q.with_engine("openvino", floats="bf16")
        _, times, _ = bu.interleaved_times(runs, x, args.rounds, pause_s=bb.PAUSE_S)
        ms = {k: round(min(v) * 1000, 1) for k, v in times.items()}
        rows[label] = {
            "set5_psnr_y_change": change,
            "kept_fp32": q.report.kept_fp32,
            "calibration": q.report.calibration,
            "method": q.report.method,
        } | {f"{k}_min_ms": v for k, v in ms.items()}
        if bf16_floats:
            bf16_change = measure(runs["ov_bf16"])["set5_psnr_y"] - fp32
            rows[label]["set5_psnr_y_change_bf16_floats"] = round(bf16_change, 4)
        print(label, json.dumps(rows[label] | {"kept_fp32": len(q.report.kept_fp32)}), flush=True)

    print(f"\n{entry.name}, Set5 fp32 {fp32}; {bu.SIZE}x{bu.SIZE} LR, {args.threads} threads")
    print("| variant | Set5 change | ort ms | ov ms | ov_fp32 ms |\n|---|---|---|---|---|")
    for label, r in rows.items():
        print(
            f"| {label} | {r['set5_psnr_y_change']:+.3f} | {r['ort_min_ms']:.0f} | "
            f"{r['ov_min_ms']:.0f} | {r['ov_fp32_min_ms']:.0f} |"
        )
    out = {
        "weights": entry.name,
        "scale": entry.scale,
        "fp32_set5_psnr_y": fp32,
        "weights_only_int8_set5_psnr_y_change": weights_change,
        "input": f"1x3x{bu.SIZE}x{bu.SIZE}",
        "rounds": args.rounds,
        "command": " ".join(["python benchmarks/int8_tradeoffs.py", *sys.argv[1:]]),
        "cpu_kind": cpu_kind(),
        "machine": machine_record(args.threads),
        "variants": rows,
    }
    if not args.no_save:
        path = RESULTS / f"{entry.name}-{bb.cpu_slug(cpu_kind())}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(out, indent=2) + "\n", overwrite=True)
        bb.write_markdown()
        print(f"wrote {path.relative_to(bu.ROOT)} and {bb.DOC.relative_to(bu.ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
