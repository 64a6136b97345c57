"""Results kept per CPU kind and per label, for benchmarks that compare checkouts.

``bench_read``, ``bench_resize``, ``bench_batch`` and ``bench_startup`` measure this checkout
or another one (``--src``: a ``git worktree`` of an earlier commit) and keep each measurement
under a label in ``benchmarks/results/<folder>/<cpu-slug>.json``, so that a change's effect
is two labels in one file, measured on the same CPU kind.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SRC = Path(__file__).resolve().parents[1] / "src"


def commit_of(src: Path) -> str | None:
    """The short commit of the checkout holding ``src``; None outside git."""
    done = subprocess.run(
        ["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or None


def save_run(
    folder: str, label: str, record: dict[str, Any], *, indent: int = 2, **about: Any
) -> Path:
    """Put ``record`` under ``runs[label]`` of ``results/<folder>/<cpu-slug>.json`` (other
    labels kept), with ``about`` (what, how, command, ...), the CPU kind and the machine
    record at the top; written atomically. Returns the file's path."""
    from bench_backends import cpu_slug

    from lightsr.atomic import atomic_write_text
    from lightsr.hardware import cpu_kind, machine_record

    path = RESULTS / folder / f"{cpu_slug(cpu_kind())}.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    result.update(about)
    result.update({"cpu_kind": cpu_kind(), "machine": machine_record()})
    result.setdefault("runs", {})[label] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=indent) + "\n", overwrite=True)
    return path


def add_comparison_arguments(parser: argparse.ArgumentParser) -> None:
    """``--src``, ``--label`` and ``--no-save``, as every labelled benchmark takes them."""
    parser.add_argument("--src", type=Path, help="another checkout's src folder to measure")
    parser.add_argument(
        "--label", help="the record's name (default: the measured checkout's commit)"
    )
    parser.add_argument("--no-save", action="store_true", help="print only; write no result")


def label_of(args: argparse.Namespace) -> str:
    """``--label``, else the commit of the checkout measured (``--src``, else this one)."""
    src = args.src if args.src is not None else SRC
    return args.label or commit_of(src) or str(src)


def run_child(script: str, argv: list[str], src: Path | None) -> dict[str, Any]:
    """Run ``python script *argv`` in a fresh process that imports the lightsr in ``src``
    (None: this checkout's; passed as ``$LIGHTSR_BENCH_SRC``, which the script puts first on
    its path) and return the record it prints on its ``CHILD {json}`` line; a failed child
    stops the benchmark with its output."""
    env = dict(os.environ)
    if src is not None:
        env["LIGHTSR_BENCH_SRC"] = str(src.resolve())
    done = subprocess.run([sys.executable, script, *argv], env=env, capture_output=True, text=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("CHILD ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"{script} {' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(line[len("CHILD ") :])
