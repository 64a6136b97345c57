"""GGAS / CWSS on a small budget: each baseline trained as is, +GGAS, +CWSS and +both, side by
side with the gains of the paper's Table 2 ("Two strategies...", x4). One command:

    python benchmarks/compare_strategies.py [--baselines edsr_baseline imdn] [--steps 5000]
        [--batch 16] [--lr-patch 48] [--seeds 0] [--device auto] [--threads N]

For every baseline x variant x seed it trains ``lightsr.train.train`` with the same budget
(steps, batch, LR patch, schedule shape, seed = same initial draw order and same batches), the
strategy variants at ``--strategy-lr-scale`` (2) times the baseline's learning rate as the paper
does (Sec. 3.2: "We adopt two times larger learning rate than that of the original method"),
then evaluates the final weights (no checkpoint picked on a test set) on Set5/Set14/B100 x4:
LR = the ``LR_bicubic_clamp`` files (MATLAB imresize, replicate boundary), SR clamped and
rounded to uint8, PSNR/SSIM on Y with ``scale`` pixels cropped. Training data: the 291 classic
images (T91 + BSD200, ``../shared/data`` beside the repo), LR made by the exact MATLAB bicubic
with the same replicate boundary. Writes

    benchmarks/results/strategies_x4.json   every run (per-image PSNR too) and the summary
    docs/STRATEGIES.md                      ours beside the paper's gains, verdict per baseline
                                            (none for a smoke budget: under 1000 steps, or a
                                            --label that says "smoke")

Resumable: each run lives in ``<runs-dir>/<baseline>/<variant>/seed<k>/`` (default under
``runs/strategies_x4/<budget tag>``); a run with ``result.json`` is skipped (sets it lacks are
evaluated from its ``last.safetensors``), a run with a ``state.pt`` is continued. Ctrl-C stops
at a consistent step; rerunning the same command (later, or with ``--device cuda`` on a GPU
machine, after copying ``runs/strategies_x4``) continues where it stopped; under a time limit
use ``timeout -s INT <seconds> python ...`` so the run stops cleanly. ``--max-runs`` trains at
most that many runs per call; ``--report-only`` only rebuilds the JSON and the page from the run
folders; ``--from-json FILE`` rebuilds them from a written JSON alone (no run folders). A finished
run keeps ``result.json``, ``fingerprint.json`` and ``last.safetensors`` (its ``state.pt`` is
dropped unless ``--keep-state``): those are all a later session needs to skip it. ``--sets``
with no names trains only; a later call naming sets evaluates the saved weights (train on a GPU
machine, bring the run folders back, evaluate here).

Absolute numbers are not the paper's (300+ epochs of DIV2K there, a few thousand steps of 291
images here): only the direction of each gain over our own baseline is comparable.
"""

from __future__ import annotations

import os

# Before torch is imported: spinning OpenMP workers are very slow on a shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results" / "strategies_x4.json"
DOC = REPO / "docs" / "STRATEGIES.md"
SCALE = 4

# ---------------------------------------------------------------------------------------------
# The paper's numbers
# ---------------------------------------------------------------------------------------------

PAPER_SOURCE = (
    'Table 2 of "Two strategies..." (GGAS/CWSS; ../shared/papers/two-strategies-ggas-cwss.txt), '
    "x4, trained on DIV2K with the baselines' official codes, strategies at twice the "
    "baseline's learning rate"
)
# Sets in the column order of Table 2 (printed as Set5, "Set4" [sic: Set14], BSD100, Urban100,
# Manga109); our names.
TABLE2_SETS = ("Set5", "Set14", "B100", "Urban100", "Manga109")

# Transcription of Table 2 ("Quantitative results of applying our strategies to other
# lightweight architectures"), x4, row by row as printed: a baseline row ("base") gives
# PSNR / SSIM; each strategy row gives the PSNR *gain* over its baseline (dB, signed) and the
# *absolute* SSIM. Columns: TABLE2_SETS. The paper prints MemNet's Manga109 baseline as
# 28.12 / 0.8655, the same as FSRCNN's (probably a copy slip); kept as printed. FSRCNN has no
# residual units, so the paper gives it only +GGAS.
PAPER_TABLE2_TEXT = """
#             Set5            Set14           B100            Urban100        Manga109
fsrcnn   base  31.08 / 0.8696  27.88 / 0.7609  27.03 / 0.7166  24.73 / 0.7288  28.12 / 0.8655
fsrcnn   ggas  +0.08 / 0.8733  +0.07 / 0.7650  +0.06 / 0.7188  +0.10 / 0.7296  +0.11 / 0.8689
memnet   base  31.96 / 0.8923  28.44 / 0.7803  27.60 / 0.7321  25.68 / 0.7664  28.12 / 0.8655
memnet   ggas  +0.07 / 0.8946  +0.06 / 0.7833  +0.09 / 0.7342  +0.08 / 0.7688  +0.12 / 0.8676
memnet   cwss  +0.06 / 0.8948  +0.05 / 0.7841  +0.09 / 0.7339  +0.12 / 0.7672  +0.13 / 0.8679
memnet   both  +0.09 / 0.8952  +0.08 / 0.7847  +0.12 / 0.7345  +0.15 / 0.7689  +0.17 / 0.8683
carn     base  32.01 / 0.8932  28.44 / 0.7796  27.51 / 0.7350  25.94 / 0.7842  30.48 / 0.9084
carn     ggas  +0.07 / 0.8948  +0.06 / 0.7821  +0.03 / 0.7379  +0.08 / 0.7861  +0.13 / 0.9089
carn     cwss  +0.00 / 0.8950  +0.04 / 0.7811  +0.06 / 0.7369  +0.06 / 0.7862  +0.09 / 0.9088
carn     both  +0.05 / 0.8955  +0.09 / 0.7830  +0.08 / 0.7382  +0.11 / 0.7878  +0.17 / 0.9091
idn      base  31.76 / 0.8901  28.44 / 0.7732  27.36 / 0.7287  25.60 / 0.7634  29.38 / 0.8933
idn      ggas  +0.06 / 0.8903  +0.05 / 0.7783  +0.04 / 0.7299  +0.04 / 0.7652  +0.08 / 0.8942
idn      cwss  +0.05 / 0.8923  +0.06 / 0.7750  +0.06 / 0.7310  +0.08 / 0.7662  +0.12 / 0.8960
idn      both  +0.09 / 0.8929  +0.08 / 0.7790  +0.08 / 0.7315  +0.12 / 0.7671  +0.12 / 0.8970
edsr_b   base  32.09 / 0.8938  28.58 / 0.7813  27.57 / 0.7357  26.04 / 0.7849  30.35 / 0.9067
edsr_b   ggas  +0.12 / 0.8959  +0.08 / 0.7834  +0.11 / 0.7371  +0.15 / 0.7869  +0.18 / 0.9088
edsr_b   cwss  +0.08 / 0.8969  +0.07 / 0.7824  +0.08 / 0.7361  +0.10 / 0.7858  +0.13 / 0.9084
edsr_b   both  +0.15 / 0.8973  +0.12 / 0.7837  +0.14 / 0.7374  +0.22 / 0.7872  +0.16 / 0.9092
imdn     base  32.21 / 0.8948  28.56 / 0.7809  27.55 / 0.7350  26.02 / 0.7831  30.45 / 0.9076
imdn     ggas  +0.04 / 0.8952  +0.05 / 0.7814  +0.03 / 0.7356  +0.07 / 0.7839  +0.08 / 0.9082
imdn     cwss  +0.03 / 0.8951  +0.04 / 0.7812  +0.03 / 0.7355  +0.05 / 0.7840  +0.05 / 0.9079
imdn     both  +0.07 / 0.8955  +0.09 / 0.7821  +0.05 / 0.7360  +0.11 / 0.7844  +0.16 / 0.9088
"""
# Row names of the text above -> registry names / our variant names.
_T2_MODELS = {"edsr_b": "edsr_baseline"}
_T2_VARIANTS = {"base": "baseline"}
_CELL = re.compile(r"([+-]?)(\d+\.\d+)\s*/\s*(\d\.\d{4})")


def parse_table2(text: str) -> dict[str, dict[str, tuple[tuple[float, float], ...]]]:
    """``{model: {variant: ((PSNR or signed gain, SSIM) per set)}}`` from the transcription.
    A baseline cell must be unsigned and a strategy cell signed (a check on the copy)."""
    table: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        model, variant, rest = line.split(maxsplit=2)
        model, variant = _T2_MODELS.get(model, model), _T2_VARIANTS.get(variant, variant)
        cells = _CELL.findall(rest)
        if len(cells) != len(TABLE2_SETS):
            raise ValueError(f"Table 2 row {line!r}: {len(cells)} cells, not {len(TABLE2_SETS)}")
        if any(bool(sign) != (variant != "baseline") for sign, _, _ in cells):
            raise ValueError(f"Table 2 row {line!r}: gains are signed, baseline values are not")
        table.setdefault(model, {})[variant] = tuple(
            (float(sign + value), float(ssim)) for sign, value, ssim in cells
        )
    return table


PAPER_TABLE2 = parse_table2(PAPER_TABLE2_TEXT)
# Params column of Table 2 (thousands), per baseline and variant.
PAPER_PARAMS_K = {
    "fsrcnn": {"baseline": 33, "ggas": 34},
    "memnet": {"baseline": 714, "ggas": 721, "cwss": 714, "both": 721},
    "carn": {"baseline": 1112, "ggas": 1119, "cwss": 1112, "both": 1119},
    "idn": {"baseline": 600, "ggas": 607, "cwss": 600, "both": 607},
    "edsr_baseline": {"baseline": 1518, "ggas": 1525, "cwss": 1518, "both": 1525},
    "imdn": {"baseline": 715, "ggas": 722, "cwss": 715, "both": 722},
}
DISPLAY = {
    "fsrcnn": "FSRCNN",
    "memnet": "MemNet",
    "carn": "CARN",
    "idn": "IDN",
    "edsr_baseline": "EDSR-baseline",
    "imdn": "IMDN",
}

# Base learning rate of each baseline's own recipe (the paper trains the strategies at twice
# this). EDSR-baseline: the EDSR-PyTorch default (configs/edsr_baseline.toml); IMDN: the
# default of the authors' train_IMDN.py (Adam 2e-4, halved every 200 epochs). Others: --lr.
BASELINE_LR = {"edsr_baseline": 1e-4, "imdn": 2e-4}


def paper_rows(baseline: str) -> dict[str, dict[str, dict[str, float]]]:
    """Table 2 for ``baseline`` as ``{variant: {set: {psnr, ssim, d_psnr, d_ssim}}}``: absolute
    PSNR (dB) / SSIM and the gains over the paper's baseline (0 for the baseline row).
    Absolute PSNR of a strategy row = baseline + printed gain; SSIM gain = printed SSIM minus
    the baseline's. Empty for a model not in the table."""
    rows = PAPER_TABLE2.get(baseline)
    if rows is None:
        return {}
    base = dict(zip(TABLE2_SETS, rows["baseline"]))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for variant, values in rows.items():
        per_set = {}
        for name, (first, ssim_value) in zip(TABLE2_SETS, values):
            b_psnr, b_ssim = base[name]
            d_psnr = 0.0 if variant == "baseline" else first
            per_set[name] = {
                "psnr": round(b_psnr + d_psnr, 2),
                "ssim": ssim_value,
                "d_psnr": d_psnr,
                "d_ssim": round(ssim_value - b_ssim, 4),
            }
        out[variant] = per_set
    return out


# ---------------------------------------------------------------------------------------------
# What is trained
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One column of the comparison: builder options and whether the strategies' learning rate
    (``--strategy-lr-scale`` x the baseline's) is used."""

    label: str
    options: Mapping[str, bool]
    strategy_lr: bool


VARIANTS: dict[str, Variant] = {
    "baseline": Variant("baseline", {}, False),
    "ggas": Variant("+GGAS", {"ggas": True}, True),
    "cwss": Variant("+CWSS", {"cwss": True}, True),
    "both": Variant("+both", {"ggas": True, "cwss": True}, True),
    # Control, not in the paper: the baseline at the strategies' learning rate, to tell a gain
    # of the strategies from a gain of the larger rate alone.
    "baseline_lr2x": Variant("baseline at strategy LR", {}, True),
}
DEFAULT_VARIANTS = ("baseline", "ggas", "cwss", "both")


@dataclass(frozen=True)
class Budget:
    """What every run of the comparison shares (steps are optimiser steps; patch in LR pixels)."""

    steps: int
    batch: int
    lr_patch: int
    schedule: str  # "step" (halve once at 2/3, the EDSR recipe's 200/300 shape), cosine, constant
    strategy_lr_scale: float
    hr_dirs: tuple[str, ...]
    boundary: str = "replicate"
    amp: str = "none"

    @property
    def tag(self) -> str:
        """Folder name that keeps runs of different budgets apart."""
        lr = f"{self.strategy_lr_scale:g}".replace(".", "p")
        amp = "" if self.amp == "none" else f"_{self.amp}"
        return f"s{self.steps}_b{self.batch}_p{self.lr_patch}_{self.schedule}_lrx{lr}{amp}"


@dataclass(frozen=True)
class Job:
    """One training run: baseline x variant x seed under a budget."""

    baseline: str
    variant: str
    seed: int
    base_lr: float
    budget: Budget
    run_dir: Path

    @property
    def lr_scale(self) -> float:
        return self.budget.strategy_lr_scale if VARIANTS[self.variant].strategy_lr else 1.0

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes what a run computes (not where it runs): a stored run with a
        different fingerprint is never reused."""
        b = self.budget
        return {
            "model": self.baseline,
            "scale": SCALE,
            "options": dict(VARIANTS[self.variant].options),
            "seed": self.seed,
            "steps": b.steps,
            "batch": b.batch,
            "lr_patch": b.lr_patch,
            "lr": self.base_lr,
            "lr_scale": self.lr_scale,
            "schedule": b.schedule,
            "boundary": b.boundary,
            "amp": b.amp,
            # folder names only: the same data at another path is the same run
            "train_data": [Path(d).parent.name + "/" + Path(d).name for d in b.hr_dirs],
        }

    def config(
        self, *, device: str, workers: int, cache_dir: str, ckpt_every: int, progress: bool = False
    ) -> dict:
        """The ``lightsr.config`` dict of this run (validated by ``config_from_dict``)."""
        b = self.budget
        if b.schedule == "step":
            # The recipes' shape: EDSR halves at epoch 200 of 300; here once, at 2/3 of the run.
            schedule = {"kind": "step", "every": max(1, round(2 * b.steps / 3)), "gamma": 0.5}
        else:
            schedule = {"kind": b.schedule}
        return {
            "model": self.baseline,
            "scale": SCALE,
            "model_options": dict(VARIANTS[self.variant].options),
            "batch_size": b.batch,
            "length": b.steps,
            "unit": "step",
            "loss": "l1",
            "seed": self.seed,
            "device": device,
            "amp": b.amp,
            "out_dir": str(self.run_dir),
            "name": f"{self.baseline}_{self.variant}_seed{self.seed}",
            "log_every": max(1, min(100, b.steps)),
            "ckpt_every": max(1, min(ckpt_every, b.steps)),
            "progress": progress,
            "tensorboard": False,
            "data": {
                "hr_dirs": list(b.hr_dirs),
                "lr_source": "resize",
                "boundary": b.boundary,
                "lr_patch": b.lr_patch,
                "augment": True,
                "num_workers": workers,
                "cache_dir": cache_dir,
            },
            "optim": {"name": "adam", "lr": self.base_lr, "lr_scale": self.lr_scale},
            "schedule": schedule,
            "val": {"sets": []},
        }


# ---------------------------------------------------------------------------------------------
# Summary (pure: from run records to gains and verdicts)
# ---------------------------------------------------------------------------------------------


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else math.nan


def _sem(xs: Sequence[float]) -> float | None:
    """Standard error of the mean (sample std / sqrt(n)); None for fewer than 2 values."""
    if len(xs) < 2:
        return None
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


#: Fewer steps than this only check the harness: the gains of the first few hundred steps of
#: training say nothing about the strategies, so no direction is claimed.
MIN_VERDICT_STEPS = 1000
NO_VERDICT = "no verdict: smoke budget"


def smoke_reason(steps: int, label: str = "") -> str | None:
    """Why a comparison of ``steps`` optimiser steps labelled ``label`` gets no verdict (a
    smoke run), or None when its directions may be judged."""
    if "smoke" in label.lower():
        return "the run is labelled a smoke run"
    if steps < MIN_VERDICT_STEPS:
        return f"{steps} steps, fewer than the {MIN_VERDICT_STEPS} a verdict needs"
    return None


def direction(ours: float, paper: float | None, sem: float | None) -> str:
    """Whether our PSNR gain goes the paper's way: "yes" / "no" (plus " (within noise)" when
    a seed spread is known and |gain| < 2 standard errors), "n/a" when the paper shows no
    change (or no value)."""
    if paper is None or paper == 0 or math.isnan(ours):
        return "n/a"
    verdict = "yes" if (ours > 0) == (paper > 0) and ours != 0 else "no"
    if sem is not None and abs(ours) < 2 * sem:
        verdict += " (within noise)"
    return verdict


def summarize(
    records: Sequence[Mapping[str, Any]],
    *,
    baselines: Sequence[str],
    variants: Sequence[str],
    sets: Sequence[str],
    judge: bool = True,
) -> dict[str, Any]:
    """Means over seeds and gains over our baseline (paired by seed: same batches, same
    init order), beside Table 2, per ``baseline -> variant -> set``. Seeds count only where
    both the variant and the baseline have a result for that set. ``judge=False`` (a smoke
    budget) puts "no verdict" where the direction would be."""
    by_key: dict[tuple[str, str, int], Mapping[str, Any]] = {
        (r["baseline"], r["variant"], r["seed"]): r for r in records
    }

    def paired(b: str, v: str, ref: str, s: str) -> tuple[list[float], list[float]]:
        """Per-seed (PSNR, SSIM) differences of variant ``v`` minus variant ``ref``."""
        d_psnr, d_ssim = [], []
        for (bb, vv, seed), rec in by_key.items():
            other = by_key.get((b, ref, seed))
            if bb == b and vv == v and other and s in rec["sets"] and s in other["sets"]:
                d_psnr.append(rec["sets"][s]["psnr"] - other["sets"][s]["psnr"])
                d_ssim.append(rec["sets"][s]["ssim"] - other["sets"][s]["ssim"])
        return d_psnr, d_ssim

    out: dict[str, Any] = {}
    for b in baselines:
        paper = paper_rows(b)
        per_variant: dict[str, Any] = {}
        for v in variants:
            per_set: dict[str, Any] = {}
            for s in sets:
                vals = [
                    rec["sets"][s]
                    for (bb, vv, _), rec in by_key.items()
                    if bb == b and vv == v and s in rec["sets"]
                ]
                if not vals:
                    continue
                gains_p, gains_s = paired(b, v, "baseline", s)
                p = paper.get(v, {}).get(s)
                g_psnr = _mean(gains_p)
                sem = _sem(gains_p)
                row = {
                    "psnr": _mean([x["psnr"] for x in vals]),
                    "ssim": _mean([x["ssim"] for x in vals]),
                    "seeds": len(vals),
                    "d_psnr": g_psnr if v != "baseline" else 0.0,
                    "d_ssim": _mean(gains_s) if v != "baseline" else 0.0,
                    "d_psnr_sem": sem if v != "baseline" else None,
                    "paired_seeds": len(gains_p),
                    "paper": p,
                    "direction": (
                        None
                        if v == "baseline"
                        else direction(g_psnr, p["d_psnr"] if p else None, sem)
                        if judge
                        else "no verdict"
                    ),
                    # the strategy against the baseline at the same (larger) learning rate
                    "d_psnr_vs_lr_control": None,
                }
                if VARIANTS[v].options:
                    control, _ = paired(b, v, "baseline_lr2x", s)
                    if control:
                        row["d_psnr_vs_lr_control"] = _mean(control)
                per_set[s] = row
            if per_set:
                per_variant[v] = per_set
        if per_variant:
            out[b] = per_variant
    return out


def verdict_lines(summary: Mapping[str, Any], *, smoke: str | None = None) -> list[str]:
    """One sentence per baseline: for each strategy variant, on how many sets our PSNR gain
    has the sign of the paper's. ``smoke`` (a :func:`smoke_reason`): one line saying that
    there is no verdict, instead."""
    if smoke is not None:
        if not summary:
            return []
        return [
            f"{NO_VERDICT} ({smoke}). The gains below only show that the harness runs end to "
            "end; they say nothing about GGAS/CWSS."
        ]
    lines = []
    for b, per_variant in summary.items():
        parts = []
        noise_known = False
        for v, per_set in per_variant.items():
            if v == "baseline":
                continue
            judged = {s: r["direction"] for s, r in per_set.items() if r["direction"] != "n/a"}
            if not judged:
                continue
            yes = [s for s, d in judged.items() if d.startswith("yes")]
            no = [s for s, d in judged.items() if d.startswith("no")]
            noisy = [s for s, d in judged.items() if "noise" in d]
            noise_known |= any(r["d_psnr_sem"] is not None for r in per_set.values())
            text = f"{VARIANTS[v].label} on {len(yes)}/{len(judged)} sets"
            if no:
                text += f" (not on {', '.join(no)})"
            if noisy:
                text += f" [within noise: {', '.join(noisy)}]"
            parts.append(text)
        if not parts:
            continue
        name = DISPLAY.get(b, b)
        line = f"**{name}**: the direction of the paper's PSNR gain reproduces for " + "; ".join(
            parts
        )
        controlled = []
        for v, per_set in per_variant.items():
            ahead = [
                s
                for s, r in per_set.items()
                if r["d_psnr_vs_lr_control"] is not None and r["d_psnr_vs_lr_control"] > 0
            ]
            n = sum(r["d_psnr_vs_lr_control"] is not None for r in per_set.values())
            if n:
                controlled.append(f"{VARIANTS[v].label} ahead on {len(ahead)}/{n} sets")
        if controlled:
            line += (
                ". Against the baseline trained at the same (strategy) learning rate: "
                + "; ".join(controlled)
            )
        if not noise_known:
            line += (
                ". One seed only: no seed-to-seed spread is known, so gains this small cannot "
                "be told from noise (run with `--seeds 0 1 2`)"
            )
        lines.append(line + ".")
    return lines


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _f(x: float | None, digits: int, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def render_markdown(report: Mapping[str, Any]) -> str:
    """docs/STRATEGIES.md from the report dict that is also written as JSON."""
    budget, summary = report["budget"], report["summary"]
    lines = ["# GGAS / CWSS on a small budget, beside the paper's Table 2", ""]
    rebuilt = (
        f"; rebuilt from its JSON by `{report['rebuilt_by']}`" if report.get("rebuilt_by") else ""
    )
    lines += [f"<!-- Generated by `{report['command']}`{rebuilt}; do not edit by hand. -->", ""]
    if report.get("label"):
        lines += [f"> **{report['label']}**", ""]
    lines += [
        "Each baseline is trained from scratch as is, with GGAS, with CWSS and with both "
        '(the paper\'s "+ both" rows), all with the same budget and seeds: '
        f"{budget['steps']} steps of {budget['batch']} LR patches of "
        f"{budget['lr_patch']}x{budget['lr_patch']} (HR {budget['lr_patch'] * SCALE}), Adam, "
        f"L1, `{budget['schedule']}` schedule ({budget['schedule_note']}), seeds "
        f"{', '.join(map(str, budget['seeds']))}. Learning rate: the baseline's own "
        f"({', '.join(f'{DISPLAY.get(k, k)} {v:g}' for k, v in budget['base_lr'].items())}), "
        f"x{budget['strategy_lr_scale']:g} for the strategy variants (the paper, Sec. 3.2). "
        f"Training data: {budget['train_images_note']}. Evaluation: the final weights (no "
        "checkpoint chosen on a test set), x4, LR = the `LR_bicubic_clamp` files (MATLAB "
        "imresize, replicate boundary), SR rounded to uint8, PSNR-Y / SSIM-Y with 4 border "
        "pixels cropped, averaged per set.",
        "",
        "The paper trains for hundreds of epochs on DIV2K, so absolute values are not "
        "comparable; compare the gains (Δ = variant − baseline, same seed). Paper Δ SSIM is "
        "the printed SSIM minus the printed baseline SSIM.",
        "",
        "## Does the direction reproduce?",
        "",
    ]
    verdicts = report["verdicts"]
    lines += [f"- {v}" for v in verdicts] or ["- (no evaluated runs yet)"]
    lines += [""]
    for b, per_variant in summary.items():
        lines += [f"## {DISPLAY.get(b, b)} x4", ""]
        control = "baseline_lr2x" in per_variant
        lines += [
            "| variant | set | ours PSNR / SSIM | ours Δ PSNR / Δ SSIM | paper PSNR / SSIM "
            "| paper Δ PSNR / Δ SSIM | same direction |"
            + (" Δ PSNR vs baseline at strategy LR |" if control else ""),
            "|---|---|---|---|---|---|---|" + ("---|" if control else ""),
        ]
        for v, per_set in per_variant.items():
            for s, r in per_set.items():
                p = r["paper"]
                sem = f" ± {r['d_psnr_sem']:.3f}" if r["d_psnr_sem"] is not None else ""
                ours_d = (
                    "—"
                    if v == "baseline"
                    else f"{_f(r['d_psnr'], 3, True)}{sem} / {_f(r['d_ssim'], 4, True)}"
                )
                paper_abs = f"{p['psnr']:.2f} / {p['ssim']:.4f}" if p else "—"
                paper_d = (
                    "—" if not p or v == "baseline" else f"{p['d_psnr']:+.2f} / {p['d_ssim']:+.4f}"
                )
                lines.append(
                    f"| {VARIANTS[v].label} | {s} | {r['psnr']:.3f} / {r['ssim']:.4f} | {ours_d} "
                    f"| {paper_abs} | {paper_d} | {r['direction'] or '—'} |"
                    + (f" {_f(r['d_psnr_vs_lr_control'], 3, True)} |" if control else "")
                )
        lines += [""]
    if len(budget["seeds"]) > 1:
        lines += ["± is the standard error of the mean gain over seeds.", ""]

    lines += ["## Compute", ""]
    m = report["machine"]
    lines += [
        f"Device: {m['device_name']}; torch threads {m['torch_threads']}, DataLoader workers "
        f"{m['workers']}; torch {m['torch']}, Python {m['python']}. Total: "
        f"{report['totals']['train_s'] / 3600:.2f} h training, "
        f"{report['totals']['eval_s'] / 60:.1f} min evaluation over "
        f"{report['totals']['runs']} runs (training-pair preparation not included).",
        "",
        "| model | variant | seed | params | steps | train s | s/step | eval s | final L1 "
        "| device |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {DISPLAY.get(r['baseline'], r['baseline'])} | {VARIANTS[r['variant']].label} "
            f"| {r['seed']} | {r['params']:,} | {r['steps']} | {r['train_s']:.1f} "
            f"| {r['train_s'] / max(1, r['steps']):.3f} | {r['eval_s']:.1f} "
            f"| {_f(r['final_loss'], 4)} | {r['device']} |"
        )
    if report.get("missing"):
        lines += ["", "Not run yet: " + ", ".join(report["missing"]) + "."]
    lines += [
        "",
        f"Paper source: {PAPER_SOURCE}. Per-run and per-image values: "
        "`benchmarks/results/strategies_x4.json`.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    from lightsr.checkpoint import atomic_write

    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _read_log(run_dir: Path) -> tuple[dict, dict | None]:
    """(the first "start" record, the last "train" record) of a run's log.jsonl."""
    from lightsr.train import read_log  # skips a torn last line of a killed run

    start, last = {}, None
    for rec in read_log(run_dir):
        if rec.get("event") == "start" and not start:
            start = rec
        elif rec.get("event") == "train":
            last = rec
    return start, last


def _evaluate_sets(model, sets: Sequence[str], root: Path, lr_source: str) -> dict[str, Any]:
    from lightsr.data.benchmark import open_benchmark
    from lightsr.errors import DatasetError
    from lightsr.evaluate import evaluate

    out = {}
    for name in sets:
        r = evaluate(model, open_benchmark(root / name, scale=SCALE, lr_source=lr_source))
        if not r.images:
            raise DatasetError(f"evaluation on {name} failed for every image: {r.failures[:2]}")
        out[name] = {
            "psnr": r.psnr,
            "ssim": r.ssim,
            "images": len(r.images),
            "lr_source": r.lr_source,
            "requested_lr_source": lr_source,
            "eval_s": r.seconds,
            "per_image_psnr": {i.name: i.psnr for i in r.images},
        }
    return out


class Stopped(Exception):
    """A run was stopped (Ctrl-C / SIGTERM) at a consistent step; rerun to continue."""


def run_job(job: Job, args: argparse.Namespace, cache_dir: Path) -> tuple[dict, bool]:
    """Train (or continue) ``job`` and evaluate it; returns (result record, trained now?).
    A finished run is only evaluated on the sets it lacks."""
    import torch

    import lightsr
    from lightsr.config import config_from_dict
    from lightsr.errors import ConfigError
    from lightsr.train import train

    run_dir = job.run_dir
    fp = job.fingerprint()
    fp_path, result_path = run_dir / "fingerprint.json", run_dir / "result.json"
    stored = json.loads(fp_path.read_text()) if fp_path.is_file() else fp
    if stored != fp:
        diff = ", ".join(
            f"{k} {stored.get(k)!r} there, {fp.get(k)!r} now"
            for k in sorted(set(stored) | set(fp))
            if stored.get(k) != fp.get(k)
        )
        raise ConfigError(
            f"{run_dir} holds a run of another budget ({diff}); pass another --runs-dir "
            "or delete that folder."
        )
    root = Path(args.bench_root)
    if result_path.is_file():
        rec = json.loads(result_path.read_text())
        missing = [
            s
            for s in args.sets
            if rec["sets"].get(s, {}).get("requested_lr_source") != args.eval_lr_source
        ]
        if not missing:
            return rec, False
        model = lightsr.load(
            run_dir / "last.safetensors", expect_arch=job.baseline, expect_scale=SCALE
        )
        model = model.to(args.device if args.device != "auto" else _auto_device())
        t0 = time.perf_counter()
        rec["sets"].update(_evaluate_sets(model, missing, root, args.eval_lr_source))
        rec["eval_s"] += time.perf_counter() - t0
        _write_json(result_path, rec)
        return rec, False

    cfg = config_from_dict(
        job.config(
            device=args.device,
            workers=args.workers,
            cache_dir=str(cache_dir),
            ckpt_every=args.ckpt_every,
            progress=args.progress,
        )
    )
    resume = run_dir if (run_dir / "state.pt").is_file() else None
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(fp_path, fp)
    timing_path = run_dir / "timing.json"
    prior = json.loads(timing_path.read_text())["train_s"] if timing_path.is_file() else 0.0
    t0 = time.perf_counter()

    def keep_time(step: int, model) -> None:
        # Written right after each checkpoint, so a resumed run adds only the time since it.
        if step % cfg.ckpt_every == 0 or step == cfg.length:
            _write_json(timing_path, {"train_s": prior + time.perf_counter() - t0, "step": step})

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*smaller than the patch.*")
        result = train(cfg, resume=resume, hooks=[keep_time])
    if result.stopped:  # the state was saved at result.step: count the time up to it
        _write_json(timing_path, {"train_s": prior + time.perf_counter() - t0, "step": result.step})
        raise Stopped(f"stopped at step {result.step} of {run_dir}; rerun to continue")
    train_s = json.loads(timing_path.read_text())["train_s"] if timing_path.is_file() else prior
    start, last = _read_log(run_dir)
    device = next(result.model.parameters()).device
    t0 = time.perf_counter()
    sets = _evaluate_sets(result.model, args.sets, root, args.eval_lr_source)
    eval_s = time.perf_counter() - t0
    rec = {
        "baseline": job.baseline,
        "variant": job.variant,
        "seed": job.seed,
        "fingerprint": fp,
        "lr": job.base_lr * job.lr_scale,
        "params": start.get("params", sum(p.numel() for p in result.model.parameters())),
        "train_images": start.get("images"),
        "steps": result.step,
        "final_loss": last["loss"] if last else None,
        "train_s": train_s,
        "eval_s": eval_s,
        "device": str(device),
        "device_name": _device_name(device),
        "torch_threads": torch.get_num_threads(),
        "sets": sets,
    }
    _write_json(result_path, rec)
    if not args.keep_state:
        # Finished and measured: the optimiser state is dead weight (3x the model); the run is
        # skipped from result.json and re-evaluated from last.safetensors.
        (run_dir / "state.pt").unlink(missing_ok=True)
    return rec, True


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _device_name(device) -> str:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()} ({os.cpu_count()} logical)"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()}"


def _prepare_pairs(hr_dirs: Sequence[str], boundary: str, cache_dir: Path, workers: int) -> float:
    """Decode the training images and make their LR once (disk cache shared by every run)."""
    from lightsr.data.training import PairStore, find_training_images

    t0 = time.perf_counter()
    images = find_training_images(hr_dirs, scale=SCALE, lr_source="resize")
    PairStore(images, scale=SCALE, boundary=boundary, cache_dir=cache_dir, threads=max(1, workers))
    return time.perf_counter() - t0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baselines", nargs="+", default=["edsr_baseline", "imdn"])
    ap.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        choices=list(VARIANTS),
        help="baseline_lr2x: control, the baseline at the strategies' learning rate",
    )
    ap.add_argument("--steps", type=int, default=5000, help="optimiser steps per run")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr-patch", type=int, default=48, help="LR patch side (HR = 4x)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--lr",
        type=float,
        default=None,
        help="base learning rate for every baseline "
        f"(default: each baseline's own recipe, {BASELINE_LR})",
    )
    ap.add_argument(
        "--strategy-lr-scale",
        type=float,
        default=2.0,
        help="learning-rate multiplier of the GGAS/CWSS variants (paper Sec. 3.2: 2)",
    )
    ap.add_argument("--schedule", choices=["step", "cosine", "constant"], default="step")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument(
        "--train-data",
        nargs="+",
        default=[str(SHARED / "data" / "T91" / "HR"), str(SHARED / "data" / "BSD200" / "HR")],
    )
    ap.add_argument("--bench-root", default=str(SHARED / "data"))
    ap.add_argument(
        "--sets",
        nargs="*",
        default=["Set5", "Set14", "B100"],
        help="benchmark sets under --bench-root; none: train only (evaluate in a later call)",
    )
    ap.add_argument(
        "--eval-lr-source",
        default="folder-clamp",
        help="see lightsr.data.benchmark (folder-clamp = the replicate-boundary LR files)",
    )
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--progress", action="store_true", help="a progress bar per training run")
    ap.add_argument("--ckpt-every", type=int, default=500, help="steps between resumable states")
    ap.add_argument("--runs-dir", type=Path, default=None, help="default runs/strategies_x4/<tag>")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--doc", type=Path, default=DOC)
    ap.add_argument("--label", default="", help="headline of the page, e.g. 'SMOKE RUN ...'")
    ap.add_argument(
        "--keep-state", action="store_true", help="keep state.pt of finished runs (default: drop)"
    )
    ap.add_argument("--max-runs", type=int, default=None, help="train at most this many now")
    ap.add_argument("--report-only", action="store_true", help="train nothing; rebuild outputs")
    ap.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="rebuild --json and --doc from this written JSON alone (no run folders needed)",
    )
    return ap


def rebuild_report(report: Mapping[str, Any], command: str) -> dict[str, Any]:
    """``report`` (a written JSON) with its summary and verdicts derived again from its runs
    by the current rules; ``command`` is recorded as ``rebuilt_by``."""
    budget, records = report["budget"], report["runs"]
    present = {r["variant"] for r in records}
    smoke = smoke_reason(budget["steps"], report.get("label", ""))
    summary = summarize(
        records,
        baselines=list(budget["base_lr"]),
        variants=[v for v in VARIANTS if v in present],
        sets=budget["eval_sets"],
        judge=smoke is None,
    )
    return {
        **report,
        "rebuilt_by": command,
        "verdicts": verdict_lines(summary, smoke=smoke),
        "summary": summary,
    }


def _write_outputs(report: Mapping[str, Any], json_path: Path, doc_path: Path) -> None:
    _write_json(json_path, report)
    text = render_markdown(report)
    from lightsr.checkpoint import atomic_write

    atomic_write(doc_path, lambda tmp: Path(tmp).write_text(text))
    print("\n".join(report["verdicts"]))
    print(f"wrote {json_path} and {doc_path}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.from_json is not None:
        command = "python benchmarks/compare_strategies.py " + shlex.join(
            sys.argv[1:] if argv is None else argv
        )
        report = json.loads(args.from_json.read_text(encoding="utf-8"))
        _write_outputs(rebuild_report(report, command), args.json, args.doc)
        return 0
    import torch

    import lightsr
    from lightsr.errors import ConfigError, LightSRError

    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = [b for b in args.baselines if b not in lightsr.list_models()]
    if unknown:
        sys.exit(f"unknown baseline(s) {unknown}; see `lightsr list`.")
    base_lr = {}
    for b in args.baselines:
        if args.lr is None and b not in BASELINE_LR:
            sys.exit(f"no recipe learning rate is known for {b}; give --lr.")
        base_lr[b] = args.lr if args.lr is not None else BASELINE_LR[b]
    variants = list(dict.fromkeys(["baseline", *args.variants]))  # gains need the baseline
    budget = Budget(
        steps=args.steps,
        batch=args.batch,
        lr_patch=args.lr_patch,
        schedule=args.schedule,
        strategy_lr_scale=args.strategy_lr_scale,
        hr_dirs=tuple(str(Path(d)) for d in args.train_data),
        amp=args.amp,
    )
    runs_root = args.runs_dir or REPO / "runs" / "strategies_x4" / budget.tag
    cache_dir = (args.runs_dir or REPO / "runs" / "strategies_x4") / "cache"
    jobs = [
        Job(b, v, seed, base_lr[b], budget, runs_root / b / v / f"seed{seed}")
        for b in args.baselines
        for v in variants
        for seed in args.seeds
    ]

    records, missing, trained, prepare_s = [], [], 0, None
    try:
        from lightsr.data.benchmark import open_benchmark

        for name in args.sets:  # a missing set fails now, not after hours of training
            open_benchmark(Path(args.bench_root) / name, scale=SCALE, lr_source=args.eval_lr_source)
        for job in jobs:
            done = (job.run_dir / "result.json").is_file()
            if not done and (
                args.report_only or (args.max_runs is not None and trained >= args.max_runs)
            ):
                missing.append(f"{job.baseline}/{job.variant}/seed{job.seed}")
                continue
            if not done and prepare_s is None:
                prepare_s = _prepare_pairs(budget.hr_dirs, budget.boundary, cache_dir, args.workers)
                print(f"training pairs ready ({prepare_s:.1f} s)", flush=True)
            print(f"{job.baseline} {job.variant} seed {job.seed}: ", end="", flush=True)
            rec, now = run_job(job, args, cache_dir)
            trained += now
            records.append(rec)
            print(
                ("trained " if now else "done before; ")
                + f"{rec['train_s']:.1f} s train, "
                + ", ".join(f"{s} {rec['sets'][s]['psnr']:.3f}" for s in args.sets),
                flush=True,
            )
    except Stopped as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 130
    except (LightSRError, ConfigError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2

    smoke = smoke_reason(budget.steps, args.label)
    summary = summarize(
        records, baselines=args.baselines, variants=variants, sets=args.sets, judge=smoke is None
    )
    first = records[0] if records else {}
    report = {
        "benchmark": "GGAS/CWSS vs baseline at a fixed small budget, x4, beside paper Table 2",
        "label": args.label,
        "command": "python benchmarks/compare_strategies.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "budget": {
            "steps": budget.steps,
            "batch": budget.batch,
            "lr_patch": budget.lr_patch,
            "hr_patch": budget.lr_patch * SCALE,
            "schedule": budget.schedule,
            "schedule_note": {
                "step": "x0.5 once at 2/3 of the run",
                "cosine": "cosine to 0",
                "constant": "no decay",
            }[budget.schedule],
            "base_lr": base_lr,
            "strategy_lr_scale": budget.strategy_lr_scale,
            "seeds": args.seeds,
            "train_data": [str(d) for d in budget.hr_dirs],
            "train_images_note": (
                f"T91 + BSD200 ({first.get('train_images', '?')} of 291 images at least as "
                f"large as the {budget.lr_patch * SCALE}-pixel HR patch; LR = exact MATLAB "
                "bicubic, replicate boundary; flips/rotations)"
            ),
            "boundary": budget.boundary,
            "amp": budget.amp,
            "eval_sets": args.sets,
            "eval_lr_source": args.eval_lr_source,
        },
        "machine": {
            # every device the runs trained on (a comparison may be continued elsewhere)
            "device_name": "; ".join(
                dict.fromkeys(r["device_name"] for r in records)
                or [_device_name(_auto_device() if args.device == "auto" else args.device)]
            ),
            "torch_threads": torch.get_num_threads(),
            "workers": args.workers,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "lightsr": lightsr.__version__,
            "logical_cpus": os.cpu_count(),
            "prepare_s_this_call": prepare_s,
        },
        "totals": {
            "runs": len(records),
            "train_s": sum(r["train_s"] for r in records),
            "eval_s": sum(r["eval_s"] for r in records),
        },
        "paper": {
            "source": PAPER_SOURCE,
            "table2": {b: paper_rows(b) for b in args.baselines if b in PAPER_TABLE2},
            "params_k": {b: PAPER_PARAMS_K[b] for b in args.baselines if b in PAPER_PARAMS_K},
        },
        "verdicts": verdict_lines(summary, smoke=smoke),
        "summary": summary,
        "missing": missing,
        "runs": records,
    }
    _write_outputs(report, args.json, args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
