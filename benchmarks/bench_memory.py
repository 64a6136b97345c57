"""Peak resident memory and wall time of upscaling a large photo on the CPU, on every path.

A synthetic 4000 x 3000 RGB photo (smooth colour fields, edges and sensor-like noise) is written
as a PNG, then, for each inference path, a fresh Python process runs
``lightsr.upscale.upscale_files`` on it (x4 -> 16000 x 12000, written as a PNG) with the
default automatic tile size, the way ``lightsr upscale`` does (``Upscaler.describe`` first,
which fixes the tile). The paths are what :class:`lightsr.upscale.Upscaler` offers on a CPU:

- ``fp32``: torch eager (``precision="fp32", backend="torch"``);
- ``compiled``: the same under ``torch.compile`` (``compile=True``; compiling is in its time);
- ``fp32_ort``: fp32 run by ONNX Runtime (``backend="onnxruntime"``);
- ``fp32_ov``, ``bf16_ov`` (native bf16 only), ``int8_ov``: run by OpenVINO
  (``backend="openvino"``; ``int8_ov`` is what ``--precision int8`` runs where it is
  installed);
- ``bf16``: torch autocast bf16. Skipped on a CPU without native bf16 (emulated there, many
  times slower, and never what ``auto`` picks) unless ``--force-emulated-bf16``;
- ``int8``: ONNX Runtime static quantization (:mod:`lightsr.quantize`; calibration counts),
  run by ONNX Runtime;
- ``auto``: what ``lightsr upscale`` runs by default (``precision="auto", backend="auto"``),
  recorded with what it resolved to and why;
- ``auto_jpeg``: the same on the same photo saved as a JPEG (quality 95), so written back as a
  JPEG (the input's format, ``lightsr upscale``'s default): Pillow's JPEG encoder needs the
  whole image, so the bands fill Pillow's own (4 bytes a pixel) and nothing else;
- ``auto_outscale``, ``auto_outscale_lanczos``: ``auto`` with ``--outscale 2`` (the x4
  network's output resized to 8000 x 6000 by MATLAB's bicubic or Pillow's Lanczos,
  :class:`lightsr.data.resize.Resize`), resized band by band as the rows of tiles come.

A path whose engine is not installed (ONNX Runtime, OpenVINO) is recorded as not measured, with the
reason. Per path: peak RSS of its process (``os.wait4``'s rusage of that one child, see
``run_child``), the child's wall time, its model load / preparation (export, quantization) /
upscale-and-write times, the resolved precision, backend and tile, and whether the peak is
under 2 GiB. The uint8 output alone would be 576 MB, and Pillow's PNG encoder (used before)
copied it into a 4-byte-per-pixel image (768 MB); ``upscale_files`` now writes the PNG band by
band as the tiles are computed (``Upscaler.bands`` into ``lightsr.data.png``), so neither is
held and the peak is the model's working memory plus one row of tiles' output. The model
is the bundled default x4 (what ``lightsr upscale`` loads with no ``--model``/``--weights``,
``lightsr.hub.resolve_model``) unless ``--model``.

    python benchmarks/bench_memory.py                           # every path, default model
    python benchmarks/bench_memory.py --paths fp32 int8         # some paths
    python benchmarks/bench_memory.py --model fmen_s            # official FMEN-S if present
    python benchmarks/bench_memory.py --force-emulated-bf16     # bf16 even where emulated
    python benchmarks/bench_memory.py --size 800x600 --no-save  # quick check
    git worktree add /tmp/before 366a6d6                        # an earlier commit's figures,
    python benchmarks/bench_memory.py --src /tmp/before/src --paths auto_outscale  # PATH@366a6d6

Writes benchmarks/results/memory/<cpu-slug>.json (one file per CPU kind, named as
benchmarks/bench_backends.py names its files; a rerun on the same kind replaces the paths it
measures and keeps the others when the photo size, model and threads are the same). Exits 1
when a measured path peaks over the limit or a path fails.
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
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# --src: the children import another checkout's lightsr (a git worktree of an earlier commit)
SRC_ENV = "LIGHTSR_BENCH_SRC"
PNG_WRITER = (
    "bands as the tiles finish, into lightsr's PNG encoder (lightsr.data.png; auto_jpeg: into "
    "Pillow's JPEG encoder); the +whole_output rows: the whole output array first"
)
sys.path.insert(0, os.environ.get(SRC_ENV) or str(ROOT / "src"))

import lightsr.upscale  # noqa: E402
from lightsr.atomic import atomic_write_text  # noqa: E402
from lightsr.checkpoint import load_official  # noqa: E402
from lightsr.data.io import write_image  # noqa: E402
from lightsr.hardware import (  # noqa: E402
    available_memory,
    cpu_has_native_bf16,
    cpu_kind,
    machine_record,
    proc_status_kb,
)
from lightsr.hub import (  # noqa: E402
    DEFAULT_SCALE,
    bundled_weights,
    default_weights,
    resolve_model,
    sha256_of,
)
from lightsr.quantize import onnxruntime_available, openvino_available  # noqa: E402
from lightsr.upscale import Upscaler, upscale_files  # noqa: E402

SHARED = Path(os.environ.get("LIGHTSR_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "benchmarks" / "results" / "memory"
LIMIT_BYTES = 2 * 2**30
SCALE = DEFAULT_SCALE
#: Each path's Upscaler options; everything else is the CLI's default (tile/overlap auto).
PATHS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32", "backend": "torch"},
    "compiled": {"precision": "fp32", "backend": "torch", "compile": True},
    "fp32_ort": {"precision": "fp32", "backend": "onnxruntime"},
    "fp32_ov": {"precision": "fp32", "backend": "openvino"},
    "bf16": {"precision": "bf16", "backend": "torch"},
    "bf16_ov": {"precision": "bf16", "backend": "openvino"},
    "int8": {"precision": "int8", "backend": "onnxruntime"},
    # what `lightsr upscale --precision int8` runs where OpenVINO is installed
    "int8_ov": {"precision": "int8", "backend": "openvino"},
    "auto": {"precision": "auto", "backend": "auto"},
    # a camera's JPEG: `lightsr upscale` writes a JPEG back (the input's format), which
    # Pillow's encoder needs whole
    "auto_jpeg": {"precision": "auto", "backend": "auto"},
    # `lightsr upscale --outscale 2` (x4 network, then MATLAB bicubic / Pillow's Lanczos to
    # 8000 x 6000): the network's bands are resized as they come
    "auto_outscale": {"precision": "auto", "backend": "auto", "outscale": 2.0},
    "auto_outscale_lanczos": {
        "precision": "auto",
        "backend": "auto",
        "outscale": 2.0,
        "outscale_filter": "lanczos",
    },
}
# --whole-output's records: the path's name and this
WHOLE_SUFFIX = "+whole_output"
# Paths whose input (and so output) is a JPEG (quality 95) of the same photo, not a PNG.
JPEG_PATHS = ("auto_jpeg",)
NEEDS_ONNXRUNTIME = ("fp32_ort", "int8", "int8_ov")  # int8_ov: ONNX Runtime quantizes
NEEDS_OPENVINO = ("fp32_ov", "bf16_ov", "int8_ov")
NO_NATIVE_BF16 = "no native bf16 on this CPU (emulated bf16 is not a path auto picks)"


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


def parse_size(text: str) -> tuple[int, int]:
    """``"4000x3000"`` -> (width, height)."""
    w, h = map(int, text.lower().split("x"))
    return w, h


def load_model(name: str | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model to measure and what its weights are: with no name, the bundled default
    (resolved by the function ``lightsr upscale`` uses); ``fmen_s``: the authors' file when
    present (as this benchmark measured it before); another name: its bundled weights, else
    random weights (memory and time do not depend on the values)."""
    if name is None:
        resolved = resolve_model(scale=SCALE)
        entry = default_weights(SCALE)
        path = bundled_weights("default", SCALE)
        return resolved.model, {
            "arch": resolved.model.arch_name,
            "name": entry.name,
            "source": resolved.source,
            "file": path.name if path else None,
            "sha256": sha256_of(path)[:12] if path else None,
        }
    official = SHARED / "weights" / "official" / f"{name}_x{SCALE}.pt"
    if name == "fmen_s" and official.is_file():
        model = load_official(official)
        return model, {
            "arch": model.arch_name,
            "name": official.stem,
            "source": f"authors' release ({official.name})",
            "file": official.name,
            "sha256": sha256_of(official)[:12],
        }
    resolved = resolve_model(model=name, scale=SCALE, allow_random=True)
    return resolved.model, {
        "arch": resolved.model.arch_name,
        "name": name,
        "source": resolved.source,
        "file": None,
        "sha256": None,
    }


def child(args: argparse.Namespace) -> None:
    """One path in this (fresh) process; prints one ``CHILD {json}`` line."""
    torch.set_num_threads(args.threads)
    w, h = parse_size(args.size)
    # auto tile sizes follow MemAvailable when the tile is decided
    memory_available = available_memory(torch.device("cpu"))
    t = time.perf_counter()
    model, weights = load_model(args.model)
    load_s = time.perf_counter() - t
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        runner = Upscaler(model, tile=args.tile, device="cpu", progress=False, **PATHS[args.path])
        # the CLI prints this line before the work; it also fixes the auto tile (cached)
        described = runner.describe(weights=weights["name"])
        prepare_s = time.perf_counter() - t
        hwm_kb = proc_status_kb("VmHWM")
        if args.whole_output:
            # the flow before outputs were written band by band: the whole array, then the file
            lightsr.upscale._upscaled = lambda runner, image: runner(image)  # type: ignore[assignment]
        t = time.perf_counter()
        report = upscale_files([args.input], args.out_dir, model=runner, progress=False)
        upscale_s = time.perf_counter() - t
    if report.failed or not report.written:
        raise SystemExit(f"upscale_files did not write the output: {report}")
    out_file = report.written[0][1]
    int8 = None
    if runner.int8 is not None:
        r = runner.int8.report
        int8 = {"engine": r.engine, "convs_int8": len(r.quantized), "convs_fp32": len(r.kept_fp32)}
    info = {
        "precision": runner.precision,
        "precision_why": runner.precision_reason,
        "backend": runner.backend,
        "backend_why": runner.backend_reason,
        "int8": int8,
        # after the run: an out-of-memory retry halves the tile, and this is the one used
        "tile": runner._resolve_tile(h, w),
        "overlap": runner.overlap,
        "output_size_wh": list(runner.output_size(h, w)[::-1]),
        "outscale_filter": runner.outscale_filter if runner.outscale is not None else None,
        "describe": described,
        "weights": weights,
        "load_s": round(load_s, 2),
        "prepare_s": round(prepare_s, 2),
        "upscale_and_write_s": round(upscale_s, 2),
        "output_bytes": out_file.stat().st_size,
        "output_format": out_file.suffix,
        "memory_available_bytes_at_start": memory_available,
        "peak_rss_after_prepare_bytes": None if hwm_kb is None else hwm_kb * 1024,
        "self_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "warnings": sorted({str(c.message) for c in caught}),
    }
    out_file.unlink()  # 240 MB at full size; the next path writes its own
    print("CHILD " + json.dumps(info), flush=True)


def skip_reason(path: str, *, force_emulated_bf16: bool) -> str | None:
    """Why ``path`` is not measured on this machine, or None."""
    if path in NEEDS_ONNXRUNTIME and not onnxruntime_available():
        return "ONNX Runtime not installed (onnx, onnxruntime: pip install lightsr[onnx])"
    if path in NEEDS_OPENVINO and not openvino_available():
        return "OpenVINO not installed (pip install lightsr[openvino])"
    if path == "bf16" and not cpu_has_native_bf16() and not force_emulated_bf16:
        return NO_NATIVE_BF16
    if path == "bf16_ov" and not cpu_has_native_bf16():
        return "no native bf16 on this CPU (OpenVINO's bf16 runs only where native)"
    return None


def run_child(path: str, args: argparse.Namespace, src: Path, tmp: Path) -> dict[str, Any]:
    """Run ``path`` in a fresh process and measure it.

    The peak is that child's own: ``os.wait4`` returns the rusage of the one process it
    reaps, whose ``ru_maxrss`` is the larger of its own peak and those of its reaped
    descendants (torch.compile's worker processes), each taken alone, never summed. The
    parent's RUSAGE_CHILDREN would be the maximum over every path run so far, so a later,
    smaller path would report an earlier path's peak. The child's own RUSAGE_SELF reading is
    recorded beside it as a cross-check; wait4 still answers when the child dies (killed for
    memory), where a self-report would be lost.
    """
    cmd = [
        sys.executable,
        __file__,
        "--child",
        path,
        "--input",
        str(src),
        "--out-dir",
        str(tmp / f"out_{path}"),
        "--tile",
        str(args.tile),
        "--threads",
        str(args.threads),
        "--size",
        args.size,
    ]
    if args.model is not None:
        cmd += ["--model", args.model]
    if args.whole_output:
        cmd += ["--whole-output"]
    env = dict(os.environ)
    if args.src is not None:
        env[SRC_ENV] = str(args.src.resolve())
    load_before = list(os.getloadavg())
    # stdout/stderr go to files, not pipes: nothing reads a pipe while wait4 blocks
    with open(tmp / f"{path}.out", "w+") as out, open(tmp / f"{path}.err", "w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    peak = usage.ru_maxrss * 1024
    name = path + WHOLE_SUFFIX if args.whole_output else path
    if args.src is not None:
        # in the parent only, as in save(): the children are what is measured
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from labelled_runs import commit_of

        name += f"@{commit_of(args.src) or args.src.name}"
    record: dict[str, Any] = {
        "path": name,
        "src": None if args.src is None else str(args.src),
        "options": PATHS[path],
        "peak_rss_bytes": peak,
        "peak_rss_gib": round(peak / 2**30, 3),
        "wall_s": round(wall, 1),
        "load_average_before": load_before,
    }
    line = next((ln for ln in stdout.splitlines() if ln.startswith("CHILD ")), None)
    if proc.returncode != 0 or line is None:
        tail = (stderr.strip().splitlines() or ["(no output)"])[-1]
        print(stdout, stderr, sep="\n", file=sys.stderr)
        return {
            "measured": False,
            "failed": True,
            "why": f"failed (exit status {proc.returncode}): {tail}",
            **record,
        }
    return {"measured": True, **record, "under_limit": peak < LIMIT_BYTES, **json.loads(line[6:])}


def summary_line(r: dict[str, Any]) -> str:
    if not r["measured"]:
        return f"{r['path']:12s} not measured: {r['why']}"
    return (
        f"{r['path']:12s} peak {r['peak_rss_gib']:.3f} GiB "
        f"({'under' if r['under_limit'] else 'OVER'} {LIMIT_BYTES / 2**30:g} GiB), "
        f"wall {r['wall_s']} s, "
        f"upscale+write {r['upscale_and_write_s']} s; {r['precision']}/{r['backend']}, "
        + (f"tile {r['tile']} overlap {r['overlap']}" if r["tile"] else "untiled")
    )


def save(result: dict[str, Any]) -> Path:
    # Imported here, in the parent only: bench_backends pulls in modules `lightsr upscale`
    # never loads, and the children (this same file) are what is measured.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_backends import cpu_slug

    path = RESULTS / f"{cpu_slug(cpu_kind())}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    # A rerun of some paths keeps the others' records from an earlier run of the same photo
    # size and model (each record says its own load average; the header is this run's).
    if path.is_file():
        old = json.loads(path.read_text())
        same = all(old.get(k) == result.get(k) for k in ("lr_size_wh", "weights", "threads"))
        if same:
            mine = {r["path"] for r in result["paths"]}
            kept = [dict(r, from_earlier_run=True) for r in old["paths"] if r["path"] not in mine]
            result["paths"] = kept + result["paths"]
            result["all_under_limit"] = all(
                r.get("under_limit", True)
                for r in result["paths"]
                if r.get("measured", True) and r.get("src") is None
            )
    atomic_write_text(path, json.dumps(result, indent=2) + "\n", overwrite=True)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4000x3000", help="WxH of the LR photo")
    ap.add_argument(
        "--paths",
        nargs="+",
        choices=tuple(PATHS),
        default=list(PATHS),
        metavar="PATH",
        help=f"inference paths to measure, each in its own process (default: all of "
        f"{' '.join(PATHS)})",
    )
    ap.add_argument(
        "--model",
        help="architecture (default: the bundled default x4 that `lightsr upscale` runs; "
        "fmen_s: the authors' file when present)",
    )
    ap.add_argument("--tile", default="auto")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument(
        "--force-emulated-bf16",
        action="store_true",
        help="measure bf16 on a CPU without native bf16 too (emulated: many times slower)",
    )
    ap.add_argument(
        "--whole-output",
        action="store_true",
        help="upscale_files given the whole output array (the flow before outputs were written "
        f"band by band), for comparison; recorded as PATH{WHOLE_SUFFIX}",
    )
    ap.add_argument(
        "--src",
        type=Path,
        help="run the paths with another checkout's lightsr (its src folder, e.g. a git "
        "worktree of an earlier commit), recorded as PATH@COMMIT",
    )
    ap.add_argument("--child", choices=tuple(PATHS), help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    ap.add_argument("--no-save", action="store_true", help="do not write the results JSON")
    args = ap.parse_args()
    if args.tile != "auto":
        args.tile = int(args.tile)
    if args.child:
        args.path = args.child
        child(args)
        return 0

    w, h = parse_size(args.size)
    paths = list(dict.fromkeys(args.paths))  # in the order asked, once each
    load_start = list(os.getloadavg())
    records = []
    with tempfile.TemporaryDirectory(prefix="lightsr_mem_") as tmp_name:
        tmp = Path(tmp_name)
        photo = synthetic_photo(w, h)
        sources = {".png": tmp / "photo.png", ".jpg": tmp / "photo.jpg"}
        for src in sources.values():
            write_image(src, photo)
        del photo
        for path in paths:
            why = skip_reason(path, force_emulated_bf16=args.force_emulated_bf16)
            src = sources[".jpg" if path in JPEG_PATHS else ".png"]
            record = (
                {"path": path, "measured": False, "why": why}
                if why
                else run_child(path, args, src, tmp)
            )
            records.append(record)
            print(summary_line(record), flush=True)
    measured = [r for r in records if r["measured"]]
    try:
        import onnxruntime

        ort_version: str | None = onnxruntime.__version__
    except ImportError:
        ort_version = None
    result = {
        "what": (
            f"upscale_files x{SCALE} of a synthetic {w}x{h} RGB PNG to a {SCALE * w}x{SCALE * h} "
            "PNG (auto_jpeg: JPEG to JPEG) on the CPU, each path in a fresh process"
        ),
        "how": (
            "peak_rss_bytes: ru_maxrss of os.wait4 on the path's own child process; wall_s: "
            "that child from start to exit; upscale_and_write_s: upscale_files alone"
        ),
        # how upscale_files wrote the PNG (docs/BACKENDS.md's memory tables say it per run)
        "png_writer": PNG_WRITER,
        "lr_size_wh": [w, h],
        "hr_size_wh": [SCALE * w, SCALE * h],
        "output_array_bytes": SCALE * SCALE * w * h * 3,
        "limit_bytes": LIMIT_BYTES,
        "limit_gib": LIMIT_BYTES / 2**30,
        # this checkout's paths (--src rows are another commit's, for comparison)
        "all_under_limit": all(r["under_limit"] for r in measured if r.get("src") is None),
        "cpu_kind": cpu_kind(),
        "machine": machine_record(args.threads),
        "platform": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": ort_version,
        },
        "threads": args.threads,
        "tile_asked": args.tile,
        "weights": next((r["weights"] for r in measured), None),
        "load_average_at_start": load_start,
        "load_average_at_end": list(os.getloadavg()),
        "command": "python benchmarks/bench_memory.py " + " ".join(sys.argv[1:]),
        "paths": records,
    }
    print(json.dumps(result, indent=2))
    if not args.no_save:
        print(f"wrote {save(result)}", file=sys.stderr)
    over = [r["path"] for r in measured if not r["under_limit"] and r.get("src") is None]
    failed = [r["path"] for r in records if r.get("failed")]
    if over:
        print(f"over {LIMIT_BYTES / 2**30:g} GiB: {', '.join(over)}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if over or failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
