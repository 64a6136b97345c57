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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.benchmark import BenchmarkSet
from .data.io import image_to_tensor, tensor_to_image, write_image
from .errors import LightSRError
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
        if self_ensemble:
            sr = None
            for k in range(8):
                fwd, inv = _transforms(k)
                out = inv(model(fwd(x)))
                sr = out if sr is None else sr + out
            assert sr is not None  # set by the 8 passes
            sr = sr / 8
        else:
            sr = model(x)
    return tensor_to_image(sr.cpu())


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
) -> EvalResult:
    """PSNR/SSIM of ``model`` on every image of ``dataset`` (per image and mean).

    ``model`` maps float RGB (1, 3, h, w) in [0, 1] to (1, 3, s*h, s*w) and has ``.scale``
    equal to the dataset's; it runs on the device its parameters are on. ``crop_border``
    defaults to the scale. ``save_sr``: a folder receiving ``<set>/<name>.png``. An image
    that cannot be read or processed is recorded in ``failures`` and the run goes on.
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

    bar = tqdm(total=len(dataset), desc=f"{dataset.name} x{dataset.scale}", disable=not progress)
    try:
        for index in range(len(dataset)):
            image_name = dataset.pairs[index].name
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
                if out_dir is not None:
                    write_image(out_dir / f"{item.name}.png", sr)
            except (LightSRError, OSError, RuntimeError, MemoryError) as exc:
                result.failures.append((image_name, f"{type(exc).__name__}: {exc}"))
            bar.update(1)
    finally:
        bar.close()
        if was_training and hasattr(model, "train"):
            model.train()
    return result


__all__ = ["EvalResult", "ImageResult", "evaluate", "super_resolve"]
