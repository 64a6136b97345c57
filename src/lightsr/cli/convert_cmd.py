"""``lightsr convert OFFICIAL OUT``: an authors' released checkpoint to a lightsr checkpoint."""

from __future__ import annotations

import argparse
import os

from ..atomic import same_file
from ..checkpoint import load_any, load_official, save, save_basicsr
from ..errors import OutputExistsError, OutputPathError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert an authors' released checkpoint (A2F, FMEN, IMDN) into a lightsr "
        "checkpoint, or (--to basicsr) lightsr weights into the authors' key layout",
    )
    p.add_argument(
        "official", help="the input: an authors' .pt/.pth file (--to basicsr: any checkpoint)"
    )
    p.add_argument("out", help="where to write the result (.safetensors; --to basicsr: .pth)")
    p.add_argument(
        "--to",
        choices=("lightsr", "basicsr"),
        default="lightsr",
        help="basicsr: {'params_ema': state_dict} in the authors' key layout (A2F, FMEN-S, IMDN)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
