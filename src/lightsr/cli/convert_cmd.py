"""``lightsr convert OFFICIAL OUT``: an authors' released checkpoint to a lightsr checkpoint."""

from __future__ import annotations

import argparse

from ..checkpoint import load_official, save


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert an authors' released checkpoint (A2F, FMEN) into a lightsr checkpoint",
    )
    p.add_argument("official", help="the authors' .pt/.pth file")
    p.add_argument("out", help="where to write the lightsr .safetensors checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = load_official(args.official)
    save(model, args.out, extra=model.checkpoint_extra)
    n = sum(p.numel() for p in model.parameters())
    folded = " (folded)" if model.folded else ""
    print(f"{args.official} -> {args.out}: {model.arch_name} x{model.scale}{folded}, {n:,} params")
    return 0
