"""``lightsr upscale INPUT... [-o OUT]``: upscale image files, folders and globs."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..hardware import resolve_device
from ..hub import resolve_model
from ..upscale import (
    DEFAULT_MAX_OUTPUT_PIXELS,
    Upscaler,
    check_output_target,
    print_report,
    upscale_files,
)
from ._args import add_weights_args, pixel_count, scale_arg


def _tile(value: str) -> int | str | None:
    if value in ("auto", "none"):
        return None if value == "none" else "auto"
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number, 'auto' or 'none', not {value!r}"
        ) from None
    if n <= 0:
        raise argparse.ArgumentTypeError("the tile size must be positive")
    return n


def _overlap(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', not {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("the overlap must be >= 0")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upscale",
        help="upscale images (files, folders, globs) with a trained model",
        description=(
            "Upscale images. Output: <stem>_x<scale>.png in OUT (or beside each input); an "
            "existing file is never replaced unless --overwrite (a numeric suffix is added). "
            "8/16-bit, grey and RGBA images keep their type; non-image files are skipped and "
            "unreadable images listed at the end."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument(
        "-o", "--output", metavar="OUT", help="output folder (or file name for one input)"
    )
    p.add_argument(
        "--model",
        help="architecture name (checked against --checkpoint), or 'bicubic' (no weights needed)",
    )
    add_weights_args(p)
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="a lightsr .safetensors checkpoint or an authors' .pt/.pth file (A2F, FMEN)",
    )
    p.add_argument(
        "--scale", type=scale_arg, help="scale factor: 2, 3 or 4 (checked against the checkpoint)"
    )
    p.add_argument(
        "--tile",
        type=_tile,
        default="auto",
        metavar="N|auto|none",
        help="tile side in LR pixels (default auto: from free memory)",
    )
    p.add_argument(
        "--overlap",
        type=_overlap,
        default="auto",
        metavar="N|auto",
        help="context pixels around each tile (default: the model's receptive field)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16", "auto"),
        default="fp32",
        help="fp32 (default); bf16/fp16 on GPUs and CPUs with native bf16; auto picks",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow start)")
    p.add_argument(
        "--alpha",
        choices=("bicubic", "model"),
        default="bicubic",
        help="how an alpha channel is upscaled (default bicubic)",
    )
    p.add_argument(
        "--max-output-pixels",
        type=pixel_count,
        default=DEFAULT_MAX_OUTPUT_PIXELS,
        metavar="N|none",
        help=(
            "refuse, before any compute, an image whose output would have more pixels "
            f"(default {DEFAULT_MAX_OUTPUT_PIXELS:,} = 16384^2: a 4000x3000 photo x4 passes; "
            "the output needs ~7 bytes a pixel of memory); e.g. 5e8, 20000x20000, or none"
        ),
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # What can be refused without the model is refused before it is loaded.
    device = resolve_device(args.device)
    check_output_target(Path(args.output) if args.output else None)
    resolved = resolve_model(
        model=args.model,
        checkpoint=args.checkpoint,
        scale=args.scale,
        weights=args.weights,
        weights_dir=args.weights_dir,
    )
    model = resolved.model
    runner = Upscaler(
        model,
        tile=args.tile,
        overlap=args.overlap,
        precision=args.precision,
        device=device,
        compile=args.compile,
        alpha=args.alpha,
        progress=False if args.quiet else None,
        max_output_pixels=args.max_output_pixels,
    )
    # The report at the end lists every skipped/failed file; per-file warnings would repeat it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(skipping|failed)")
        report = upscale_files(
            args.inputs,
            args.output,
            model=runner,
            overwrite=args.overwrite,
            progress=False if args.quiet else None,
        )
    for src, dst in report.written:
        print(f"{src} -> {dst}")
    print_report(report, file=sys.stderr)
    if report.failed or not report.written:
        return 1
    return 0
