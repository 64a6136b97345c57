"""argparse types shared by the subcommands: a bad number is a usage error naming what is
valid, at parse time (before a model is loaded), never a silent default or a traceback."""

from __future__ import annotations

import argparse
import sys

import torch

from ..errors import ConfigError
from ..hub import ResolvedModel, check_denoise_strength
from ..quantize import calibration_from_files
from ..registry import get_spec, list_models
from ..upscale import PRECISIONS


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be an integer, not {value!r}") from None


def scales() -> list[int]:
    """Every scale some registered model supports (2, 3, 4)."""
    return sorted({s for name in list_models() for s in get_spec(name).scales})


def scale_arg(value: str) -> int:
    """``--scale``: one of the scales the registered models support (``0`` or ``-2`` are
    errors, not "the default")."""
    valid = scales()
    n = _int(value, "the scale")
    if n not in valid:
        raise argparse.ArgumentTypeError(
            f"scale {n} is not supported: use {', '.join(map(str, valid[:-1]))} or {valid[-1]}"
        )
    return n


def positive_int(value: str) -> int:
    """A count that must be at least 1 (``--reps``, ``--threads``, ``--size``)."""
    n = _int(value, "the value")
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def non_negative_int(value: str) -> int:
    """A count that may be 0 (``--warmup``, ``--crop-border``)."""
    n = _int(value, "the value")
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {n}")
    return n


def pixel_count(value: str) -> int | None:
    """``--max-output-pixels``: a positive pixel count (``268435456``, ``5e8``, ``20000x20000``)
    or ``none`` (no limit)."""
    text = value.strip().lower().replace("_", "")
    if text == "none":
        return None
    try:
        if "x" in text:
            w, h = text.split("x")
            n = int(w) * int(h)
        else:
            f = float(text)
            if f != int(f):
                raise ValueError
            n = int(f)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"expected a pixel count (e.g. 500000000, 5e8 or 20000x20000) or 'none', not {value!r}"
        ) from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 pixel, not {n}")
    return n


def add_weights_args(p: argparse.ArgumentParser) -> None:
    """``--weights NAME`` and ``--weights-dir DIR``: the same two flags on every command that
    takes ``--checkpoint`` (they exclude each other)."""
    p.add_argument(
        "--weights",
        metavar="NAME",
        help="named weights (see `lightsr list --weights`): bundled, or fetched once, verified "
        "by sha256 and cached; not with --checkpoint",
    )
    p.add_argument(
        "--weights-dir",
        metavar="DIR",
        help="a folder of already-downloaded weights files, matched by sha256 (air-gapped "
        "machines; default $LIGHTSR_WEIGHTS_DIR)",
    )


def denoise_strength(value: str) -> float:
    """argparse type: a number from 0 to 1 (:func:`lightsr.hub.check_denoise_strength`)."""
    try:
        return check_denoise_strength(float(value))
    except (ValueError, ConfigError):
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, not {value!r}") from None


def add_denoise_strength_arg(p: argparse.ArgumentParser) -> None:
    """``--denoise-strength S``: a photo model blended with the clean model it was fine-tuned
    from (:func:`lightsr.hub.load_weights`), on every command that runs named weights."""
    p.add_argument(
        "--denoise-strength",
        type=denoise_strength,
        metavar="S",
        help="with --weights naming a photo model: 0 to 1, how far its weights are from the "
        "clean model it was fine-tuned from (0) to its own (1, the default); lower keeps more "
        "fine detail and removes less noise, JPEG and blur (Real-ESRGAN's -dn; docs/PHOTO.md)",
    )


def add_int8_calibration_arg(p: argparse.ArgumentParser) -> None:
    """``--int8-calibration PATH``: HR images int8 calibrates on (every command that runs or
    writes int8: upscale, eval, export)."""
    p.add_argument(
        "--int8-calibration",
        metavar="PATH",
        help="with int8: calibrate its ranges on random patches of these HR images (an image "
        "file or a folder of them, decoded one at a time) instead of generated ones, e.g. "
        "photos like those you upscale (docs/BACKENDS.md); the graph is cached per image set",
    )


def int8_calibration_of(
    args: argparse.Namespace,
    precision: str,
    scale: int,
    *,
    how: str = "add --precision int8 (or name an int8 entry, --weights NAME_int8)",
) -> list | None:
    """The LR patches of ``--int8-calibration`` (None without it), refused unless the command
    runs int8: a flag that would change nothing is an error, not a silence. ``how``: how this
    command is made to run int8, for the error."""
    path = getattr(args, "int8_calibration", None)
    if path is None:
        return None
    if precision != "int8":
        raise ConfigError(
            f"--int8-calibration applies to int8, but this runs {precision}: {how}, or drop "
            "--int8-calibration."
        )
    return calibration_from_files([path], scale=scale)


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """``--threads N``: intra-op CPU threads (the same flag on every command that computes)."""
    p.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="CPU threads for the network (default: torch's choice, usually one per core)",
    )


def add_quiet_arg(p: argparse.ArgumentParser, *, hidden_aliases: tuple[str, ...] = ()) -> None:
    """``--quiet``: no progress bars (they are also off whenever stderr is not a terminal).
    ``hidden_aliases``: older spellings still accepted (``--no-progress``), not in ``--help``."""
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (never drawn when stderr is not a terminal)",
    )
    for alias in hidden_aliases:
        p.add_argument(alias, dest="quiet", action="store_true", help=argparse.SUPPRESS)


def add_device_arg(
    p: argparse.ArgumentParser, *, default: str | None = "auto", shown: str | None = None
) -> None:
    """``--device``: one spelling and one rule (:func:`lightsr.hardware.resolve_device`) on
    every command that runs a network. ``shown``: the default in words, when not ``default``."""
    if shown is None:
        shown = "auto: CUDA when available, else CPU" if default in (None, "auto") else default
    p.add_argument(
        "--device",
        default=default,
        metavar="DEVICE",
        help=f"where the network runs: auto, cpu, cuda or cuda:N (default {shown})",
    )


def add_precision_arg(p: argparse.ArgumentParser, *, shown: str) -> None:
    """``--precision``: one vocabulary (:data:`lightsr.upscale.PRECISIONS`) and one help on
    every command that runs a network; ``shown``: the command's default in words. Parsed as
    None when not given (:func:`precision_of` applies the default), so that an int8 entry of
    ``--weights`` is refused only against a precision the user named."""
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="how the network computes: auto (bf16 where the CPU/GPU computes it natively and "
        "the model is measured bf16-safe, else fp32; the choice and why are printed), fp32, "
        "bf16, fp16, or int8 (CPU, ONNX Runtime: pip install lightsr[onnx]; docs/BACKENDS.md); "
        f"--weights NAME_int8 means int8 (default {shown})",
    )


def precision_of(args: argparse.Namespace, resolved: ResolvedModel, default: str) -> str:
    """The precision to run: an int8 entry's int8 (a contradicting ``--precision`` was refused
    by :func:`lightsr.hub.resolve_model`), else ``--precision``, else the command's default."""
    return resolved.precision or args.precision or default


def add_checkpoint_arg(p: argparse.ArgumentParser) -> None:
    """``--checkpoint PATH``: a weights file (the same help on every command)."""
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="a lightsr .safetensors checkpoint or an authors' released .pt/.pth file; not "
        "with --weights",
    )


def add_out_arg(p: argparse.ArgumentParser, *, what: str, metavar: str = "FILE") -> None:
    """``-o`` / ``--out FILE``: the one file a command writes."""
    p.add_argument("-o", "--out", metavar=metavar, help=what)


def add_overwrite_arg(p: argparse.ArgumentParser, *, what: str = "existing output files") -> None:
    """``--overwrite``: lightsr replaces a file only when told to."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what} (without it an existing file is an error)",
    )


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's intra-op thread count from ``--threads`` (no-op when not given)."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        torch.set_num_threads(threads)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only for a person watching: not with ``--quiet``, and not when stderr is
    a file or a pipe (a log would fill with tqdm frames)."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()
