"""The GGAS / CWSS comparison's report: from run records (or the written results JSON) to
gains, verdicts and docs/STRATEGIES.md, beside the paper's Table 2.

``benchmarks/compare_strategies.py`` trains the runs and calls this; everything here is pure
arithmetic and text on plain dicts (no torch, no models), plus :func:`write_report`, which writes
the JSON and the page atomically. Rebuilding the page from a committed JSON needs only this:

    report = json.loads(Path("benchmarks/results/strategies_x4.json").read_text())
    text = render_markdown(report)

It imports only the standard library and :mod:`lightsr.atomic`: ``strategies`` sits low in the
package's import order.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write

#: The comparison's scale: Table 2 is x4 (the training script trains and evaluates at it too).
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
# The variants compared
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


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON (a run record, the results file), written atomically."""
    text = json.dumps(data, indent=2) + "\n"
    # The benchmark's own records, rebuilt as a run progresses: replaced by design.
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), overwrite=True)


def write_report(report: Mapping[str, Any], json_path: str | Path, doc_path: str | Path) -> None:
    """Write ``report`` as JSON to ``json_path`` and its page (:func:`render_markdown`) to
    ``doc_path``, each atomically."""
    write_json(json_path, report)
    text = render_markdown(report)
    atomic_write(doc_path, lambda tmp: Path(tmp).write_text(text), overwrite=True)
