"""Time and memory of lightsr's exact resizes (MATLAB bicubic, Pillow's Lanczos) on a photo.

``lightsr.data.resize.Resize`` (what ``imresize``, ``--outscale`` and the bicubic model run)
on one 3000x4000 RGB uint8 image, per case: min wall time of ``--rounds`` and the peak of
the allocations it made (``tracemalloc``, which numpy reports its arrays to), beside Pillow's
own 8-bit RGB resize of the same image as a reference (its time only: Pillow's buffers are
not traced; Pillow rounds to 8 bits between its
passes and uses integer weights, so its pixels differ; lightsr's Lanczos equals Pillow's float
"F" resize of each channel). ``--src DIR`` runs the cases with another checkout's lightsr (a
``git worktree`` of an earlier commit; the whole image through its ``imresize`` and
``upscale.resize_image``), recorded under ``--label``; results accumulate per label in
``benchmarks/results/resize/<cpu>.json``.

    python benchmarks/bench_resize.py
    git worktree add /tmp/before 366a6d6
    python benchmarks/bench_resize.py --src /tmp/before/src --label "366a6d6"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# the child measures the checkout in $LIGHTSR_BENCH_SRC (--src), the parent this one
sys.path.insert(0, os.environ.get("LIGHTSR_BENCH_SRC") or str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from labelled_runs import add_comparison_arguments, label_of, run_child, save_run  # noqa: E402
from PIL import Image  # noqa: E402

SIZE_HW = (3000, 4000)
#: (name, filter, output (height, width)): LR making (1/4), --outscale-like shrink and growth
CASES = [
    ("bicubic_x0.25", "bicubic", (750, 1000)),
    ("bicubic_x0.5", "bicubic", (1500, 2000)),
    ("bicubic_x1.5", "bicubic", (4500, 6000)),
    ("lanczos_x0.5", "lanczos", (1500, 2000)),
    ("lanczos_x1.5", "lanczos", (4500, 6000)),
]


def photo() -> np.ndarray:
    """A 3000x4000 RGB uint8 image: colour gradients, hard-edged stripes and noise."""
    rng = np.random.default_rng(0)
    h, w = SIZE_HW
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], axis=2)
    base[((xx // 37 + yy // 53) % 7) == 0] *= 0.5
    base += rng.normal(0, 0.03, base.shape).astype(np.float32)
    return np.clip(base * 255 + 0.5, 0, 255).astype(np.uint8)


def measure(fn: Any, rounds: int) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"min_s": round(min(times), 3), "peak_alloc_mib": round(peak / 2**20, 1)}


def child(rounds: int) -> dict[str, Any]:
    """Every case with the lightsr on sys.path (this checkout's or --src's)."""
    import lightsr
    from lightsr.upscale import resize_image

    image = photo()
    out: dict[str, Any] = {"lightsr": str(Path(lightsr.__file__).parent)}
    pil = Image.fromarray(image)
    for name, filter, size in CASES:
        out[name] = measure(lambda f=filter, s=size: resize_image(image, s, filter=f), rounds)
        if filter == "lanczos":
            pillow = measure(lambda s=size: pil.resize(s[::-1], Image.Resampling.LANCZOS), rounds)
            # Pillow's own buffers are not reported to tracemalloc
            out[f"pillow_rgb8_{name}"] = dict(pillow, peak_alloc_mib=None)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    add_comparison_arguments(parser)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("CHILD " + json.dumps(child(args.rounds)), flush=True)
        return 0
    label = label_of(args)
    record = run_child(__file__, ["--child", "--rounds", str(args.rounds)], args.src)
    for name, r in record.items():
        if isinstance(r, dict):
            peak = "-" if r["peak_alloc_mib"] is None else f"{r['peak_alloc_mib']:.1f} MiB"
            print(f"{label}: {name:26s} {r['min_s']:7.3f} s  peak {peak}")
    if args.no_save:
        return 0
    path = save_run(
        "resize",
        label,
        {"rounds": args.rounds, **record},
        what="lightsr.upscale.resize_image (lightsr.data.resize) of a 3000x4000 RGB uint8 "
        "image, and Pillow's own 8-bit RGB Lanczos resize for reference",
        how="min_s: min wall time of the rounds; peak_alloc_mib: tracemalloc's peak "
        "during one more call (numpy's arrays included)",
        command="python benchmarks/bench_resize.py [--src DIR --label T]",
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
