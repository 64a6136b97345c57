"""A visual comparison report: one static HTML page and its image files in a folder.

For every image: a before/after slider (bicubic, the reference, on the left; a model, the LR
image magnified by nearest neighbour, or the HR image on the right, picked per image),
automatically chosen high-detail crops of every model shown magnified by nearest neighbour,
and, where the image has a ground truth (a benchmark set's HR), PSNR/SSIM per model measured
as :func:`lightsr.evaluate.evaluate` measures them. At the top: a table of the models (params,
Multi-Adds at 720p as ``lightsr profile`` counts them, mean PSNR/SSIM) and a plot of mean PSNR
against Multi-Adds drawn as inline SVG.

The page has no external assets and no script from anywhere else: it works from ``file://``
with the images beside it (``images/``).

Three steps, kept apart so each can be tested alone:

- :func:`write_report` runs the models, writes the images and the page, and returns the
  :class:`Report` it rendered;
- :func:`render_html` is a pure function from a :class:`Report` (relative file names,
  numbers) to the page's text;
- :func:`detail_crops` picks the crops (numpy only).
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomic import atomic_write_text
from .data.io import is_image_suffix, read_image, write_image
from .errors import LightSRError, OutputExistsError, OutputPathError
from .evaluate import super_resolve
from .metrics import psnr, ssim
from .models.base import SRModel
from .profile import multi_adds_720p
from .registry import create_model
from .upscale import Upscaler

#: The page's file name inside the report folder.
INDEX = "index.html"
#: Folder (inside the report folder) of the image files.
IMAGES = "images"
#: Key of the bicubic reference among the views of an image.
REFERENCE = "m0"
#: The image views that are not models: the LR input (shown magnified) and the ground truth.
LR_VIEW, HR_VIEW = "lr", "hr"
#: CSS pixels a crop is shown at (about; magnification is a whole number).
CROP_DISPLAY = 192
#: Widest CSS size an image is magnified to (small images are shown larger, pixelated).
MAIN_DISPLAY = 480


# ---------------------------------------------------------------------------------------------
# What the page shows (pure data: relative file names and numbers)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportModel:
    """One model of the report. ``key``: its id in file names and the page (``m0`` is the
    bicubic reference); ``psnr``/``ssim``: means over the images with a ground truth (None when
    there is none); ``params``/``multi_adds``: cost (None when it could not be counted)."""

    key: str
    label: str
    params: int | None = None
    multi_adds: int | None = None
    psnr: float | None = None
    ssim: float | None = None


@dataclass(frozen=True)
class ReportCrop:
    """A crop of one image: ``box`` = (top, left, height, width) in SR pixels; ``files``: view
    key -> file of the crop, relative to the report folder."""

    box: tuple[int, int, int, int]
    files: Mapping[str, str]


@dataclass(frozen=True)
class ReportImage:
    """One image of the report. ``files``: view key (model keys, ``lr``, ``hr``) -> file,
    relative to the report folder; ``metrics``: model key -> (PSNR, SSIM), empty without a
    ground truth; ``lr_size``/``sr_size``: (height, width)."""

    name: str
    group: str
    lr_size: tuple[int, int]
    sr_size: tuple[int, int]
    files: Mapping[str, str]
    metrics: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    crops: tuple[ReportCrop, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Report:
    """Everything :func:`render_html` needs. ``metric_note`` says how PSNR/SSIM were measured;
    ``notes`` are shown at the top (skipped images, ...)."""

    title: str
    scale: int
    models: tuple[ReportModel, ...]
    images: tuple[ReportImage, ...]
    metric_note: str = ""
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; padding: 1em 1.5em 3em;
  max-width: 1200px; color: #1b1b1b; background: #fafafa; }
h1 { font-size: 1.5em; margin: .3em 0; }
h2 { font-size: 1.2em; margin: 0 0 .4em; }
small, .note { color: #555; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: .2em .7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.best { font-weight: 700; }
section.image { background: #fff; border: 1px solid #ddd; border-radius: 6px;
  padding: 1em; margin: 1.2em 0; }
.compare { position: relative; max-width: 100%; user-select: none; line-height: 0; }
.compare img { display: block; width: 100%; height: auto; }
.compare img.before { position: absolute; top: 0; left: 0; }
.compare .divider { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px;
  background: #fff; box-shadow: 0 0 3px #000; pointer-events: none; }
.compare:focus-within .divider { background: #ffd400; }
.compare .tag { position: absolute; top: 6px; padding: 2px 6px; font-size: 12px;
  line-height: 1.3; background: rgba(0, 0, 0, .6); color: #fff; border-radius: 3px;
  pointer-events: none; }
.compare .tag.left { left: 6px; }
.compare .tag.right { right: 6px; }
.compare .mark { position: absolute; border: 2px solid #ffd400; pointer-events: none;
  box-sizing: border-box; }
.compare .mark span { position: absolute; top: 0; left: 0; font-size: 11px; line-height: 1.2;
  padding: 0 3px; background: #ffd400; color: #000; }
.compare input.split { position: absolute; top: 0; left: 0; width: 100%; height: 100%;
  margin: 0; opacity: 0; cursor: ew-resize; }
.pixelated, .pixelated img { image-rendering: crisp-edges; image-rendering: pixelated; }
fieldset.picker { border: 0; padding: 0; margin: .4em 0; }
fieldset.picker label { margin-right: 1em; white-space: nowrap; }
.crops { display: flex; flex-direction: column; gap: .6em; margin-top: .8em; }
.crop-row { display: flex; flex-wrap: wrap; gap: .5em; align-items: flex-start; }
.crop-row figure { margin: 0; text-align: center; font-size: 12px; }
.crop-row .num { align-self: center; font-weight: 700; width: 1.5em; }
.plot text { font: 12px system-ui, sans-serif; fill: #1b1b1b; }
.plot .axis { stroke: #333; }
.plot .grid { stroke: #e3e3e3; }
.plot circle.point { fill: #1565c0; stroke: #fff; stroke-width: 1.5; }
.plot circle.point.reference { fill: #888; }
"""

# The slider and the view picker; plain DOM, no library.
_JS = """
(function () {
  document.querySelectorAll('section.image').forEach(function (section) {
    var box = section.querySelector('.compare');
    var before = box.querySelector('img.before');
    var after = box.querySelector('img.after');
    var range = box.querySelector('input.split');
    var divider = box.querySelector('.divider');
    var tag = box.querySelector('.tag.right');
    function place() {
      var v = Math.min(100, Math.max(0, Number(range.value)));
      before.style.clipPath = 'inset(0 ' + (100 - v) + '% 0 0)';
      divider.style.left = v + '%';
    }
    range.addEventListener('input', place);
    place();
    section.querySelectorAll('input.pick').forEach(function (radio) {
      radio.addEventListener('change', function () {
        if (!radio.checked) { return; }
        after.src = radio.getAttribute('data-src');
        after.classList.toggle('pixelated', radio.getAttribute('data-nearest') === '1');
        tag.textContent = radio.getAttribute('data-label');
      });
    });
  });
})();
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _src(path: str) -> str:
    """A relative file name as a URL path (each part percent-encoded; no scheme, no host)."""
    return _e(quote(path.replace(os.sep, "/"), safe="/"))


def _fmt_count(n: int | None, unit: str = "") -> str:
    if n is None:
        return "?"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f} {suffix}{unit}"
    return f"{n} {unit}".strip()


def _fmt_metric(value: float | None, digits: int) -> str:
    if value is None or math.isnan(value):
        return "–"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _view_label(report: Report, image: ReportImage, key: str) -> str:
    if key == LR_VIEW:
        return f"LR (nearest ×{report.scale})"
    if key == HR_VIEW:
        return "HR (ground truth)"
    return next(m.label for m in report.models if m.key == key)


def _views(report: Report, image: ReportImage) -> list[str]:
    """The view keys of ``image`` in display order: models, then LR, then HR."""
    keys = [m.key for m in report.models if m.key in image.files]
    keys += [k for k in (LR_VIEW, HR_VIEW) if k in image.files]
    return keys


def _default_right(report: Report, image: ReportImage) -> str:
    """The right side shown first: the first model that is not the reference, else HR, else LR."""
    for key in _views(report, image):
        if key not in (REFERENCE, LR_VIEW):
            return key
    return LR_VIEW


def _zoom(width: int, target: int) -> int:
    return max(1, target // max(1, width))


def _models_table(report: Report) -> str:
    has_metrics = any(m.psnr is not None for m in report.models)
    head = "<tr><th>model</th><th>params</th><th>Multi-Adds (720p)</th>"
    if has_metrics:
        head += "<th>mean PSNR (dB)</th><th>mean SSIM</th>"
    rows = [head + "</tr>"]
    best_psnr = max((m.psnr for m in report.models if m.psnr is not None), default=None)
    for m in report.models:
        cells = f"<td>{_e(m.label)}</td><td>{_fmt_count(m.params)}</td>"
        cells += f"<td>{_fmt_count(m.multi_adds)}</td>"
        if has_metrics:
            best = ' class="best"' if m.psnr is not None and m.psnr == best_psnr else ""
            cells += f"<td{best}>{_fmt_metric(m.psnr, 2)}</td><td>{_fmt_metric(m.ssim, 4)}</td>"
        rows.append(f'<tr data-model="{_e(m.key)}">{cells}</tr>')
    return '<table class="models">' + "".join(rows) + "</table>"


def _nice_step(span: float, count: int = 5) -> float:
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw))
    return next(f * mag for f in (1.0, 2.0, 2.5, 5.0, 10.0) if f * mag >= raw * (1 - 1e-9))


def _axis(lo: float, hi: float) -> tuple[float, float, list[float]]:
    """Bounds and ticks of an axis covering [lo, hi], on round numbers."""
    if hi - lo <= 0:
        lo, hi = lo - 0.5, hi + 0.5
    step = _nice_step(hi - lo)
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    ticks = [start + i * step for i in range(int(round((stop - start) / step)) + 1)]
    return start, stop, ticks


def _tick_text(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def render_plot(models: Sequence[ReportModel]) -> str:
    """Mean PSNR against Multi-Adds (720p output) of ``models`` as an inline ``<svg>``: one
    ``circle.point`` per model with both figures; "" when no model has both."""
    points = [m for m in models if m.psnr is not None and m.multi_adds is not None]
    points = [m for m in points if m.psnr is not None and math.isfinite(m.psnr)]
    if not points:
        return ""
    width, height = 620, 380
    left, right, top, bottom = 64, 24, 20, 52
    xs = [float(m.multi_adds or 0) / 1e9 for m in points]
    ys = [float(m.psnr or 0.0) for m in points]
    x0, x1, xticks = _axis(0.0, max(xs) * 1.1 if max(xs) > 0 else 1.0)
    pad = max(0.1, 0.12 * (max(ys) - min(ys)))
    y0, y1, yticks = _axis(min(ys) - pad, max(ys) + pad)

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (width - left - right)

    def py(v: float) -> float:
        return height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom)

    parts = [
        f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="mean PSNR against Multi-Adds">'
    ]
    for t in xticks:
        x = px(t)
        parts.append(
            f'<line class="grid" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}"/>'
            f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
            f"{_tick_text(t)}</text>"
        )
    for t in yticks:
        y = py(t)
        parts.append(
            f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick_text(t)}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{left}" y1="{height - bottom}" x2="{width - right}" '
        f'y2="{height - bottom}"/>'
        f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}"/>'
        f'<text x="{(left + width - right) / 2:.1f}" y="{height - 12}" text-anchor="middle">'
        "Multi-Adds (G, 1280×720 output)</text>"
        f'<text transform="translate(16 {(top + height - bottom) / 2:.1f}) rotate(-90)" '
        'text-anchor="middle">mean PSNR (dB)</text>'
    )
    for m, xv, yv in zip(points, xs, ys):
        x, y = px(xv), py(yv)
        cls = "point reference" if m.key == REFERENCE else "point"
        anchor, dx = ("end", -8) if x > width - right - 140 else ("start", 8)
        parts.append(
            f'<circle class="{cls}" data-model="{_e(m.key)}" cx="{x:.1f}" cy="{y:.1f}" r="6">'
            f"<title>{_e(m.label)}: {_fmt_metric(m.psnr, 2)} dB, "
            f"{_fmt_count(m.multi_adds)} Multi-Adds, {_fmt_count(m.params)} params</title>"
            "</circle>"
            f'<text x="{x + dx:.1f}" y="{y - 8:.1f}" text-anchor="{anchor}">{_e(m.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _image_section(report: Report, index: int, image: ReportImage) -> str:
    h, w = image.sr_size
    zoom = _zoom(w, MAIN_DISPLAY)
    right = _default_right(report, image)
    views = _views(report, image)
    group = f"{_e(image.group)} / " if image.group else ""
    out = [
        f'<section class="image" id="image-{index}">',
        f"<h2>{group}{_e(image.name)} <small>LR {image.lr_size[1]}×{image.lr_size[0]} → "
        f"×{report.scale} {w}×{h}</small></h2>",
    ]
    # The picker: which view is on the right of the slider.
    out.append('<fieldset class="picker"><legend>bicubic (left) against:</legend>')
    for key in views:
        if key == REFERENCE:
            continue
        checked = " checked" if key == right else ""
        nearest = "1" if key == LR_VIEW else "0"
        label = _view_label(report, image, key)
        out.append(
            f'<label><input type="radio" class="pick" name="view-{index}" value="{_e(key)}" '
            f'data-src="{_src(image.files[key])}" data-nearest="{nearest}" '
            f'data-label="{_e(label)}"{checked}> {_e(label)}</label>'
        )
    out.append("</fieldset>")
    # The slider: the picked view underneath, bicubic on top, clipped to the left part.
    pixel = " pixelated" if zoom > 1 else ""
    after_cls = "after pixelated" if right == LR_VIEW else "after"
    out.append(
        f'<div class="compare{pixel}" style="width: {w * zoom}px">'
        f'<img class="{after_cls}" src="{_src(image.files[right])}" width="{w}" height="{h}" '
        f'alt="{_e(image.name)}: {_e(_view_label(report, image, right))}">'
        f'<img class="before" src="{_src(image.files[REFERENCE])}" width="{w}" height="{h}" '
        f'alt="{_e(image.name)}: bicubic" style="clip-path: inset(0 50% 0 0)">'
        '<div class="divider" style="left: 50%"></div>'
        '<span class="tag left">bicubic</span>'
        f'<span class="tag right">{_e(_view_label(report, image, right))}</span>'
    )
    for k, crop in enumerate(image.crops, 1):
        t, left, ch, cw = crop.box
        out.append(
            f'<div class="mark" style="top: {100 * t / h:.3f}%; left: {100 * left / w:.3f}%; '
            f'width: {100 * cw / w:.3f}%; height: {100 * ch / h:.3f}%"><span>{k}</span></div>'
        )
    out.append(
        '<input type="range" class="split" min="0" max="100" step="0.1" value="50" '
        f'aria-label="{_e(image.name)}: share of the width shown as bicubic"></div>'
    )
    # Metrics.
    if image.metrics:
        best = max(p for p, _s in image.metrics.values())
        best_ssim = max(s for _p, s in image.metrics.values())
        rows = ["<tr><th>model</th><th>PSNR (dB)</th><th>SSIM</th></tr>"]
        for m in report.models:
            if m.key not in image.metrics:
                continue
            p, s = image.metrics[m.key]
            pc = ' class="best"' if p == best else ""
            sc = ' class="best"' if s == best_ssim else ""
            rows.append(
                f'<tr data-model="{_e(m.key)}"><td>{_e(m.label)}</td>'
                f"<td{pc}>{_fmt_metric(p, 2)}</td><td{sc}>{_fmt_metric(s, 4)}</td></tr>"
            )
        out.append('<table class="metrics">' + "".join(rows) + "</table>")
    else:
        out.append('<p class="note">no ground truth for this image: no PSNR/SSIM.</p>')
    # Crops, magnified by nearest neighbour.
    if image.crops:
        out.append('<div class="crops">')
        for k, crop in enumerate(image.crops, 1):
            t, left, ch, cw = crop.box
            cz = _zoom(cw, CROP_DISPLAY)
            out.append(
                f'<div class="crop-row" title="crop {k}: x {left}, y {t}, {cw}×{ch} px">'
                f'<span class="num">{k}</span>'
            )
            for key in views:
                if key not in crop.files:
                    continue
                label = _view_label(report, image, key)
                out.append(
                    f'<figure><img class="pixelated" src="{_src(crop.files[key])}" '
                    f'width="{cw * cz}" height="{ch * cz}" alt="crop {k}: {_e(label)}">'
                    f"<figcaption>{_e(label)}</figcaption></figure>"
                )
            out.append("</div>")
        out.append("</div>")
    for note in image.notes:
        out.append(f'<p class="note">note: {_e(note)}</p>')
    out.append("</section>")
    return "\n".join(out)


def render_html(report: Report) -> str:
    """The page of ``report``: one self-contained HTML document (inline CSS, script and SVG;
    images by relative file name). Pure: the same report gives the same text."""
    plot = render_plot(report.models)
    if plot:
        plot_part = (
            f'<h2>Quality against cost</h2>{plot}<p class="note">Mean PSNR over the images '
            "with a ground truth; Multi-Adds counted as <code>lightsr profile</code> counts them "
            "(one forward pass producing a 1280×720 output).</p>"
        )
    else:
        plot_part = (
            '<p class="note">No image has a ground truth, so there is no PSNR to plot against '
            "cost: pass a benchmark folder (HR images) to see one.</p>"
        )
    notes = "".join(f'<p class="note">note: {_e(n)}</p>' for n in report.notes)
    metric = f'<p class="note">{_e(report.metric_note)}</p>' if report.metric_note else ""
    sections = "\n".join(_image_section(report, i, im) for i, im in enumerate(report.images))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(report.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_e(report.title)}</h1>\n"
        f'<p class="note">{len(report.images)} image(s), ×{report.scale}. Drag across an image '
        "(or focus it and use the arrow keys) to move the split between bicubic and the view "
        "picked above it.</p>\n"
        f"{notes}{_models_table(report)}\n{metric}\n{plot_part}\n{sections}\n"
        f"<script>{_JS}</script>\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------------------------
# Crops
# ---------------------------------------------------------------------------------------------


def crop_size(height: int, width: int, scale: int) -> int:
    """The side of the crops of an ``height`` x ``width`` SR image: up to 64 pixels, at most a
    third of the shorter side (room for a few apart), a multiple of ``scale`` (so the LR crop
    is whole pixels)."""
    side = min(64, max(scale, min(height, width) // 3))
    return max(scale, side // scale * scale)


def detail_crops(
    image: np.ndarray, *, size: int, count: int = 3, step: int = 1, gap: int | None = None
) -> list[tuple[int, int]]:
    """(top, left) of up to ``count`` ``size`` x ``size`` windows of ``image`` (H x W [x C])
    with the most detail: the largest sums of gradient magnitude of the grey image, picked
    greedily, each at least ``gap`` pixels (default ``size // 2``) clear of those picked before
    (so they show different places, not three neighbours on one texture). Corners are
    multiples of ``step`` (the scale, so that an LR crop is whole pixels). Deterministic: ties
    go to the first window in reading order."""
    img = np.asarray(image, dtype=np.float64)
    grey = img.mean(axis=2) if img.ndim == 3 else img
    h, w = grey.shape
    if size > h or size > w or size < 1:
        return []
    grad = np.zeros_like(grey)
    grad[:, 1:] += np.abs(np.diff(grey, axis=1))
    grad[1:, :] += np.abs(np.diff(grey, axis=0))
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = grad.cumsum(0).cumsum(1)
    stride = max(step, (size // 4) // step * step)
    tops = list(range(0, h - size + 1, stride))
    lefts = list(range(0, w - size + 1, stride))
    t_arr = np.array(tops)[:, None]
    l_arr = np.array(lefts)[None, :]
    sums = (
        integral[t_arr + size, l_arr + size]
        - integral[t_arr, l_arr + size]
        - integral[t_arr + size, l_arr]
        + integral[t_arr, l_arr]
    )
    chosen: list[tuple[int, int]] = []
    reach = size + (size // 2 if gap is None else max(0, gap))
    order = np.argsort(-sums, axis=None, kind="stable")
    for flat in order:
        i, j = divmod(int(flat), len(lefts))
        t, left = tops[i], lefts[j]
        if all(abs(t - ct) >= reach or abs(left - cl) >= reach for ct, cl in chosen):
            chosen.append((t, left))
            if len(chosen) == count:
                break
    return chosen


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportInput:
    """One image to show: ``lr`` (uint8 H x W x 3), ``hr`` (uint8 sH x sW x C, or None for an
    image without ground truth), ``group`` (a set's name, or "")."""

    name: str
    lr: np.ndarray
    hr: np.ndarray | None = None
    group: str = ""
    notes: tuple[str, ...] = ()


def _as_rgb8(image: np.ndarray, notes: list[str], name: str) -> np.ndarray:
    """uint8 RGB for the page: 16-bit reduced (round(x/257)), alpha dropped, grey repeated."""
    if image.dtype == np.uint16:
        image = np.floor(image / 257.0 + 0.5).astype(np.uint8)
        notes.append(f"{name}: 16-bit, shown and upscaled as 8 bits")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:
        image = image[:, :, :3]
        notes.append(f"{name}: alpha channel dropped")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def read_input(path: str | os.PathLike) -> ReportInput:
    """A plain LR image file as a :class:`ReportInput` (no ground truth); a missing, unreadable
    or non-image file raises :class:`~lightsr.errors.LightSRError` naming it."""
    path = Path(path)
    if not path.exists():
        raise LightSRError(
            f"{str(path)!r} does not exist: pass LR image files, or benchmark folders (HR images)."
        )
    if not path.is_file():
        raise LightSRError(
            f"{str(path)!r} is not a file: pass LR image files, or benchmark folders (HR images)."
        )
    if not is_image_suffix(path.suffix):
        raise LightSRError(
            f"{str(path)!r} is not an image file (by its suffix): pass .png, .jpg, .bmp, .tif "
            "or .webp LR images."
        )
    notes: list[str] = []
    lr = _as_rgb8(read_image(path), notes, path.name)
    return ReportInput(name=path.stem, lr=lr, notes=tuple(notes))


def benchmark_inputs(dataset: Iterable) -> Iterable[ReportInput]:
    """The images of a benchmark set (:class:`lightsr.data.benchmark.BenchmarkSet`, or any
    sequence of items with ``name``, ``lr``, ``hr`` and ``notes`` and a ``name`` of its own),
    read one at a time, with their ground truth."""
    group = str(getattr(dataset, "name", ""))
    for item in dataset:
        yield ReportInput(
            name=item.name,
            lr=item.lr,
            hr=item.hr,
            group=group,
            notes=tuple(getattr(item, "notes", ())),
        )


# ---------------------------------------------------------------------------------------------
# Writing a report
# ---------------------------------------------------------------------------------------------


def check_report_dir(
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike | None] = (),
) -> None:
    """Refuse, before anything is computed, a report folder that is a file, that is not empty
    (unless ``overwrite``: then its files of the same names are replaced; nothing else in it is
    touched), or that overlaps one of the ``inputs`` folders (the report's images would land
    among the data)."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise OutputPathError(
            f"--report {str(path)!r} is a file: the report is a folder (index.html and "
            "images/); choose a folder name."
        )
    if path.is_dir() and not overwrite and any(path.iterdir()):
        raise OutputExistsError(
            f"--report folder {str(path)!r} is not empty: pass --overwrite (overwrite=True) to "
            "write the report into it anyway (files of the same names are replaced), or choose "
            "a new or empty folder."
        )
    out = path.resolve()
    for folder in inputs:
        if folder is None or not Path(folder).is_dir():
            continue
        data = Path(folder).resolve()
        if out == data or data in out.parents or out in data.parents:
            raise OutputPathError(
                f"--report {str(out_dir)!r} overlaps the data folder {str(folder)!r}: the "
                "report's images would be written among the images read. Choose a folder "
                "outside the data."
            )


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


def _unique_labels(labels: Sequence[str]) -> list[str]:
    out: list[str] = []
    for label in labels:
        candidate, k = label, 2
        while candidate in out:
            candidate, k = f"{label} #{k}", k + 1
        out.append(candidate)
    return out


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _device_of(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _cost(model: torch.nn.Module) -> tuple[int | None, int | None, str | None]:
    """(params, Multi-Adds at 720p, why the count failed) as ``lightsr profile`` counts them."""
    try:
        return _params(model), multi_adds_720p(model), None
    except (LightSRError, RuntimeError, ValueError, TypeError) as exc:
        return _params(model), None, f"{type(exc).__name__}: {exc}"


def write_report(
    out_dir: str | os.PathLike,
    models: Sequence[tuple[str, SRModel]],
    images: Iterable[ReportInput],
    *,
    title: str | None = None,
    crop_border: int | None = None,
    y_channel: bool = True,
    self_ensemble: bool = False,
    crops: int = 3,
    overwrite: bool = False,
    progress: bool = False,
    inputs: Sequence[str | os.PathLike | None] = (),
) -> Report:
    """Run ``models`` ((label, model) pairs of one scale) and bicubic on ``images``, write the
    images and ``index.html`` into ``out_dir``, and return the :class:`Report` rendered.

    Bicubic (MATLAB's, exact) is always the reference on the left of every slider; a bicubic
    among ``models`` is not shown twice. Images with a ground truth are upscaled whole and
    measured as :func:`lightsr.evaluate.evaluate` does (``crop_border`` default the scale,
    ``y_channel``, ``self_ensemble``); images without one go through
    :class:`lightsr.upscale.Upscaler` (tiles, padding of small inputs). An image a model cannot
    process is left out of the page with a note. ``out_dir`` is checked first
    (:func:`check_report_dir`: not empty without ``overwrite``, not among ``inputs``).
    """
    check_report_dir(out_dir, overwrite=overwrite, inputs=inputs)
    learned = [(label, m) for label, m in models if getattr(m, "arch_name", "") != "bicubic"]
    scales = {int(getattr(m, "scale", 0)) for _label, m in models}
    if len(scales) > 1:
        each = ", ".join(f"{label} (x{getattr(m, 'scale', '?')})" for label, m in models)
        raise LightSRError(
            f"the models upscale by different factors: {each}. Compare models of one scale."
        )
    if not scales:
        raise LightSRError("no model to compare: give at least one (bicubic is added anyway).")
    scale = scales.pop()
    reference = create_model("bicubic", scale=scale, exact=True)
    labels = _unique_labels(["bicubic", *(label for label, _m in learned)])
    runs: list[tuple[str, str, SRModel]] = [(REFERENCE, labels[0], reference)]
    runs += [(f"m{i}", labels[i], m) for i, (_label, m) in enumerate(learned, 1)]
    for _key, _label, m in runs:
        m.eval()
    crop = scale if crop_border is None else int(crop_border)
    upscalers: dict[str, Upscaler] = {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def save(rel: str, array: np.ndarray) -> str:
        write_image(out / rel, array, overwrite=overwrite)
        return rel

    shown: list[ReportImage] = []
    notes: list[str] = []
    sums: dict[str, list[tuple[float, float]]] = {key: [] for key, _l, _m in runs}
    for item in tqdm(images, desc="report", disable=not progress, unit="image"):
        try:
            srs = {}
            for key, _label, m in runs:
                if item.hr is not None:
                    srs[key] = super_resolve(m, item.lr, self_ensemble=self_ensemble)
                else:
                    if key not in upscalers:
                        upscalers[key] = Upscaler(m, device=_device_of(m), progress=False)
                    srs[key] = upscalers[key](item.lr)
            if item.hr is not None and srs[REFERENCE].shape[:2] != item.hr.shape[:2]:
                raise LightSRError(
                    f"the HR image is {item.hr.shape[1]}x{item.hr.shape[0]}, not {scale} times "
                    f"the {item.lr.shape[1]}x{item.lr.shape[0]} LR image"
                )
        except (LightSRError, RuntimeError, MemoryError) as exc:
            where = f"{item.group}/{item.name}" if item.group else item.name
            notes.append(f"{where} left out: {type(exc).__name__}: {exc}")
            continue
        lr = _as_rgb8(item.lr, [], item.name)
        sh, sw = srs[REFERENCE].shape[:2]
        hr = None
        metrics: dict[str, tuple[float, float]] = {}
        if item.hr is not None:
            hr = _as_rgb8(item.hr, [], item.name)
            for key, sr in srs.items():
                pair = (
                    psnr(sr, hr, crop_border=crop, y_channel=y_channel),
                    ssim(sr, hr, crop_border=crop, y_channel=y_channel),
                )
                metrics[key] = pair
                sums[key].append(pair)
        stem = f"{item.group}-{item.name}" if item.group else item.name
        folder = f"{IMAGES}/{len(shown):03d}-{_safe(stem)}"
        views = dict(srs)
        views[LR_VIEW] = lr
        if hr is not None:
            views[HR_VIEW] = hr
        files = {key: save(f"{folder}/{key}.png", array) for key, array in views.items()}
        # Crops where the picture has the most detail: the ground truth's, else the first
        # model's (bicubic's own blur would pick the wrong places).
        detail = hr if hr is not None else srs[runs[1][0] if len(runs) > 1 else REFERENCE]
        size = crop_size(sh, sw, scale)
        boxes = detail_crops(detail, size=size, count=crops, step=scale)
        crop_list = []
        for k, (t, left) in enumerate(boxes, 1):
            crop_files = {}
            for key, array in views.items():
                if key == LR_VIEW:
                    rows = slice(t // scale, (t + size) // scale)
                    part = array[rows, left // scale : (left + size) // scale]
                else:
                    part = array[t : t + size, left : left + size]
                crop_files[key] = save(f"{folder}/crop{k}-{key}.png", part)
            crop_list.append(ReportCrop(box=(t, left, size, size), files=crop_files))
        shown.append(
            ReportImage(
                name=item.name,
                group=item.group,
                lr_size=(int(lr.shape[0]), int(lr.shape[1])),
                sr_size=(int(sh), int(sw)),
                files=files,
                metrics=metrics,
                crops=tuple(crop_list),
                notes=item.notes,
            )
        )
    report_models = []
    for key, label, m in runs:
        params, macs, why = _cost(m)
        if why:
            notes.append(f"{label}: Multi-Adds not counted ({why})")
        got = sums[key]
        report_models.append(
            ReportModel(
                key=key,
                label=label,
                params=params,
                multi_adds=macs,
                psnr=float(np.mean([p for p, _s in got])) if got else None,
                ssim=float(np.mean([s for _p, s in got])) if got else None,
            )
        )
    channel = "Y (MATLAB rgb2ycbcr)" if y_channel else "RGB"
    with_gt = sum(1 for im in shown if im.metrics)
    metric_note = (
        f"PSNR/SSIM on {channel}, {crop} border pixels cropped, SR rounded to 8 bits"
        + (", x8 self-ensemble" if self_ensemble else "")
        + f"; {with_gt} of {len(shown)} image(s) have a ground truth."
    )
    report = Report(
        title=title
        or (
            f"lightsr: {', '.join(labels[1:])} against bicubic, x{scale}"
            if labels[1:]
            else f"lightsr: bicubic, x{scale}"
        ),
        scale=scale,
        models=tuple(report_models),
        images=tuple(shown),
        metric_note=metric_note,
        notes=tuple(notes),
    )
    atomic_write_text(out / INDEX, render_html(report), overwrite=overwrite)
    return report


__all__ = [
    "INDEX",
    "Report",
    "ReportCrop",
    "ReportImage",
    "ReportInput",
    "ReportModel",
    "benchmark_inputs",
    "check_report_dir",
    "crop_size",
    "detail_crops",
    "read_input",
    "render_html",
    "render_plot",
    "write_report",
]
