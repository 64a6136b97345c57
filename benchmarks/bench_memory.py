"""Peak resident memory of upscaling a large photo on the CPU.

A synthetic 4000 x 3000 RGB photo (smooth colour fields, edges and sensor-like noise) is written
as a PNG, then a fresh Python process runs ``lightsr.upscale.upscale_files`` on it (x4 ->
16000 x 12000, written as a PNG) with the default automatic tile size; the parent reads the
child's peak resident set size (``ru_maxrss`` of RUSAGE_CHILDREN). The uint8 output alone is
576 MB and Pillow copies it into a 4-byte-per-pixel image (768 MB) to encode it, so the budget
left for the model is what this measures.

    python benchmarks/bench_memory.py                 # FMEN-S x4 (official weights if present)
    python benchmarks/bench_memory.py --size 800x600  # quick check

Writes benchmarks/results/upscale_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", ROOT.parent / "shared"))
LIMIT_BYTES = 2 * 2**30


def synthetic_photo(width: int, height: int, *, seed: int = 0) -> np.ndarray:
    """uint8 H x W x 3: low-frequency colour fields + a few hard edges + noise, made in row
    blocks so no full-size float copy exists."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 100 + 2, width // 100 + 2, 3)).astype(np.float32)
    out = np.empty((height, width, 3), np.uint8)
    xs = np.arange(width, dtype=np.float32) / 100.0
    x0 = xs.astype(int)
    fx = (xs - x0)[:, None]
    for r0 in range(0, height, 256):
        ys = np.arange(r0, min(r0 + 256, height), dtype=np.float32) / 100.0
        y0 = ys.astype(int)
        fy = (ys - y0)[:, None, None]
        top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
        bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
        block = top * (1 - fy) + bottom * fy
        stripes = (
            np.arange(width)[None, :] // 37 + (np.arange(r0, r0 + len(ys)) // 53)[:, None]
        ) % 7 == 0
        block[stripes] *= 0.5
        block += rng.normal(0, 0.02, block.shape).astype(np.float32)
        out[r0 : r0 + len(ys)] = np.clip(block * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def child(args: argparse.Namespace) -> None:
    import torch

    import lightsr
    from lightsr.upscale import Upscaler, upscale_files

    torch.set_num_threads(args.threads)
    w, h = map(int, args.size.lower().split("x"))
    args.hw = (h, w)
    weights = SHARED / "weights" / "official" / "fmen_s_x4.pt"
    if args.model == "fmen_s" and weights.is_file():
        model, source = lightsr.load_official(weights), "official fmen_s_x4.pt"
    else:
        model, source = lightsr.create_model(args.model, scale=4), "random weights"
    runner = Upscaler(model, tile=args.tile, precision="fp32", progress=False)
    t = time.perf_counter()
    report = upscale_files([args.input], args.out_dir, model=runner, progress=False)
    elapsed = time.perf_counter() - t
    assert report.written and not report.failed, report
    info = {
        "model": args.model,
        "weights": source,
        "tile": runner.tile if runner.tile != "auto" else runner._resolve_tile(*args.hw),
        "overlap": runner.overlap,
        "upscale_and_write_s": round(elapsed, 1),
        "output": str(report.written[0][1].name),
        "self_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    print("CHILD " + json.dumps(info), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4000x3000", help="WxH of the LR photo")
    ap.add_argument("--model", default="fmen_s")
    ap.add_argument("--tile", default="auto")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    ap.add_argument("--no-save", action="store_true", help="do not write the results JSON")
    args = ap.parse_args()
    if args.tile != "auto":
        args.tile = int(args.tile)
    if args.child:
        child(args)
        return 0

    sys.path.insert(0, str(ROOT / "src"))
    from lightsr.data.io import write_image

    w, h = map(int, args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="lightsr_mem_") as tmp:
        src = Path(tmp) / "photo.png"
        write_image(src, synthetic_photo(w, h))
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--input",
            str(src),
            "--out-dir",
            str(Path(tmp) / "out"),
            "--model",
            args.model,
            "--tile",
            str(args.tile),
            "--threads",
            str(args.threads),
            "--size",
            args.size,
        ]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return 1
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("CHILD "))
        info = json.loads(line[6:])
        out_file = Path(tmp) / "out" / info["output"]
        out_bytes = out_file.stat().st_size
    import torch

    result = {
        "what": f"upscale_files x4 of a synthetic {w}x{h} RGB PNG to {4 * w}x{4 * h} PNG on CPU",
        "lr_size_wh": [w, h],
        "hr_size_wh": [4 * w, 4 * h],
        "output_array_bytes": 16 * w * h * 3,
        "output_png_bytes": out_bytes,
        "peak_rss_bytes": peak,
        "peak_rss_gib": round(peak / 2**30, 3),
        "limit_gib": LIMIT_BYTES / 2**30,
        "under_limit": peak < LIMIT_BYTES,
        "wall_s": round(wall, 1),
        **info,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "command": "python benchmarks/bench_memory.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(result, indent=2))
    if not args.no_save:
        out = ROOT / "benchmarks" / "results" / "upscale_memory.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["under_limit"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
