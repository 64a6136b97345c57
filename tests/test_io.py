"""Image I/O: formats, modes, 16-bit PNG (filters, interlacing), EXIF, damaged files, tensors."""

from __future__ import annotations

import functools
import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image, ImageOps, TiffImagePlugin

from lightsr.data.io import (
    READ_FORMATS,
    encode_png,
    image_header,
    image_to_tensor,
    list_images,
    read_image,
    tensor_to_image,
    write_image,
)
from lightsr.errors import ImageReadError, LightSRError

RNG = np.random.default_rng(0)


# ---- a test-side PNG encoder using every filter type (and Adam7), to exercise the decoder --


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter_rows(data: np.ndarray, bpp: int, first_filter: int) -> bytes:
    """Filter each row (uint8, H x rowbytes) with types cycling from first_filter."""
    out = []
    prev = np.zeros(data.shape[1], np.int64)
    for i, row in enumerate(data.astype(np.int64)):
        ftype = (first_filter + i) % 5
        left = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        pred = [0, left, prev, (left + prev) // 2, _paeth(left, prev, upleft)][ftype]
        out.append(bytes([ftype]) + ((row - pred) % 256).astype(np.uint8).tobytes())
        prev = row
    return b"".join(out)


# Adam7 passes as (x0, y0, dx, dy)
_ADAM7 = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]


def _encode_png(
    arr: np.ndarray, colour_type: int, *, interlace: bool = False, exif: bytes | None = None
) -> bytes:
    h, w, c = arr.shape
    bpp = 2 * c
    be = np.ascontiguousarray(arr, dtype=">u2").view(np.uint8).reshape(h, w, bpp)
    if interlace:
        parts = []
        for k, (x0, y0, dx, dy) in enumerate(_ADAM7):
            sub = be[y0::dy, x0::dx]
            if sub.size:
                parts.append(_filter_rows(sub.reshape(sub.shape[0], -1), bpp, k))
        raw = b"".join(parts)
    else:
        raw = _filter_rows(be.reshape(h, -1), bpp, 0)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, int(interlace))
    exif_chunk = _chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")) if exif else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + exif_chunk
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize(("channels", "colour_type"), [(3, 2), (4, 6)])
def test_16bit_colour_png_all_filters(tmp_path, channels, colour_type, interlace):
    arr = RNG.integers(0, 65536, (19, 23, channels), dtype=np.uint16)
    arr[0, 0] = [0x0102, 0x0304, 0x0506, 0x0708][:channels]  # distinct high/low bytes
    path = tmp_path / "x.png"
    path.write_bytes(_encode_png(arr, colour_type, interlace=interlace))
    out = read_image(path)
    assert out.dtype == np.uint16
    assert np.array_equal(out, arr)


def test_16bit_grey_alpha_png(tmp_path):
    ga = RNG.integers(0, 65536, (9, 11, 2), dtype=np.uint16)
    path = tmp_path / "ga.png"
    path.write_bytes(_encode_png(ga, 4))
    out = read_image(path)
    assert out.dtype == np.uint16 and out.shape == (9, 11, 4)
    assert np.array_equal(out[..., :3], np.repeat(ga[..., :1], 3, axis=2))
    assert np.array_equal(out[..., 3], ga[..., 1])


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_write_read_roundtrip(tmp_path, channels):
    arr = RNG.integers(0, 65536, (17, 13, channels), dtype=np.uint16)
    write_image(tmp_path / "a.png", arr)
    assert np.array_equal(read_image(tmp_path / "a.png"), arr)
    # our writer's files are readable by Pillow too (high bytes agree for colour)
    with Image.open(tmp_path / "a.png") as im:
        ref = np.asarray(im)
    if channels == 1:
        assert np.array_equal(ref.astype(np.uint16), arr[..., 0])
    else:
        assert np.array_equal(ref, (arr >> 8).astype(np.uint8))


def test_16bit_grey_written_by_pillow(tmp_path):
    arr = RNG.integers(0, 65536, (10, 12), dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g.png")
    Image.fromarray(arr).save(tmp_path / "g.tif")
    for name in ("g.png", "g.tif"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint16 and out.shape == (10, 12, 1)
        assert np.array_equal(out[..., 0], arr)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".webp", ".ppm"])
def test_lossless_8bit_formats(tmp_path, suffix):
    arr = RNG.integers(0, 256, (15, 21, 3), dtype=np.uint8)
    path = tmp_path / f"x{suffix}"
    kwargs = {"lossless": True} if suffix == ".webp" else {}
    Image.fromarray(arr).save(path, **kwargs)
    out = read_image(path)
    assert out.dtype == np.uint8
    assert np.array_equal(out, arr)
    if suffix != ".webp":  # our writer (lossy WebP by default) round-trips the rest
        write_image(tmp_path / f"y{suffix}", out)
        assert np.array_equal(read_image(tmp_path / f"y{suffix}"), arr)


def test_jpeg_and_cmyk(tmp_path):
    arr = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    write_image(tmp_path / "a.jpg", arr, quality=90)
    with Image.open(tmp_path / "a.jpg") as im:
        assert np.array_equal(read_image(tmp_path / "a.jpg"), np.asarray(im))
    Image.fromarray(arr).convert("CMYK").save(tmp_path / "c.jpg")
    out = read_image(tmp_path / "c.jpg")
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def test_modes_grey_palette_alpha(tmp_path):
    grey = RNG.integers(0, 256, (8, 9), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "l.png")
    assert np.array_equal(read_image(tmp_path / "l.png"), grey[..., None])

    Image.fromarray(grey > 127).save(tmp_path / "bw.png")  # mode "1"
    assert np.array_equal(read_image(tmp_path / "bw.png")[..., 0], np.where(grey > 127, 255, 0))

    la = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(255 - grey)])
    la.save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png")
    assert out.shape == (8, 9, 4)
    assert np.array_equal(out[..., 1], grey) and np.array_equal(out[..., 3], 255 - grey)

    rgb = RNG.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).quantize(colors=16)
    pal.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.shape == (8, 9, 3)
    assert np.array_equal(out, np.asarray(pal.convert("RGB")))
    pal.save(tmp_path / "pt.png", transparency=0)
    out = read_image(tmp_path / "pt.png")
    assert out.shape == (8, 9, 4)
    assert set(np.unique(out[..., 3])) <= {0, 255} and (out[..., 3] == 0).any()

    rgba = RNG.integers(0, 256, (8, 9, 4), dtype=np.uint8)
    write_image(tmp_path / "rgba.png", rgba)
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgba)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path, orientation):
    arr = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    im.save(path, exif=exif)
    with Image.open(path) as opened:
        want = np.asarray(ImageOps.exif_transpose(opened))
    out = read_image(path)
    assert out.shape == want.shape
    assert np.array_equal(out, want)
    if orientation in (5, 6, 7, 8):
        assert out.shape[:2] == (10, 6)


def _exif_orientation_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _turned(arr: np.ndarray, orientation: int) -> np.ndarray:
    """``arr`` (H x W x C) as Pillow's ``exif_transpose`` turns a picture: an image of pixel
    indices is turned by Pillow, then the pixels are picked by it."""
    h, w, c = arr.shape
    index = Image.fromarray(np.arange(h * w, dtype=np.int32).reshape(h, w))
    index.getexif()[0x0112] = orientation
    picked = np.asarray(ImageOps.exif_transpose(index))
    return arr.reshape(h * w, c)[picked]


def _kinds(tmp_path, orientation: int):
    """(name, file, the array read_image must give): one file per reader path, each with the
    EXIF ``orientation``."""
    exif = _exif_orientation_bytes(orientation)
    rgb = RNG.integers(0, 256, (23, 17, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    pal = Image.fromarray(rgb).quantize(colors=16)
    deep = RNG.integers(0, 65536, (23, 17, 4), dtype=np.uint16)
    la16 = np.concatenate([deep[..., :1].repeat(3, axis=2), deep[..., 3:]], axis=2)
    cases = [
        ("rgb.png", Image.fromarray(rgb), rgb),
        ("rgb.tif", Image.fromarray(rgb), rgb),  # Pillow's TIFF loader turns on its own
        ("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), "RGB"),
        ("palette_alpha.png", pal, "RGBA"),
        ("bilevel.png", Image.fromarray(grey > 127), np.where(grey > 127, 255, 0)[..., None]),
        (
            "grey_alpha.png",
            Image.merge("LA", [Image.fromarray(grey), Image.fromarray(255 - grey)]),
            np.stack([grey, grey, grey, 255 - grey], axis=2),
        ),
        ("grey16.png", Image.fromarray(deep[..., 0]), deep[..., :1]),
    ]
    for name, im, want in cases:
        extra = {"transparency": 0} if name.startswith("palette") else {}
        im.save(tmp_path / name, exif=exif, **extra)
        if isinstance(want, str):  # what Pillow decodes, in that mode
            with Image.open(tmp_path / name) as opened:
                want = np.asarray(opened.convert(want))
        yield name, tmp_path / name, np.asarray(want)
    for colour_type, want, interlace in (
        (2, deep[..., :3], False),
        (6, deep, True),
        (4, la16, False),
    ):
        source = deep[..., [0, 3]] if colour_type == 4 else want
        path = tmp_path / f"colour16_{colour_type}.png"
        path.write_bytes(_encode_png(source, colour_type, interlace=interlace, exif=exif))
        yield path.name, path, want
    write_image(tmp_path / "rgb16.tif", deep[..., :3], exif=exif)
    yield "rgb16.tif", tmp_path / "rgb16.tif", deep[..., :3]


@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
def test_every_reader_copies_in_bands_and_turns_as_it_copies(tmp_path, monkeypatch, orientation):
    """read_image copies decoded pixels a few rows at a time into an array already turned for
    the EXIF orientation. With bands of one or two rows (the 8 MiB default covers these small
    files in one), each reader path must give Pillow's pixels turned as exif_transpose turns
    them, and the same array as one whole band."""
    kinds = list(_kinds(tmp_path, orientation))
    whole = {name: read_image(path) for name, path, _ in kinds}
    for name, path, _ in kinds:  # the header's size is the array's, turned or not
        head = image_header(path)
        assert (head.height, head.width, head.channels) == whole[name].shape, name
    monkeypatch.setattr("lightsr.data.io._COPY_BAND_BYTES", 100)
    for name, path, want in kinds:
        banded = read_image(path)
        assert banded.flags.c_contiguous, name
        assert np.array_equal(banded, _turned(want, orientation)), name
        assert banded.dtype == whole[name].dtype and np.array_equal(banded, whole[name]), name


@pytest.mark.parametrize("where", ["before", "after"])
def test_header_reads_a_png_orientation_without_decoding(tmp_path, monkeypatch, where):
    """image_header gives the turned size of a PNG tagged 6 without decoding a pixel, wherever
    its eXIf chunk is (Pillow's own getexif decodes the whole picture to find one after the
    pixel data: a bomb's pixels, before its size was checked)."""
    arr = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    data = buffer.getvalue()
    exif = _chunk(b"eXIf", _exif_orientation_bytes(6).removeprefix(b"Exif\x00\x00"))
    cut = data.index(b"IDAT") - 4 if where == "before" else data.index(b"IEND") - 4
    path = tmp_path / "turned.png"
    path.write_bytes(data[:cut] + exif + data[cut:])
    assert read_image(path).shape == (7, 5, 3)

    def no_decoding(self):
        raise AssertionError("image_header decoded the pixels")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    head = image_header(path)
    assert (head.height, head.width) == (7, 5)


def test_bad_files_raise_image_read_error_naming_the_file(tmp_path):
    (tmp_path / "text.png").write_text("not an image at all")
    (tmp_path / "random.jpg").write_bytes(RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    good = tmp_path / "good.png"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    png16 = encode_png(RNG.integers(0, 65536, (32, 32, 3), dtype=np.uint16))
    (tmp_path / "truncated16.png").write_bytes(png16[: len(png16) // 2])
    for name in ("text.png", "random.jpg", "truncated.png", "truncated16.png", "missing.png"):
        with pytest.raises(ImageReadError, match=name.replace(".", r"\.")):
            read_image(tmp_path / name)
    with pytest.raises(ImageReadError):
        read_image(tmp_path)  # a directory


def test_float_tiff_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError, match="floating-point"):
        read_image(tmp_path / "f.tif")


def test_write_image_refusals_and_atomicity(tmp_path):
    with pytest.raises(LightSRError, match=r"\.png"):
        write_image(tmp_path / "a.jpg", np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(LightSRError, match="tensor_to_image"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(LightSRError, match="alpha"):
        write_image(tmp_path / "a.jpg", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(LightSRError, match="suffix"):
        write_image(tmp_path / "a.xyz", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(LightSRError, match="shape"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 2), np.uint8))
    write_image(tmp_path / "sub" / "b.png", np.full((4, 4), 7, np.uint8))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["b.png"]  # no temp files left
    assert read_image(tmp_path / "sub" / "b.png").shape == (4, 4, 1)


def test_tensor_conversions():
    u8 = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = image_to_tensor(u8)
    assert t.shape == (1, 3, 5, 7) and t.dtype == torch.float32
    assert torch.allclose(t[0, :, 1, 2], torch.tensor(u8[1, 2] / 255.0, dtype=torch.float32))
    assert np.array_equal(tensor_to_image(t), u8)
    u16 = RNG.integers(0, 65536, (5, 7, 1), dtype=np.uint16)
    t16 = image_to_tensor(u16)
    assert float(t16.max()) <= 1.0
    assert np.array_equal(tensor_to_image(t16, np.uint16), u16)
    # clamp, then round half away from zero (MATLAB im2uint8)
    v = torch.tensor([-0.2, 0.5 / 255, 1.49 / 255, 2.5 / 255, 1.3]).view(1, 1, 1, 5)
    assert tensor_to_image(v)[0, :, 0].tolist() == [0, 1, 1, 3, 255]
    assert image_to_tensor(u8[..., 0]).shape == (1, 1, 5, 7)
    with pytest.raises(LightSRError):
        tensor_to_image(torch.zeros(2, 3, 4, 4))


def test_list_images(tmp_path):
    for name in ("b.PNG", "a.jpg", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]


def test_real_grey_benchmark_image():
    bridge = read_image(shared_path("data", "Set14", "HR", "bridge.png"))
    assert bridge.shape == (512, 512, 1) and bridge.dtype == np.uint8


# ---- which decoders may run: READ_FORMATS only, whatever the file's name -------------------


def _saved_in_other_formats(folder) -> dict[str, object]:
    """A small image saved by Pillow in every format it can write that lightsr does not read,
    each under a ``.png`` name, kept only where Pillow itself (unrestricted) would open it as
    that format: {format: path}."""
    import warnings

    Image.init()
    rgb = Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    files = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # IM: to go in Pillow 15
        for fmt in sorted(Image.SAVE):
            if fmt in READ_FORMATS:
                continue
            path = folder / f"{fmt.lower()}_in_disguise.png"
            for mode in ("RGB", "L", "1"):
                try:
                    # to memory, not to the name: some savers register the name's suffix as
                    # their format for the whole process (SPIDER does, for ".png")
                    buf = io.BytesIO()
                    rgb.convert(mode).save(buf, format=fmt)
                    path.write_bytes(buf.getvalue())
                    with Image.open(path) as im:  # what Pillow does left to itself
                        if im.format == fmt:
                            files[fmt] = path
                    break
                except Exception:  # this format cannot hold this mode (or needs a library)
                    continue
    return files


def test_only_the_formats_lightsr_reads_are_ever_decoded(tmp_path):
    from lightsr.data.io import image_header, read_image_info

    files = _saved_in_other_formats(tmp_path)
    # Pillow 13 writes and opens 14 of them (DDS, DIB, EPS, ICNS, ICO, IM, JPEG2000, MSP,
    # PCX, QOI, SGI, SPIDER, TGA, XBM); fewer would mean this test checks little
    assert len(files) >= 8, sorted(files)
    for fmt, path in files.items():
        for reader in (read_image, image_header, read_image_info):
            with pytest.raises(ImageReadError, match=r"lightsr reads PNG, JPEG") as err:
                reader(path)
            assert path.name in str(err.value), fmt


def test_postscript_named_png_never_reaches_ghostscript(tmp_path):
    """Pillow's EPS reader runs Ghostscript on the file; lightsr never lets it see one. A fake
    ``gs`` on PATH records whether it ran: not for lightsr, yes for Pillow left to itself
    (which shows the fake is found, so the first check can fail)."""
    import os
    import subprocess
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gs_ran"
    gs = bin_dir / "gs"
    gs.write_text(f'#!/bin/sh\necho "$@" >> "{marker}"\nexit 0\n')
    gs.chmod(0o755)
    eps = tmp_path / "holiday.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    child = (
        "import sys\n"
        "from lightsr.data.io import read_image\n"
        "from lightsr.errors import ImageReadError\n"
        "try:\n"
        f"    read_image({str(eps)!r})\n"
        "except ImageReadError as exc:\n"
        "    print(exc)\n"
        f"ran = __import__('os').path.exists({str(marker)!r})\n"
        "print('GS_RAN' if ran else 'GS_NOT_RUN')\n"
        "from PIL import Image\n"
        "try:\n"
        f"    Image.open({str(eps)!r}).load()\n"
        "except Exception:\n"
        "    pass\n"
        f"print('PILLOW_RAN_GS' if __import__('os').path.exists({str(marker)!r}) else '')\n"
    )
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    out = subprocess.run(
        [sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "a PostScript/EPS file" in out.stdout and "holiday.png" in out.stdout
    assert "GS_NOT_RUN" in out.stdout
    assert "PILLOW_RAN_GS" in out.stdout  # the fake gs is reachable: the check above can fail


def _frames() -> list[Image.Image]:
    a = RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    return [Image.fromarray(a), Image.fromarray(255 - a)]


@pytest.mark.parametrize(
    ("name", "fmt", "what"),
    [
        ("anim.gif", "GIF", "animated GIF"),
        ("anim.png", "PNG", "animated PNG"),
        ("anim.webp", "WEBP", "animated WebP"),
        ("pages.tif", "TIFF", "multi-page TIFF"),
        ("anim.avif", "AVIF", "animated AVIF"),
        ("burst.heic", "HEIF", "HEIF holding several images"),
    ],
)
def test_files_holding_several_pictures_are_refused(tmp_path, name, fmt, what):
    from PIL import features

    from lightsr.data.io import image_header

    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    if fmt == "HEIF":
        _pillow_heif().register_heif_opener()
    first, second = _frames()
    first.save(tmp_path / name, format=fmt, save_all=True, append_images=[second])
    for reader in (read_image, image_header):
        with pytest.raises(ImageReadError, match=what):
            reader(tmp_path / name)
    # one frame of the same format reads
    first.save(tmp_path / f"still_{name}", format=fmt)
    assert read_image(tmp_path / f"still_{name}").shape == (12, 16, 3)


def test_tiff_with_a_thumbnail_page_is_one_picture(tmp_path):
    """A second TIFF page marked reduced-resolution (NewSubfileType 1: a thumbnail, as some
    cameras and scanners write) does not make a multi-page document: the first page reads."""
    big, small = _frames()
    thumb = small.resize((8, 6))
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[254] = 1
    thumb.encoderinfo = {"tiffinfo": info}
    big.save(tmp_path / "scan.tif", save_all=True, append_images=[thumb])
    with Image.open(tmp_path / "scan.tif") as im:
        assert im.n_frames == 2
        im.seek(1)
        assert im.tag_v2[254] == 1  # the test file is what it claims
    assert np.array_equal(read_image(tmp_path / "scan.tif"), np.asarray(big))


def test_still_gif_and_avif_read_as_pillow_decodes_them(tmp_path):
    from PIL import features

    a = RNG.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "s.gif")
    with Image.open(tmp_path / "s.gif") as im:
        want = np.asarray(im.convert("RGB"))
    assert np.array_equal(read_image(tmp_path / "s.gif"), want)
    if features.check("avif"):
        Image.fromarray(a).save(tmp_path / "s.avif", quality=90)
        with Image.open(tmp_path / "s.avif") as im:
            want = np.asarray(im.convert("RGB"))
        assert np.array_equal(read_image(tmp_path / "s.avif"), want)


def test_camera_jpeg_with_a_preview_frame_reads(tmp_path):
    """Pillow names a JPEG with a Multi-Picture preview MPO, with two frames: it is one photo,
    not an animation, and reads as its first frame."""
    first, second = _frames()
    first.save(tmp_path / "cam.jpg", format="MPO", save_all=True, append_images=[second])
    with Image.open(tmp_path / "cam.jpg") as im:
        assert im.format == "MPO" and im.n_frames == 2
        want = np.asarray(im.convert("RGB"))
    assert np.array_equal(read_image(tmp_path / "cam.jpg"), want)


@pytest.mark.parametrize(
    ("head", "named"),
    [
        (b"%PDF-1.7\n", "PDF"),
        (b"8BPS\x00\x01", "Photoshop"),
    ],
)
def test_other_formats_are_named_in_the_error(tmp_path, head, named):
    path = tmp_path / "photo.jpg"
    path.write_bytes(head + bytes(64))
    with pytest.raises(ImageReadError, match=named):
        read_image(path)


def test_lossy_format_reads_the_webp_bitstream(tmp_path):
    from lightsr.data.io import lossy_format, read_image_info

    rgba = Image.fromarray(RNG.integers(0, 256, (10, 12, 4), dtype=np.uint8))
    cases = {
        "lossy.webp": ({"quality": 80}, "WebP"),  # VP8X, ALPH, then VP8
        "lossless.webp": ({"lossless": True}, None),  # VP8X, then VP8L
        "rgb_lossy.webp": ({"quality": 80}, "WebP"),  # a bare VP8 chunk
        "shot.png": ({}, None),
        "shot.jpg": ({"quality": 90}, "JPEG"),
    }
    for name, (options, want) in cases.items():
        im = rgba.convert("RGB") if name.startswith(("rgb", "shot.jpg")) else rgba
        im.save(tmp_path / name, **options)
        path = tmp_path / name
        assert lossy_format(path, read_image_info(path).format) == want, name
    # a damaged WebP (chunk sizes past the end) is not an error here
    data = bytearray((tmp_path / "lossy.webp").read_bytes())
    data[16:20] = struct.pack("<I", 2**31)
    (tmp_path / "bad.webp").write_bytes(bytes(data[:40]))
    assert lossy_format(tmp_path / "bad.webp", "WEBP") is None


def _pillow_heif():
    return pytest.importorskip(
        "pillow_heif", reason="HEIC needs pillow-heif: pip install 'lightsr[heif]'"
    )


def test_heic_reads_as_pillow_heif_decodes_it_turned_once(tmp_path):
    """A phone's HEIC photo: pixels as pillow-heif decodes them, turned by its orientation
    once (libheif applies the file's rotation and pillow-heif resets EXIF's to 1)."""
    from lightsr.data.io import image_header, read_image_info

    _pillow_heif().register_heif_opener()
    a = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to view
    Image.fromarray(a).save(tmp_path / "phone.heic", exif=exif.tobytes(), quality=90)
    with Image.open(tmp_path / "phone.heic") as im:
        want = np.asarray(im.convert("RGB"))
    got = read_image(tmp_path / "phone.heic")
    assert got.shape == (20, 12, 3)  # portrait, as the phone showed it
    assert np.array_equal(got, want)
    assert image_header(tmp_path / "phone.heic").pixels == 240
    assert read_image_info(tmp_path / "phone.heic").format == "HEIF"


def test_heic_without_pillow_heif_names_the_extra(tmp_path, monkeypatch):
    from lightsr.data import io as image_io

    _pillow_heif().register_heif_opener()
    Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "p.heic")
    monkeypatch.setattr(image_io, "_heif_readable", lambda: False)
    with pytest.raises(ImageReadError, match=r"pip install 'lightsr\[heif\]'"):
        read_image(tmp_path / "p.heic")


def test_avif_on_a_pillow_without_its_codec_names_the_fix(tmp_path, monkeypatch):
    """A Pillow built without libavif has the AVIF plugin but cannot decode: the error says
    it is an AVIF image and how to get a decoder, not "not an image"."""
    from lightsr.data import io as image_io

    avif = pytest.importorskip("PIL.AvifImagePlugin")
    if not avif.SUPPORTED:
        pytest.skip("this Pillow has no AVIF codec to write the test file with")
    path = tmp_path / "photo.avif"
    Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    monkeypatch.setattr(avif, "SUPPORTED", False)
    # a fresh cache of the formats tried, for this Pillow without the codec (dropped after)
    monkeypatch.setattr(
        image_io, "_read_formats", functools.cache(image_io._read_formats.__wrapped__)
    )
    for reader in (read_image, image_header):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the error says it all: no warning from Pillow too
            with pytest.raises(ImageReadError, match=r"it is an AVIF image .* no AVIF decoder"):
                reader(path)
    assert path.read_bytes()[4:12] == b"ftypavif"  # the file the error is about


@pytest.mark.parametrize("beside", [False, True])
def test_png_with_fewer_rows_than_its_header_is_refused(tmp_path, monkeypatch, beside):
    """A PNG whose well-formed zlib stream holds 12 of the 20 rows its header says: Pillow reads
    it, padding with black; read_image refuses it, whether the check runs first (a small file)
    or on a thread beside the decode (a file of _CHECK_BESIDE_BYTES or more)."""
    import threading

    from lightsr.data import io as image_io

    arr = RNG.integers(1, 256, (20, 16, 3), dtype=np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in arr[:12])  # filter type 0 (None)
    ihdr = struct.pack(">IIBBBBB", 16, 20, 8, 2, 0, 0, 0)
    path = tmp_path / "short.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )
    with Image.open(path) as im:  # what the check is for
        assert (np.asarray(im)[12:] == 0).all() and np.array_equal(np.asarray(im)[:12], arr[:12])
    started: list[str] = []

    class Recorded(threading.Thread):
        def start(self) -> None:
            if self.name == "lightsr-png-check":  # (the PNG writer runs threads too)
                started.append(self.name)
            super().start()

    monkeypatch.setattr(image_io.threading, "Thread", Recorded)
    if beside:
        monkeypatch.setattr(image_io, "_CHECK_BESIDE_BYTES", 0)
    with pytest.raises(ImageReadError, match=r"pixel data ends after 588 of the 980 bytes"):
        read_image(path)
    assert started == (["lightsr-png-check"] if beside else [])
    # cut inside its pixel data, the file fails Pillow's decode too: the same message
    whole = encode_png(arr)
    (tmp_path / "cut.png").write_bytes(whole[: whole.index(b"IDAT") + 60])
    with pytest.raises(ImageReadError, match=r"pixel data ends after \d+ of the 980 bytes"):
        read_image(tmp_path / "cut.png")
    started.clear()
    write_image(tmp_path / "whole.png", arr)  # a whole file reads either way
    assert np.array_equal(read_image(tmp_path / "whole.png"), arr)
    assert started == (["lightsr-png-check"] if beside else [])
