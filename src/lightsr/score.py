"""Score SR images that already exist (another paper's released results, another tool's output)
against their HR images, with exactly the metrics of :func:`lightsr.evaluate.evaluate`.

The rule is eval's: the HR image is reduced to 8 bits (``round(x / 257)`` for 16-bit files),
loses an alpha channel, is modcropped to a multiple of the scale, and a grey image is measured as
the Y of its repeated channel; PSNR/SSIM (:mod:`lightsr.metrics`) on MATLAB's Y (or RGB), with
``crop_border`` (default: the scale) pixels cropped from every side. The SR image must already
be 8-bit (or 16-bit, reduced the same way) and exactly the modcropped HR size: nothing is
resized or rounded again, so ``lightsr eval --save-sr DIR`` followed by ``score`` on ``DIR/<set>``
gives eval's numbers.

Pairing (:func:`pair_files`): an SR file ``<stem><suffix>.<ext>`` belongs to the HR file
``<stem>.<ext'>`` (any image extension on either side). Without ``suffix``, an SR file whose
stem is an HR stem pairs with it; otherwise the suffixes of :data:`DEFAULT_SUFFIXES` are tried
(case-insensitive; ``{s}`` is any number: ``baby_x4_SR.png``, ``babyx4.png``, ``baby_SR.png``).
An SR file that could belong to two HR files, or an HR file that two SR files could belong to,
is refused (name the suffix with ``suffix=`` / ``--suffix``), and so is a set where some HR
image has no SR or some SR image no HR: both lists are named.

``GT_DIR`` is a folder of HR images, or a set folder holding ``HR/`` (``Set5/``). ``SR_DIR`` is a
folder of SR images, or a folder holding ``<set>/`` (the ``--save-sr`` layout of ``eval``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .data.benchmark import to_eval_format
from .data.io import image_header, list_images, read_image
from .data.resize import modcrop
from .errors import DatasetError, ImageReadError, LightSRError
from .evaluate import EvalResult, ImageResult
from .metrics import psnr, ssim

#: Suffixes tried, in this order, after the plain stem, when no suffix is given (compared
#: case-insensitively; ``{s}`` is any integer, e.g. the scale).
DEFAULT_SUFFIXES = ("_SR", "x{s}", "_x{s}", "_x{s}_SR", "_SR_x{s}", "_SRx{s}")
#: Scales tried when none is given and the file names do not say it.
CANDIDATE_SCALES = (2, 3, 4, 8)
#: What the ``lr_source`` field of a score result says (its SR images were given, not made).
GIVEN_SR = "given SR images"

_MAX_LISTED = 8


@dataclass(frozen=True)
class ScorePair:
    """One HR image and the SR image paired with it (``suffix``: what follows the HR stem in
    the SR file's stem)."""

    name: str
    gt_path: Path
    sr_path: Path
    suffix: str


def _suffix_pattern(suffix: str) -> re.Pattern[str]:
    head, sep, tail = suffix.partition("{s}")
    body = re.escape(head) + (r"(\d+)" + re.escape(tail) if sep else "")
    return re.compile(body, re.IGNORECASE)


_DEFAULT_PATTERNS = tuple(_suffix_pattern(s) for s in DEFAULT_SUFFIXES)


def _listing(names: Sequence[str]) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


def gt_folder(gt_dir: str | os.PathLike) -> tuple[str, Path]:
    """(set name, folder of HR images) of ``gt_dir``: ``gt_dir/HR`` when there is one."""
    path = Path(gt_dir)
    if not path.is_dir():
        raise DatasetError(f"GT folder {str(path)!r} does not exist (or is not a folder).")
    if (path / "HR").is_dir():
        return path.name, path / "HR"
    name = path.parent.name if path.name == "HR" and path.parent.name else path.name
    return name, path


def sr_folder(sr_dir: str | os.PathLike, set_name: str) -> Path:
    """The folder of SR images: ``sr_dir``, or ``sr_dir/<set_name>`` when ``sr_dir`` holds no
    images but that folder (eval's ``--save-sr`` layout)."""
    path = Path(sr_dir)
    if not path.is_dir():
        raise DatasetError(f"SR folder {str(path)!r} does not exist (or is not a folder).")
    if not list_images(path) and (path / set_name).is_dir():
        return path / set_name
    return path


def pair_files(
    gt_files: Sequence[Path], sr_files: Sequence[Path], *, suffix: str | None = None
) -> list[ScorePair]:
    """Pair HR and SR files by name (the rule is in the module docstring), sorted by HR name.

    Raises :class:`~lightsr.errors.DatasetError` naming every HR file with two stems, SR file
    that could belong to two HR files, HR file claimed by two SR files, HR file without an SR
    and SR file without an HR."""
    gt: dict[str, Path] = {}
    twice_gt: list[str] = []
    for p in gt_files:
        if p.stem in gt:
            twice_gt.append(f"{gt[p.stem].name} and {p.name}")
        gt[p.stem] = p
    if twice_gt:
        raise DatasetError(
            f"two HR files share a name: {_listing(twice_gt)}. Keep one of each in the GT folder."
        )
    claimed: dict[str, list[tuple[Path, str]]] = {}
    no_gt: list[str] = []
    torn: list[str] = []
    for f in sr_files:
        stem = f.stem
        if suffix is not None:
            base = stem[: len(stem) - len(suffix)] if stem.endswith(suffix) else None
            found = [(base, suffix)] if base is not None and base in gt else []
        elif stem in gt:
            found = [(stem, "")]  # the plain stem wins over a pattern
        else:
            found = [
                (g, stem[len(g) :])
                for g in gt
                if stem.startswith(g)
                and any(p.fullmatch(stem[len(g) :]) for p in _DEFAULT_PATTERNS)
            ]
        if not found:
            no_gt.append(f.name)
        elif len(found) > 1:
            torn.append(f"{f.name} (HR {' or '.join(gt[g].name for g, _ in found)})")
        else:
            g, used = found[0]
            claimed.setdefault(g, []).append((f, used))
    crowded = [
        f"{gt[g].name} ({', '.join(f.name for f, _ in fs)})"
        for g, fs in sorted(claimed.items())
        if len(fs) > 1
    ]
    no_sr = [gt[g].name for g in sorted(gt) if g not in claimed]
    problems = []
    how = (
        f"SR files are named <HR stem>{suffix}.<ext>"
        if suffix is not None
        else "SR files are paired as <HR stem>.<ext> or <HR stem><suffix>.<ext> with a suffix "
        f"of {', '.join(DEFAULT_SUFFIXES)} ({{s}} a number, any case)"
    )
    if torn:
        problems.append(f"SR files that could belong to two HR files: {_listing(torn)}")
    if crowded:
        problems.append(f"HR files with several SR files: {_listing(crowded)}")
    if no_sr:
        problems.append(f"{len(no_sr)} HR file(s) without an SR file: {_listing(no_sr)}")
    if no_gt:
        problems.append(f"{len(no_gt)} SR file(s) without an HR file: {_listing(no_gt)}")
    if problems:
        raise DatasetError(
            "the GT and SR folders do not pair up: "
            + "; ".join(problems)
            + f". {how}. Name the SR files' suffix with --suffix STR (suffix= in Python), and "
            "check that both folders hold the same set."
        )
    return [
        ScorePair(g, gt[g], claimed[g][0][0], claimed[g][0][1]) for g in sorted(claimed, key=str)
    ]


def _scale_hints(pairs: Sequence[ScorePair], sr_dir: Path) -> set[int]:
    """Scales the names say: a number in the suffixes of the SR files (``_x4``), or an ``x4``
    / ``X4`` token in the SR folder's name or its parent's."""
    hints: set[int] = set()
    for pair in pairs:
        for pattern in _DEFAULT_PATTERNS:
            m = pattern.fullmatch(pair.suffix)
            if m and m.groups():
                hints.add(int(m.group(1)))
                break
    token = re.compile(r"(?<![A-Za-z0-9])x(\d+)(?![0-9])", re.IGNORECASE)
    for part in (sr_dir.name, sr_dir.parent.name):
        hints.update(int(n) for n in token.findall(part))
    return {h for h in hints if h >= 2}


def _cropped(shape: tuple[int, int], s: int) -> tuple[int, int]:
    return shape[0] - shape[0] % s, shape[1] - shape[1] % s


def _size_cause(gt: tuple[int, int], sr: tuple[int, int], s: int) -> str:
    crop = _cropped(gt, s)
    others = [t for t in CANDIDATE_SCALES if t != s and sr == _cropped(gt, t)]
    if others:
        return f"it is the modcropped size at x{' or x'.join(map(str, others))}: check --scale"
    if sr == gt:
        return (
            "the SR has the full HR size, not the modcropped one: it was resized or padded to "
            "the HR size, so its pixels do not line up with the modcropped HR"
        )
    if sr == (crop[0] // s, crop[1] // s):
        return "it is the LR size: SR_DIR holds LR images"
    if sr == (crop[1], crop[0]):
        return "width and height are swapped (a rotated image)"
    return "another image, or one cropped differently: check the pairing and the GT folder"


def check_sizes(
    pairs: Sequence[ScorePair], sizes: dict[str, tuple[tuple[int, int], tuple[int, int]]], s: int
) -> None:
    """Raise :class:`~lightsr.errors.DatasetError` naming every pair whose SR size (H, W) is
    not its HR's modcropped to ``s``, with both sizes and the likely cause. ``sizes``:
    ``{name: (hr_hw, sr_hw)}``."""
    bad = []
    for pair in pairs:
        gt, sr = sizes[pair.name]
        want = _cropped(gt, s)
        if sr != want:
            bad.append(
                f"{pair.sr_path.name} is {sr[0]}x{sr[1]} (HxW) but {pair.gt_path.name} "
                f"({gt[0]}x{gt[1]}) modcropped to x{s} is {want[0]}x{want[1]}: "
                + _size_cause(gt, sr, s)
            )
    if bad:
        raise DatasetError(
            f"{len(bad)} SR image(s) do not have the size of their modcropped HR image: "
            + "; ".join(bad[:_MAX_LISTED])
            + (f"; ... ({len(bad)} in all)" if len(bad) > _MAX_LISTED else "")
            + ". Scores are only comparable on SR images made from the LR of the modcropped HR."
        )


def choose_scale(
    pairs: Sequence[ScorePair],
    sizes: dict[str, tuple[tuple[int, int], tuple[int, int]]],
    *,
    hints: Collection[int] = (),
) -> int:
    """The scale when none was given: the one the names say (``_x4``, a folder ``X4``), else
    the only one of :data:`CANDIDATE_SCALES` every SR size agrees with; ambiguity is refused."""
    fits = [
        s
        for s in sorted(set(CANDIDATE_SCALES) | set(hints))
        if all(sr == _cropped(gt, s) for gt, sr in sizes.values())
    ]
    if len(set(hints)) == 1:
        return next(iter(hints))  # a wrong hint is named by check_sizes
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise DatasetError(
            f"the SR sizes fit x{' and x'.join(map(str, fits))} (the HR sizes are multiples of "
            "each) and the file names do not say which: pass --scale (scale= in Python)."
        )
    raise DatasetError(
        f"the SR sizes fit no scale of {', '.join(f'x{s}' for s in CANDIDATE_SCALES)}: pass "
        "--scale to see which images do not fit, or check that SR_DIR holds SR images of GT_DIR."
    )


def score_folders(
    gt_dir: str | os.PathLike,
    sr_dir: str | os.PathLike,
    *,
    scale: int | None = None,
    crop_border: int | None = None,
    y_channel: bool = True,
    suffix: str | None = None,
    label: str | None = None,
    progress: bool = False,
) -> EvalResult:
    """PSNR/SSIM of the SR images in ``sr_dir`` against the HR images of ``gt_dir`` (the rules
    are in the module docstring), as an :class:`~lightsr.evaluate.EvalResult` (``model``:
    ``label``, default ``sr_dir`` as given; ``lr_source``: :data:`GIVEN_SR`).

    ``scale`` defaults to what the names say or, failing that, the only scale every SR size
    fits; ``crop_border`` defaults to the scale. Pairing and size problems are refused before
    any image is measured (:class:`~lightsr.errors.DatasetError`); an image that cannot be read
    or measured is recorded in ``failures`` and the rest go on. ``progress``: a bar on a
    terminal (never on a pipe or a file)."""
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
        raise LightSRError(f"scale must be a positive integer, not {scale!r}.")
    if crop_border is not None and crop_border < 0:
        raise LightSRError(f"crop_border must be 0 or more, not {crop_border}.")
    set_name, hr_dir = gt_folder(gt_dir)
    sr_path = sr_folder(sr_dir, set_name)
    gt_files, sr_files = list_images(hr_dir), list_images(sr_path)
    if not gt_files:
        raise DatasetError(
            f"no images in the GT folder {str(hr_dir)!r}: give a folder of HR images, or a set "
            "folder holding HR/."
        )
    if not sr_files:
        raise DatasetError(
            f"no images in the SR folder {str(sr_path)!r}: give the folder of SR images (or "
            f"one holding {set_name}/)."
        )
    pairs = pair_files(gt_files, sr_files, suffix=suffix)
    sizes = {}
    for pair in pairs:
        gt_head, sr_head = image_header(pair.gt_path), image_header(pair.sr_path)
        sizes[pair.name] = ((gt_head.height, gt_head.width), (sr_head.height, sr_head.width))
    s = (
        scale
        if scale is not None
        else choose_scale(pairs, sizes, hints=_scale_hints(pairs, sr_path))
    )
    check_sizes(pairs, sizes, s)
    crop = s if crop_border is None else int(crop_border)
    result = EvalResult(
        dataset=set_name,
        scale=s,
        lr_source=GIVEN_SR,
        model=label if label else str(sr_dir),
        images=[],
        failures=[],
        y_channel=y_channel,
        crop_border=crop,
    )
    bar = tqdm(total=len(pairs), desc=f"{set_name} x{s}", disable=None if progress else True)
    try:
        for pair in pairs:
            try:
                result.images.append(_score_pair(pair, s, crop, y_channel))
            except (LightSRError, OSError, MemoryError) as exc:
                result.failures.append((pair.name, f"{type(exc).__name__}: {exc}"))
            bar.update(1)
    finally:
        bar.close()
    return result


def _score_pair(pair: ScorePair, s: int, crop: int, y_channel: bool) -> ImageResult:
    notes: list[str] = []
    hr = to_eval_format(read_image(pair.gt_path), pair.gt_path, notes)
    if hr.shape[2] == 1:
        notes.append(f"{pair.gt_path.name}: grey, measured as Y of the repeated channel")
    hr = modcrop(hr, s)
    sr = to_eval_format(read_image(pair.sr_path), pair.sr_path, notes)
    if sr.shape[:2] != hr.shape[:2]:  # an EXIF rotation the header did not show
        raise DatasetError(
            f"{pair.sr_path.name} decodes to {sr.shape[0]}x{sr.shape[1]}, but the modcropped "
            f"HR is {hr.shape[0]}x{hr.shape[1]} (an EXIF rotation?)."
        )
    if sr.shape[2] == 1 and hr.shape[2] == 3:
        raise ImageReadError(
            f"{pair.sr_path.name} is grey but its HR {pair.gt_path.name} is colour: a grey (or "
            "Y-only) SR image cannot be measured as the Y of RGB. Score the RGB SR images."
        )
    # eval measures RGB SR against the HR, a grey HR repeated to three channels
    hr = hr if hr.shape[2] == 3 else np.repeat(hr, 3, axis=2)
    sr = sr if sr.shape[2] == 3 else np.repeat(sr, 3, axis=2)
    return ImageResult(
        name=pair.name,
        psnr=psnr(sr, hr, crop_border=crop, y_channel=y_channel),
        ssim=ssim(sr, hr, crop_border=crop, y_channel=y_channel),
        seconds=0.0,
        notes=notes,
    )


__all__ = [
    "CANDIDATE_SCALES",
    "DEFAULT_SUFFIXES",
    "GIVEN_SR",
    "ScorePair",
    "check_sizes",
    "choose_scale",
    "gt_folder",
    "pair_files",
    "score_folders",
    "sr_folder",
]
