"""lightsr's PNG writer (lightsr.data.png): lossless round trips through Pillow's decoder,
bytes independent of the thread count, block seams, metadata, bounded memory."""

from __future__ import annotations

import io
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from lightsr.data import png
from lightsr.data.io import read_image, read_image_with_info, write_image
from lightsr.data.png import RowBands, adler32_combine, encode_png, png_rows_per_block, write_png
from lightsr.errors import LightSRError

RNG = np.random.default_rng(7)


def _photo_like(h: int, w: int, c: int, dtype: type) -> np.ndarray:
    """Smooth ramps plus noise and a few flat patches: every Paeth branch gets taken."""
    peak = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:h, 0:w]
    base = (xx * 3 + yy * 5)[:, :, None] + np.arange(c) * 40
    noisy = base + RNG.integers(-6, 7, (h, w, c))
    noisy[: h // 3, : w // 3] = 17  # flat: runs of zeros after filtering
    scaled = noisy * (peak // 255)
    return np.clip(scaled, 0, peak).astype(dtype)


def _decoded(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_round_trip_is_exact_across_many_blocks(tmp_path, monkeypatch, dtype, channels):
    # Tiny blocks (a few rows each): every block seam carries the row above into Paeth.
    monkeypatch.setattr(png, "_BLOCK_BYTES", 200)
    image = _photo_like(37, 23, channels, dtype)
    assert png_rows_per_block(23, channels, np.dtype(dtype).itemsize) < 37 // 4
    data = encode_png(image)
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs and structure
    path = tmp_path / "x.png"
    path.write_bytes(data)
    back = read_image(path)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back.reshape(image.shape), image)


def test_two_dimensional_grey_is_one_channel():
    image = _photo_like(9, 11, 1, np.uint8)[:, :, 0]
    im = _decoded(encode_png(image))
    assert im.mode == "L"
    np.testing.assert_array_equal(np.asarray(im), image)


def test_bytes_do_not_depend_on_threads(monkeypatch):
    monkeypatch.setattr(png, "_BLOCK_BYTES", 4096)
    image = _photo_like(120, 90, 3, np.uint8)
    one = encode_png(image, threads=1)
    assert encode_png(image, threads=2) == one
    assert encode_png(image, threads=5) == one
    np.testing.assert_array_equal(np.asarray(_decoded(one)), image)


def test_same_pixels_as_pillow_writes():
    image = _photo_like(64, 80, 4, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    np.testing.assert_array_equal(
        np.asarray(_decoded(encode_png(image))), np.asarray(_decoded(buf.getvalue()))
    )


def test_adler32_combine_matches_zlib():
    for n1, n2 in [(0, 5), (1, 0), (1000, 70000), (65521, 65522), (300000, 3)]:
        a, b = RNG.bytes(n1), RNG.bytes(n2)
        assert adler32_combine(zlib.adler32(a), zlib.adler32(b), n2) == zlib.adler32(a + b)


def test_icc_profile_and_exif_are_kept(tmp_path):
    image = _photo_like(16, 16, 3, np.uint8)
    profile = b"\0\0\0\x10fake-profile-RGB " * 4
    exif = Image.Exif()
    exif[0x010E] = "a description"  # ImageDescription
    data = encode_png(image, icc_profile=profile, exif=exif.tobytes())
    im = _decoded(data)
    assert im.info["icc_profile"] == profile
    assert im.getexif()[0x010E] == "a description"
    # JPEG's "Exif\0\0" header is dropped, as the eXIf chunk wants
    prefixed = encode_png(image, exif=b"Exif\0\0" + exif.tobytes())
    assert _decoded(prefixed).getexif()[0x010E] == "a description"


def test_write_image_png_keeps_metadata_and_pixels(tmp_path):
    image = _photo_like(20, 30, 3, np.uint16)
    exif = Image.Exif()
    exif[0x013B] = "an artist"  # Artist
    path = write_image(tmp_path / "out.png", image, exif=exif.tobytes())
    back, info = read_image_with_info(path)
    np.testing.assert_array_equal(back, image)
    assert info.exif is not None
    parsed = Image.Exif()
    parsed.load(info.exif)
    assert parsed[0x013B] == "an artist"


@pytest.mark.parametrize(
    "array, needle",
    [
        (np.zeros((4, 4, 3), np.float32), "uint8 or uint16"),
        (np.zeros((4, 4, 2), np.uint8), "C in (1, 3, 4)"),
        (np.zeros((0, 4, 3), np.uint8), "C in (1, 3, 4)"),
        (np.zeros((4, 4, 3), np.int32), "uint8 or uint16"),
    ],
)
def test_refuses_what_png_cannot_hold(array, needle):
    with pytest.raises(LightSRError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        encode_png(array)


def test_memory_is_blocks_not_a_copy_of_the_image():
    # Pillow's encoder copies an RGB image into 4 bytes a pixel first; this writer's
    # temporaries are a few 64 KiB blocks (int16 working copies included).
    image = _photo_like(2400, 2400, 3, np.uint8)  # 17 MB
    sink = _CountingSink()
    tracemalloc.start()
    try:
        write_png(sink, image, threads=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.size > 0
    assert peak < image.nbytes / 4, f"peak {peak:,} bytes while writing {image.nbytes:,}"


class _CountingSink:
    """A binary file that keeps nothing: the test measures the writer, not a BytesIO."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


def test_strided_and_byte_swapped_views_are_written_as_their_pixels(tmp_path):
    base = _photo_like(40, 30, 4, np.uint16)
    grey_view = base[:, :, 1]  # strided: every 4th sample
    np.testing.assert_array_equal(np.asarray(_decoded(encode_png(grey_view))), grey_view)
    swapped = base[:, :, :3].astype(">u2")  # big-endian already
    path = tmp_path / "swapped.png"
    path.write_bytes(encode_png(swapped))
    np.testing.assert_array_equal(read_image(path), base[:, :, :3])


@pytest.mark.parametrize("heights", [[37], [1] * 37, [5, 1, 30, 1], [12, 12, 13], [36, 1]])
def test_bands_of_any_heights_give_the_array_bytes(monkeypatch, heights):
    monkeypatch.setattr(png, "_BLOCK_BYTES", 300)  # several rows a block: blocks span bands
    image = _photo_like(37, 23, 3, np.uint16)
    edges = np.cumsum([0] + heights)

    def bands():
        for r0, r1 in zip(edges[:-1], edges[1:], strict=True):
            yield image[r0:r1].copy()  # fresh arrays, as an upscaler's bands are

    rows = RowBands(37, 23, 3, image.dtype, bands)
    assert encode_png(rows, threads=3) == encode_png(image)
    np.testing.assert_array_equal(rows.array(), image)


def test_bands_that_do_not_add_up_are_refused():
    image = _photo_like(10, 8, 3, np.uint8)
    short = RowBands(11, 8, 3, image.dtype, lambda: iter([image]))
    with pytest.raises(LightSRError, match="held 10 rows, not the image's 11"):
        encode_png(short)


@pytest.mark.parametrize(
    "name, channels", [("a.jpg", 3), ("a.webp", 4), ("a.bmp", 1), ("a.tif", 3), ("a.ppm", 3)]
)
def test_bands_into_pillow_formats_give_the_array_bytes(tmp_path, name, channels):
    image = _photo_like(45, 31, channels, np.uint8)
    edges = [0, 7, 8, 30, 45]

    def bands():
        for r0, r1 in zip(edges[:-1], edges[1:], strict=True):
            band = image[r0:r1].copy()
            yield band[:, :, 0] if channels == 1 else band  # 2-D bands, as grey upscales give

    whole = write_image(tmp_path / "whole" / name, image)
    banded = write_image(tmp_path / "bands" / name, RowBands(45, 31, channels, image.dtype, bands))
    assert banded.read_bytes() == whole.read_bytes()


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_sixteen_bit_tiff_from_bands_is_the_arrays_file(tmp_path, monkeypatch, channels):
    import lightsr.data.io as lio

    monkeypatch.setattr(lio, "_TIFF_STRIP_BYTES", 100)  # strips of a few rows, across bands
    image = _photo_like(20, 9, channels, np.uint16)
    edges = [0, 1, 6, 7, 20]

    def bands():
        for r0, r1 in zip(edges[:-1], edges[1:], strict=True):
            yield image[r0:r1].copy()

    exif = Image.Exif()
    exif[0x013B] = "an artist"
    meta = {"exif": exif.tobytes(), "icc_profile": b"\0\0\0\x10fake-profile-RGB " * 4}
    if channels == 1:
        meta.pop("icc_profile")  # an RGB profile does not fit grey pixels
    whole = write_image(tmp_path / "whole.tif", image, **meta)
    banded = write_image(
        tmp_path / "bands.tif", RowBands(20, 9, channels, image.dtype, bands), **meta
    )
    assert banded.read_bytes() == whole.read_bytes()
    np.testing.assert_array_equal(read_image(banded).reshape(image.shape), image)
    with Image.open(banded) as im:
        assert im.getexif()[0x013B] == "an artist"


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.tif"])
def test_a_band_of_another_width_is_refused_and_nothing_is_published(tmp_path, name):
    dtype = np.uint16 if name.endswith(".tif") else np.uint8
    image = _photo_like(12, 10, 3, dtype)
    # 6 x 20 x 3 holds as many samples as 12 x 10 x 3: only the shape check can tell
    wrong = RowBands(12, 10, 3, image.dtype, lambda: iter([image[:6].reshape(3, 20, 3)] * 2))
    with pytest.raises(LightSRError, match=r"a band of shape \(3, 20, 3\) in a 10-wide image"):
        write_image(tmp_path / name, wrong)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind


def test_an_array_that_is_no_image_is_refused():
    with pytest.raises(LightSRError, match="H x W or H x W x C"):
        encode_png(np.zeros(12, np.uint8))
