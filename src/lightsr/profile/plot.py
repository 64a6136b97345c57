"""PSNR against Multi-Adds (the MAFFSRN paper's Figure 1): PSNR figures scraped from results
files, and the plot (matplotlib, an optional extra)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..errors import ConfigError
from .report import ProfileReport

# ---------------------------------------------------------------------------------------------
# PSNR against Multi-Adds (the MAFFSRN paper's Figure 1)
# ---------------------------------------------------------------------------------------------

_MODEL_KEYS = ("model", "arch", "arch_name", "name")
_PSNR_KEYS = ("psnr_y", "psnr", "PSNR")
_SKIP_KEYS = ("images", "per_image", "failures")  # per-image PSNRs are not the set's


def _psnr_records(obj: Any, context: dict[str, Any]) -> Iterable[tuple[dict, dict]]:
    """Yield (dict, context) for every dict; the context holds its ancestors' scalar fields
    and, under ``"_keys"``, the dict keys on the path to it (e.g. "x4", "Set5")."""
    if isinstance(obj, dict):
        yield obj, context
        here = {**context, **{k: v for k, v in obj.items() if isinstance(v, (str, int, float))}}
        for k, v in obj.items():
            if k in _SKIP_KEYS or not isinstance(v, (dict, list)):
                continue
            keys = here.get("_keys", ()) + ((k,) if isinstance(v, dict) else ())
            yield from _psnr_records(v, {**here, "_keys": keys})
    elif isinstance(obj, list):
        for v in obj:
            yield from _psnr_records(v, context)


def load_psnr_results(
    results_dir: str | os.PathLike, *, dataset: str = "Set5", scale: int = 4
) -> dict[str, float]:
    """PSNR-Y (dB) per model on ``dataset`` at ``scale`` from evaluation JSON files.

    Reads every ``*.json`` in ``results_dir`` except the ``profile*`` files and accepts any
    nesting in which a dict has its own PSNR (``psnr_y``/``psnr``) and, on itself or its
    ancestors, a model name (``model``/``arch``), a ``scale`` (or an ``xN`` key on the path)
    and a ``dataset`` (or a key on the path equal to ``dataset``): e.g. the ``to_dict()`` of
    :class:`lightsr.evaluate.EvalResult`. Per-image lists (``images``) are not read. When a
    model appears more than once, the last file (sorted by name) wins.
    """
    out: dict[str, float] = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        if path.name.startswith("profile"):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for own, ctx in _psnr_records(data, {}):
            psnr = next((own[k] for k in _PSNR_KEYS if isinstance(own.get(k), (int, float))), None)
            if psnr is None or not math.isfinite(psnr):
                continue
            rec = {**ctx, **own}
            keys = [str(k) for k in ctx.get("_keys", ())]
            model = next((rec[k] for k in _MODEL_KEYS if isinstance(rec.get(k), str)), None)
            ds = rec.get("dataset", rec.get("set"))
            if ds is None:
                ds = next((k for k in keys if k.lower() == dataset.lower()), None)
            sc = rec.get("scale")
            if sc is None:
                sc = next((int(k[1:]) for k in keys if k[:1] in "xX" and k[1:].isdigit()), None)
            if (
                model
                and isinstance(ds, str)
                and ds.lower() == dataset.lower()
                and sc is not None
                and int(sc) == scale
            ):
                out[model.lower().replace("-", "_")] = float(psnr)
    return out


def require_matplotlib() -> None:
    """Raise ConfigError naming the fix when matplotlib is missing (checked before long runs)."""

    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(
            "plotting needs matplotlib, which is not installed: pip install 'lightsr[plot]' "
            "(or pip install matplotlib)."
        )


def plot_psnr_vs_multiadds(
    reports: Sequence[ProfileReport],
    psnr: dict[str, float],
    path: str | os.PathLike,
    *,
    scale: int = 4,
    dataset: str = "Set5",
    overwrite: bool = False,
) -> int:
    """Scatter PSNR (``psnr``: model -> dB) against Multi-Adds at 720p of the *folded* reports
    at ``scale`` (the network that is deployed: FMEN's training form costs three times its
    folded form); marker area grows with the folded parameter count. Returns the number of
    points. Needs matplotlib (``pip install 'lightsr[plot]'``). An existing ``path`` is replaced
    only with ``overwrite``."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    points = [r for r in reports if r.scale == scale and r.form == "folded" and r.model in psnr]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in points:
        x, y = r.multi_adds_720p / 1e9, psnr[r.model]
        ax.scatter(x, y, s=20 + r.params / 5e3, alpha=0.7, edgecolors="k", linewidths=0.5)
        ax.annotate(r.model, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    # plain numbers (5, 10, 20, ...) rather than 10^1 on the log axis
    plain = matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("Multi-Adds (G) of the folded network, 1280x720 output")
    ax.margins(x=0.15, y=0.15)  # room for the labels
    ax.set_ylabel(f"PSNR-Y (dB), {dataset} x{scale}")
    ax.set_title(f"{dataset} x{scale}: PSNR against Multi-Adds (marker area ~ parameters)")
    ax.grid(True, which="both", alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, "no evaluation results found", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    suffix = Path(path).suffix or ".png"
    try:
        atomic_write(
            path, lambda tmp: fig.savefig(tmp, format=suffix.lstrip(".")), overwrite=overwrite
        )
    finally:
        plt.close(fig)
    return len(points)
