"""``lightsr list``: the registered models."""

from __future__ import annotations

import argparse

from ..registry import create_model, get_spec, list_models


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("--params", action="store_true", help="also count parameters at each scale")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in list_models():
        spec = get_spec(name)
        line = f"{name:<16} x{'/x'.join(map(str, spec.scales)):<9} {spec.paper}"
        if args.params:
            counts = [
                sum(p.numel() for p in create_model(name, scale=s).parameters())
                for s in spec.scales
            ]
            line += "  params " + " / ".join(f"{c:,}" for c in counts)
        print(line)
    return 0
