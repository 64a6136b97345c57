"""The ``lightsr`` command: thin subcommands over library functions.

Each subcommand lives in its own module exposing ``register(subparsers)`` which adds a parser
whose ``func`` default runs the command and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._version import __version__
from ..errors import LightSRError

# Explicit list: a subcommand exists when its module is named here.
_SUBCOMMANDS = (
    "list_cmd",
    "convert_cmd",
    "eval_cmd",
    "profile_cmd",
    "upscale_cmd",
    "train_cmd",
    "export_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightsr", description="Lightweight single-image super-resolution."
    )
    parser.add_argument("--version", action="version", version=f"lightsr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LightSRError as exc:
        print(f"lightsr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A file system refusal (permissions, full disk, a file where a folder should be) is
        # the user's to fix: say what and where, without a traceback.
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"lightsr {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
