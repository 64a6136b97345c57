"""Writing SR outputs as PNG: lightsr's writer (``lightsr.data.png``) against Pillow's.

The images are what ``lightsr upscale`` writes: the 25 RealSRSet photos, scans and comics
(``../shared/data/RealSRSet/LR``) and Set14's baboon, each upscaled x4 by the bundled default
model (fp32, torch). Each output is encoded to memory:

- ``pillow``: ``Image.fromarray(a).save(f, "PNG")``, Pillow's defaults (adaptive filters,
  zlib level 6, ``Z_FILTERED``): what lightsr wrote before;
- ``lightsr_1``: :func:`lightsr.data.png.write_png` on one thread;
- ``lightsr_N``: the same on ``torch.get_num_threads()`` threads (what ``write_image`` runs).

Per image: the bytes, the minimum seconds of ``--rounds`` interleaved rounds, and Pillow's time
to decode each file (a file that is slow to open would be a poor trade). The totals give the
ratios. Then the memory each writer adds: in a fresh process per writer, a 4000 x 3840 output
(2 x 2 flipped copies of baboon's, :func:`mosaic`) is written to a file; the figure is the
process's peak RSS (VmHWM) after writing less its RSS just before (``--no-memory`` skips it).

Last, end to end (``--no-end-to-end`` skips it): a 1000 x 750 photo (2 x 2 flipped copies of
baboon's HR, cropped) upscaled x4 to a PNG file, as lightsr did before (the whole output, then
Pillow's encoder) and as ``upscale_files`` does now (bands into lightsr's writer), interleaved,
with the model alone (no file) as the floor.

    python benchmarks/bench_png.py                  # writes benchmarks/results/png/<cpu>.json
    python benchmarks/bench_png.py --limit 3 --no-save --rounds 1   # quick look

Needs ``../shared`` (or ``$LIGHTSR_SHARED``) for the images; without them it stops, naming
the files it needs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_backends import cpu_slug  # noqa: E402

from lightsr.atomic import atomic_write_text  # noqa: E402
from lightsr.data.io import read_image  # noqa: E402
from lightsr.data.png import write_png  # noqa: E402
from lightsr.hardware import cpu_kind, machine_record  # noqa: E402
from lightsr.hub import resolve_model  # noqa: E402
from lightsr.upscale import Upscaler, upscale_files  # noqa: E402

SHARED = Path(os.environ.get("LIGHTSR_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "benchmarks" / "results" / "png"


def mosaic(a: np.ndarray) -> np.ndarray:
    """2 x 2 copies of ``a``, three of them flipped: no row repeats another within deflate's
    32 KiB window (plain copies would let LZ77 encode half of each row as a repeat, and make
    Pillow look smaller and faster than on a real photo)."""
    top = np.concatenate([a, a[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1, ::-1]], axis=0))


def images() -> list[Path]:
    realsr = SHARED / "data" / "RealSRSet" / "LR"
    baboon = SHARED / "data" / "Set14" / "HR" / "baboon.png"
    if not realsr.is_dir() or not baboon.is_file():
        sys.exit(
            f"needs {realsr} and {baboon} (the project's shared data): put the shared folder at "
            "../shared beside the checkout, or point LIGHTSR_SHARED at it"
        )
    return sorted(p for p in realsr.iterdir() if p.suffix.lower() in (".png", ".jpg")) + [baboon]


def encoders(threads: int) -> dict[str, Any]:
    def pillow(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(buf, format="PNG")
        return buf.getvalue()

    def ours(n: int) -> Any:
        def encode(a: np.ndarray) -> bytes:
            buf = io.BytesIO()
            write_png(buf, a, threads=n)
            return buf.getvalue()

        return encode

    return {"pillow": pillow, "lightsr_1": ours(1), f"lightsr_{threads}": ours(threads)}


def decode_seconds(data: bytes, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        Image.open(io.BytesIO(data)).load()
        best = min(best, time.perf_counter() - start)
    return best


def measure(outputs: dict[str, np.ndarray], threads: int, rounds: int) -> list[dict[str, Any]]:
    runs = encoders(threads)
    rows = []
    for name, a in outputs.items():
        times: dict[str, float] = {k: float("inf") for k in runs}
        files: dict[str, bytes] = {}
        for _ in range(rounds):  # interleaved: the machine's drift hits every writer alike
            for key, encode in runs.items():
                start = time.perf_counter()
                files[key] = encode(a)
                times[key] = min(times[key], time.perf_counter() - start)
        for key, data in files.items():  # every file decodes to the same pixels
            back = np.asarray(Image.open(io.BytesIO(data)))
            if not np.array_equal(back.reshape(a.shape), a):
                raise SystemExit(f"{name}: {key} did not decode to the image written")
        rows.append(
            {
                "image": name,
                "size_wh": [a.shape[1], a.shape[0]],
                "channels": a.shape[2],
                "megabytes_raw": round(a.nbytes / 1e6, 3),
                "bytes": {k: len(v) for k, v in files.items()},
                "encode_s": {k: round(v, 4) for k, v in times.items()},
                "decode_s": {k: round(decode_seconds(v, rounds), 4) for k, v in files.items()},
            }
        )
        r = rows[-1]
        print(
            f"{name:28s} {a.shape[1]}x{a.shape[0]} "
            + "  ".join(f"{k} {r['bytes'][k] / 1e6:.2f} MB {r['encode_s'][k]:.3f} s" for k in runs),
            flush=True,
        )
    return rows


_CHILD = """
import sys, numpy as np
sys.path.insert(0, {src!r})
from lightsr.hardware import proc_status_kb
which, npy, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
image = np.load(npy)
before = proc_status_kb("VmRSS")
if which == "pillow":
    from PIL import Image
    Image.fromarray(image).save(out, format="PNG")
else:
    from lightsr.data.png import write_png
    with open(out, "wb") as f:
        write_png(f, image, threads=threads)
print(before, proc_status_kb("VmHWM"))
"""


def memory(large: np.ndarray, threads: int) -> dict[str, Any]:
    """Peak RSS each writer adds while writing ``large`` to a file, in a fresh process."""
    result: dict[str, Any] = {"size_wh": [large.shape[1], large.shape[0]]}
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "large.npy"
        np.save(npy, large)
        for which, n in (("pillow", 1), ("lightsr", threads)):
            out = Path(tmp) / f"{which}.png"
            code = _CHILD.format(src=str(ROOT / "src"))
            done = subprocess.run(
                [sys.executable, "-c", code, which, str(npy), str(out), str(n)],
                check=True,
                capture_output=True,
                text=True,
            )
            before_kb, peak_kb = (int(v) for v in done.stdout.split())
            key = which if which == "pillow" else f"lightsr_{threads}"
            result[key] = {
                "added_peak_mb": round((peak_kb - before_kb) * 1024 / 1e6, 1),
                "file_mb": round(out.stat().st_size / 1e6, 2),
            }
    result["image_mb"] = round(large.nbytes / 1e6, 1)
    return result


def end_to_end(upscaler: Upscaler, rounds: int) -> dict[str, Any]:
    """Seconds (min of ``rounds``) to upscale a 1000 x 750 photo to a PNG file: the old way
    (whole output, Pillow), ``upscale_files`` now, and the model alone."""
    baboon = read_image(images()[-1])
    photo = np.ascontiguousarray(mosaic(baboon)[:750, :1000])
    times: dict[str, float] = {"model_only": float("inf"), "pillow": float("inf")}
    times["upscale_files"] = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "photo.png"
        Image.fromarray(photo).save(src)

        def old_way() -> None:
            Image.fromarray(upscaler(read_image(src))).save(Path(tmp) / "old.png", format="PNG")

        def new_way() -> None:
            upscale_files(src, Path(tmp) / "new.png", model=upscaler, overwrite=True)

        runs = {"model_only": lambda: upscaler(read_image(src)), "pillow": old_way}
        runs["upscale_files"] = new_way
        for _ in range(rounds):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                times[key] = min(times[key], time.perf_counter() - start)
        same = np.array_equal(read_image(Path(tmp) / "old.png"), read_image(Path(tmp) / "new.png"))
    if not same:
        raise SystemExit("end to end: the two files hold different pixels")
    result: dict[str, Any] = {"input_wh": [1000, 750], "scale": upscaler.scale}
    result["seconds"] = {k: round(v, 2) for k, v in times.items()}
    result["speedup_vs_pillow"] = round(times["pillow"] / times["upscale_files"], 2)
    print("end to end:", json.dumps(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-end-to-end", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    started = time.time()
    load_start = list(os.getloadavg())

    resolved = resolve_model()  # the bundled default x4, as `lightsr upscale` loads it
    source = resolved.source
    upscaler = Upscaler(resolved.model, precision="fp32", backend="torch", progress=False)
    outputs: dict[str, np.ndarray] = {}
    for path in images()[: args.limit]:
        lr = read_image(path)
        sr = upscaler(lr)
        outputs[path.name] = sr if sr.ndim == 3 else sr[:, :, None]
    rows = measure(outputs, threads, args.rounds)

    keys = list(rows[0]["bytes"])
    totals = {
        "bytes": {k: sum(r["bytes"][k] for r in rows) for k in keys},
        "encode_s": {k: round(sum(r["encode_s"][k] for r in rows), 3) for k in keys},
        "decode_s": {k: round(sum(r["decode_s"][k] for r in rows), 3) for k in keys},
    }
    ratios = {
        k: {
            "size_vs_pillow": round(totals["bytes"][k] / totals["bytes"]["pillow"], 4),
            "speedup_vs_pillow": round(totals["encode_s"]["pillow"] / totals["encode_s"][k], 2),
        }
        for k in keys
        if k != "pillow"
    }
    per_image = [r["bytes"]["lightsr_1"] / r["bytes"]["pillow"] for r in rows]
    print("totals:", json.dumps(totals), "\nratios:", json.dumps(ratios))
    print(f"size vs Pillow per image: {min(per_image):.3f} .. {max(per_image):.3f}")
    mem = None
    if not args.no_memory:
        baboon = outputs.get("baboon.png")
        if baboon is None:
            baboon = upscaler(read_image(images()[-1]))
        mem = memory(mosaic(baboon), threads)
        print("memory:", json.dumps(mem))
    e2e = None if args.no_end_to_end else end_to_end(upscaler, max(args.rounds, 3))
    result = {
        "what": "PNG encoding of x4 SR outputs: lightsr.data.png vs Pillow",
        "model": source,
        "images": "RealSRSet LR (25) + Set14 baboon HR, upscaled x4",
        "cpu_kind": cpu_kind(),
        "machine": machine_record(threads),
        "versions": {"pillow": Image.__version__, "numpy": np.__version__},
        "rounds": args.rounds,
        "load_average_at_start": load_start,
        "load_average_at_end": list(os.getloadavg()),
        "seconds": round(time.time() - started, 1),
        "command": "python benchmarks/bench_png.py"
        + (f" --rounds {args.rounds}" if args.rounds != 3 else ""),
        "totals": totals,
        "ratios": ratios,
        "size_vs_pillow_per_image": [round(min(per_image), 4), round(max(per_image), 4)],
        "memory": mem,
        "end_to_end": e2e,
        "per_image": rows,
    }
    if not args.no_save and args.limit is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{cpu_slug(cpu_kind())}.json"
        atomic_write_text(path, json.dumps(result, indent=1) + "\n", overwrite=True)
        print("wrote", path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
