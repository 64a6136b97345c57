"""``lightsr list``: the registered models, or (``--weights``) every named weights file."""

from __future__ import annotations

import argparse
import dataclasses
import json

from ..hub import WEIGHTS_DIR, is_cached, list_weights, measured_cost, measured_figures
from ..registry import create_model, get_spec, list_models

_SETS = ("Set5", "Set14", "B100")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list the registered models, or with --weights every named weights file",
    )
    p.add_argument("--params", action="store_true", help="also count parameters at each scale")
    p.add_argument(
        "--weights",
        action="store_true",
        help="list the named weights (use with --weights NAME in upscale, eval, profile, ...), "
        "int8 entries with their base and measured cost",
    )
    p.add_argument("--json", action="store_true", help="with --weights: machine-readable JSON")
    p.set_defaults(func=run)


def _weights_rows() -> list[dict]:
    measured = measured_figures()
    with_bf16_floats = measured_figures(int8_floats="bf16")
    rows = []
    for e in list_weights():
        row = dataclasses.asdict(e)
        row["paper"] = dict(e.paper)
        row["options"] = dict(e.options)
        row["cached"] = is_cached(e.name)
        if e.bundled and row["cached"]:
            row["size"] = (WEIGHTS_DIR / e.bundled).stat().st_size
        row["measured"] = measured.get(e.name, {})
        # an int8 entry: its PSNR-Y minus its base's, per set measured for both
        row["cost"] = measured_cost(e.name, measured)
        # where measured so: the cost with its kept convs in bf16 (OpenVINO, native bf16)
        bf16_cost = measured_cost(e.name, with_bf16_floats)
        row["cost_bf16_floats"] = bf16_cost if bf16_cost != row["cost"] else {}
        rows.append(row)
    return rows


def _cell(paper: dict, measured: dict, name: str) -> str:
    p = f"{paper[name]:.2f}" if name in paper else "-"
    m = f"{measured[name]:.2f}" if name in measured else "-"
    return f"{m}/{p}"


def _cost(row: dict) -> str:
    """The last column: an int8 entry's cost, ``-0.04/-0.03/-0.02 vs a2f_sd_x4``; for an entry
    fine-tuned from another, that entry (the other end of ``--denoise-strength``); else ""."""
    if row["fine_tuned_from"]:
        return f"  fine-tuned from {row['fine_tuned_from']} (--denoise-strength)"
    if not row["base"]:
        return ""
    text = f"  {_figures(row['cost'])} vs {row['base']}"
    if row["cost_bf16_floats"]:
        text += f" (kept convs in bf16, native-bf16 CPUs: {_figures(row['cost_bf16_floats'])})"
    return text


def _figures(cost: dict) -> str:
    return "/".join(f"{cost[s]:+.2f}" if s in cost else "-" for s in _SETS)


def run(args: argparse.Namespace) -> int:
    if args.weights:
        rows = _weights_rows()
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        print(
            f"{'name':<25} {'arch':<8} {'x':>2} {'source':<17} {'licence':<16} {'size':>9} "
            f"{'cached':<6} "
            + " ".join(f"{s + ' ours/paper':>17}" for s in _SETS)
            + "  int8 cost ("
            + "/".join(_SETS)
            + ")"
        )
        for r in rows:
            size = f"{r['size'] / 1e6:.2f} MB" if r["size"] else "-"
            cached = "bundled" if r["bundled"] else ("yes" if r["cached"] else "no")
            print(
                f"{r['name'] + (' *' if r['default'] else ''):<25} {r['arch']:<8} "
                f"{r['scale']:>2} {r['source']:<17} {r['licence'][:16]:<16} {size:>9} "
                f"{cached:<7}"
                + " ".join(f"{_cell(r['paper'], r['measured'], s):>17}" for s in _SETS)
                + _cost(r)
            )
        print("* the default at its scale; PSNR-Y: measured here (benchmarks/zoo_table.py) / paper")
        print(
            "NAME_int8: NAME's file run at int8 (upscale/eval --weights NAME_int8); its cost: "
            "its PSNR-Y minus NAME's"
        )
        print(
            "--denoise-strength S (0..1): a model fine-tuned from another, blended with it "
            "(0: the other, 1: itself)"
        )
        return 0
    for name in list_models():
        spec = get_spec(name)
        line = f"{name:<16} x{'/x'.join(map(str, spec.scales)):<9} {spec.paper}"
        if args.params:
            counts = [
                sum(p.numel() for p in create_model(name, scale=s).parameters())
                for s in spec.scales
            ]
            line += "  params " + " / ".join(f"{c:,}" for c in counts)
        print(line)
    return 0
