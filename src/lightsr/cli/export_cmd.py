"""``lightsr export CHECKPOINT --onnx/--torchscript/--openvino``: deployable files with a
parity check."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..atomic import same_file
from ..checkpoint import load_any
from ..errors import LightSRError, OutputExistsError, OutputPathError
from ..export import export_model
from ..hub import check_blend_request, fetch_weights, get_weights, resolve_model, sha256_of
from ..registry import create_model
from ._args import (
    add_checkpoint_arg,
    add_denoise_strength_arg,
    add_int8_calibration_arg,
    add_overwrite_arg,
    add_threads_arg,
    add_weights_args,
    apply_threads,
    int8_calibration_of,
    scale_arg,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX / TorchScript / OpenVINO IR (folded, dynamic image size, "
        "parity-checked)",
        description=(
            "Export the folded model. Input: float32 RGB in [0, 1], NCHW, any H and W; output "
            "float32 RGB at scale x the size. The file records architecture, options, scale, "
            "input/output range and layout, lightsr version and the source weights' sha256 "
            "(ONNX metadata_props; OpenVINO IR rt_info, section lightsr; TorchScript extra "
            "file lightsr_metadata.json), read back by the check. A JSON sidecar "
            "<file>.json records the max abs difference from PyTorch at two input sizes. "
            "--openvino writes <name>.xml and <name>.bin (fp32 weights; needs "
            "lightsr[openvino]). --weights NAME_int8 (an int8 entry) writes the quantized "
            "graph `upscale` runs at int8, ONNX or IR, checked against that graph run by the "
            "same engine."
        ),
    )
    p.add_argument(
        "checkpoint_file",
        nargs="?",
        metavar="CHECKPOINT",
        help="a lightsr checkpoint or an authors' .pt/.pth file (or --checkpoint / --weights)",
    )
    add_checkpoint_arg(p)
    add_weights_args(p)
    add_denoise_strength_arg(p)
    add_int8_calibration_arg(p)
    p.add_argument("--model", help="architecture name: without weights, exports random weights")
    p.add_argument("--scale", type=scale_arg, help="scale factor (with --model; checked otherwise)")
    p.add_argument("--onnx", action="store_true", help="write an ONNX file")
    p.add_argument("--torchscript", action="store_true", help="write a TorchScript file")
    p.add_argument(
        "--openvino",
        action="store_true",
        help="write an OpenVINO IR (.xml and its .bin), what --backend openvino runs",
    )
    p.add_argument(
        "-o",
        "--out",
        metavar="PATH",
        help="output file, or stem for both formats (default: <checkpoint stem> here)",
    )
    # the earlier spelling, still accepted
    p.add_argument("--output", dest="out", help=argparse.SUPPRESS)
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument(
        "--no-check", action="store_true", help="skip the parity and metadata read-back checks"
    )
    add_threads_arg(p)
    add_overwrite_arg(p, what="existing output files and their sidecars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not (args.onnx or args.torchscript or args.openvino):
        raise LightSRError("choose a format: --onnx, --torchscript and/or --openvino.")
    if args.checkpoint_file and args.checkpoint:
        raise LightSRError(
            "two checkpoints given (CHECKPOINT and --checkpoint): pass the file once."
        )
    args.checkpoint = args.checkpoint or args.checkpoint_file
    check_blend_request(args.weights, args.denoise_strength)
    apply_threads(args)
    sha: str | None = None
    precision = "fp32"
    if args.weights:
        entry = get_weights(args.weights)
        if entry.precision == "int8" and args.torchscript:
            raise LightSRError(
                f"--weights {entry.name} is {entry.base} run at int8, which exports to ONNX or "
                f"OpenVINO IR only (the quantized graph the engines run): drop --torchscript, "
                f"or export --weights {entry.base} (fp32) to TorchScript."
            )
        resolved = resolve_model(
            model=args.model,
            checkpoint=args.checkpoint,
            scale=args.scale,
            weights=args.weights,
            weights_dir=args.weights_dir,
            denoise_strength=args.denoise_strength,
        )
        model, precision = resolved.model, resolved.precision or "fp32"
        stem = entry.name
        if args.denoise_strength is not None:
            stem += f"_dn{args.denoise_strength:g}"  # not the photo model's own file name
        # the published file's sha256; bundled weights are that file itself
        sha = entry.sha256 or sha256_of(fetch_weights(entry.name))
    elif args.checkpoint:
        model = load_any(args.checkpoint, expect_arch=args.model, expect_scale=args.scale)
        stem = Path(args.checkpoint).stem
        sha = sha256_of(args.checkpoint)
    elif args.model:
        if not args.scale:
            raise LightSRError("--model without a checkpoint needs --scale (2, 3 or 4).")
        model = create_model(args.model, scale=args.scale)
        stem = f"{model.arch_name}_x{args.scale}_random"
        print(f"note: exporting {model.arch_name} x{args.scale} with random weights")
    else:
        raise LightSRError("name a checkpoint to export, or --model NAME --scale S.")

    targets = []
    formats = [
        (fmt, suffix)
        for fmt, flag, suffix in (
            ("onnx", args.onnx, ".onnx"),
            ("torchscript", args.torchscript, ".pt"),
            ("openvino", args.openvino, ".xml"),
        )
        if flag
    ]
    single = len(formats) == 1
    base = Path(args.out) if args.out else Path(stem)
    if not single and base.suffix.lower() in (".onnx", ".pt", ".xml"):
        base = base.with_suffix("")  # several formats: -o names the common stem
    for fmt, suffix in formats:
        path = base if (single and args.out) else base.with_name(base.name + suffix)
        if fmt == "openvino" and path.suffix.lower() != ".xml":
            path = path.with_name(path.name + ".xml")  # an IR is found by its .xml
        written = [path, path.with_name(path.name + ".json")]
        if fmt == "openvino":
            written.append(path.with_suffix(".bin"))
        for out in written:
            if args.checkpoint and same_file(out, args.checkpoint):
                raise OutputPathError(f"{str(out)!r} is the input checkpoint: choose another -o.")
        # Every target (and its sidecar, and an IR's .bin) is checked before the first is
        # written.
        for taken in written:
            if os.path.lexists(taken) and not args.overwrite:
                raise OutputExistsError(
                    f"{str(taken)!r} exists: pass --overwrite to replace it, or another -o."
                )
        targets.append((fmt, path))

    calibration = int8_calibration_of(
        args, precision, int(model.scale), how="name an int8 entry (--weights NAME_int8 --onnx)"
    )
    failed = False
    for fmt, path in targets:
        report = export_model(
            model,
            path,
            format=fmt,
            opset=args.opset,
            check=not args.no_check,
            overwrite=args.overwrite,
            source_sha256=sha,
            weights=get_weights(args.weights).name if args.weights else None,
            precision=precision,
            calibration=calibration,
        )
        diffs = ", ".join(
            f"{p['input_hw'][0]}x{p['input_hw'][1]}: {p['max_abs_diff']:.2e}" for p in report.parity
        )
        what = f"{fmt}, int8" if precision == "int8" else fmt
        print(f"{path} ({what}): parity {report.parity_status}" + (f" ({diffs})" if diffs else ""))
        print(f"  metadata {report.metadata_status}")
        print(f"  details: {path}.json")
        failed |= not report.ok
    return 1 if failed else 0
