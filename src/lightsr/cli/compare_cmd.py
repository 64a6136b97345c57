"""``lightsr compare IMG... --report DIR``: a visual report of several models against bicubic
(thin over :func:`lightsr.visual_report.write_report`)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from ..data.benchmark import LR_SOURCES, BenchmarkSet
from ..errors import LightSRError
from ..hardware import resolve_device
from ..hub import DEFAULT_SCALE, ResolvedModel, get_weights, resolve_model
from ..registry import get_spec
from ..visual_report import (
    INDEX,
    ReportInput,
    benchmark_inputs,
    check_report_dir,
    read_input,
    write_report,
)
from ._args import (
    add_device_arg,
    add_quiet_arg,
    add_threads_arg,
    apply_threads,
    scale_arg,
    show_progress,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="a visual HTML report: models against bicubic (slider, zoomed crops, PSNR vs cost)",
        description="Upscale images with each model and with bicubic (always shown, the "
        "reference) and write a static report to DIR: DIR/index.html (open it in a browser; "
        "no server, nothing fetched) and DIR/images/. Per image a before/after slider, "
        "zoomed crops of the most detailed places, and, for benchmark images, PSNR/SSIM as "
        "`lightsr eval` measures them; at the top the models' cost and a PSNR-vs-Multi-Adds "
        "plot. With no --weights/--checkpoint/--model the bundled default is compared.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="IMG",
        help="LR image files (upscaled; no ground truth) or benchmark folders (Set5, a folder "
        "of HR images, ...: LR made or paired as `lightsr eval` does, with PSNR/SSIM)",
    )
    p.add_argument(
        "--weights",
        nargs="+",
        default=[],
        metavar="NAME",
        help="named weights to compare (see `lightsr list --weights`)",
    )
    p.add_argument(
        "--weights-dir",
        metavar="DIR",
        help="a folder of already-downloaded weights files, matched by sha256 (default "
        "$LIGHTSR_WEIGHTS_DIR)",
    )
    p.add_argument(
        "--checkpoint",
        nargs="+",
        default=[],
        metavar="PATH",
        help="lightsr checkpoints or authors' released files to compare",
    )
    p.add_argument(
        "--model",
        nargs="+",
        default=[],
        metavar="NAME",
        help="registered models with bundled weights to compare; 'bicubic' is always shown",
    )
    p.add_argument(
        "--scale",
        type=scale_arg,
        help="scale factor: 2, 3 or 4 (default: the models', else 4); every model must have it",
    )
    p.add_argument(
        "--report",
        required=True,
        metavar="DIR",
        help="the report folder (new or empty, unless --overwrite)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --report folder, replacing files of the same names",
    )
    p.add_argument(
        "--lr-source",
        choices=LR_SOURCES,
        default="auto",
        help="for benchmark folders: where LR images come from (as in `lightsr eval`)",
    )
    add_device_arg(p, default="cpu")
    add_threads_arg(p)
    add_quiet_arg(p)
    p.set_defaults(func=run)


def _resolve_models(args: argparse.Namespace) -> list[ResolvedModel]:
    """The models named, in the order --weights, --checkpoint, --model; the bundled default
    when none is named. Files and names carry a scale; --model names take theirs (or --scale)."""
    for name in args.weights:
        entry = get_weights(name)
        if entry.precision == "int8":
            raise LightSRError(
                f"--weights {entry.name} is {entry.base} run at int8; compare runs the models "
                f"in torch at fp32: compare --weights {entry.base}, and measure int8 with "
                f"`lightsr eval --weights {entry.name}` (its cost: `lightsr list --weights`)."
            )
    common = dict(weights_dir=args.weights_dir, scale=args.scale)
    resolved = [resolve_model(weights=name, **common) for name in args.weights]
    resolved += [resolve_model(checkpoint=path, **common) for path in args.checkpoint]
    scale = args.scale or (resolved[0].model.scale if resolved else None)
    for name in args.model:
        if get_spec(name).name == "bicubic":
            continue  # the reference, always shown
        resolved.append(
            resolve_model(model=name, scale=scale, weights_dir=args.weights_dir, exact=True)
        )
    if not resolved and not args.model:
        resolved.append(resolve_model(scale=args.scale))
    scales = {r.model.scale for r in resolved}
    if len(scales) > 1:
        each = ", ".join(f"{r.source} (x{r.model.scale})" for r in resolved)
        raise LightSRError(
            f"the models upscale by different factors: {each}. Compare models of one scale "
            "(`lightsr list --weights` shows each file's)."
        )
    return resolved


def _inputs(paths: list[str], *, scale: int, lr_source: str) -> tuple[list, list[Path]]:
    """Open every input before any model runs: plain images are read now, benchmark folders
    opened (their images are read one at a time later). Also the data folders, which the
    report must stay out of."""
    parts: list[Iterable[ReportInput]] = []
    folders: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            ds = BenchmarkSet.from_folder(path, scale=scale, lr_source=lr_source)
            parts.append(benchmark_inputs(ds))
            folders.append(path)
            folders.extend({pair.hr_path.parent for pair in ds.pairs})
            if ds.lr_dir is not None:
                folders.append(ds.lr_dir)
        else:
            parts.append([read_input(path)])
    return parts, folders


def run(args: argparse.Namespace) -> int:
    apply_threads(args)
    check_report_dir(args.report, overwrite=args.overwrite, inputs=args.inputs)
    device = resolve_device(args.device)
    resolved = _resolve_models(args)
    scale = resolved[0].model.scale if resolved else (args.scale or DEFAULT_SCALE)
    parts, folders = _inputs(args.inputs, scale=scale, lr_source=args.lr_source)
    check_report_dir(args.report, overwrite=args.overwrite, inputs=folders)
    models = [(r.source, r.model.to(device)) for r in resolved]
    if not models:  # only --model bicubic: bicubic alone, against the LR and HR images
        models = [("bicubic", resolve_model(model="bicubic", scale=scale, exact=True).model)]
    report = write_report(
        args.report,
        models,
        (item for part in parts for item in part),
        overwrite=args.overwrite,
        progress=show_progress(args),
        inputs=folders,
    )
    for m in report.models:
        mean = f"  PSNR {m.psnr:.2f} dB  SSIM {m.ssim:.4f}" if m.psnr is not None else ""
        print(f"{m.label:<40}{mean}")
    for note in report.notes:
        print(f"note: {note}")
    print(f"wrote {Path(args.report) / INDEX} ({len(report.images)} image(s))")
    return 0
