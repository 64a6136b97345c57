"""The ``lightsr`` command: thin subcommands over library functions.

Each subcommand lives in its own module exposing ``register(subparsers)`` which adds a parser
whose ``func`` default runs the command and returns an exit code.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from .._version import __version__
from ..atomic import sigterm_as_exit
from ..errors import LightSRError

# Explicit list: a subcommand exists when its module is named here.
_SUBCOMMANDS = (
    "list_cmd",
    "convert_cmd",
    "eval_cmd",
    "score_cmd",
    "compare_cmd",
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
        # SIGTERM (a scheduler, `kill`, a container stop) raises SystemExit instead of ending the
        # process on the spot, so a write in progress removes its temp file (lightsr.atomic).
        with sigterm_as_exit():
            return int(args.func(args) or 0)
    except LightSRError as exc:
        print(f"lightsr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A file system refusal (permissions, full disk, a file where a folder should be) is
        # the user's to fix: say what and where, without a traceback.
        print(f"lightsr {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def describe_os_error(exc: OSError) -> str:
    """One line for a file system error: what happened, to which file, and what to do."""
    name = exc.filename
    where = str(name) if name is not None else "the output"
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return (
            f"no space left on the device writing {where}: free space or choose another "
            "output folder."
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied: {where}: check its (and its folder's) permissions, or choose "
            "another path."
        )
    if exc.errno == errno.EROFS:
        return f"read-only file system: {where}: choose an output folder on a writable disk."
    suffix = f" ({name})" if name is not None else ""
    return f"{exc.strerror or exc}{suffix}"
