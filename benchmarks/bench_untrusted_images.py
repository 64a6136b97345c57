"""What an untrusted image costs ``lightsr upscale``: a ~10 KB PNG that says 9000 x 9000.

A 1-bit palette PNG of one flat colour compresses 81 M pixels to about 10 KB; decoded it is a
9000 x 9000 RGB image (243 MB), and x4 it would be 36000 x 36000 (1.3 G pixels, 3.9 GB as a
uint8 array; a review measured 9.1 GB of RAM before the output-size limit existed). It is
under Pillow's decompression-bomb limit (89 M pixels warns, 179 M refuses), so only lightsr's
``--max-output-pixels`` check (from the header, before decoding) stands in the way.

Each case runs ``lightsr upscale FILE -o DIR --scale 4`` in a fresh Python process (the bundled
default model, then ``--model bicubic``), and records the outcome (refused with its message, or
processed), the child's peak resident memory (VmHWM, read in the child after the command) and
wall time (process start included). A small normal image (320 x 240) is the baseline: the
refusal of the bomb should cost what the baseline costs, not gigabytes.

    python benchmarks/bench_untrusted_images.py
    python benchmarks/bench_untrusted_images.py --unbounded   # also --max-output-pixels none
                                                              # with bicubic (~9 GB, minutes)

Writes benchmarks/results/untrusted_images.json (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lightsr.atomic import atomic_write
from lightsr.data.io import image_header, write_image
from lightsr.hardware import machine_record

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "untrusted_images.json"

# Runs the CLI in the child and reports its exit code and VmHWM on the last stdout line.
_CHILD = """
import json, sys, time
from lightsr.cli import main
from lightsr.hardware import proc_status_kb
t = time.perf_counter()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "cli_s": time.perf_counter() - t,
                  "vmhwm_kb": proc_status_kb("VmHWM")}))
"""


def make_bomb(path: Path, side: int = 9000) -> Path:
    """A flat 1-bit palette PNG: ~10 KB on disk, side x side RGB once decoded."""
    im = Image.new("P", (side, side), 0)
    im.putpalette([40, 80, 120, 200, 200, 200])
    im.save(path, bits=1, optimize=True)
    return path


def make_gif_bomb(path: Path, side: int = 9000) -> Path:
    """The same flat picture as a GIF (LZW packs it too): lightsr reads GIFs, so the same
    header check must stop it before the decoder allocates."""
    im = Image.new("P", (side, side), 0)
    im.putpalette([40, 80, 120, 200, 200, 200])
    im.save(path, optimize=True)
    return path


def make_photo(path: Path, width: int = 320, height: int = 240) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    wave = np.sin(yy / 9.0)[..., None] * np.cos(xx[..., None] / 13.0 + np.arange(3))
    img = np.clip(0.5 + 0.35 * wave + 0.03 * rng.standard_normal((height, width, 3)), 0, 1)
    write_image(path, np.round(img * 255).astype(np.uint8))
    return path


def run_case(name: str, image: Path, out_dir: Path, extra: list[str], timeout: float) -> dict:
    argv = ["upscale", str(image), "-o", str(out_dir), "--scale", "4", "--quiet", *extra]
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - t
    report = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {}
    failed = [
        line.strip() for line in proc.stderr.splitlines() if line.strip().startswith("failed")
    ]
    written = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    head = image_header(image)
    record = {
        "case": name,
        "input": image.name,
        "input_bytes": image.stat().st_size,
        "input_wh": [head.width, head.height],
        "output_wh": [head.width * 4, head.height * 4],
        "command": "lightsr " + " ".join(argv[:1] + [image.name] + argv[2:3] + ["OUT"] + argv[4:]),
        "exit_code": report.get("code", proc.returncode),
        "outcome": "processed" if written else ("refused" if failed else "error"),
        "message": failed[0].replace(str(image.parent) + os.sep, "") if failed else None,
        "written": written,
        "peak_rss_mib": round(report["vmhwm_kb"] / 1024, 1) if report.get("vmhwm_kb") else None,
        "wall_s": round(wall, 2),
        "cli_s": round(report["cli_s"], 2) if "cli_s" in report else None,
    }
    if record["outcome"] == "error":
        record["stderr_tail"] = proc.stderr[-2000:]
    print(
        f"{name:<28} {record['outcome']:<9} exit {record['exit_code']}  "
        f"peak {record['peak_rss_mib']} MiB  {record['wall_s']} s",
        flush=True,
    )
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unbounded", action="store_true", help="also run the bomb without a limit")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="lightsr-untrusted-") as tmp:
        tmp_path = Path(tmp)
        bomb = make_bomb(tmp_path / "bomb_9000.png")
        photo = make_photo(tmp_path / "photo_320x240.png")
        cases = [
            ("baseline photo, default", photo, []),
            ("baseline photo, bicubic", photo, ["--model", "bicubic"]),
            ("bomb, default", bomb, []),
            ("bomb, bicubic", bomb, ["--model", "bicubic"]),
            ("GIF bomb, default", make_gif_bomb(tmp_path / "bomb_9000.gif"), []),
        ]
        if args.unbounded:
            cases.append(
                (
                    "bomb, bicubic, no limit",
                    bomb,
                    ["--model", "bicubic", "--max-output-pixels", "none"],
                )
            )
        results = [
            run_case(name, image, tmp_path / f"out{i}", extra, args.timeout)
            for i, (name, image, extra) in enumerate(cases)
        ]

    record = {
        "what": "lightsr upscale x4 of a ~10 KB PNG (and a GIF) that decodes to 9000x9000 (a "
        "decompression bomb under Pillow's limit), against a small normal image; fresh process "
        "per case",
        "cases": results,
        "machine": machine_record(),
        "command": "python benchmarks/bench_untrusted_images.py"
        + (" --unbounded" if args.unbounded else ""),
    }
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(OUT, lambda tmp: Path(tmp).write_text(text), overwrite=True)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
