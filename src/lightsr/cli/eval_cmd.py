"""``lightsr eval``: PSNR-Y/SSIM-Y of a model on benchmark folders (thin over lightsr.evaluate)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_write_text, check_outputs
from ..data.benchmark import LR_SOURCES, BenchmarkSet
from ..data.degrade import PRESETS
from ..errors import LightSRError
from ..evaluate import check_save_sr, check_save_sr_folders, evaluate
from ..hardware import resolve_device
from ..hub import get_weights, resolve_model
from ..models.base import SRModel
from ..upscale import Upscaler
from ..visual_report import INDEX, benchmark_inputs, check_report_dir, write_report
from ._args import (
    add_checkpoint_arg,
    add_denoise_strength_arg,
    add_device_arg,
    add_int8_calibration_arg,
    add_out_arg,
    add_overwrite_arg,
    add_precision_arg,
    add_quiet_arg,
    add_threads_arg,
    add_weights_args,
    apply_threads,
    int8_calibration_of,
    non_negative_int,
    precision_of,
    scale_arg,
    show_progress,
)

LR_SOURCE_HELP = (
    "where LR images come from: auto (an LR folder when the set has one, clamp first; else "
    "imresize-replicate), folder (any LR folder), folder-clamp (LR_bicubic_clamp), "
    "folder-mirror (LR_bicubic, or DIV2K's *_LR_bicubic), imresize-mirror / imresize-replicate "
    "(MATLAB imresize of the modcropped HR with that boundary rule)"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="PSNR/SSIM (Y channel) of a model on benchmark sets",
        description="Evaluate a model on benchmark folders (Set5, Set14, B100, Urban100, "
        "DIV2K_valid_HR, any folder of HR images) the way the papers measure: SR clamped and "
        "rounded to uint8, Y of MATLAB rgb2ycbcr, scale border pixels cropped.",
    )
    p.add_argument("datasets", nargs="+", metavar="DATASET", help="benchmark folders")
    add_checkpoint_arg(p)
    add_weights_args(p)
    add_denoise_strength_arg(p)
    p.add_argument(
        "--model",
        help="registered model name: its bundled weights, else random weights unless "
        "--checkpoint; 'bicubic' for the MATLAB bicubic baseline (default: the bundled default)",
    )
    p.add_argument(
        "--scale", type=scale_arg, help="scale factor: 2, 3 or 4 (default: the checkpoint's)"
    )
    p.add_argument("--lr-source", choices=LR_SOURCES, default="auto", help=LR_SOURCE_HELP)
    p.add_argument("--lr-dir", help="explicit LR folder (only with a single DATASET)")
    p.add_argument(
        "--degrade",
        choices=sorted(PRESETS),
        metavar="PRESET",
        help="make each LR from its HR with a synthetic real-world degradation, the same for "
        f"every run (lightsr.data.degrade.degrade_for_eval): one of {', '.join(sorted(PRESETS))}",
    )
    p.add_argument(
        "--degrade-seed",
        type=non_negative_int,
        metavar="N",
        help="seed of --degrade's random draws (default 0)",
    )
    add_precision_arg(p, shown="fp32: the model as trained, in torch, the papers' arithmetic")
    add_int8_calibration_arg(p)
    p.add_argument("--self-ensemble", action="store_true", help="x8 geometric self-ensemble")
    p.add_argument("--per-image", action="store_true", help="also print every image's metrics")
    add_out_arg(p, what="write the results to this .csv or .json file")
    p.add_argument(
        "--save-sr",
        metavar="DIR",
        help="save SR images as DIR/<set>/<name>.png (DIR outside the datasets)",
    )
    p.add_argument(
        "--report",
        metavar="DIR",
        help="also write a visual HTML report to DIR (the model against bicubic: slider, "
        "zoomed crops, PSNR/SSIM per image; as `lightsr compare`); DIR new or empty",
    )
    add_overwrite_arg(
        p, what="an existing --out file and SR images, and write into a non-empty --report folder"
    )
    p.add_argument(
        "--crop-border", type=non_negative_int, help="border pixels to crop (default: the scale)"
    )
    p.add_argument("--rgb", action="store_true", help="measure on RGB instead of Y (NTIRE style)")
    add_device_arg(p, default="cpu")
    add_threads_arg(p)
    add_quiet_arg(p, hidden_aliases=("--no-progress",))
    p.set_defaults(func=run)


class _AtPrecision(nn.Module):
    """An :class:`Upscaler` as :func:`lightsr.evaluate.evaluate` runs a model: (1, 3, h, w)
    float RGB in, float32 out (unclamped), at the Upscaler's precision and engine, untiled;
    the network ``lightsr upscale`` runs at that precision (int8: the same cached graph)."""

    def __init__(self, runner: Upscaler) -> None:
        super().__init__()
        self.runner = runner
        self.scale = runner.scale
        self.arch_name = runner.arch_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner.upscale_tensor(x)


def _build_model(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, SRModel, str]:
    """(what evaluate runs, the model on ``device``, its label), by the one rule of
    :func:`lightsr.hub.resolve_model`; eval accepts random weights (a floor, said on stderr)
    and uses bicubic's exact path. At fp32 (the default) the model runs as it is, in torch; at
    another precision (``--precision``, or an int8 entry of ``--weights``) through an
    :class:`Upscaler`, as ``upscale`` runs it."""
    resolved = resolve_model(
        model=args.model,
        checkpoint=args.checkpoint,
        scale=args.scale,
        allow_random=True,
        exact=True,
        weights=args.weights,
        weights_dir=args.weights_dir,
        precision=args.precision,
        denoise_strength=args.denoise_strength,
    )
    precision = precision_of(args, resolved, "fp32")
    model = resolved.model.to(device)
    calibration = int8_calibration_of(args, precision, int(model.scale))
    if precision == "fp32":
        return model, model, resolved.source
    runner = Upscaler(
        model,
        tile=None,
        precision=precision,
        calibration=calibration,
        # as upscale picks it: int8 in OpenVINO where installed (else ONNX Runtime), native
        # bf16 in OpenVINO; fp32 returned above, in torch, the reference path
        backend="auto",
        device=device,
        max_output_pixels=None,  # a benchmark image is measured whole, whatever its size
    )
    print(f"lightsr eval: {runner.describe()}", file=sys.stderr)
    # an int8 entry's label says int8 already
    label = resolved.source if resolved.precision else f"{resolved.source}, {runner.precision}"
    return _AtPrecision(runner), model, label


def run(args: argparse.Namespace) -> int:
    apply_threads(args)
    if args.lr_dir and len(args.datasets) != 1:
        raise LightSRError("--lr-dir pairs with exactly one DATASET folder.")
    if args.degrade_seed is not None and args.degrade is None:
        raise LightSRError("--degrade-seed is the seed of --degrade; name a preset with --degrade.")
    if args.degrade and (args.lr_dir or args.lr_source != "auto"):
        given = "--lr-dir" if args.lr_dir else f"--lr-source {args.lr_source}"
        raise LightSRError(
            f"--degrade makes every LR from its HR image, so it cannot be combined with {given}: "
            "drop one of them."
        )
    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise LightSRError(f"--out {args.out!r}: use a .csv or .json file name.")
    # Outputs that could not be written, or would write into the data, are refused before
    # anything is computed (again, with every folder the sets read, once they are open).
    check_outputs(args.out, overwrite=args.overwrite)
    if args.save_sr:
        check_save_sr_folders(args.save_sr, [*args.datasets, args.lr_dir])
    if args.report:
        check_report_dir(
            args.report, overwrite=args.overwrite, inputs=[*args.datasets, args.lr_dir]
        )
    entry = get_weights(args.weights) if args.weights else None
    precision = args.precision or (entry.precision if entry else "")
    if args.report and precision not in ("", "fp32"):
        fp32 = f"--weights {entry.base or entry.name}" if entry else "--precision fp32"
        raise LightSRError(
            f"--report draws its images with the model at fp32, but this evaluation runs at "
            f"{precision}: drop --report, or make the report in a run at fp32 ({fp32})."
        )
    device = resolve_device(args.device)  # a missing GPU is a clear error, not an assert
    net, model, label = _build_model(args, device)
    scale = model.scale
    # Open every set first: a bad folder fails before any time is spent on the others.
    sets = [
        BenchmarkSet.from_folder(
            d,
            scale=scale,
            lr_source=args.lr_source,
            lr_dir=args.lr_dir,
            degrade=args.degrade,
            degrade_seed=args.degrade_seed or 0,
        )
        for d in args.datasets
    ]
    if args.save_sr:
        check_save_sr(args.save_sr, sets, overwrite=args.overwrite, inputs=args.datasets)
    results = []
    for ds in sets:
        results.append(
            evaluate(
                net,
                ds,
                self_ensemble=args.self_ensemble,
                crop_border=args.crop_border,
                y_channel=not args.rgb,
                save_sr=args.save_sr,
                progress=show_progress(args),
                model_name=label,
                overwrite=args.overwrite,
            )
        )
    print(format_table(results, per_image=args.per_image))
    if args.out:
        write_results(results, args.out, overwrite=args.overwrite)
        print(f"wrote {args.out}")
    if args.report:  # runs the model again: evaluate keeps no SR image
        write_report(
            args.report,
            [(label, model)],
            (item for ds in sets for item in benchmark_inputs(ds)),
            crop_border=args.crop_border,
            y_channel=not args.rgb,
            self_ensemble=args.self_ensemble,
            overwrite=args.overwrite,
            progress=show_progress(args),
            inputs=[*args.datasets, args.lr_dir],
        )
        print(f"wrote {Path(args.report) / INDEX}")
    failures = [(r.dataset, n, e) for r in results for n, e in r.failures]
    if failures:
        print(f"\n{len(failures)} image(s) failed:", file=sys.stderr)
        for dataset, name, error in failures:
            print(f"  {dataset}/{name}: {error}", file=sys.stderr)
        return 1
    return 0


def format_table(results, *, per_image: bool = False) -> str:
    """A plain-text table: one row per set (and per image with ``per_image``)."""
    if not results:
        return ""
    first = results[0]
    channel = "Y" if first.y_channel else "RGB"
    src_w = max(20, *(len(r.lr_source) for r in results))  # degrade:<preset>:seed<n> is long
    lines = [
        f"model: {first.model}  x{first.scale}"
        + ("  self-ensemble x8" if first.self_ensemble else "")
        + f"  metrics on {channel}, crop {first.crop_border}",
        f"{'set':<16} {'LR source':<{src_w}} {'images':>6} "
        f"{'PSNR-' + channel:>9} {'SSIM-' + channel:>8}",
    ]
    for r in results:
        failed = f" ({len(r.failures)} failed)" if r.failures else ""
        lines.append(
            f"{r.dataset:<16} {r.lr_source:<{src_w}} {len(r.images):>6} {_fmt(r.psnr, 4):>9} "
            f"{_fmt(r.ssim, 4):>8}{failed}"
        )
        if per_image:
            for im in r.images:
                note = f"  [{'; '.join(im.notes)}]" if im.notes else ""
                lines.append(
                    f"  {im.name:<{src_w + 15}} {_fmt(im.psnr, 4):>15} {_fmt(im.ssim, 4):>8}{note}"
                )
        for note in r.notes:
            lines.append(f"  note: {note}")
    return "\n".join(lines)


def _fmt(v: float, digits: int) -> str:
    return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.{digits}f}")


def write_results(results, path: str | Path, *, overwrite: bool = False) -> None:
    """Results as JSON (everything) or CSV (a row per image and a ``mean`` row per set); an
    existing file is replaced only with ``overwrite``."""

    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps([r.to_dict() for r in results], indent=2, default=str)
    else:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["model", "dataset", "scale", "lr_source", "image", "psnr", "ssim", "notes"])
        for r in results:
            head = [r.model, r.dataset, r.scale, r.lr_source]
            for im in r.images:
                w.writerow(
                    [*head, im.name, f"{im.psnr:.6f}", f"{im.ssim:.6f}", "; ".join(im.notes)]
                )
            w.writerow([*head, "mean", f"{r.psnr:.6f}", f"{r.ssim:.6f}", f"{len(r.images)} images"])
            for name, error in r.failures:
                w.writerow([*head, name, "", "", f"FAILED: {error}"])
        text = buf.getvalue()
    atomic_write_text(path, text, overwrite=overwrite)
