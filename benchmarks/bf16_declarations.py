"""The measurements behind the bf16 declarations of ``register_model``: Set5 PSNR-Y change
from fp32 under torch's bf16 autocast (image convs fp32: ``bf16_safe``) and under OpenVINO's
bf16 (every layer: ``bf16_engine_scales``), per model and scale with trained weights.

For A2F-SD, FMEN-S and MAFFSRN at each scale with weights (lightsr's bundled ``a2f_sd_xS`` and
``maffsrn_xS``; the authors' ``a2f_sd_x4.pt`` and ``fmen_s_x4.pt`` from ``../shared``), the
declared flags beside the measured changes. OpenVINO's bf16 is measured only on a CPU with
native bf16 (elsewhere OpenVINO computes f32); torch's bf16 is emulated there, numerically the
same. ``tests/test_precision.py`` re-measures some of these on every run.

    python benchmarks/bf16_declarations.py

Writes benchmarks/results/bf16_declarations/<cpu-slug>.json.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_backends as bb  # noqa: E402  (quality: Set5 PSNR-Y)
from labelled_runs import save_run  # noqa: E402

import lightsr  # noqa: E402
from lightsr.hardware import cpu_has_native_bf16  # noqa: E402
from lightsr.quantize import openvino_available  # noqa: E402
from lightsr.upscale import Upscaler  # noqa: E402

OFFICIAL = bb.bu.SHARED / "weights" / "official"
#: Per (model, scale[, "authors"]): a hub entry, or an authors' file (.pt) in ../shared.
WEIGHTS = {
    ("a2f_sd", 2): "a2f_sd_x2",
    ("a2f_sd", 3): "a2f_sd_x3",
    ("a2f_sd", 4): "a2f_sd_x4",
    ("a2f_sd", 4, "authors"): "a2f_sd_x4.pt",
    ("fmen_s", 4, "authors"): "fmen_s_x4.pt",
    ("maffsrn", 2): "maffsrn_x2",
    ("maffsrn", 3): "maffsrn_x3",
    ("maffsrn", 4): "maffsrn_x4",
}


def _load(weights: str):
    if weights.endswith(".pt"):
        return lightsr.load_official(OFFICIAL / weights)
    return lightsr.hub.load_weights(weights)


def main() -> int:
    torch.set_num_threads(2)
    engine = cpu_has_native_bf16() and openvino_available()
    record: dict[str, dict] = {}
    for key, weights in WEIGHTS.items():
        if weights.endswith(".pt") and not (OFFICIAL / weights).is_file():
            print(f"{weights}: absent from {OFFICIAL}, skipped", file=sys.stderr)
            continue
        model = _load(weights)
        scale = model.scale

        def set5(runner: Upscaler, scale: int = scale) -> float:
            return bb.quality(runner._forward, True, None, scale=scale)["set5_psnr_y"]

        fp32 = set5(Upscaler(model, tile=None, precision="fp32"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # emulated bf16 where it is not native
            torch_bf16 = set5(Upscaler(model, tile=None, precision="bf16"))
        row = {
            "weights": weights,
            "fp32_set5_psnr_y": fp32,
            "torch_bf16_change": round(torch_bf16 - fp32, 4),
            "declared_bf16_safe": model.bf16_safe,
            "declared_bf16_in_engines": model.bf16_in_engines,
        }
        if engine:
            ov = set5(Upscaler(model, tile=None, precision="bf16", backend="openvino"))
            row["openvino_bf16_change"] = round(ov - fp32, 4)
        name = f"{key[0]} x{key[1]}" + (" (authors')" if len(key) > 2 else "")
        record[name] = row
        print(name, row, flush=True)
    path = save_run(
        "bf16_declarations",
        "declarations",
        record,
        what="Set5 PSNR-Y (LR_bicubic, border = scale) change from fp32 under torch's bf16 "
        "autocast (image convs fp32) and OpenVINO's bf16, per model, scale and weights",
        how="Upscaler untiled; openvino_bf16_change only on a CPU with native bf16",
        command="python benchmarks/bf16_declarations.py",
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
