"""Peak memory and time of ``lightsr.data.io.read_image`` on a large photo, per file kind.

One 6000x8000 picture (colour gradients, stripes and noise) is written as each case's file:
8-bit RGB JPEG (plain, and with EXIF orientation 6, which the read turns), 8-bit RGB and RGBA
PNG, a palette PNG, 16-bit RGB PNG and 16-bit RGB TIFF. Each case is read in a fresh Python
process: its peak resident memory above what it held after importing lightsr (VmHWM - VmRSS,
both from /proc/self/status, so Pillow's C buffers count), reported beside the size of the
array read (``x array``: peak / array bytes), and the min wall time of ``--rounds`` reads.
``--src DIR`` measures another checkout's lightsr (a ``git worktree`` of an earlier commit),
recorded under ``--label``; results accumulate per label in
``benchmarks/results/read/<cpu>.json``.

    python benchmarks/bench_read.py
    git worktree add /tmp/before 18a45f2
    python benchmarks/bench_read.py --src /tmp/before/src --label 18a45f2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# the child measures the checkout in $LIGHTSR_BENCH_SRC (--src), the parent this one
sys.path.insert(0, os.environ.get("LIGHTSR_BENCH_SRC") or str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from labelled_runs import add_comparison_arguments, label_of, run_child, save_run  # noqa: E402
from PIL import Image  # noqa: E402

SIZE_HW = (6000, 8000)
CASES = (
    "jpeg_rgb",
    "jpeg_rgb_orientation6",
    "png_rgb",
    "png_rgba",
    "png_palette",
    "png16_rgb",
    "tiff16_rgb",
)


def picture() -> np.ndarray:
    """A 6000x8000 RGB float image in 0..1: gradients, hard-edged stripes and noise."""
    rng = np.random.default_rng(0)
    h, w = SIZE_HW
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], axis=2)
    base[((xx // 37 + yy // 53) % 7) == 0] *= 0.5
    base += rng.normal(0, 0.02, base.shape).astype(np.float32)
    return np.clip(base, 0, 1)


def write_cases(folder: Path) -> dict[str, Path]:
    """Each case's file in ``folder``, written with this checkout's lightsr (the bytes do not
    depend on the checkout measured)."""
    from lightsr.data.io import write_image

    image = picture()
    rgb8 = (image * 255 + 0.5).astype(np.uint8)
    rgb16 = (image * 65535 + 0.5).astype(np.uint16)
    del image
    files = {name: folder / name for name in CASES}
    Image.fromarray(rgb8).save(files["jpeg_rgb"].with_suffix(".jpg"), quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb8).save(
        files["jpeg_rgb_orientation6"].with_suffix(".jpg"), quality=90, exif=exif.tobytes()
    )
    Image.fromarray(rgb8).save(files["png_rgb"].with_suffix(".png"), compress_level=1)
    alpha = rgb8[..., :1] // 2 + 64
    Image.fromarray(np.concatenate([rgb8, alpha], axis=2)).save(
        files["png_rgba"].with_suffix(".png"), compress_level=1
    )
    Image.fromarray(rgb8).quantize(64).save(files["png_palette"].with_suffix(".png"))
    write_image(files["png16_rgb"].with_suffix(".png"), rgb16)
    write_image(files["tiff16_rgb"].with_suffix(".tif"), rgb16)
    return {name: next(folder.glob(f"{name}.*")) for name in CASES}


def child(path: Path, rounds: int) -> dict[str, Any]:
    """Read ``path`` once for the peak (the first read of a fresh process), then ``rounds``
    more for the time."""
    from lightsr.data.io import read_image
    from lightsr.hardware import proc_status_kb

    start_kb = proc_status_kb("VmRSS") or 0
    array = read_image(path)
    peak_kb = (proc_status_kb("VmHWM") or 0) - start_kb
    shape, nbytes = list(array.shape), array.nbytes
    del array
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        read_image(path)
        times.append(time.perf_counter() - t)
    return {
        "shape": shape,
        "dtype_bytes": nbytes // int(np.prod(shape)),
        "array_mib": round(nbytes / 2**20, 1),
        "peak_above_import_mib": round(peak_kb / 1024, 1),
        "x_array": round(peak_kb * 1024 / nbytes, 2),
        "min_s": round(min(times), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    add_comparison_arguments(parser)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print("CHILD " + json.dumps(child(args.child, args.rounds)), flush=True)
        return 0
    label = label_of(args)
    record: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = write_cases(Path(tmp))
        for name, path in files.items():
            argv = ["--child", str(path), "--rounds", str(args.rounds)]
            measured = run_child(__file__, argv, args.src)
            r = record[name] = {"file_mib": round(path.stat().st_size / 2**20, 1)}
            r.update(measured)
            print(
                f"{label}: {name:22s} array {r['array_mib']:6.1f} MiB  peak "
                f"{r['peak_above_import_mib']:6.1f} MiB ({r['x_array']:.2f}x)  "
                f"{r['min_s']:.3f} s"
            )
    if args.no_save:
        return 0
    path = save_run(
        "read",
        label,
        {"rounds": args.rounds, **record},
        what="lightsr.data.io.read_image of one 6000x8000 picture written as each case's file",
        how="peak_above_import_mib: VmHWM after the first read minus VmRSS before it, in "
        "a fresh process per case; x_array: that peak over the array's bytes; min_s: min "
        "wall time of the rounds after it",
        command="python benchmarks/bench_read.py [--src DIR --label T]",
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
