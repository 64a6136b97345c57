"""Training patches: paired LR/HR crops, deterministic under a seed, resumable at any step.

Sources: DIV2K as it ships (``DIV2K_train_HR/0001.png`` and, when present,
``DIV2K_train_LR_bicubic/X4/0001x4.png``) or any folders of HR images. When no LR file exists the
LR is made once per *full* HR image with the exact MATLAB bicubic (:func:`lightsr.data.resize.
imresize`, uint8 rounding between passes, the configured boundary rule) and cached in memory or
on disk; aligned patch pairs are then cropped from the cached pair. (Downscaling each cropped HR
patch instead would differ near the patch border from the LR the papers train on.)

Synthetic real-world LR (``data.degradation``, :func:`degradation_from_table`): only the HR
images are loaded, and each LR patch is made from its HR patch on the fly by
:func:`lightsr.data.degrade.degrade` (blur, resize, noise, JPEG...), a fresh draw per sample.

Determinism: the sample of a step is a pure function of ``(seed, epoch, item)``: the epoch's
permutation of items comes from ``(seed, epoch)``, and the crop position, the flip/rotation and
the degradation of an item from ``(seed, epoch, item)``. Which worker process loads it, and how
many there are, does not matter, and resuming at step ``k`` only needs ``k``.

Arrays are ``H x W x 3`` uint8 (or uint16); patches are integer tensors (3, h, w) of the same
type, made float in [0, 1] by the training loop (on its device: a quarter of the bytes to move).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import signal
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..atomic import atomic_write
from ..errors import ConfigError, DatasetError, ImageReadError
from .degrade import PRESETS, DegradationConfig, OrderConfig, degrade, get_preset, rng_for, to_uint8
from .io import IMAGE_EXTENSIONS, list_images, read_image
from .layout import div2k_lr_dir, match_lr_files
from .resize import imresize, modcrop

# Bumped when the cached arrays would change for the same inputs.
_CACHE_VERSION = "1"


@dataclass(frozen=True)
class TrainingImage:
    """One HR image and, optionally, its given LR file.

    ``hr_scale`` < 1 stands for a smaller copy of the image: the decoded HR downscaled by that
    factor with the MATLAB bicubic, and its LR made from the copy (never read from ``lr``).
    """

    hr: Path
    lr: Path | None = None
    hr_scale: float = 1.0

    @property
    def name(self) -> str:
        """The file name, with ``@factor`` for a downscaled copy (``t1.png@0.8``)."""
        return self.hr.name if self.hr_scale == 1.0 else f"{self.hr.name}@{self.hr_scale:g}"


def with_downscaled_copies(
    images: Sequence[TrainingImage], factors: Sequence[float]
) -> list[TrainingImage]:
    """``images`` followed by one copy of each per factor, downscaled by it (0 < factor < 1).

    The classic augmentation of the 91/291-image training sets (VDSR, MemNet: factors 0.9, 0.8,
    0.7, 0.6): the same scenes at other sizes, so a small set covers more scales of texture.
    A copy's LR is made from its downscaled HR, so a given LR file is used by the original only.
    """
    for f in factors:
        if not 0.0 < float(f) < 1.0:
            raise ConfigError(
                f"`data.hr_downscales` holds {f!r}; each factor must lie strictly between 0 and "
                "1 (a copy of every HR image downscaled by it, e.g. [0.9, 0.8, 0.7, 0.6])."
            )
    if len(set(map(float, factors))) != len(factors):
        raise ConfigError(f"`data.hr_downscales` repeats a factor: {list(factors)}.")
    out = list(images)
    for f in factors:
        out += [TrainingImage(hr=im.hr, lr=None, hr_scale=float(f)) for im in images]
    return out


# ---------------------------------------------------------------------------------------------
# Finding the images
# ---------------------------------------------------------------------------------------------


def _hr_subfolder(root: Path) -> Path:
    """A dataset root as it ships -> its HR folder: ``DIV2K/DIV2K_train_HR``,
    ``Flickr2K/Flickr2K_HR``; any other folder is taken as it is."""
    for name in ("DIV2K_train_HR", f"{root.name}_train_HR", f"{root.name}_HR"):
        if (root / name).is_dir():
            return root / name
    return root


def find_training_images(
    hr_dirs: Sequence[str | os.PathLike],
    *,
    scale: int,
    lr_dirs: Sequence[str | os.PathLike] = (),
    lr_source: str = "auto",
) -> list[TrainingImage]:
    """The training images of the given folders, in a fixed (sorted) order.

    Each entry of ``hr_dirs`` is a folder of HR images or a dataset root as it ships
    (``DIV2K`` holding ``DIV2K_train_HR``, ``Flickr2K`` holding ``Flickr2K_HR``). LR files
    come from the matching entry of ``lr_dirs`` or, for an ``*_HR`` folder, from the
    ``*_LR_bicubic/X{scale}`` folder beside it, matched by name (``0001.png`` <->
    ``0001x4.png`` or ``0001.png``; both at once is a DatasetError; see
    :mod:`lightsr.data.layout`). LR files without an HR image are ignored. ``lr_source``:
    "auto" uses LR files when a folder has them, "resize" never does, "folder" requires them.
    """
    if not hr_dirs:
        raise ConfigError(
            "no training images: `data.hr_dirs` is empty. Set it to folders of HR images or a "
            "DIV2K root, e.g. data.hr_dirs='[\"/data/DIV2K\"]'."
        )
    if lr_source not in ("auto", "resize", "folder"):
        raise ConfigError(f"`data.lr_source` must be auto, resize or folder, not {lr_source!r}.")
    images: list[TrainingImage] = []
    for i, entry in enumerate(hr_dirs):
        hr_dir = Path(entry).expanduser()
        if not hr_dir.is_dir():
            raise DatasetError(
                f"training data folder {str(hr_dir)!r} (data.hr_dirs[{i}]) does not exist or is "
                "not a folder. Point `data.hr_dirs` at folders of HR images or a DIV2K root."
            )
        hr_dir = _hr_subfolder(hr_dir)
        given = str(lr_dirs[i]) if i < len(lr_dirs) else ""
        lr_dir: Path | None = None
        div2k = div2k_lr_dir(hr_dir, scale)  # None unless hr_dir is an *_HR folder
        if lr_source != "resize":
            if given:
                lr_dir = Path(given).expanduser()
                if not lr_dir.is_dir():
                    raise DatasetError(
                        f"LR folder {given!r} (data.lr_dirs[{i}]) does not exist. Fix the path, "
                        'or give "" to make the LR from the HR images.'
                    )
            elif div2k is not None and div2k.is_dir():
                lr_dir = div2k
            elif lr_source == "folder":
                where = f" or place DIV2K's {str(div2k)!r}" if div2k is not None else ""
                raise ConfigError(
                    f"`data.lr_source` is 'folder' but {str(hr_dir)!r} has no LR folder: give "
                    f"`data.lr_dirs`{where}."
                )
        hr_files = list_images(hr_dir)
        if not hr_files:
            raise DatasetError(
                f"training data folder {str(hr_dir)!r} holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)})."
            )
        lr_files = match_lr_files(hr_files, lr_dir, scale).lr if lr_dir is not None else {}
        for hr in hr_files:
            lr = lr_files.get(hr)
            if lr_dir is not None and lr is None:
                raise DatasetError(
                    f"no LR file for {hr.name} in {str(lr_dir)!r} (looked for {hr.stem}x{scale}.* "
                    f"and {hr.stem}.*). Complete the folder or set data.lr_source='resize'."
                )
            images.append(TrainingImage(hr=hr, lr=lr))
    return images


# ---------------------------------------------------------------------------------------------
# Decoded, modcropped pairs (in memory or memory-mapped from a disk cache)
# ---------------------------------------------------------------------------------------------


def _as_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    """H x W x 3: grey repeated, alpha dropped (SR is trained on colour only)."""
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        return np.ascontiguousarray(array[:, :, :3])
    if array.shape[2] != 3:
        raise ImageReadError(f"{str(path)!r} has {array.shape[2]} channels; expected 1, 3 or 4.")
    return array


def read_hr(image: TrainingImage, *, scale: int, boundary: str = "mirror") -> np.ndarray:
    """The HR image of a training image, RGB, modcropped to a multiple of ``scale``.

    A downscaled copy (``hr_scale`` < 1) is resized first, by the MATLAB bicubic with
    ``boundary``, in the image's own dtype (rounded as MATLAB rounds uint8 and uint16).
    """
    hr = _as_rgb(read_image(image.hr), image.hr)
    if image.hr_scale != 1.0:
        hr = imresize(hr, image.hr_scale, boundary=boundary)
    return np.ascontiguousarray(modcrop(hr, scale))


def make_pair(image: TrainingImage, *, scale: int, boundary: str) -> tuple[np.ndarray, np.ndarray]:
    """(HR modcropped to a multiple of ``scale``, LR) of one training image, H x W x 3.

    The LR is the given file, or ``imresize(HR, 1/scale)`` (MATLAB-exact, same dtype).
    """
    hr = read_hr(image, scale=scale, boundary=boundary)
    if image.lr is not None:
        lr = _as_rgb(read_image(image.lr), image.lr)
        want = (hr.shape[0] // scale, hr.shape[1] // scale)
        if lr.shape[:2] != want:
            raise DatasetError(
                f"LR {str(image.lr)!r} is {lr.shape[1]}x{lr.shape[0]} but its HR "
                f"{image.hr.name} modcropped at x{scale} needs {want[1]}x{want[0]}: the LR file "
                "belongs to another scale or image. Set data.lr_source='resize' to make LR."
            )
        if lr.dtype != hr.dtype:
            raise DatasetError(
                f"LR {str(image.lr)!r} is {lr.dtype} but its HR is {hr.dtype}; use files of "
                "the same bit depth."
            )
    else:
        lr = imresize(hr, 1.0 / scale, boundary=boundary)
    return np.ascontiguousarray(hr), np.ascontiguousarray(lr)


def _cache_key(image: TrainingImage, scale: int, boundary: str) -> str:
    parts = [_CACHE_VERSION, str(scale), boundary if image.lr is None else "file"]
    if image.hr_scale != 1.0:
        # repr: the exact float, so 0.8 and 0.80000001 never share an entry. Originals keep
        # the key they had before copies existed, so existing caches stay valid.
        parts.append(f"hr_scale={image.hr_scale!r}")
    for path in (image.hr, image.lr):
        if path is not None:
            st = path.stat()
            parts += [str(path.resolve()), str(st.st_size), str(st.st_mtime_ns)]
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:20]


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    # A cache entry (keyed by its source): one written meanwhile holds the same data.
    atomic_write(path, write, overwrite=True)


class PairStore:
    """The decoded (HR, LR) pairs of a list of training images.

    With ``cache_dir`` the pairs are written once as .npy files (keyed by file path, size,
    mtime, scale and boundary) and memory-mapped, so worker processes share pages and later
    runs skip decoding and resizing; without it they are kept in memory. Images whose LR is
    smaller than ``min_lr_size`` are dropped with a warning (``small="skip"``) or raise.

    ``make_lr=False`` loads the HR images only (:attr:`lr` stays empty): for training on
    degraded LR made from each HR patch, where a whole-image bicubic LR would cost time and
    memory for nothing. "LR size" is then the HR size divided by the scale.
    """

    def __init__(
        self,
        images: Sequence[TrainingImage],
        *,
        scale: int,
        boundary: str = "mirror",
        cache_dir: str | os.PathLike | None = None,
        min_lr_size: int = 1,
        small: str = "skip",
        threads: int = 1,
        rank: int = 0,
        world_size: int = 1,
        barrier: Callable[[], None] | None = None,
        progress: bool = False,
        make_lr: bool = True,
    ) -> None:
        self.scale = scale
        self.hr: list[np.ndarray] = []
        self.lr: list[np.ndarray] = []
        self.names: list[str] = []
        #: Whether :attr:`lr` holds the LR of each image (see ``make_lr``).
        self.has_lr = make_lr
        cache = Path(cache_dir).expanduser() if cache_dir else None

        def load(image: TrainingImage) -> tuple[np.ndarray, np.ndarray | None]:
            if cache is None:
                if not make_lr:
                    return read_hr(image, scale=scale, boundary=boundary), None
                return make_pair(image, scale=scale, boundary=boundary)
            key = _cache_key(image, scale, boundary)
            hr_path, lr_path = cache / f"{key}_hr.npy", cache / f"{key}_lr.npy"
            if not make_lr:
                # The same HR entry as a paired run's (same key), so the two share it.
                if not hr_path.is_file():
                    _save_npy_atomic(hr_path, read_hr(image, scale=scale, boundary=boundary))
                return np.load(hr_path, mmap_mode="r"), None
            if not (hr_path.is_file() and lr_path.is_file()):
                hr, lr = make_pair(image, scale=scale, boundary=boundary)
                _save_npy_atomic(hr_path, hr)
                _save_npy_atomic(lr_path, lr)
            return np.load(hr_path, mmap_mode="r"), np.load(lr_path, mmap_mode="r")

        if cache is not None and world_size > 1:
            # Each process fills its share of a shared cache first; afterwards every process
            # loads all (building what is still missing, e.g. on a node-local disk).
            mine = [im for i, im in enumerate(images) if i % world_size == rank]
            _map(load, mine, threads)
            if barrier is not None:
                barrier()
        pairs = _map(load, images, threads, progress=progress, desc="preparing training images")
        skipped = []
        for image, (hr, lr) in zip(images, pairs):
            lr_h, lr_w = (
                lr.shape[:2] if lr is not None else (hr.shape[0] // scale, hr.shape[1] // scale)
            )
            if min(lr_h, lr_w) < min_lr_size:
                skipped.append(f"{image.name} (LR {lr_w}x{lr_h})")
                continue
            self.hr.append(hr)
            if lr is not None:
                self.lr.append(lr)
            self.names.append(image.name)
        if skipped:
            msg = (
                f"{len(skipped)} training image(s) are smaller than the patch (LR "
                f"{min_lr_size}x{min_lr_size}): {', '.join(skipped[:5])}"
                f"{'...' if len(skipped) > 5 else ''}"
            )
            if small == "error":
                raise ConfigError(msg + ". Remove them or lower the patch size.")
            warnings.warn(msg + "; skipped.", stacklevel=2)
        if not self.hr:
            raise DatasetError(
                f"no training image is at least the patch size (LR {min_lr_size}x{min_lr_size}); "
                "lower `data.lr_patch` or use larger images."
            )

    def __len__(self) -> int:
        return len(self.hr)


def _map(fn, items, threads: int, *, progress: bool = False, desc: str = "") -> list:
    # Threads, not processes: decoding (Pillow) and numpy's gathers release the GIL, and
    # threads need no pickling of the arrays.
    bar = None
    if progress and len(items) > 1:
        # disable=None: only on a terminal (a log would fill with \r frames)
        bar = tqdm(total=len(items), desc=desc, leave=False, disable=None)
    out = []
    if threads <= 1:
        for item in items:
            out.append(fn(item))
            if bar is not None:
                bar.update()
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for result in pool.map(fn, items):
                out.append(result)
                if bar is not None:
                    bar.update()
    if bar is not None:
        bar.close()
    return out


# ---------------------------------------------------------------------------------------------
# The degradation a config table describes
# ---------------------------------------------------------------------------------------------


def _unknown_key(key: str, name: str, valid: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(
        f"unknown key `{key}.{name}`.{hint} Valid keys here: {', '.join(sorted(valid))}."
    )


def _override(base: Any, changes: object, key: str) -> Any:
    """``base`` (a degradation dataclass) with the fields of the table ``changes`` replaced;
    ``kernel`` and ``orders`` tables are applied to the nested values, not replacing them."""
    what = type(base).__name__
    if not isinstance(changes, Mapping):
        raise ConfigError(
            f"`{key}` must be a table of {what} fields, got {changes!r} ({type(changes).__name__})."
        )
    names = [f.name for f in dataclasses.fields(base)]
    kwargs: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in names:
            raise _unknown_key(key, str(name), names)
        if name == "kernel":
            kwargs[name] = _override(base.kernel, value, f"{key}.kernel")
        elif name == "orders":
            kwargs[name] = _override_orders(base.orders, value, f"{key}.orders")
        else:
            kwargs[name] = value
    try:
        return dataclasses.replace(base, **kwargs)
    except ConfigError as exc:
        # The dataclass names the field as `DegradationConfig.x`; the user wrote `key.x`.
        message = str(exc)
        if message.startswith(f"{what}."):
            message = f"`{key}.{message[len(what) + 1 :]}"
            message = message.replace(" = ", "` = ", 1)
        raise ConfigError(message) from None


def _override_orders(
    orders: tuple[OrderConfig, ...], value: object, key: str
) -> tuple[OrderConfig, ...]:
    """A table ``{number: changes}`` changes the preset's orders (numbered from 1); a list
    replaces them, each entry changing :class:`OrderConfig`'s defaults (Real-ESRGAN's first
    order)."""
    if isinstance(value, (list, tuple)):
        return tuple(_override(OrderConfig(), v, f"{key}[{i}]") for i, v in enumerate(value))
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"`{key}` must be a table {{order number = {{field = value}}}} changing the "
            f"preset's orders, or a list of tables replacing them; got {value!r}."
        )
    out = list(orders)
    for number, changes in value.items():
        text = str(number)
        n = int(text) if text.isdigit() else 0
        if not 1 <= n <= len(orders):
            have = f"orders 1..{len(orders)}" if orders else "no orders"
            raise ConfigError(
                f"`{key}` has no order {number!r}: the preset has {have}. Change those by "
                "number, or give `orders` as a list of tables to set a different number of "
                "orders."
            )
        out[n - 1] = _override(orders[n - 1], changes, f"{key}.{n}")
    return tuple(out)


def degradation_from_table(
    table: Mapping[str, Any], *, key: str = "data.degradation"
) -> DegradationConfig | None:
    """The degradation pipeline of a config's ``data.degradation`` table, None when it is
    empty (clean bicubic pairs).

    ``preset`` names one of :data:`lightsr.data.degrade.PRESETS`; every other key replaces
    that field of the preset's :class:`~lightsr.data.degrade.DegradationConfig`, except
    ``orders`` given as a table ``{number: {field: value}}``, which changes the preset's
    orders by number (from 1), and ``kernel`` inside an order, which changes fields of its
    kernel; ``orders`` given as a list replaces the orders, each entry starting from
    :class:`~lightsr.data.degrade.OrderConfig`'s defaults. Raises ConfigError naming the key
    of an unknown field, a bad value or a missing preset.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"`{key}` must be a table (preset = ..., overrides), got {table!r}.")
    if not table:
        return None
    presets = ", ".join(sorted(PRESETS))
    if "preset" not in table:
        raise ConfigError(
            f"`{key}` names no `preset`: add one of {presets} (the other keys change its "
            'values), e.g. preset = "realesrgan".'
        )
    try:
        base = get_preset(table["preset"])
    except ConfigError:
        raise ConfigError(
            f"`{key}.preset` = {table['preset']!r} is not a degradation preset: use one of "
            f"{presets}."
        ) from None
    changes = {k: v for k, v in table.items() if k != "preset"}
    names = ["preset", *(f.name for f in dataclasses.fields(base))]
    for name in changes:
        if name not in names:
            raise _unknown_key(key, str(name), names)
    return _override(base, changes, key)


# ---------------------------------------------------------------------------------------------
# Patches and the order they are drawn in
# ---------------------------------------------------------------------------------------------

# Domain tags keep the permutation and per-item seed sequences apart.
_PERM_TAG, _ITEM_TAG = 1, 2


def dihedral(array: np.ndarray, t: int) -> np.ndarray:
    """One of the 8 flips/rotations of an H x W x C array: bit 0 = flip left-right, bit 1 =
    flip up-down, bit 2 = transpose (rot90 when combined with a flip)."""
    if t & 1:
        array = array[:, ::-1]
    if t & 2:
        array = array[::-1]
    if t & 4:
        array = array.transpose(1, 0, 2)
    return array


def _to_tensor(array: np.ndarray):
    # Integer CHW: a quarter of the bytes of float32 through the worker queue; the training
    # loop converts on the device (see :func:`to_unit`).
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def to_unit(batch, peak: float):
    """An integer batch from :class:`PatchDataset` as float32 in [0, 1] (``x / peak``, as
    :func:`lightsr.data.io.image_to_tensor` does)."""

    return batch.to(torch.float32).div_(peak)


class PatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Map-style dataset over items ``(epoch, item)`` -> (LR patch, HR patch), integer tensors
    (3, p, p) and (3, p*s, p*s) of the images' dtype (uint8 0..255 or uint16 0..65535; divide
    by :attr:`peak`, see :func:`to_unit`). Item ``i`` is cut from image ``i % len(store)`` at a
    position and with a flip/rotation drawn from ``(seed, epoch, i)``.

    With ``degradation`` the LR patch is not cut from the store's LR but made from the HR patch
    by :func:`~lightsr.data.degrade.degrade` with the generator ``rng_for(seed, "train-degrade",
    epoch, i)``, before the flip/rotation (applied to both). The HR patches are the ones the
    clean dataset of the same seed cuts; the LR is on the 8-bit levels (``degrade``'s output,
    times 257 for 16-bit images)."""

    def __init__(
        self,
        store: PairStore,
        *,
        lr_patch: int,
        seed: int,
        augment: bool = True,
        degradation: DegradationConfig | None = None,
    ):
        if degradation is not None and not isinstance(degradation, DegradationConfig):
            raise ConfigError(
                f"degradation must be a DegradationConfig (see degradation_from_table), not "
                f"{type(degradation).__name__}."
            )
        if degradation is None and not store.has_lr:
            raise ConfigError(
                "the PairStore was made with make_lr=False, so it holds no LR to cut patches "
                "from: give a degradation, or make the store with make_lr=True."
            )
        self.store = store
        self.lr_patch = lr_patch
        self.seed = seed
        self.augment = augment
        self.degradation = degradation
        dtypes = {a.dtype for a in store.hr}
        if len(dtypes) > 1:
            kinds = ", ".join(sorted(map(str, dtypes)))
            raise DatasetError(
                f"the training images mix bit depths ({kinds}); convert them to one (8-bit PNG "
                "for the papers' recipes)."
            )
        #: The value of white: 255 for 8-bit images, 65535 for 16-bit ones.
        self.peak = float(np.iinfo(dtypes.pop()).max)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, key: tuple[int, int]):
        epoch, item = key
        rng = np.random.default_rng([self.seed, _ITEM_TAG, epoch, item])
        if self.degradation is not None:
            return self._degraded(epoch, item, rng)
        n = item % len(self.store)
        lr, hr = self.store.lr[n], self.store.hr[n]
        p, s = self.lr_patch, self.store.scale
        y = int(rng.integers(0, lr.shape[0] - p + 1))
        x = int(rng.integers(0, lr.shape[1] - p + 1))
        lr_patch = lr[y : y + p, x : x + p]
        hr_patch = hr[y * s : (y + p) * s, x * s : (x + p) * s]
        if self.augment:
            t = int(rng.integers(0, 8))
            lr_patch, hr_patch = dihedral(lr_patch, t), dihedral(hr_patch, t)
        return _to_tensor(lr_patch), _to_tensor(hr_patch)

    def _degraded(self, epoch: int, item: int, rng: np.random.Generator):
        assert self.degradation is not None  # the caller's branch
        n = item % len(self.store)
        hr = self.store.hr[n]
        p, s = self.lr_patch, self.store.scale
        # The position is drawn on the LR grid with the clean path's generator and draws, so a
        # degraded run trains on the same HR patches as the clean run of its seed.
        y = int(rng.integers(0, hr.shape[0] // s - p + 1))
        x = int(rng.integers(0, hr.shape[1] // s - p + 1))
        hr_patch = hr[y * s : (y + p) * s, x * s : (x + p) * s]
        # The degradation has its own generator: how many numbers it draws varies per sample,
        # and it must not shift the flip/rotation drawn next from `rng`.
        lr = degrade(
            hr_patch.astype(np.float32) / np.float32(self.peak),
            scale=s,
            config=self.degradation,
            rng=rng_for(self.seed, "train-degrade", epoch, item),
        )
        lr_patch = to_uint8(lr)  # exact: degrade returns the 8-bit levels k / 255
        if hr.dtype == np.uint16:
            lr_patch = lr_patch.astype(np.uint16) * np.uint16(257)  # k / 255 = 257 k / 65535
        if self.augment:
            t = int(rng.integers(0, 8))
            lr_patch, hr_patch = dihedral(lr_patch, t), dihedral(hr_patch, t)
        return _to_tensor(lr_patch), _to_tensor(hr_patch)


def default_steps_per_epoch(n_images: int, batch_size: int) -> int:
    """One pass over the images per epoch (at least one step)."""
    return max(1, n_images // batch_size)


class StepBatchSampler:
    """Infinite batch sampler: for steps ``start_step, start_step + 1, ...`` yields this
    process's share of the global batch as ``[(epoch, item), ...]``.

    Epoch ``e`` is a permutation (from ``(seed, e)``) of ``n_items = max(n_images,
    steps_per_epoch * batch_size)`` items; step ``k`` takes batch ``k % steps_per_epoch`` of
    epoch ``k // steps_per_epoch``, and rank ``r`` of ``world_size`` takes the ``r``-th
    contiguous slice of it. The data position is therefore a pure function of the step.
    """

    def __init__(
        self,
        *,
        n_images: int,
        batch_size: int,
        steps_per_epoch: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ConfigError(
                f"`batch_size` {batch_size} is the global batch and must divide by the number of "
                f"processes ({world_size})."
            )
        self.batch_size = batch_size
        self.local = batch_size // world_size
        self.steps_per_epoch = steps_per_epoch
        self.n_items = max(n_images, steps_per_epoch * batch_size)
        self.seed = seed
        self.start_step = start_step
        self.rank = rank

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, _PERM_TAG, epoch]).permutation(self.n_items)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of a step."""
        return divmod(step, self.steps_per_epoch)

    def batch(self, step: int, perm: np.ndarray | None = None) -> list[tuple[int, int]]:
        epoch, b = self.position(step)
        perm = self.permutation(epoch) if perm is None else perm
        lo = b * self.batch_size + self.rank * self.local
        return [(epoch, int(i)) for i in perm[lo : lo + self.local]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        epoch, perm = -1, None
        while True:
            e = step // self.steps_per_epoch
            if e != epoch:
                epoch, perm = e, self.permutation(e)
            yield self.batch(step, perm)
            step += 1

    def __len__(self) -> int:  # pragma: no cover - infinite; DataLoader only asks when misused
        return np.iinfo(np.int64).max


def _worker_init(_worker_id: int) -> None:
    # Workers slice arrays, and with a degradation run elementwise numpy and small torch resizes
    # per patch: one thread each avoids oversubscribing the cores the training loop uses.
    torch.set_num_threads(1)
    # Ctrl-C reaches every process of the terminal's group, and `pkill -f` matches the workers'
    # command line too: a worker that died of it would crash the training process before it
    # could stop cleanly at the next step and save its state. The trainer stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(
    dataset: PatchDataset,
    sampler: StepBatchSampler,
    *,
    num_workers: int,
    pin_memory: bool = False,
):
    """A DataLoader over ``sampler``. It gets its own generator so that creating it does not
    draw from torch's global RNG (which would make a resumed run differ from an unbroken one)."""

    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(0),
        prefetch_factor=4 if num_workers > 0 else None,
    )


__all__ = [
    "PairStore",
    "with_downscaled_copies",
    "PatchDataset",
    "StepBatchSampler",
    "TrainingImage",
    "default_steps_per_epoch",
    "degradation_from_table",
    "dihedral",
    "find_training_images",
    "make_loader",
    "make_pair",
    "read_hr",
    "to_unit",
]
