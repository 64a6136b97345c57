"""``lightsr upscale INPUT... [-o OUT]``: upscale image files, folders and globs."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..data.io import WRITE_EXTENSIONS, lossy_format, read_image_info
from ..errors import LightSRError
from ..hardware import resolve_device
from ..hub import (
    ResolvedModel,
    bundled_weights,
    get_weights,
    photo_weights,
    resolve_model,
    sha256_of,
    trained_on_degradations,
)
from ..registry import get_spec
from ..upscale import (
    BACKENDS,
    DEFAULT_MAX_OUTPUT_PIXELS,
    DEFAULT_NAME_SUFFIX,
    DEFAULT_QUALITY,
    OUTPUT_FORMATS,
    OUTSCALE_FILTERS,
    OutputOptions,
    Upscaler,
    check_output_target,
    check_outscale,
    print_report,
    upscale_files,
)
from ._args import (
    add_checkpoint_arg,
    add_denoise_strength_arg,
    add_device_arg,
    add_int8_calibration_arg,
    add_precision_arg,
    add_quiet_arg,
    add_threads_arg,
    add_weights_args,
    apply_threads,
    int8_calibration_of,
    pixel_count,
    precision_of,
    scale_arg,
    show_progress,
)


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


def _quality(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number 1..100, not {value!r}") from None
    if not 1 <= n <= 100:
        raise argparse.ArgumentTypeError(f"the quality runs from 1 to 100, not {n}")
    return n


def _outscale(value: str) -> float:
    try:
        n = float(value)
        check_outscale(n)
    except (ValueError, LightSRError):
        raise argparse.ArgumentTypeError(
            f"expected a number above 0 (e.g. 3.5), not {value!r}"
        ) from None
    return n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upscale",
        help="upscale images (files, folders, globs) with a trained model",
        description=(
            "Upscale images. Output: <stem>_x<scale>.<ext> in OUT (or beside each input), in "
            "the input's format (PNG, JPEG, WebP, TIFF; else PNG) unless --format; an "
            "existing file is never replaced unless --overwrite (a numeric suffix is added). "
            "8/16-bit, grey and RGBA images keep their type, and the ICC profile and EXIF "
            "their place; non-image files are skipped and unreadable images listed at the end."
        ),
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders or globs (quoted, 'photos/**/*.jpg' reaches subfolders)",
    )
    p.add_argument("-o", "--out", metavar="OUT", help="output folder (or file name for one input)")
    p.add_argument("--output", dest="out", help=argparse.SUPPRESS)  # the older spelling
    p.add_argument(
        "--model",
        help="architecture name (checked against --checkpoint), or 'bicubic' (no weights needed)",
    )
    add_weights_args(p)
    add_denoise_strength_arg(p)
    add_checkpoint_arg(p)
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
    add_precision_arg(p, shown="auto")
    add_int8_calibration_arg(p)
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help=(
            "what runs the model: auto (default): on the CPU the engine measured fastest per "
            "precision where installed (fp32: ONNX Runtime; int8 and native bf16: OpenVINO), "
            "else torch; torch; onnxruntime (CPU: fp32, int8; pip install lightsr[onnx]); "
            "openvino (CPU: fp32, int8, native bf16; pip install lightsr[openvino]). The "
            "choice and why are printed"
        ),
    )
    add_device_arg(p)
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
    p.add_argument(
        "--self-ensemble",
        action="store_true",
        help="average the 8 flips/transposes of every tile (8x slower, slightly more faithful)",
    )
    p.add_argument(
        "--outscale",
        type=_outscale,
        metavar="X",
        help="final size as a multiple of the input (e.g. 3.5): the network runs at --scale, "
        "then the image is resized to round(X*w) x round(X*h)",
    )
    p.add_argument(
        "--outscale-filter",
        choices=OUTSCALE_FILTERS,
        help="the resize after the network with --outscale: bicubic (MATLAB's imresize, the "
        "default) or lanczos (Pillow's)",
    )
    p.add_argument(
        "--format",
        choices=tuple(OUTPUT_FORMATS),
        help="output format (default: the input's own when it can hold the image, else png; "
        "an image the format cannot hold, alpha or 16-bit in jpg, is written as png, and said)",
    )
    p.add_argument(
        "--quality",
        type=_quality,
        metavar="N",
        help=f"JPEG/WebP quality 1..100 (default {DEFAULT_QUALITY}); not with png or tiff",
    )
    p.add_argument(
        "--suffix",
        default=DEFAULT_NAME_SUFFIX,
        metavar="STR",
        help="output name <stem><STR>.<ext> (default _x{scale}; {scale} becomes the scale); "
        "'' keeps the input's name (with -o another folder)",
    )
    p.add_argument(
        "--no-metadata",
        action="store_true",
        help="write no ICC profile or EXIF (camera, date, GPS position) into the outputs",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (not with --skip-existing)",
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave an input alone when its output file exists (resume a batch); not with "
        "--overwrite",
    )
    add_threads_arg(p)
    add_quiet_arg(p)
    p.set_defaults(func=run)


def _weights_label(args: argparse.Namespace, resolved: ResolvedModel) -> str:
    """Where the weights came from, for the start line: the file or name, and the first 12
    hex digits of its sha256 (the file run, or for --weights the file as published)."""
    model = resolved.model
    if args.checkpoint is not None:
        return f"{Path(args.checkpoint).name}, sha256 {sha256_of(args.checkpoint)[:12]}"
    if args.weights is not None:
        entry = get_weights(args.weights)
        name = f"{entry.name}: {entry.base} at {entry.precision}" if entry.base else entry.name
        label = f"{name}, {entry.source}, sha256 {entry.sha256[:12]} as published"
        if args.denoise_strength is not None:
            label += f", at denoise strength {args.denoise_strength:g} (blended with "
            label += f"{entry.fine_tuned_from})"
        return label
    if not get_spec(model.arch_name).learned:
        return "none"
    for name in (model.arch_name, "default"):
        path = bundled_weights(name, model.scale)
        if path is not None and "bundled" in resolved.source:
            return f"{path.stem}, bundled, sha256 {sha256_of(path)[:12]}"
    return resolved.source


def photo_hint(args: argparse.Namespace, model, sources: list[Path]) -> str | None:
    """One line naming the photo model when lossy inputs (JPEG, lossy WebP, AVIF, HEIC) ran
    through a model trained on clean bicubic LR (which sharpens compression blocks and noise);
    None otherwise."""
    if not get_spec(model.arch_name).learned:
        return None
    photo = photo_weights(model.scale)
    if photo is None or trained_on_degradations(weights=args.weights, checkpoint=args.checkpoint):
        return None
    kinds = [lossy_format(p, read_image_info(p).format) for p in sources]
    lossy = [k for k in kinds if k is not None]
    if not lossy:
        return None
    names = "/".join(k for k in ("JPEG", "WebP", "AVIF", "HEIC") if k in lossy)
    return (
        f"hint: {len(lossy)} {names} input(s) ran through a model trained on clean images; "
        f"for compressed, noisy or blurred photos try --weights {photo.name}"
    )


def run(args: argparse.Namespace) -> int:
    # What can be refused without the model is refused before it is loaded.
    if args.skip_existing and args.overwrite:
        raise LightSRError(
            "--skip-existing keeps existing outputs and --overwrite replaces them: pass one."
        )
    if args.outscale_filter is not None and args.outscale is None:
        raise LightSRError(
            f"--outscale-filter {args.outscale_filter} does nothing without --outscale: add "
            "--outscale X (e.g. 3.5), or drop the filter."
        )
    fmt = args.format or "auto"
    output = OutputOptions(
        format=fmt,
        quality=args.quality,
        name_suffix=args.suffix,
        skip_existing=args.skip_existing,
        keep_metadata=not args.no_metadata,
    )
    apply_threads(args)
    device = resolve_device(args.device)
    out = Path(args.out) if args.out else None
    check_output_target(out, format=fmt, quality=args.quality)
    resolved = resolve_model(
        model=args.model,
        checkpoint=args.checkpoint,
        scale=args.scale,
        weights=args.weights,
        weights_dir=args.weights_dir,
        precision=args.precision,
        denoise_strength=args.denoise_strength,
    )
    model = resolved.model
    precision = precision_of(args, resolved, "auto")
    runner = Upscaler(
        model,
        tile=args.tile,
        overlap=args.overlap,
        precision=precision,
        calibration=int8_calibration_of(args, precision, int(model.scale)),
        backend=args.backend,
        device=device,
        compile=args.compile,
        alpha=args.alpha,
        progress=show_progress(args),
        max_output_pixels=args.max_output_pixels,
        self_ensemble=args.self_ensemble,
        outscale=args.outscale,
        outscale_filter=args.outscale_filter or "bicubic",
    )
    # One line before the work (on stderr, with the report; stdout lists what was written):
    # which model, weights, device and settings ran, so a result can be reproduced. --quiet
    # keeps it: --quiet hides progress bars only.
    single = out is not None and out.suffix.lower() in WRITE_EXTENSIONS and not out.is_dir()
    target = out if single else None
    print(
        f"lightsr upscale: {runner.describe(weights=_weights_label(args, resolved))}; "
        f"{output.describe(runner.scale_label, target)}",
        file=sys.stderr,
    )
    # The report at the end lists every skipped/failed file; per-file warnings would repeat it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(skipping|failed)")
        report = upscale_files(
            args.inputs,
            args.out,
            model=runner,
            overwrite=args.overwrite,
            format=output.format,
            quality=output.quality,
            name_suffix=output.name_suffix,
            skip_existing=output.skip_existing,
            keep_metadata=output.keep_metadata,
            progress=show_progress(args),
        )
    for src, dst in report.written:
        print(f"{src} -> {dst}")
    print_report(report, file=sys.stderr)
    hint = photo_hint(args, model, [Path(src) for src, _ in report.written])
    if hint:
        print(hint, file=sys.stderr)
    if report.failed or not (report.written or report.existing):
        return 1
    return 0
