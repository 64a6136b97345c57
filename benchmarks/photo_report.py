"""The photo model against the clean model and bicubic: degraded benchmarks, clean ones, crops.

1. Degraded sets with ground truth: for each preset (``jpeg``, ``noise``, ``blur_noise_jpeg``)
   and each of Set14 and B100, ``lightsr eval --degrade PRESET --degrade-seed 0`` (LR made from
   the HR by :func:`lightsr.data.degrade.degrade_for_eval`, the same LR for every model) with
   plain bicubic, the clean model and the photo model; PSNR-Y/SSIM-Y, crop = scale. The photo
   model should beat the clean one by >= 1 dB and bicubic by >= 0.5 dB in every cell.
2. Clean sets: ``lightsr eval --lr-source folder-clamp`` on Set5/Set14/B100 (the papers' LR);
   the photo model should lose <= 1 dB to the clean model.
3. Crops on real photos without ground truth (RealSRSet): per image one PNG with panels of
   the same region, LR (nearest), bicubic, clean model, the photo model at denoise strength
   :data:`CROP_STRENGTH` (named photo weights only), photo model, in docs/photo/.
4. With ``--denoise-strengths S ...``: 1 and 2 for the photo weights blended with the clean
   model they were fine-tuned from (``--denoise-strength S``), each cell against the bars: the
   trade-off a user sets with ``lightsr upscale --denoise-strength``.

Writes benchmarks/results/photo_x{s}.json, then docs/PHOTO.md from every photo_x*.json there
(one section per scale, so reporting x2 keeps the x4 section). The models default to the
scale's named weights: ``a2f_sd_photo_x{s}`` and ``a2f_sd_x{s}``.

    python benchmarks/photo_report.py [--scale 4] [--photo NAME|CKPT] [--clean NAME|CKPT]
                                      [--denoise-strengths S ...] [--skip-eval] [--skip-crops]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import lightsr
from lightsr.atomic import atomic_write_bytes, atomic_write_text
from lightsr.data.io import read_image
from lightsr.hardware import machine_record
from lightsr.hub import fetch_weights, list_weights, sha256_of
from lightsr.upscale import Upscaler

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results"
DOC = REPO / "docs" / "PHOTO.md"
CROPS = REPO / "docs" / "photo"
PRESETS = ("jpeg", "noise", "blur_noise_jpeg")
DEGRADED_SETS = ("Set14", "B100")
CLEAN_SETS = ("Set5", "Set14", "B100")
#: The issue's bars: photo - clean and photo - bicubic on degraded sets; clean - photo on clean.
BAR_VS_CLEAN, BAR_VS_BICUBIC, BAR_CLEAN_LOSS = 1.0, 0.5, 1.0
#: Real photos for the crops: the JPEGs of RealSRSet first, then old photos, a comic, a scan.
CROP_IMAGES = (
    "0014.jpg",
    "0030.jpg",
    "ADE_val_00000114.jpg",
    "oldphoto2.png",
    "dog.png",
    "comic3.png",
    "painting.png",
    "chip.png",
)
CROP_LR = 64  # LR side of a crop; each panel is CROP_LR * scale pixels wide
#: The crops also show the photo weights at this denoise strength (when they are named weights,
#: the only ones that can be blended): what the knob does, between the clean and photo panels.
CROP_STRENGTH = 0.5


def _model_args(spec: str) -> list[str]:
    if spec == "bicubic":
        return ["--model", "bicubic"]
    return ["--checkpoint", spec] if Path(spec).is_file() else ["--weights", spec]


def _eval(spec: str, scale: int, sets: tuple[str, ...], extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        cmd = [sys.executable, "-m", "lightsr", "eval", *_model_args(spec), "--scale", str(scale)]
        cmd += [*extra, "-o", str(out), "--quiet", *(str(SHARED / "data" / s) for s in sets)]
        subprocess.run(cmd, check=True, cwd=REPO)
        rows = json.loads(out.read_text())
    return {r["dataset"]: {"psnr": r["psnr"], "ssim": r["ssim"]} for r in rows}


def evaluate_all(models: dict[str, str], scale: int) -> dict:
    degraded: dict = {}
    for preset in PRESETS:
        print(f"degraded: {preset} ...", file=sys.stderr, flush=True)
        degraded[preset] = {
            key: _eval(spec, scale, DEGRADED_SETS, ["--degrade", preset, "--degrade-seed", "0"])
            for key, spec in models.items()
        }
    print("clean ...", file=sys.stderr, flush=True)
    clean = {
        key: _eval(spec, scale, CLEAN_SETS, ["--lr-source", "folder-clamp"])
        for key, spec in models.items()
    }
    return {"degraded": degraded, "clean": clean}


def evaluate_strengths(
    photo: str, strengths: list[float], scale: int
) -> dict[str, dict[str, dict]]:
    """The photo weights at each denoise strength: the degraded and clean cells of
    :func:`evaluate_all`, keyed by the strength as written (``"0.5"``)."""
    sweep: dict[str, dict[str, dict]] = {}
    for strength in strengths:
        print(f"denoise strength {strength:g} ...", file=sys.stderr, flush=True)
        blend = ["--denoise-strength", f"{strength:g}"]
        degraded = {
            preset: _eval(
                photo, scale, DEGRADED_SETS, [*blend, "--degrade", preset, "--degrade-seed", "0"]
            )
            for preset in PRESETS
        }
        clean = _eval(photo, scale, CLEAN_SETS, [*blend, "--lr-source", "folder-clamp"])
        sweep[f"{strength:g}"] = {"degraded": degraded, "clean": clean}
    return sweep


def strength_rows(report: dict) -> list[str]:
    """The trade-off table: one row per denoise strength (0 is the clean model, 1 the photo
    model as trained), each cell photo - clean / photo - bicubic in dB, "✗" where a bar is
    missed, and the count of missed bars."""
    ev, sweep = report["evaluation"], report.get("strengths") or {}
    deg, clean = ev["degraded"], ev["clean"]
    # Strength 0 is the clean model the photo model was fine-tuned from: the "clean" column
    # (the default --clean is that model).
    rows = {0.0: {"degraded": {p: deg[p]["clean"] for p in PRESETS}, "clean": clean["clean"]}}
    rows.update({float(k): v for k, v in sweep.items()})
    rows[1.0] = {"degraded": {p: deg[p]["photo"] for p in PRESETS}, "clean": clean["photo"]}
    cells = [(p, s) for p in PRESETS for s in DEGRADED_SETS]
    lines = [
        "| strength | "
        + " | ".join(f"{p} {s}" for p, s in cells)
        + " | "
        + " | ".join(f"clean {s}" for s in CLEAN_SETS)
        + " | bars missed |",
        "|---|" + "---|" * (len(cells) + len(CLEAN_SETS) + 1),
    ]
    for strength in sorted(rows):
        row, missed, texts = rows[strength], 0, []
        for p, s in cells:
            v = row["degraded"][p][s]["psnr"]
            d_clean = v - deg[p]["clean"][s]["psnr"]
            d_bic = v - deg[p]["bicubic"][s]["psnr"]
            miss = (d_clean < BAR_VS_CLEAN) + (d_bic < BAR_VS_BICUBIC)
            missed += miss
            texts.append(f"{d_clean:+.2f} / {d_bic:+.2f}{' ✗' if miss else ''}")
        for s in CLEAN_SETS:
            d = row["clean"][s]["psnr"] - clean["clean"][s]["psnr"]
            miss = -d > BAR_CLEAN_LOSS
            missed += miss
            texts.append(f"{d:+.2f}{' ✗' if miss else ''}")
        label = {0.0: "0 (clean model)", 1.0: "1 (photo model)"}.get(strength, f"{strength:g}")
        lines.append(f"| {label} | " + " | ".join(texts) + f" | {missed} |")
    return lines


def _load(spec: str, scale: int):
    if spec == "bicubic":
        return lightsr.create_model("bicubic", scale=scale)
    return lightsr.load(spec)


def _detail_crop(lr: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left of the ``side`` x ``side`` window with the most gradient energy (the region
    where a model's handling of edges and texture shows), on a coarse grid."""
    grey = lr[..., :3].astype(np.float32).mean(axis=2)
    energy = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
    h, w = grey.shape
    best, where = -1.0, (0, 0)
    step = max(4, side // 4)
    for y in range(0, max(1, h - side + 1), step):
        for x in range(0, max(1, w - side + 1), step):
            e = float(energy[y : y + side - 1, x : x + side - 1].sum())
            if e > best:
                best, where = e, (y, x)
    return where


def crop_panels(models: dict[str, str]) -> dict[str, tuple[str, float | None]]:
    """The crops' model panels after the LR, left to right: label -> (model, denoise strength
    or None). The photo weights at :data:`CROP_STRENGTH` come between the clean and the photo
    panels when the photo model is named weights that can be blended."""
    panels: dict[str, tuple[str, float | None]] = {k: (v, None) for k, v in models.items()}
    photo = models["photo"]
    names = {e.name: e for e in list_weights()}
    if photo in names and names[photo].fine_tuned_from:
        blend = {f"photo at {CROP_STRENGTH:g}": (photo, CROP_STRENGTH)}
        keys = list(panels)
        at = keys.index("photo")
        panels = {k: panels[k] for k in keys[:at]} | blend | {k: panels[k] for k in keys[at:]}
    return panels


def crops(models: dict[str, str], scale: int) -> list[str]:
    upscalers = {
        key: Upscaler(
            _load(spec, scale)
            if strength is None
            else lightsr.load(spec, denoise_strength=strength),
            tile=None,
        )
        for key, (spec, strength) in crop_panels(models).items()
    }
    written = []
    CROPS.mkdir(parents=True, exist_ok=True)
    for name in CROP_IMAGES:
        path = SHARED / "data" / "RealSRSet" / "LR" / name
        if not path.is_file():
            continue
        lr = read_image(path)[..., :3]
        side = min(CROP_LR, lr.shape[0], lr.shape[1])
        y, x = _detail_crop(lr, side)
        # Upscale a context window around the crop so the crop is away from image borders.
        pad = 16
        y0, x0 = max(0, y - pad), max(0, x - pad)
        window = lr[y0 : y + side + pad, x0 : x + side + pad]
        oy, ox = (y - y0) * scale, (x - x0) * scale
        s = side * scale
        panels = [
            ("LR (nearest)", np.kron(lr[y : y + side, x : x + side], np.ones((scale, scale, 1))))
        ]
        for key, up in upscalers.items():
            out = up(window)
            panels.append((key, out[oy : oy + s, ox : ox + s]))
        label_h = 16
        sheet = Image.new("RGB", (len(panels) * (s + 4) - 4, s + label_h), "white")
        draw = ImageDraw.Draw(sheet)
        for i, (label, panel) in enumerate(panels):
            sheet.paste(Image.fromarray(np.asarray(panel, dtype=np.uint8)), (i * (s + 4), label_h))
            draw.text((i * (s + 4) + 2, 2), label, fill="black")
        target = CROPS / f"{Path(name).stem}_x{scale}.png"
        buf = _png_bytes(sheet)
        atomic_write_bytes(target, buf, overwrite=True)
        written.append(target.name)
    return written


def _png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def markdown(report: dict) -> str:
    """One scale's section of docs/PHOTO.md."""
    scale = report["scale"]
    keys = list(report["models"])
    lines = [
        f"## x{scale}",
        "",
        f"Regenerate with `{report['command']}`. Models: "
        + ", ".join(f"{k} = `{v}`" for k, v in report["models"].items())
        + (f" (photo file sha256 {report['photo_sha256']})" if "photo_sha256" in report else "")
        + ".",
        "",
        "### Degraded benchmarks (PSNR-Y, dB; LR made from the HR by `lightsr eval --degrade "
        "PRESET --degrade-seed 0`)",
        "",
        "| preset | set | " + " | ".join(keys) + " | photo - clean | photo - bicubic |",
        "|---|---|" + "---|" * (len(keys) + 2),
    ]
    deg = report["evaluation"]["degraded"]
    for preset in PRESETS:
        for s in DEGRADED_SETS:
            v = {k: deg[preset][k][s]["psnr"] for k in keys}
            d_clean, d_bic = v["photo"] - v["clean"], v["photo"] - v["bicubic"]
            lines.append(
                f"| {preset} | {s} | "
                + " | ".join(f"{v[k]:.2f}" for k in keys)
                + f" | {d_clean:+.2f}{'' if d_clean >= BAR_VS_CLEAN else ' (below bar)'}"
                + f" | {d_bic:+.2f}{'' if d_bic >= BAR_VS_BICUBIC else ' (below bar)'} |"
            )
    clean = report["evaluation"]["clean"]
    lines += [
        "",
        "### Clean benchmarks (PSNR-Y, dB; the papers' LR, `--lr-source folder-clamp`)",
        "",
        "| set | " + " | ".join(keys) + " | photo - clean |",
        "|---|" + "---|" * (len(keys) + 1),
    ]
    for s in CLEAN_SETS:
        v = {k: clean[k][s]["psnr"] for k in keys}
        d = v["photo"] - v["clean"]
        flag = "" if -d <= BAR_CLEAN_LOSS else " (below bar)"
        lines.append(f"| {s} | " + " | ".join(f"{v[k]:.2f}" for k in keys) + f" | {d:+.2f}{flag} |")
    if report.get("strengths"):
        lines += [
            "",
            "### Denoise strength: the trade-off (`--denoise-strength S`)",
            "",
            "The photo weights blended with the clean model's, "
            "`clean + S * (photo - clean)`: 0 is the clean model, 1 the photo model as "
            "trained. Degraded cells: photo - clean / photo - bicubic (bars +1.0 / +0.5); "
            "clean cells: photo - clean (bar -1.0); ✗: a bar missed. PSNR-Y, dB, LR as above.",
            "",
            *strength_rows(report),
        ]
    if report.get("crops"):
        lines += [
            "",
            "### Real photos (RealSRSet, no ground truth)",
            "",
            "Each image: the region of the LR with the most edge energy; panels left to right: "
            "LR (nearest), "
            + ", ".join(report.get("crop_panels") or keys)
            + (
                f" (photo at {CROP_STRENGTH:g}: `--denoise-strength {CROP_STRENGTH:g}`)."
                if f"photo at {CROP_STRENGTH:g}" in (report.get("crop_panels") or [])
                else "."
            ),
            "",
        ]
        lines += [f"![{c}](photo/{c})" for c in report["crops"]]
    if report.get("lineage"):
        runs = report["lineage"]
        lines += [
            "",
            "### Lineage of the photo model",
            "",
            "The runs behind the photo weights, oldest first (each started from the previous "
            "one's EMA weights; `init_from` in its `training/<run>/config.json`); hours = steps "
            "/ logged it/s on the session's 2 CPU cores:",
            "",
            "| run | steps | training hours |",
            "|---|---|---|",
            *(f"| `{r['run']}` | {r['steps']:,} | {r['hours']:.2f} |" for r in runs),
            f"| all | {sum(r['steps'] for r in runs):,} | {sum(r['hours'] for r in runs):.2f} |",
        ]
    m = report["machine"]
    lines += [
        "",
        f"Measured on {m['cpu']} ({m['logical_cpus']} logical CPUs), torch {m['torch']}.",
        "",
    ]
    return "\n".join(lines)


def result_path(scale: int) -> Path:
    """The JSON a scale's report is written to (and --skip-eval/--skip-crops read)."""
    return RESULTS / f"photo_x{scale}.json"


def document(reports: list[dict]) -> str:
    """docs/PHOTO.md: a section per scale, the larger scale (the first model made) first."""
    sections = [markdown(r) for r in sorted(reports, key=lambda r: -r["scale"])]
    intro = (
        "The runs that were not shipped, what they measured and what they showed: "
        "[PHOTO_EXPERIMENTS.md](PHOTO_EXPERIMENTS.md)."
    )
    return "\n".join(["# The photo models", "", intro, "", *sections])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--photo", help="photo model (default: the weights a2f_sd_photo_x<scale>)")
    ap.add_argument("--clean", help="clean model (default: the weights a2f_sd_x<scale>)")
    ap.add_argument(
        "--denoise-strengths",
        type=float,
        nargs="+",
        default=[],
        metavar="S",
        help="also evaluate the photo weights at these denoise strengths (0 < S < 1)",
    )
    ap.add_argument("--skip-eval", action="store_true", help="reuse the evaluation in the JSON")
    ap.add_argument("--skip-crops", action="store_true", help="keep the crops the JSON names")
    args = ap.parse_args()
    if (args.skip_eval or args.skip_crops) and not result_path(args.scale).is_file():
        ap.error(
            f"--skip-eval/--skip-crops reuse {result_path(args.scale).relative_to(REPO)}, which "
            f"does not exist: run once without them for x{args.scale}"
        )
    args.photo = args.photo or f"a2f_sd_photo_x{args.scale}"
    args.clean = args.clean or f"a2f_sd_x{args.scale}"
    models = {"bicubic": "bicubic", "clean": args.clean, "photo": args.photo}
    result = result_path(args.scale)
    command = ("python benchmarks/photo_report.py " + " ".join(sys.argv[1:])).strip()
    report: dict = {"command": command, "scale": args.scale, "models": models}
    if any(not 0 < s < 1 for s in args.denoise_strengths):
        ap.error("--denoise-strengths: each must be between 0 and 1 (0 and 1 are always shown)")
    partner = {e.name: e.fine_tuned_from for e in list_weights()}.get(args.photo, "")
    if args.denoise_strengths and partner != args.clean:
        # The table's row 0 is the clean column: it must be the model the blends start from.
        ap.error(
            f"--denoise-strengths needs --photo to name photo weights fine-tuned from --clean "
            f"({args.photo} was fine-tuned from {partner or 'nothing'}, --clean is {args.clean})"
        )
    if args.skip_eval:  # the figures, and the command that measured them, from the last run
        previous = json.loads(result.read_text())
        for key in ("evaluation", "command", "machine", "strengths"):
            if key in previous:
                report[key] = previous[key]
    else:
        report["evaluation"] = evaluate_all(models, args.scale)
        if args.denoise_strengths:
            report["strengths"] = evaluate_strengths(
                args.photo, sorted(set(args.denoise_strengths)), args.scale
            )
    if args.skip_crops:  # keep the PNGs the last run made, and their names in the JSON
        previous_crops = json.loads(result.read_text())
        report["crops"] = previous_crops.get("crops", [])
        if "crop_panels" in previous_crops:
            report["crop_panels"] = previous_crops["crop_panels"]
    else:
        report["crops"] = crops(models, args.scale)
        report["crop_panels"] = list(crop_panels(models))
    photo_file = Path(args.photo) if Path(args.photo).is_file() else None
    if photo_file is None and args.photo in {e.name for e in list_weights()}:
        photo_file = fetch_weights(args.photo)  # a weights name: the file it names
    if photo_file is not None:
        report["photo_sha256"] = sha256_of(photo_file)
        from bundled_report import training_lineage  # benchmarks/ is this script's sys.path[0]

        report["lineage"] = training_lineage(photo_file.resolve())
    report.setdefault("machine", machine_record())
    atomic_write_text(result, json.dumps(report, indent=2) + "\n", overwrite=True)
    reports = [json.loads(f.read_text()) for f in sorted(RESULTS.glob("photo_x*.json"))]
    atomic_write_text(DOC, document(reports), overwrite=True)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
