"""``lightsr score GT_DIR SR_DIR``: PSNR-Y/SSIM-Y of SR images that already exist (thin over
lightsr.score), measured and written exactly as ``lightsr eval`` does."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..atomic import check_outputs
from ..errors import LightSRError
from ..score import DEFAULT_SUFFIXES, score_folders
from ._args import add_out_arg, add_overwrite_arg, add_quiet_arg, non_negative_int, positive_int
from .eval_cmd import format_table, write_results


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="PSNR/SSIM (Y channel) of existing SR images (e.g. a paper's released results)",
        description=(
            "Score SR images that already exist against their HR images with exactly the "
            "metrics of `lightsr eval`: the HR modcropped to the scale, SR and HR as 8-bit, Y "
            "of MATLAB rgb2ycbcr, scale border pixels cropped. SR files pair with HR files by "
            "name: <stem>.<ext>, or <stem><suffix>.<ext> with a suffix of "
            + ", ".join(DEFAULT_SUFFIXES)
            + " ({s} a number, any case), or the one --suffix names. Every HR file needs an SR "
            "file and the reverse, and each SR image must have the modcropped HR size: "
            "anything else is refused before an image is measured."
        ),
    )
    p.add_argument("gt_dir", metavar="GT_DIR", help="HR images, or a set folder holding HR/")
    p.add_argument(
        "sr_dir",
        metavar="SR_DIR",
        help="SR images, or a folder holding <set>/ (the layout of `lightsr eval --save-sr`)",
    )
    p.add_argument(
        "--scale",
        type=positive_int,
        help="scale factor (default: the one the file or folder names say, e.g. _x4 or X4, "
        "else the only one every SR size fits)",
    )
    p.add_argument(
        "--crop-border", type=non_negative_int, help="border pixels to crop (default: the scale)"
    )
    p.add_argument("--rgb", action="store_true", help="measure on RGB instead of Y (NTIRE style)")
    p.add_argument(
        "--suffix",
        metavar="STR",
        help="what follows the HR stem in every SR file name, e.g. _x4_SR or _RCAN_BIX4 "
        "(default: the common patterns above)",
    )
    p.add_argument(
        "--label", help="name of the results in the table and files (default: SR_DIR as given)"
    )
    p.add_argument("--per-image", action="store_true", help="also print every image's metrics")
    add_out_arg(p, what="write the results to this .csv or .json file (as `lightsr eval --out`)")
    add_overwrite_arg(p, what="an existing --out file")
    add_quiet_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise LightSRError(f"--out {args.out!r}: use a .csv or .json file name.")
    check_outputs(args.out, overwrite=args.overwrite)  # refused before anything is measured
    result = score_folders(
        args.gt_dir,
        args.sr_dir,
        scale=args.scale,
        crop_border=args.crop_border,
        y_channel=not args.rgb,
        suffix=args.suffix,
        label=args.label,
        progress=not args.quiet,
    )
    print(format_table([result], per_image=args.per_image))
    if args.out:
        write_results([result], args.out, overwrite=args.overwrite)
        print(f"wrote {args.out}")
    if result.failures:
        print(f"\n{len(result.failures)} image(s) failed:", file=sys.stderr)
        for name, error in result.failures:
            print(f"  {result.dataset}/{name}: {error}", file=sys.stderr)
        return 1
    return 0
