"""``lightsr convert OFFICIAL OUT``: an authors' released checkpoint to a lightsr checkpoint."""

from __future__ import annotations

import argparse
import os

from ..atomic import same_file
from ..checkpoint import load_any, load_official, save, save_basicsr
from ..errors import LightSRError, OutputExistsError, OutputPathError
from ._args import add_out_arg, add_overwrite_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert an authors' released checkpoint (A2F, FMEN, IMDN) into a lightsr "
        "checkpoint, or (--to basicsr) lightsr weights into the authors' key layout",
    )
    p.add_argument(
        "official", help="the input: an authors' .pt/.pth file (--to basicsr: any checkpoint)"
    )
    p.add_argument(
        "out_file",
        nargs="?",
        metavar="OUT",
        help="where to write the result (.safetensors; --to basicsr: .pth), or -o OUT",
    )
    add_out_arg(p, what="the output file (the same as OUT)", metavar="OUT")
    p.add_argument(
        "--to",
        choices=("lightsr", "basicsr"),
        default="lightsr",
        help="basicsr: {'params_ema': state_dict} in the authors' key layout (A2F, FMEN-S, IMDN)",
    )
    add_overwrite_arg(p, what="OUT if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out_file and args.out:
        raise LightSRError("two outputs given (OUT and -o/--out): name the output once.")
    args.out = args.out or args.out_file
    if not args.out:
        raise LightSRError("name the output file: OUT (or -o OUT), e.g. model.safetensors.")
    # Refused before the input is read: OUT is the input itself (never replaced, even with
    # --overwrite: the authors' file is the one copy), or an existing file.
    if same_file(args.out, args.official):
        raise OutputPathError(
            f"OUT {args.out!r} is the input file {args.official!r}: converting would replace "
            "the authors' checkpoint. Choose another OUT (e.g. a .safetensors name)."
        )
    if os.path.lexists(args.out) and not args.overwrite:
        raise OutputExistsError(
            f"{args.out!r} exists: pass --overwrite to replace it, or choose another OUT."
        )
    if args.to == "basicsr":
        model = load_any(args.official)
        save_basicsr(model, args.out, overwrite=args.overwrite)
    else:
        model = load_official(args.official)
        save(model, args.out, extra=model.checkpoint_extra, overwrite=args.overwrite)
    n = sum(p.numel() for p in model.parameters())
    folded = " (folded)" if model.folded else ""
    print(f"{args.official} -> {args.out}: {model.arch_name} x{model.scale}{folded}, {n:,} params")
    return 0
