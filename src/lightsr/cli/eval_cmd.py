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

from ..atomic import atomic_write_text, check_outputs
from ..data.benchmark import LR_SOURCES, BenchmarkSet
from ..errors import LightSRError
from ..evaluate import check_save_sr, check_save_sr_folders, evaluate
from ..hardware import resolve_device
from ..hub import resolve_model
from ._args import add_weights_args, non_negative_int, positive_int, scale_arg

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
    p.add_argument("--checkpoint", help="a lightsr checkpoint or an authors' released file")
    add_weights_args(p)
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
    p.add_argument("--self-ensemble", action="store_true", help="x8 geometric self-ensemble")
    p.add_argument("--per-image", action="store_true", help="also print every image's metrics")
    p.add_argument("--out", help="write the results to this .csv or .json file")
    p.add_argument(
        "--save-sr",
        metavar="DIR",
        help="save SR images as DIR/<set>/<name>.png (DIR outside the datasets)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file and SR images"
    )
    p.add_argument(
        "--crop-border", type=non_negative_int, help="border pixels to crop (default: the scale)"
    )
    p.add_argument("--rgb", action="store_true", help="measure on RGB instead of Y (NTIRE style)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads")
    p.add_argument(
        "--quiet",
        "--no-progress",
        dest="no_progress",
        action="store_true",
        help="no progress bar (as in every command)",
    )
    p.set_defaults(func=run)


def _build_model(args: argparse.Namespace):
    """The model and its label, by the one rule of :func:`lightsr.hub.resolve_model`; eval
    accepts random weights (a floor, said on stderr) and uses bicubic's exact path."""
    resolved = resolve_model(
        model=args.model,
        checkpoint=args.checkpoint,
        scale=args.scale,
        allow_random=True,
        exact=True,
        weights=args.weights,
        weights_dir=args.weights_dir,
    )
    return resolved.model, resolved.source


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.lr_dir and len(args.datasets) != 1:
        raise LightSRError("--lr-dir pairs with exactly one DATASET folder.")
    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise LightSRError(f"--out {args.out!r}: use a .csv or .json file name.")
    # Outputs that could not be written, or would write into the data, are refused before
    # anything is computed (again, with every folder the sets read, once they are open).
    check_outputs(args.out, overwrite=args.overwrite)
    if args.save_sr:
        check_save_sr_folders(args.save_sr, [*args.datasets, args.lr_dir])
    device = resolve_device(args.device)  # a missing GPU is a clear error, not an assert
    model, label = _build_model(args)
    model = model.to(device)
    scale = model.scale
    # Open every set first: a bad folder fails before any time is spent on the others.
    sets = [
        BenchmarkSet.from_folder(d, scale=scale, lr_source=args.lr_source, lr_dir=args.lr_dir)
        for d in args.datasets
    ]
    if args.save_sr:
        check_save_sr(args.save_sr, sets, overwrite=args.overwrite, inputs=args.datasets)
    results = []
    for ds in sets:
        results.append(
            evaluate(
                model,
                ds,
                self_ensemble=args.self_ensemble,
                crop_border=args.crop_border,
                y_channel=not args.rgb,
                save_sr=args.save_sr,
                progress=not args.no_progress,
                model_name=label,
                overwrite=args.overwrite,
            )
        )
    print(format_table(results, per_image=args.per_image))
    if args.out:
        write_results(results, args.out, overwrite=args.overwrite)
        print(f"wrote {args.out}")
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
    lines = [
        f"model: {first.model}  x{first.scale}"
        + ("  self-ensemble x8" if first.self_ensemble else "")
        + f"  metrics on {channel}, crop {first.crop_border}",
        f"{'set':<16} {'LR source':<20} {'images':>6} "
        f"{'PSNR-' + channel:>9} {'SSIM-' + channel:>8}",
    ]
    for r in results:
        failed = f" ({len(r.failures)} failed)" if r.failures else ""
        lines.append(
            f"{r.dataset:<16} {r.lr_source:<20} {len(r.images):>6} {_fmt(r.psnr, 4):>9} "
            f"{_fmt(r.ssim, 4):>8}{failed}"
        )
        if per_image:
            for im in r.images:
                note = f"  [{'; '.join(im.notes)}]" if im.notes else ""
                lines.append(f"  {im.name:<35} {_fmt(im.psnr, 4):>15} {_fmt(im.ssim, 4):>8}{note}")
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
