"""Evaluate a model on benchmark sets the way the papers do.

For each LR image: float RGB in [0, 1] -> model -> clamp to [0, 1], x255, round (half away
from zero) to uint8 -> PSNR/SSIM on MATLAB's Y (float64) after cropping ``scale`` border
pixels, per image, then averaged over the set. Grey images are fed to the model as RGB
(the channel repeated) and measured as the Y of the repeated channel.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.benchmark import BenchmarkSet
from .data.io import image_to_tensor, tensor_to_image, write_image
from .errors import LightSRError, OutputExistsError, OutputPathError
from .metrics import psnr, ssim


@dataclass
class ImageResult:
    """Metrics of one image (PSNR in dB; SSIM in [-1, 1]); ``seconds``: model time."""

    name: str
    psnr: float
    ssim: float
    seconds: float
    notes: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    """Per-image results of one set and their means (over the images that succeeded)."""

    dataset: str
    scale: int
    lr_source: str
    model: str
    images: list[ImageResult]
    failures: list[tuple[str, str]]
    self_ensemble: bool = False
    y_channel: bool = True
    crop_border: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def psnr(self) -> float:
        return float(np.mean([r.psnr for r in self.images])) if self.images else math.nan

    @property
    def ssim(self) -> float:
        return float(np.mean([r.ssim for r in self.images])) if self.images else math.nan

    @property
    def seconds(self) -> float:
        return float(sum(r.seconds for r in self.images))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failures"] = [{"name": n, "error": e} for n, e in self.failures]
        d.update(psnr=self.psnr, ssim=self.ssim, n_images=len(self.images))
        return d


def _transforms(k: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], ...]:
    """The k-th of the 8 dihedral transforms (flip W, flip H, transpose) and its inverse."""

    def fwd(t: torch.Tensor) -> torch.Tensor:
        if k & 1:
            t = t.flip(-1)
        if k & 2:
            t = t.flip(-2)
        if k & 4:
            t = t.transpose(-1, -2)
        return t

    def inv(t: torch.Tensor) -> torch.Tensor:
        if k & 4:
            t = t.transpose(-1, -2)
        if k & 2:
            t = t.flip(-2)
        if k & 1:
            t = t.flip(-1)
        return t

    return fwd, inv


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def super_resolve(
    model: torch.nn.Module, lr: np.ndarray, *, self_ensemble: bool = False
) -> np.ndarray:
    """Run ``model`` on a uint8 ``h x w x C`` LR image (grey repeated to RGB); returns the
    uint8 ``sh x sw x 3`` SR image (clamped, rounded half away from zero).

    ``self_ensemble``: the mean of the outputs for the 8 flips/transposes of the input
    (each mapped back), the "+" rows of the papers.
    """
    if lr.ndim == 2:
        lr = lr[:, :, None]
    if lr.shape[2] == 1:
        lr = np.repeat(lr, 3, axis=2)
    x = image_to_tensor(lr).to(_model_device(model))
    with torch.inference_mode():
        sr = ensemble_x8(model, x) if self_ensemble else model(x)
    return tensor_to_image(sr.cpu())


def ensemble_x8(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The x8 geometric self-ensemble: the mean of ``inv(run(fwd(x)))`` over the 8
    flips/transposes of the (N, C, H, W) input, each output mapped back (summed in this order,
    then divided by 8; ``lightsr.upscale`` runs it per tile)."""
    sr = None
    for k in range(8):
        fwd, inv = _transforms(k)
        out = inv(run(fwd(x)))
        sr = out if sr is None else sr + out
    assert sr is not None  # set by the 8 passes
    return sr / 8


def check_save_sr_folders(
    save_sr: str | os.PathLike, folders: Sequence[str | os.PathLike | None]
) -> None:
    """Raise :class:`~lightsr.errors.OutputPathError` when the SR folder ``save_sr`` is one of
    ``folders`` (the data being evaluated), is inside one, or holds one: SR images written
    there would land among (or replace) the HR/LR files. Paths are compared resolved (links
    followed), so a link to the data is the data."""
    out = Path(save_sr).resolve()
    for folder in folders:
        if folder is None:
            continue
        data = Path(folder).resolve()
        if out == data or data in out.parents or out in data.parents:
            where = "is" if out == data else "is inside" if data in out.parents else "holds"
            raise OutputPathError(
                f"--save-sr {str(save_sr)!r} {where} the evaluated data folder {str(folder)!r}: "
                "SR images would be written among the images being measured. Choose a folder "
                "outside the datasets."
            )


def check_save_sr(
    save_sr: str | os.PathLike,
    datasets: Sequence[BenchmarkSet],
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
) -> None:
    """Everything that would make saving SR images of ``datasets`` under ``save_sr`` unsafe,
    refused before any image is computed: the folder overlaps the data (``inputs``, the
    dataset folders as given, and every folder the sets read HR/LR files from; see
    :func:`check_save_sr_folders`), two sets share a name (their SR images would share
    ``save_sr/<set>``), or, without ``overwrite``, SR files exist already
    (:class:`~lightsr.errors.OutputExistsError`)."""
    folders: list[str | os.PathLike | None] = list(inputs)
    for ds in datasets:
        folders.append(ds.lr_dir)
        for pair in ds.pairs:
            folders.append(pair.hr_path.parent)
            if pair.lr_path is not None:
                folders.append(pair.lr_path.parent)
    check_save_sr_folders(save_sr, list(dict.fromkeys(folders)))
    names = [ds.name for ds in datasets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise OutputPathError(
            f"two evaluated sets are named {twice[0]!r}: their SR images would share "
            f"{str(Path(save_sr) / twice[0])!r}. Evaluate them in separate runs (each with its "
            "own --save-sr)."
        )
    if overwrite:
        return
    existing = [
        path
        for ds in datasets
        for pair in ds.pairs
        if os.path.lexists(path := Path(save_sr) / ds.name / f"{pair.name}.png")
    ]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(
            f"SR images exist already: {str(existing[0])!r}{more}. Pass --overwrite "
            "(overwrite=True) to replace them, or choose another --save-sr folder."
        )


def evaluate(
    model: torch.nn.Module,
    dataset: BenchmarkSet,
    *,
    self_ensemble: bool = False,
    crop_border: int | None = None,
    y_channel: bool = True,
    save_sr: str | os.PathLike | None = None,
    progress: bool = False,
    model_name: str | None = None,
    overwrite: bool = False,
) -> EvalResult:
    """PSNR/SSIM of ``model`` on every image of ``dataset`` (per image and mean).

    ``model`` maps float RGB (1, 3, h, w) in [0, 1] to (1, 3, s*h, s*w) and has ``.scale``
    equal to the dataset's; it runs on the device its parameters are on. ``crop_border``
    defaults to the scale. ``save_sr``: a folder receiving ``<set>/<name>.png``. An image
    that cannot be read or processed is recorded in ``failures`` and the run goes on.
    ``progress``: a bar when stderr is a terminal (never on a pipe or a file).

    With ``save_sr``, :func:`check_save_sr` runs first (the folder must not overlap the data;
    existing SR files are replaced only with ``overwrite``), and an SR image that cannot be
    written (full disk, permissions) stops the evaluation with that ``OSError``: the images
    were asked for.
    """
    scale = int(getattr(model, "scale", dataset.scale))
    if scale != dataset.scale:
        raise LightSRError(
            f"the model upscales x{scale} but {dataset.name} was opened at x{dataset.scale}; "
            f"open the set with scale={scale}."
        )
    crop = dataset.scale if crop_border is None else int(crop_border)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    name = model_name if model_name else getattr(model, "arch_name", type(model).__name__)
    result = EvalResult(
        dataset=dataset.name,
        scale=dataset.scale,
        lr_source=dataset.lr_source,
        model=name,
        images=[],
        failures=[],
        self_ensemble=self_ensemble,
        y_channel=y_channel,
        crop_border=crop,
        notes=list(dataset.notes),
    )
    out_dir = Path(save_sr) / dataset.name if save_sr is not None else None
    if save_sr is not None:
        check_save_sr(save_sr, [dataset], overwrite=overwrite)

    # disable=None: a bar only on a terminal (a log or a pipe would fill with \r frames)
    disable = None if progress else True
    bar = tqdm(total=len(dataset), desc=f"{dataset.name} x{dataset.scale}", disable=disable)
    try:
        for index in range(len(dataset)):
            image_name = dataset.pairs[index].name
            sr: np.ndarray | None = None
            try:
                item = dataset[index]
                start = time.perf_counter()
                sr = super_resolve(model, item.lr, self_ensemble=self_ensemble)
                seconds = time.perf_counter() - start
                hr = item.hr if item.hr.shape[2] == 3 else np.repeat(item.hr, 3, axis=2)
                if sr.shape != hr.shape:
                    raise LightSRError(
                        f"the model returned {sr.shape[0]}x{sr.shape[1]} for a "
                        f"{item.lr.shape[0]}x{item.lr.shape[1]} input; expected "
                        f"{hr.shape[0]}x{hr.shape[1]}."
                    )
                result.images.append(
                    ImageResult(
                        name=item.name,
                        psnr=psnr(sr, hr, crop_border=crop, y_channel=y_channel),
                        ssim=ssim(sr, hr, crop_border=crop, y_channel=y_channel),
                        seconds=seconds,
                        notes=list(item.notes),
                    )
                )
            except (LightSRError, OSError, RuntimeError, MemoryError) as exc:
                result.failures.append((image_name, f"{type(exc).__name__}: {exc}"))
                sr = None
            if out_dir is not None and sr is not None:
                # Outside the per-image guard: an SR image that cannot be written (full disk,
                # permissions, a file that appeared since the check) stops the run.
                write_image(out_dir / f"{image_name}.png", sr, overwrite=overwrite)
            bar.update(1)
    finally:
        bar.close()
        if was_training and hasattr(model, "train"):
            model.train()
    return result


__all__ = [
    "EvalResult",
    "ImageResult",
    "check_save_sr",
    "check_save_sr_folders",
    "ensemble_x8",
    "evaluate",
    "super_resolve",
]
