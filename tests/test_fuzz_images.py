"""Fuzzing the image readers with damaged files: every outcome is a LightSRError or a correct
result, never another exception, and memory stays bounded.

Small PNG (RGB, RGBA, grey, palette with transparency), JPEG (baseline, progressive) and 16-bit
PNG (RGB, grey) files are damaged in seeded ways: bit flips, truncations, chunk length fields,
IHDR fields (a width/height up to 2^31-1, depth and colour type), JPEG segment lengths, marker
bytes and frame sizes; GIF, WebP (lossy with alpha, lossless), deflate TIFF, BMP, AVIF (where
Pillow has it) and HEIC (with pillow-heif) ones by flips, truncations and sizes claimed in
their headers. Each file goes through ``lightsr.data.io.read_image`` and, all together,
through ``lightsr upscale --model bicubic``. That runs in a fresh subprocess, so its peak
resident memory (VmHWM) is this loop's alone.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, features

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

#: Peak memory the loop may add over the process's resident size before it. The undamaged
#: images are 40x32 (the largest decode is ~10 KB, the largest output ~40 KB); a damaged
#: header may claim up to 2^31-1 pixels a side, and one honoured claim near Pillow's limit
#: (179 MP) would touch hundreds of MB (10000x10000 RGB: 300 MB for the array alone). 64 MB
#: leaves room for allocator and Pillow buffers and catches any such decode.
MAX_GROWTH_KB = 64 * 1024
SEED = 20240611


# ---------------------------------------------------------------------------------------------
# The damaged files (deterministic for a seed)
# ---------------------------------------------------------------------------------------------


def _photo(h: int = 32, w: int = 40, c: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    wave = np.sin(yy / 5.0)[..., None] * np.cos(xx[..., None] / 7.0 + np.arange(c))
    return (127 + 100 * wave).astype(np.uint8)


def _pil_bytes(arr_or_im, fmt: str, **kw) -> bytes:
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def base_files() -> dict[str, bytes]:
    """Undamaged small files: name (its suffix is the format) -> bytes."""
    from lightsr.data.io import encode_png

    rgb, rgba = _photo(), _photo(c=4)
    palette = Image.fromarray(rgb).quantize(16)
    palette.info["transparency"] = 3
    grey16 = (_photo(c=1)[:, :, 0].astype(np.uint16) * 257).astype(np.uint16)
    return {
        "rgb.png": _pil_bytes(rgb, "PNG"),
        "rgba.png": _pil_bytes(rgba, "PNG"),
        "grey.png": _pil_bytes(rgb[:, :, 0], "PNG"),
        "palette.png": _pil_bytes(palette, "PNG", transparency=3),
        "rgb.jpg": _pil_bytes(rgb, "JPEG", quality=90),
        "progressive.jpg": _pil_bytes(rgb, "JPEG", quality=80, progressive=True),
        "rgb16.png": encode_png(rgb.astype(np.uint16) * 257),
        "grey16.png": _pil_bytes(Image.fromarray(grey16), "PNG"),
        # the other formats lightsr reads: flips, cuts and a size claim in the header
        "palette.gif": _pil_bytes(palette, "GIF", transparency=3),
        "lossy.webp": _pil_bytes(rgba, "WEBP", quality=80),
        "lossless.webp": _pil_bytes(rgb, "WEBP", lossless=True),
        "deflate.tif": _pil_bytes(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "rgb.bmp": _pil_bytes(rgb, "BMP"),
        **({"rgb.avif": _pil_bytes(rgb, "AVIF", quality=80)} if features.check("avif") else {}),
        **({"rgb.heic": _pil_bytes(rgb, "HEIF", quality=80)} if _heif() else {}),
    }


def _heif() -> bool:
    """pillow-heif's plugin registered (the optional ``lightsr[heif]``), or False."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, length, type) of each chunk."""
    out, i = [], 8
    while i + 8 <= len(data):
        n = struct.unpack(">I", data[i : i + 4])[0]
        out.append((i, n, data[i + 4 : i + 8]))
        i += 12 + n
    return out


def _set_ihdr(data: bytes, offset: int, value: bytes, *, fix_crc: bool) -> bytes:
    d = bytearray(data)
    d[offset : offset + len(value)] = value
    if fix_crc:  # a valid CRC gets the damaged field past the chunk check
        d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])))
    return bytes(d)


def _png_damage(data: bytes, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    out = []
    for off, n, tag in _png_chunks(data):
        for v in (0, n + 1, n - 1 if n else 7, 0x7FFFFFFF, 0xFFFFFFFF):
            d = bytearray(data)
            d[off : off + 4] = struct.pack(">I", v)
            out.append((f"len-{tag.decode('latin1')}-{v}", bytes(d)))
    sizes = [(2**31 - 1, 1), (1, 2**31 - 1), (65535, 65535), (10000, 10000), (13000, 13000)]
    sizes += [(0, 5), (100000, 1000), (40, 100000), (41, 32), (40, 33)]
    for w, h in sizes:
        for fix in (True, False):
            out.append(
                (f"ihdr-{w}x{h}-{fix}", _set_ihdr(data, 16, struct.pack(">II", w, h), fix_crc=fix))
            )
    for depth, ctype in ((1, 0), (2, 3), (4, 0), (8, 6), (16, 2), (16, 6), (3, 2), (8, 1), (8, 7)):
        out.append(
            (f"ihdr-d{depth}c{ctype}", _set_ihdr(data, 24, bytes([depth, ctype]), fix_crc=True))
        )
    out.append(("interlace", _set_ihdr(data, 28, b"\x01", fix_crc=True)))
    out.append(("interlace-bad", _set_ihdr(data, 28, b"\x05", fix_crc=True)))
    return out


def _jpeg_damage(data: bytes, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    out, i = [], 2
    while i < len(data) - 4 and data[i] == 0xFF:
        marker = data[i + 1]
        n = struct.unpack(">H", data[i + 2 : i + 4])[0]
        for v in (0, 1, 2, n - 1, n + 7, 0xFFFF):
            d = bytearray(data)
            d[i + 2 : i + 4] = struct.pack(">H", v)
            out.append((f"seglen-{marker:02x}-{v}", bytes(d)))
        for _ in range(3):
            d = bytearray(data)
            d[i + 1] = int(rng.integers(0, 256))
            out.append((f"marker-{marker:02x}-{d[i + 1]:02x}", bytes(d)))
        if marker in (0xC0, 0xC2):  # frame header: precision, height, width, components
            for h, w in ((0xFFFF, 0xFFFF), (0, 0), (0xFFFF, 1), (20000, 20000), (33, 40)):
                d = bytearray(data)
                d[i + 5 : i + 9] = struct.pack(">HH", h, w)
                out.append((f"sof-{h}x{w}", bytes(d)))
            for comps in (0, 2, 4, 255):
                d = bytearray(data)
                d[i + 9] = comps
                out.append((f"sof-comps-{comps}", bytes(d)))
        if marker == 0xDA:  # scan data follows; stop walking segments
            break
        i += 2 + n
    return out


def _size_claims(data: bytes, suffix: str) -> list[tuple[str, bytes]]:
    """The header's width and height set to sizes up to each field's largest (GIF: 16-bit
    screen and frame sizes; WebP: VP8X's 24-bit canvas; BMP: 32-bit signed; AVIF: the 32-bit
    ``ispe`` property; TIFF: the tags are found by the decoder, so flips cover it)."""
    # Past Pillow's decompression-bomb limit, none, one more column, fewer: a claim under the
    # limit but far past the data (13000x13000) is decoded at its size, as with JPEG (not
    # promised, docs/PROMISES.md; `lightsr upscale` refuses it by --max-output-pixels first).
    sizes = ((65535, 65535), (0, 0), (41, 32), (1, 1))
    out = []
    for w, h in sizes:
        d = bytearray(data)
        if suffix == "gif":
            d[6:10] = struct.pack("<HH", w, h)  # the logical screen
            at = 13 + ((3 << ((d[10] & 7) + 1)) if d[10] & 0x80 else 0)  # past its palette
            while at < len(d) and d[at] == 0x21:  # an extension: label, then sub-blocks
                at += 2
                while at < len(d) and d[at]:
                    at += d[at] + 1
                at += 1
            if at < len(d) and d[at] == 0x2C:  # the image descriptor
                d[at + 5 : at + 9] = struct.pack("<HH", w, h)
        elif suffix == "webp" and d[12:16] == b"VP8X":
            d[24:30] = struct.pack("<I", max(w - 1, 0))[:3] + struct.pack("<I", max(h - 1, 0))[:3]
        elif suffix == "bmp":
            d[18:26] = struct.pack("<ii", w, h)
        elif suffix == "avif" and (at := d.find(b"ispe")) > 0:
            d[at + 8 : at + 16] = struct.pack(">II", w, h)
        else:
            continue
        out.append((f"size-{w}x{h}", bytes(d)))
    return out


def damaged_files(folder: Path, seed: int = SEED, flips: int = 40, cuts: int = 12) -> list[Path]:
    """Write the damaged files into ``folder``; returns their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in base_files().items():
        stem, suffix = name.rsplit(".", 1)
        cases: list[tuple[str, bytes]] = [("intact", data)]
        for _ in range(flips):
            d = bytearray(data)
            for _ in range(int(rng.integers(1, 9))):
                bit = int(rng.integers(0, len(d) * 8))
                d[bit // 8] ^= 1 << (bit % 8)
            cases.append(("flip", bytes(d)))
        for _ in range(cuts):
            cases.append(("cut", data[: int(rng.integers(0, len(data)))]))
        if suffix == "png":
            cases += _png_damage(data, rng)
        elif suffix == "jpg":
            cases += _jpeg_damage(data, rng)
        else:
            cases += _size_claims(data, suffix)
        for k, (what, d) in enumerate(cases):
            path = folder / f"{stem}-{k:03d}-{what}.{suffix}"
            path.write_bytes(d)
            paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# The child process
# ---------------------------------------------------------------------------------------------


def child(folder: str) -> dict:
    """Run in a fresh interpreter: read every damaged file, then upscale them all with the CLI;
    returns what happened, and the memory peak over the resident size before the loop."""
    import contextlib
    import warnings

    from lightsr.cli import main
    from lightsr.data.io import image_header, read_image
    from lightsr.errors import LightSRError
    from lightsr.hardware import proc_status_kb, reset_peak_rss
    from lightsr.models.bicubic import Bicubic
    from lightsr.upscale import Upscaler

    work = Path(folder)
    paths = damaged_files(work / "in")
    bicubic = Upscaler(Bicubic(scale=2), tile=None)
    bicubic(np.zeros((32, 40, 3), np.uint8))  # warm: first-call allocations are not the loop's
    warnings.simplefilter("ignore")
    reset = reset_peak_rss()
    rss0 = proc_status_kb("VmRSS" if reset else "VmHWM") or 0

    outcome: dict[str, str] = {}
    arrays: dict[str, np.ndarray] = {}
    mismatches = []
    for p in paths:
        try:
            arr = read_image(p)
        except LightSRError as exc:
            outcome[p.name] = f"refused:{type(exc).__name__}"
            continue
        except Exception as exc:  # noqa: BLE001 - what the test is looking for
            outcome[p.name] = f"other:{type(exc).__name__}: {exc}"
            continue
        head = image_header(p)
        ok_layout = (
            arr.ndim == 3
            and arr.dtype in (np.uint8, np.uint16)
            and arr.shape[2] == head.channels
            and arr.dtype == head.dtype
            and arr.shape[0] * arr.shape[1] == head.pixels
        )
        outcome[p.name] = "ok" if ok_layout else f"other:bad layout {arr.shape} {head}"
        arrays[p.name] = arr
    read_peak = (proc_status_kb("VmHWM") or 0) - rss0

    out = work / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["upscale", *map(str, paths), "-o", str(out), "--model", "bicubic", "--scale", "2"]
    argv += ["--format", "png"]  # compared below with bicubic pixels of a lossless file
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main([*argv, "--quiet"])
    except BaseException as exc:  # noqa: BLE001
        code = f"raised {type(exc).__name__}: {exc}"
    cli_peak = (proc_status_kb("VmHWM") or 0) - rss0
    written = {}
    for line in stdout.getvalue().splitlines():
        if " -> " in line:
            src, dst = line.split(" -> ", 1)
            written[Path(src).name] = dst
    for name, dst in written.items():
        if name not in arrays:
            mismatches.append(f"{name}: written by the CLI but refused by read_image")
            continue
        want = bicubic(arrays[name])
        got = read_image(dst)
        if not np.array_equal(got, want if want.ndim == 3 else want[:, :, None]):
            mismatches.append(f"{name}: the output is not bicubic x2 of the input")
    return {
        "n": len(paths),
        "outcome": outcome,
        "read_peak_kb": read_peak,
        "cli_peak_kb": cli_peak,
        "cli_code": code,
        "cli_summary": next((x for x in stderr.getvalue().splitlines() if " written, " in x), ""),
        "cli_traceback": "Traceback" in stderr.getvalue(),
        "written": sorted(written),
        "mismatches": mismatches,
    }


def test_damaged_images_end_in_lightsr_errors_or_correct_results(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{HERE}", "OMP_NUM_THREADS": "1"}
    code = "import json, sys; import test_fuzz_images as t; print(json.dumps(t.child(sys.argv[1])))"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])

    others = {k: v for k, v in r["outcome"].items() if not v.startswith(("ok", "refused:"))}
    assert not others, others
    refused = [k for k, v in r["outcome"].items() if v.startswith("refused")]
    ok = sorted(k for k, v in r["outcome"].items() if v == "ok")
    # the fuzzing reaches both outcomes, and enough cases to mean something
    assert r["n"] >= 500 and len(refused) >= 200 and len(ok) >= 50, (r["n"], len(ok))
    for name in base_files():
        stem, suffix = name.rsplit(".", 1)
        assert r["outcome"][f"{stem}-000-intact.{suffix}"] == "ok"

    # the CLI: exit code 1 (some inputs failed), a report, no traceback; it wrote exactly the
    # files read_image reads, each the bicubic x2 of what read_image gives
    assert r["cli_code"] == 1, r["cli_code"]
    assert not r["cli_traceback"]
    assert r["cli_summary"] == f"{len(ok)} written, 0 skipped, {len(refused)} failed"
    assert r["written"] == ok
    assert not r["mismatches"], r["mismatches"][:5]

    assert r["read_peak_kb"] < MAX_GROWTH_KB, r["read_peak_kb"]
    assert r["cli_peak_kb"] < MAX_GROWTH_KB, r["cli_peak_kb"]
