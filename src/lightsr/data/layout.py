"""Folder layouts shared by benchmark sets (:mod:`.benchmark`) and training data
(:mod:`.training`): which LR file belongs to which HR image, and where DIV2K keeps its LR.

- The LR file of ``0001.png`` at x4 is ``0001x4.*`` or ``0001.*`` (:func:`lr_stems`). Two such
  files for one HR image (``0001x4.png`` *and* ``0001.png``) are an error, never a silent pick.
- DIV2K ships ``DIV2K_train_HR/0001.png`` beside ``DIV2K_train_LR_bicubic/X4/0001x4.png``:
  :func:`div2k_lr_dir` maps an ``*_HR`` folder to that ``*_LR_bicubic[_clamp]/X{s}`` folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from .io import list_images


def lr_stems(hr_stem: str, scale: int) -> tuple[str, str]:
    """The stems an LR file of the HR image ``hr_stem`` may have at ``scale``:
    ``("0001x4", "0001")`` for ``"0001"`` at x4."""
    return f"{hr_stem}x{scale}", hr_stem


@dataclass(frozen=True)
class LRMatch:
    """HR files matched to the LR files of a folder.

    ``lr``: HR path -> its LR path; ``missing``: HR files without an LR (in HR order);
    ``extra``: LR files that belong to no HR file (sorted).
    """

    lr: dict[Path, Path]
    missing: list[Path]
    extra: list[Path]


def match_lr_files(hr_files: Sequence[Path], lr_dir: Path, scale: int) -> LRMatch:
    """Match each HR file with the LR file of ``lr_dir`` named by :func:`lr_stems` (any image
    extension).

    Raises :class:`~lightsr.errors.DatasetError` when an HR image has two LR candidates (e.g.
    ``0001x4.png`` and ``0001.png``, or ``0001x4.png`` and ``0001x4.bmp``): which one is meant
    cannot be known, so none is picked.
    """
    by_stem: dict[str, list[Path]] = {}
    for path in list_images(lr_dir):
        by_stem.setdefault(path.stem, []).append(path)
    lr: dict[Path, Path] = {}
    missing: list[Path] = []
    clashes: list[tuple[Path, list[Path]]] = []
    claimed: set[Path] = set()
    for hr in hr_files:
        found = [p for stem in lr_stems(hr.stem, scale) for p in by_stem.get(stem, [])]
        claimed.update(found)
        if not found:
            missing.append(hr)
        elif len(found) > 1:
            clashes.append((hr, found))
        else:
            lr[hr] = found[0]
    if clashes:
        hr, found = clashes[0]
        more = f" ({len(clashes)} HR images have several)" if len(clashes) > 1 else ""
        raise DatasetError(
            f"two LR candidates in {str(lr_dir)!r} for the HR image {hr.name} at x{scale}: "
            f"{', '.join(p.name for p in found)}{more}. Keep one LR file per HR image "
            f"(named {hr.stem}x{scale}.* or {hr.stem}.*)."
        )
    extra = sorted(p for paths in by_stem.values() for p in paths if p not in claimed)
    return LRMatch(lr=lr, missing=missing, extra=extra)


def div2k_lr_dir(hr_dir: Path, scale: int, *, clamp: bool = False) -> Path | None:
    """DIV2K's bicubic LR folder beside an ``*_HR`` folder: ``X_HR`` ->
    ``X_LR_bicubic/X{scale}`` (``X_LR_bicubic_clamp/X{scale}`` with ``clamp``, the
    replicate-boundary variant some benchmark packs add). None when ``hr_dir`` is not named
    ``*_HR``; the folder returned may not exist."""
    if not hr_dir.name.endswith("_HR") or hr_dir.name == "_HR":
        return None
    prefix = hr_dir.name[: -len("_HR")]
    return hr_dir.parent / f"{prefix}_LR_bicubic{'_clamp' if clamp else ''}" / f"X{scale}"


__all__ = ["LRMatch", "div2k_lr_dir", "lr_stems", "match_lr_files"]
