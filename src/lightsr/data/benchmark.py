"""Benchmark sets (Set5, Set14, B100, Urban100, DIV2K validation, a folder of images).

A :class:`BenchmarkSet` pairs each HR image with its LR input at one scale. Layouts found by
:meth:`BenchmarkSet.from_folder`:

- the common one: ``<set>/HR/name.png`` + ``<set>/LR_bicubic[_clamp]/X4/namex4.png``
  (``LR_bicubic`` holds MATLAB's mirror-boundary LR, ``LR_bicubic_clamp`` the replicate one);
- DIV2K's: ``DIV2K_valid_HR/0801.png`` + ``DIV2K_valid_LR_bicubic/X4/0801x4.png`` (pass the
  ``DIV2K_valid_HR`` folder or the folder holding it);
- a plain folder of HR images: LR made by our exact MATLAB ``imresize`` of the modcropped HR;
- an explicit HR folder plus LR folder (``lr_dir=``), paired by name (``namex4`` or ``name``).

``lr_source`` picks the LR: ``"folder-clamp"``, ``"folder-mirror"``, ``"folder"`` (whichever
LR folder exists, clamp first), ``"imresize-mirror"``, ``"imresize-replicate"``, or ``"auto"``
(an LR folder when there is one, else ``imresize-replicate``, the boundary of the
``LR_bicubic_clamp`` files most published numbers were measured on).

``degrade=PRESET`` instead makes each LR from its modcropped HR with a synthetic real-world
degradation, :func:`lightsr.data.degrade.degrade_for_eval` (the image's file stem as its name,
``degrade_seed`` as the seed), so the same set, preset and seed give the same LR bit for bit;
the set's ``lr_source`` then reads ``degrade:<preset>:seed<seed>``.

Images are handed out as uint8: 16-bit images are reduced to 8 bits (``round(x / 257)``; the
papers' metrics are 8-bit), RGBA loses its alpha, grey stays one channel (it is measured as
the Y of the repeated channel); each such change is recorded in the image's ``notes``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatasetError
from .degrade import degrade_for_eval, get_preset, to_uint8
from .io import list_images, read_image
from .layout import div2k_lr_dir, match_lr_files
from .resize import imresize, modcrop

LR_SOURCES = (
    "auto",
    "folder",
    "folder-clamp",
    "folder-mirror",
    "imresize-mirror",
    "imresize-replicate",
)


@dataclass(frozen=True)
class BenchmarkImage:
    """One evaluation pair. ``hr``: uint8 H x W x C (C = 3, or 1 for grey), modcropped to a
    multiple of the scale; ``lr``: uint8 (H/s) x (W/s) x C."""

    name: str
    hr: np.ndarray
    lr: np.ndarray
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Pair:
    name: str
    hr_path: Path
    lr_path: Path | None


def to_eval_format(img: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    """uint8 with 1 or 3 channels, recording each conversion in ``notes``."""
    if img.dtype == np.uint16:
        img = np.floor(img / 257.0 + 0.5).astype(np.uint8)
        notes.append(f"{path.name}: 16-bit reduced to 8 bits (round(x/257)) for 8-bit metrics")
    if img.shape[2] == 4:
        img = img[:, :, :3]
        notes.append(f"{path.name}: alpha channel dropped")
    return img


@dataclass
class BenchmarkSet(Sequence[BenchmarkImage]):
    """HR/LR pairs of one set at one scale; images are read when indexed (``ds[i]``), so one
    unreadable file fails only its own item (:class:`~lightsr.errors.DatasetError` or
    :class:`~lightsr.errors.ImageReadError`)."""

    name: str
    scale: int
    pairs: list[_Pair]
    lr_source: str  # resolved: "folder-clamp", "folder-mirror", "folder", "imresize-..."
    lr_dir: Path | None = None
    boundary: str | None = None  # imresize boundary rule when LR is made from HR
    notes: list[str] = field(default_factory=list)
    #: A degradation preset making each LR from its HR (see the module docstring), and its seed.
    degrade: str | None = None
    degrade_seed: int = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[BenchmarkImage]:
        for i in range(len(self)):
            yield self[i]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.pairs]

    def __getitem__(self, index: int) -> BenchmarkImage:  # type: ignore[override]
        pair = self.pairs[index]
        s = self.scale
        notes: list[str] = []
        hr = to_eval_format(read_image(pair.hr_path), pair.hr_path, notes)
        if hr.shape[2] == 1:
            notes.append(f"{pair.hr_path.name}: grey, measured as Y of the repeated channel")
        hr = modcrop(hr, s)
        if hr.shape[0] == 0 or hr.shape[1] == 0:
            raise DatasetError(
                f"HR image {str(pair.hr_path)!r} is smaller than the scale x{s}; remove it."
            )
        want = (hr.shape[0] // s, hr.shape[1] // s)
        if self.degrade is not None:
            # degrade works on colour: a grey HR is degraded (and measured) as repeated RGB.
            rgb = hr if hr.shape[2] == 3 else np.repeat(hr, 3, axis=2)
            unit = rgb.astype(np.float32) / np.float32(255.0)
            lr = to_uint8(
                degrade_for_eval(
                    unit, scale=s, preset=self.degrade, seed=self.degrade_seed, name=pair.name
                )
            )
        elif pair.lr_path is None:
            lr = imresize(hr, 1 / s, boundary=self.boundary or "replicate")
        else:
            lr = to_eval_format(read_image(pair.lr_path), pair.lr_path, notes)
            if lr.shape[:2] != want:
                raise DatasetError(
                    f"LR image {str(pair.lr_path)!r} is {lr.shape[0]}x{lr.shape[1]}, but its HR "
                    f"{pair.hr_path.name} (modcropped to {hr.shape[0]}x{hr.shape[1]}) needs "
                    f"{want[0]}x{want[1]} at x{s}. Check the scale, or that the LR was made "
                    "from the modcropped HR (or use --lr-source imresize-replicate)."
                )
            if lr.shape[2] != hr.shape[2]:
                if lr.shape[2] == 1:
                    lr = np.repeat(lr, 3, axis=2)
                elif np.array_equal(lr[..., :1].repeat(3, axis=2), lr):
                    lr = lr[..., :1]  # grey stored as RGB
                else:
                    raise DatasetError(
                        f"{str(pair.lr_path)!r} is colour but its HR {pair.hr_path.name} is grey."
                    )
        return BenchmarkImage(name=pair.name, hr=hr, lr=lr, notes=tuple(notes))

    # -----------------------------------------------------------------------------------------

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike,
        *,
        scale: int,
        lr_source: str = "auto",
        lr_dir: str | os.PathLike | None = None,
        name: str | None = None,
        degrade: str | None = None,
        degrade_seed: int = 0,
    ) -> BenchmarkSet:
        """A benchmark set from one of the layouts in the module docstring.

        Raises :class:`DatasetError` for a missing folder, a folder without images, an
        ``lr_source`` whose LR folder does not exist, or HR/LR files that do not pair up;
        :class:`ConfigError` for an unknown ``degrade`` preset, or ``degrade`` with an LR
        folder or an ``lr_source`` (the LR cannot come from both).
        """
        if lr_source not in LR_SOURCES:
            raise DatasetError(
                f"unknown lr_source {lr_source!r}; use one of {', '.join(LR_SOURCES)}."
            )
        if degrade is not None:
            _check_degrade(degrade, degrade_seed, lr_source=lr_source, lr_dir=lr_dir)
        scale = int(scale)
        path = Path(path)
        if not path.is_dir():
            raise DatasetError(
                f"benchmark folder {str(path)!r} does not exist (or is not a folder)."
            )
        set_name, hr_dir, candidates = _find_layout(path, scale)
        if degrade is not None:
            hr_files = list_images(hr_dir)
            if not hr_files:
                raise DatasetError(f"no images in {str(hr_dir)!r}.")
            return cls(
                name=name or set_name,
                scale=scale,
                pairs=[_Pair(p.stem, p, None) for p in hr_files],
                lr_source=f"degrade:{degrade}:seed{degrade_seed}",
                notes=[
                    f"{set_name}: LR made from the modcropped HR by degrade_for_eval "
                    f"(preset {degrade!r}, seed {degrade_seed}, name = file stem)"
                ],
                degrade=degrade,
                degrade_seed=degrade_seed,
            )
        if lr_dir is not None:
            lr_dir = Path(lr_dir)
            if not lr_dir.is_dir():
                raise DatasetError(f"LR folder {str(lr_dir)!r} does not exist.")
            candidates = {"folder": lr_dir}
            if lr_source == "auto":
                lr_source = "folder"
        hr_files = list_images(hr_dir)
        if not hr_files:
            raise DatasetError(
                f"no images in {str(hr_dir)!r}. Expected a folder of HR images, a set folder "
                "with HR/ (and LR_bicubic[_clamp]/X<s>/), or DIV2K's <name>_HR folder."
            )
        notes: list[str] = []
        chosen_dir: Path | None = None
        boundary: str | None = None
        if lr_source == "auto":
            if candidates:
                lr_source = "folder"
            else:
                lr_source = "imresize-replicate"
                notes.append(
                    f"{set_name}: no LR folder for x{scale}; LR made by MATLAB imresize "
                    "(replicate boundary) of the modcropped HR"
                )
        if lr_source.startswith("imresize-"):
            boundary = lr_source.removeprefix("imresize-")
        elif lr_source == "folder":
            if not candidates:
                raise DatasetError(
                    f"no LR folder for x{scale} beside {str(hr_dir)!r} (looked for "
                    f"LR_bicubic_clamp/X{scale}, LR_bicubic/X{scale} or "
                    f"<name>_LR_bicubic/X{scale}). "
                    "Use --lr-source imresize-replicate to make LR from HR."
                )
            lr_source, chosen_dir = next(iter(candidates.items()))
        else:
            if lr_source not in candidates:
                sub = "LR_bicubic_clamp" if lr_source == "folder-clamp" else "LR_bicubic"
                raise DatasetError(
                    f"{set_name} has no {sub}/X{scale} folder for lr_source {lr_source!r}"
                    f"{' (available: ' + ', '.join(candidates) + ')' if candidates else ''}. "
                    "Use --lr-source imresize-mirror/imresize-replicate to make LR from HR."
                )
            chosen_dir = candidates[lr_source]
        pairs = (
            _pair_files(hr_files, chosen_dir, scale)
            if chosen_dir
            else [_Pair(p.stem, p, None) for p in hr_files]
        )
        return cls(
            name=name or set_name,
            scale=scale,
            pairs=pairs,
            lr_source=lr_source,
            lr_dir=chosen_dir,
            boundary=boundary,
            notes=notes,
        )


def _check_degrade(
    preset: str, seed: int, *, lr_source: str, lr_dir: str | os.PathLike | None
) -> None:
    get_preset(preset)  # a ConfigError listing the presets
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"degrade_seed = {seed!r} is invalid: give an integer >= 0.")
    if lr_dir is not None or lr_source != "auto":
        given = f"lr_dir {str(lr_dir)!r}" if lr_dir is not None else f"lr_source {lr_source!r}"
        raise ConfigError(
            f"degrade={preset!r} makes every LR from its HR image, so it cannot be combined "
            f"with {given}: drop one of them."
        )


def _find_layout(path: Path, scale: int) -> tuple[str, Path, dict[str, Path]]:
    """(set name, HR folder, {lr_source: LR folder}) for the layouts this module knows;
    LR candidates are listed clamp first and only where the X<scale> folder exists."""

    def shared(root: Path) -> dict[str, Path]:
        found = {
            "folder-clamp": root / "LR_bicubic_clamp" / f"X{scale}",
            "folder-mirror": root / "LR_bicubic" / f"X{scale}",
        }
        return {k: v for k, v in found.items() if v.is_dir()}

    if (path / "HR").is_dir():
        return path.name, path / "HR", shared(path)
    if path.name == "HR" and any(path.parent.glob("LR_bicubic*")):
        return path.parent.name, path, shared(path.parent)
    hr_dir = path
    if not path.name.endswith("_HR"):
        inner = sorted(p for p in path.glob("*_HR") if p.is_dir())
        if len(inner) == 1:
            hr_dir = inner[0]
    mirror = div2k_lr_dir(hr_dir, scale)
    if mirror is not None:
        # DIV2K's LR was made with MATLAB's imresize (mirror rule).
        found = {"folder-clamp": div2k_lr_dir(hr_dir, scale, clamp=True), "folder-mirror": mirror}
        lr_dirs = {k: v for k, v in found.items() if v is not None and v.is_dir()}
        return hr_dir.name[: -len("_HR")], hr_dir, lr_dirs
    return path.name, path, {}


def _pair_files(hr_files: Sequence[Path], lr_dir: Path, scale: int) -> list[_Pair]:
    """Pair HR ``name.*`` with LR ``namex<s>.*`` or ``name.*`` (:func:`.layout.match_lr_files`:
    two candidates for one HR image are an error); every file of both folders must pair."""
    if not list_images(lr_dir):
        raise DatasetError(f"no images in the LR folder {str(lr_dir)!r}.")
    match = match_lr_files(hr_files, lr_dir, scale)
    missing = [p.stem for p in match.missing]
    # named by the HR image each would belong to ("zebrax4.png" -> zebra)
    suffix = f"x{scale}"
    extra = [p.stem[: -len(suffix)] if p.stem.endswith(suffix) else p.stem for p in match.extra]
    if missing or extra:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} HR image(s) without an LR ({', '.join(missing[:5])}"
                f"{', ...' if len(missing) > 5 else ''}; expected e.g. {missing[0]}x{scale}.png)"
            )
        if extra:
            parts.append(
                f"{len(extra)} LR image(s) without an HR ({', '.join(extra[:5])}"
                f"{', ...' if len(extra) > 5 else ''})"
            )
        raise DatasetError(
            f"HR and LR files do not pair up in {str(lr_dir)!r}: " + "; ".join(parts) + ". "
            "Check the folders and the scale, or make LR from HR with --lr-source imresize-*."
        )
    return [_Pair(p.stem, p, match.lr[p]) for p in hr_files]


def open_benchmark(
    path: str | os.PathLike, *, scale: int, lr_source: str = "auto", **kw
) -> BenchmarkSet:
    """Shorthand for :meth:`BenchmarkSet.from_folder`."""
    return BenchmarkSet.from_folder(path, scale=scale, lr_source=lr_source, **kw)


__all__ = ["LR_SOURCES", "BenchmarkImage", "BenchmarkSet", "open_benchmark"]
