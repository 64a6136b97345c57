"""Reading and writing images as numpy arrays, and converting them to model tensors.

Arrays are ``H x W x C`` (C = 1 grey, 3 RGB, 4 RGBA), ``uint8`` (0..255) or ``uint16``
(0..65535). Model tensors are float32 ``(1, C, H, W)`` in [0, 1].

Pillow decodes the formats in :data:`READ_FORMATS` and no other, whatever a file is called
(some of its plugins run more than a decoder: the EPS one starts Ghostscript). It cannot keep
16 bits of a colour PNG or TIFF (it truncates to 8), so those are decoded twice through
Pillow's own decoder with the high- and low-byte unpackers and recombined. PNGs (8- and
16-bit) are written by :mod:`lightsr.data.png`, 16-bit TIFFs by a small zlib-based writer
here, everything else by Pillow.

Metadata: :func:`read_image_with_info` returns, beside the pixels, the file's ICC profile and
its EXIF reduced to what describes the picture rather than the old file's encoding (camera,
dates, GPS, description, copyright; orientation reset to 1, since the pixels come back
already turned), and :func:`write_image` writes both where the format can hold them (PNG
iCCP/eXIf, JPEG APP2/APP1, WebP, TIFF tags).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, TiffImagePlugin

from ..atomic import atomic_write, atomic_write_unique
from ..errors import ImageReadError, LightSRError
from .png import PNG_SIGNATURE, RowBands, encode_png, row_blocks, write_png

#: Suffixes lightsr writes images to: PNG and 16-bit TIFF by our writers, the rest by Pillow.
WRITE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

#: File suffixes treated as images when listing a folder (lower case): what lightsr writes, and
#: GIF, AVIF and HEIC/HEIF, which it reads (and upscales to a PNG). HEIC needs the optional
#: pillow-heif (``pip install 'lightsr[heif]'``); without it such a file fails naming the extra.
IMAGE_EXTENSIONS = WRITE_EXTENSIONS + (".gif", ".avif", ".heic", ".heif")

#: The only formats (Pillow's names) whose decoders ever run on a file, whatever its name.
#: Pillow left to itself tries every plugin it has, and some run more than a decoder: its EPS
#: reader hands the file to Ghostscript, a PostScript interpreter. A file of any other format
#: is refused before a decoder runs (``tests/test_io.py``). MPO is how Pillow names camera
#: JPEGs that carry a preview image; PPM covers PGM and PBM; HEIF is pillow-heif's plugin
#: (phones' HEIC photos), registered when that optional package is installed.
READ_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF", "WEBP", "PPM", "GIF", "AVIF", "HEIF")
_READ_FORMAT_NAMES = "PNG, JPEG, BMP, TIFF, WebP, PNM, GIF, AVIF and HEIC"
# Formats that can hold more than one picture; lightsr upscales one, so a file holding several
# is refused rather than cut to its first (MPO's second frame is a camera's preview: not here).
_MULTI_FRAME = {
    "GIF": "an animated GIF (more than one frame)",
    "PNG": "an animated PNG (more than one frame)",
    "WEBP": "an animated WebP (more than one frame)",
    "AVIF": "an animated AVIF (more than one frame)",
    "TIFF": "a multi-page TIFF",
    "HEIF": "a HEIF holding several images",
}
# Image formats people have that lightsr does not read (camera raw, JPEG XL, SVG): a name with
# one of these suffixes is an image file, never a folder.
_OTHER_IMAGE_SUFFIXES = (".jxl", ".svg", ".dng", ".cr2", ".cr3", ".nef", ".arw")
# Formats that keep an alpha channel (Pillow writes RGBA to BMP and PPM by dropping it, and
# refuses it for JPEG); the largest side each format can store (JPEG: 16-bit size fields;
# WebP: 14-bit); the formats that hold 16 bits a sample, and ICC profiles and EXIF.
_ALPHA_SUFFIXES = (".png", ".tif", ".tiff", ".webp")
_MAX_SIDE = {".jpg": 65535, ".jpeg": 65535, ".webp": 16383}
_16BIT_SUFFIXES = (".png", ".tif", ".tiff")
_FORMAT_NAMES = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WebP", ".tif": "TIFF", ".tiff": "TIFF"}
_METADATA_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
# A JPEG APP1 segment holds at most 65,533 bytes after its length field.
_JPEG_MAX_EXIF = 65533

# Errors Pillow (and its C decoders) raise for files that are not images or are damaged.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    RuntimeError,  # Pillow's AVIF plugin: "Failed to decode image: ..."
)


def is_image_suffix(suffix: str) -> bool:
    """True for a suffix (``".gif"``) of any image format Pillow knows, read or written by
    lightsr or not: such a name means a file, never a folder."""
    suffix = suffix.lower()
    known = {k.lower() for k in Image.registered_extensions()}
    return suffix in IMAGE_EXTENSIONS or suffix in known or suffix in _OTHER_IMAGE_SUFFIXES


def list_images(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Image files (by suffix, see :data:`IMAGE_EXTENSIONS`) in ``folder``, sorted by name.
    Hidden files are skipped."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file into an ``H x W x C`` array (uint8, or uint16 for 16-bit files).

    C is 1 (grey), 3 (RGB) or 4 (RGBA). Palette images become RGB, or RGBA when they have
    transparency; grey+alpha becomes RGBA; CMYK/YCbCr become RGB. The EXIF orientation is
    applied. A missing, unreadable or damaged file raises :class:`ImageReadError` naming it:
    so do a file of a format outside :data:`READ_FORMATS` (under any name; no decoder of it
    runs), an animation or a multi-page TIFF (upscaling its first picture alone would drop the
    rest), a FIFO or device (never opened: it could block), a header past Pillow's
    decompression-bomb limit (refused before decoding), a PNG whose pixel data is shorter
    than its header promises (Pillow would pad it with black), and pixel data that decodes to
    another size than the header's. Files are untrusted input: no
    other exception type escapes (``tests/test_fuzz_images.py``).
    """

    path = _regular_file(path)
    try:
        with _open(path) as im:
            _check_still(im, path)
            width, height = im.size
            orientation = _orientation_to_apply(im, path)
            wait_png_check = _check_png_data_beside(path) if im.format == "PNG" else None
            png16 = _png16_colour_type(path) if im.format == "PNG" else None
            tiff16 = _tiff16_colour_mode(im)
            try:
                # each reader turns the picture as it copies it (no second array)
                if png16:
                    arr = _read_png16_colour(path, png16, im.size, orientation)
                elif tiff16:
                    arr = _read_tiff16_colour(path, tiff16, im.size, orientation)
                else:
                    arr = _pil_to_array(im, path, orientation)
            except Exception:
                if wait_png_check is not None:
                    wait_png_check()  # a short stream's own message first, as before
                raise
            if wait_png_check is not None:
                wait_png_check()
            decoded = arr.shape[1::-1] if orientation in _QUARTER_TURNS else arr.shape[:2]
            if decoded != (height, width):
                # the header is what the pixel limits were checked against: a decoder that
                # gives another size (a damaged HEIF's stream against its 'ispe') is refused
                raise ImageReadError(
                    f"cannot read {str(path)!r}: its header says {width}x{height} pixels but "
                    f"its data decodes to {decoded[1]}x{decoded[0]}: a damaged file. "
                    "Re-export or re-download it."
                )
    except LightSRError:
        raise
    except Image.UnidentifiedImageError as exc:
        raise _unsupported(path, exc) from None
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except _DECODE_ERRORS as exc:
        raise _damaged(path, exc) from None
    return arr


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_image_with_info` returns beside the pixels.

    ``format``: Pillow's name of the file's format (``"PNG"``, ``"JPEG"``, ``"WEBP"``,
    ``"TIFF"``, ...). ``icc_profile``: the embedded colour profile, or None (also None when
    the profile's colour space is not the array's: a CMYK JPEG's profile does not describe the
    RGB array it becomes). ``exif``: the EXIF block (``b"Exif\\0\\0"`` + TIFF data) reduced
    to the tags that describe the picture (camera, dates, GPS, description, copyright, the
    Exif and GPS sub-directories), with the orientation set to 1 since the array is already
    turned; what describes the old file's encoding (strips, thumbnail, resolution) is left
    out. ``notes``: what could not be carried (a damaged EXIF block, a mismatched profile)."""

    format: str | None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    notes: tuple[str, ...] = ()


def read_image_with_info(path: str | os.PathLike) -> tuple[np.ndarray, ImageInfo]:
    """:func:`read_image` and :func:`read_image_info`: the pixels and the file's format, ICC
    profile and EXIF, for writing an output that keeps the input's colour profile and camera
    data."""
    return read_image(path), read_image_info(path)


def read_image_info(path: str | os.PathLike) -> ImageInfo:
    """The :class:`ImageInfo` of an image file (format, ICC profile, EXIF), from its header
    and metadata without decoding its pixels (a PNG's eXIf chunk after the pixel data is found
    by walking the chunks). Raises :class:`ImageReadError` as :func:`image_header` does."""
    path = _regular_file(path)
    try:
        with _open(path) as im:
            _check_still(im, path)
            png16 = _png16_colour_type(path) if im.format == "PNG" else None
            if png16 is None and _tiff16_colour_mode(im):
                png16 = 2 if im.mode == "RGB" else 6
            channels, _ = _layout(im, png16, path)
            return _image_info(im, path, channels=channels)
    except LightSRError:
        raise
    except Image.UnidentifiedImageError as exc:
        raise _unsupported(path, exc) from None
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except _DECODE_ERRORS as exc:
        raise _damaged(path, exc) from None


# Adam7 passes: (x0, y0, dx, dy)
_ADAM7: tuple[tuple[int, int, int, int], ...] = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def lossy_format(path: str | os.PathLike, format: str | None) -> str | None:
    """The name of ``path``'s lossy compression ("JPEG", "WebP", "AVIF", "HEIC") when its
    pixels went through one, else None. ``format`` is Pillow's name for the file
    (:class:`ImageInfo`'s): JPEG (and MPO, a camera JPEG with a preview), AVIF and HEIF are
    lossy; a WebP is when its bitstream is VP8 rather than VP8L (the lossless one), found by
    walking at most 64 RIFF chunk headers. Reads headers only; never raises for a damaged
    file (None)."""
    if format in ("JPEG", "MPO"):
        return "JPEG"
    if format == "AVIF":
        return "AVIF"
    if format == "HEIF":
        return "HEIC"
    if format != "WEBP":
        return None
    try:
        with open(path, "rb") as f:
            if f.read(12)[8:] != b"WEBP":
                return None
            for _ in range(64):
                header = f.read(8)
                if len(header) < 8:
                    return None
                fourcc, size = header[:4], struct.unpack("<I", header[4:])[0]
                if fourcc == b"VP8 ":
                    return "WebP"
                if fourcc == b"VP8L":
                    return None
                f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None
    return None


def _png_raw_size(width: int, height: int, depth: int, colour_type: int, interlace: int) -> int:
    """Bytes of filtered scanlines (a filter byte per row) the IHDR promises."""
    bits = depth * _PNG_CHANNELS.get(colour_type, 4)

    def rows(w: int, h: int) -> int:
        return h * (1 + (w * bits + 7) // 8) if w and h else 0

    if not interlace:
        return rows(width, height)
    return sum(
        rows((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, y0, dx, dy in _ADAM7
    )


def _check_png_data(path: Path) -> None:
    """Raise :class:`ImageReadError` when a PNG's IDAT stream holds fewer scanlines than its
    IHDR promises. Pillow decodes such a file without complaint when the zlib stream itself is
    well formed, and fills the missing rows with black: a damaged file must not pass for a
    picture. The stream is inflated in bounded pieces and counted, never held."""
    with open(path, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            return
        inflate = zlib.decompressobj()
        expected: int | None = None
        got = 0
        while True:
            head = f.read(8)
            if len(head) < 8:
                break
            length, tag = struct.unpack(">I", head[:4])[0], head[4:]
            if tag == b"IHDR" and expected is None:
                body = f.read(length)
                if len(body) < 13:
                    return  # Pillow has refused it already
                w, h, depth, ctype, _c, _f, interlace = struct.unpack(">IIBBBBB", body[:13])
                expected = _png_raw_size(w, h, depth, ctype, interlace)
                f.seek(4, os.SEEK_CUR)
                continue
            if tag == b"IDAT" and expected is not None:
                left = length
                while left > 0 and got < expected:
                    piece = f.read(min(left, 1 << 16))
                    if not piece:
                        break
                    left -= len(piece)
                    data = piece
                    while data and got < expected:
                        got += len(inflate.decompress(data, 1 << 20))
                        data = inflate.unconsumed_tail
                if got >= expected:
                    return
                f.seek(left + 4, os.SEEK_CUR)
                continue
            if tag == b"IEND":
                break
            f.seek(length + 4, os.SEEK_CUR)
    if expected is not None and got < expected:
        raise ImageReadError(
            f"cannot read {str(path)!r}: a damaged PNG: its pixel data ends after {got:,} of "
            f"the {expected:,} bytes its header promises (the rest would be black). "
            "Re-export or re-download it."
        )


# A PNG at least this large is checked (_check_png_data) on a thread beside its decode.
_CHECK_BESIDE_BYTES = 1 << 20


def _check_png_data_beside(path: Path) -> Callable[[], None]:
    """Start :func:`_check_png_data` and return a function that waits for it and raises what it
    raised. The check inflates the whole pixel stream; zlib and Pillow's decoder both let go of
    the GIL, so on a file of :data:`_CHECK_BESIDE_BYTES` or more it runs on a thread while
    Pillow decodes: an 8000x6000 RGB PNG read in 2.3 s with the check first, 1.5 s with it
    beside (``python benchmarks/bench_read.py``). A smaller file is checked at once."""
    if path.stat().st_size < _CHECK_BESIDE_BYTES:
        _check_png_data(path)
        return lambda: None
    raised: list[BaseException] = []

    def check() -> None:
        try:
            _check_png_data(path)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            raised.append(exc)

    # a daemon: a decode that fails first leaves the check to end on its own, unread
    thread = threading.Thread(target=check, name="lightsr-png-check", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if raised:
            raise raised[0]

    return wait


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding its pixels (see
    :func:`image_header`): the width, height, channels and dtype of the array
    :func:`read_image` would return (the size as displayed: an EXIF quarter turn swaps the
    stored width and height, as read_image turns the pixels)."""

    path: Path
    format: str | None
    width: int
    height: int
    channels: int
    dtype: np.dtype

    @property
    def pixels(self) -> int:
        return self.width * self.height


def image_header(path: str | os.PathLike) -> ImageHeader:
    """The :class:`ImageHeader` of an image file, from its header alone (Pillow opens files
    lazily: a PNG's chunks up to the first IDAT, a JPEG's markers up to the scan), so that the
    size of an untrusted image can be checked before any memory is spent on its pixels.

    Raises :class:`ImageReadError` as :func:`read_image` does (missing, not a regular file, not
    an image, a header past Pillow's decompression-bomb limit, floating-point pixels). A file
    whose header reads may still fail to decode (damaged pixel data)."""
    path = _regular_file(path)
    try:
        with _open(path) as im:
            _check_still(im, path)
            width, height = im.size
            if _orientation_to_apply(im, path) in _QUARTER_TURNS:
                width, height = height, width  # the size of read_image's turned array
            png16 = _png16_colour_type(path) if im.format == "PNG" else None
            if png16 is None and _tiff16_colour_mode(im):
                png16 = 2 if im.mode == "RGB" else 6  # the same layout as a 16-bit PNG's
            channels, dtype = _layout(im, png16, path)
            fmt = im.format
    except LightSRError:
        raise
    except Image.UnidentifiedImageError as exc:
        raise _unsupported(path, exc) from None
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except _DECODE_ERRORS as exc:
        raise _damaged(path, exc) from None
    if width < 1 or height < 1:
        raise ImageReadError(f"cannot read {str(path)!r}: its header says {width}x{height} pixels.")
    return ImageHeader(path, fmt, int(width), int(height), channels, np.dtype(dtype))


def _layout(im, png16: int | None, path: Path) -> tuple[int, type]:
    """(channels, dtype) of the array :func:`_pil_to_array` / :func:`_read_png16_colour` make
    of ``im``, from its mode (the same rules, without decoding)."""
    if png16 is not None:
        return (3 if png16 == 2 else 4), np.uint16
    mode = im.mode
    if mode in ("1", "L"):
        return 1, np.uint8
    if mode.startswith("I;16") or mode == "I":
        return 1, np.uint16
    if mode == "F":
        raise _float_image(path)
    if mode == "P":
        has_alpha = "transparency" in im.info or _palette_mode(im) == "RGBA"
        return (4 if has_alpha else 3), np.uint8
    if mode in ("PA", "LA", "La", "RGBa", "RGBA"):
        return 4, np.uint8
    return 3, np.uint8  # RGB, and the modes converted to it


def _palette_mode(im) -> str | None:
    """The palette's mode; None for a palette image without a palette (a damaged PNG whose
    IHDR says colour type 3 and that has no PLTE chunk)."""
    palette = getattr(im, "palette", None)
    return None if palette is None else palette.mode


def _regular_file(path: str | os.PathLike) -> Path:
    """``path`` when it is a regular file (or a link to one); a FIFO or device would block
    or never end, so it is refused before it is opened."""
    path = Path(path)
    if not path.is_file():
        what = "does not exist" if not os.path.lexists(path) else "is not a regular file"
        raise ImageReadError(f"image {str(path)!r} {what}: name an image file.")
    return path


@functools.cache
def _read_formats() -> tuple[str, ...]:
    """:data:`READ_FORMATS` that this Pillow has, their plugins imported (registered), so that
    ``Image.open`` tries those and no other; HEIF is left to :func:`_heif_readable`. AVIF's
    plugin came with Pillow 11.2."""
    for plugin in ("Bmp", "Gif", "Jpeg", "Mpo", "Png", "Ppm", "Tiff", "WebP", "Avif"):
        with contextlib.suppress(ImportError):
            importlib.import_module(f"PIL.{plugin}ImagePlugin")
    # AVIF's plugin without its codec is left out too: it would claim AVIF and HEIF files
    # only to refuse them with a warning; _unsupported names the format and the fix instead
    return tuple(
        f
        for f in READ_FORMATS
        if f in Image.OPEN and f != "HEIF" and (f != "AVIF" or _avif_decodes())
    )


def _avif_decodes() -> bool:
    """Whether this Pillow's AVIF plugin has its codec (a Pillow built without libavif has
    the plugin but cannot decode)."""
    return bool(getattr(sys.modules.get("PIL.AvifImagePlugin"), "SUPPORTED", False))


@functools.cache
def _heif_readable() -> bool:
    """Whether pillow-heif is installed; registers its HEIF plugin with Pillow (in this
    process, as its docs direct). Called only for a file that announces HEIF, so that other
    reads do not pay for importing it and libheif."""
    try:
        import pillow_heif  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return False
    if "HEIF" not in Image.OPEN:
        pillow_heif.register_heif_opener()
    return "HEIF" in Image.OPEN


def _open(path: Path) -> Image.Image:
    """``Image.open`` limited to :data:`READ_FORMATS`; a file of another format (whatever its
    suffix) raises ``PIL.UnidentifiedImageError`` without any other plugin seeing it."""
    try:
        return Image.open(path, formats=_read_formats())
    except Image.UnidentifiedImageError:
        if _sniff(path) == "HEIC/HEIF" and _heif_readable():
            return Image.open(path, formats=("HEIF",))
        raise


def _check_still(im: Image.Image, path: Path) -> None:
    """Refuse a file holding several pictures (an animation, a multi-page TIFF): upscaling its
    first alone would quietly drop the rest."""
    what = _MULTI_FRAME.get(im.format or "")
    if what and getattr(im, "is_animated", False):
        if im.format == "TIFF" and _second_page_is_an_extra(im):
            return
        raise ImageReadError(
            f"{str(path)!r} is {what}; lightsr upscales still images and "
            "would keep only the first. Save the picture(s) you want as PNG files first."
        )


def _second_page_is_an_extra(im: Image.Image) -> bool:
    """True when a TIFF's second page is a reduced-resolution copy (a thumbnail or preview)
    or a transparency mask of the first (NewSubfileType bits 0 and 2): one picture, not a
    document of pages. Leaves ``im`` on its first page."""
    try:
        im.seek(1)
        kind = getattr(im, "tag_v2", {}).get(254, 0)
    finally:
        im.seek(0)
    return isinstance(kind, int) and bool(kind & 0b101)


# Signatures of formats people try that no allowed plugin reads, to name them in the error.
_SNIFFED = (
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"%PDF", "PDF"),
    (b"8BPS", "Photoshop (PSD)"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def _sniff(path: Path) -> str | None:
    """The name of the format ``path``'s first bytes announce, for the formats in
    :data:`_SNIFFED` and HEIC/HEIF; None otherwise. Reads 32 bytes, runs nothing."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return None
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIC/HEIF"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "AVIF"
    for magic, name in _SNIFFED:
        if head.startswith(magic):
            return name
    return None


def _unsupported(path: Path, exc: BaseException) -> ImageReadError:
    """The error for a file no allowed plugin identifies: another format, or not an image."""
    kind = _sniff(path)
    decodable = {"HEIC/HEIF": _heif_readable(), "AVIF": _avif_decodes()}
    if decodable.get(kind or ""):  # a format lightsr reads here, that its decoder refused
        return _damaged(path, exc)
    if kind == "HEIC/HEIF":
        return ImageReadError(
            f"cannot read {str(path)!r}: it is a HEIC/HEIF image, which needs the optional "
            "pillow-heif package: pip install 'lightsr[heif]' (or convert it to JPEG or PNG)."
        )
    if kind == "AVIF":  # an AVIF file that this Pillow cannot decode
        return ImageReadError(
            f"cannot read {str(path)!r}: it is an AVIF image and this Pillow has no AVIF "
            f"decoder ({exc}). Install Pillow >= 11.2 from its wheels, or convert it to PNG."
        )
    what = f"a {kind} file" if kind else "not an image lightsr reads, or a damaged one"
    return ImageReadError(
        f"cannot read {str(path)!r}: {what}. lightsr reads {_READ_FORMAT_NAMES} images; "
        "convert it to PNG (or re-export / re-download it if it should be one of those)."
    )


def _too_large(path: Path, exc: Exception) -> ImageReadError:
    return ImageReadError(
        f"image {str(path)!r} is too large to decode safely ({exc}). If you trust the file, "
        "raise PIL.Image.MAX_IMAGE_PIXELS, or crop it with another tool first."
    )


def _damaged(path: Path, exc: BaseException) -> ImageReadError:
    return ImageReadError(
        f"cannot read {str(path)!r}: not an image or a damaged file "
        f"({type(exc).__name__}: {exc}). Re-export or re-download it."
    )


def _float_image(path: Path) -> ImageReadError:
    return ImageReadError(
        f"{str(path)!r} is a floating-point image; only 8- and 16-bit images are supported. "
        "Convert it to an 8- or 16-bit PNG."
    )


# At most this many bytes of rows are copied at a time out of a decoded Pillow image (counted
# at 4 bytes a channel, the widest sample): small beside any photo, large enough that the
# per-band overhead (a crop, a tobytes call) is lost in the copying.
_COPY_BAND_BYTES = 8 << 20
#: EXIF orientations that turn the picture a quarter (or transpose it): width and height swap.
_QUARTER_TURNS = (5, 6, 7, 8)


def _bands(im, convert: str | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """Decode ``im`` and yield ``(top, bottom, rows)``: its pixels as ``(rows, width,
    channels)`` arrays, a few MiB at a time, each converted to Pillow mode ``convert`` first
    when given.

    This is how the readers get a Pillow image into numpy. ``np.asarray(im)`` goes through
    ``tobytes()``, which encodes in chunks and joins them, so the decoded image, the chunks and
    the joined copy are held at once (3.3x the array for an 8000x6000 RGB photo; Pillow keeps
    RGB in 4 bytes a pixel), and a conversion (palette to RGB) adds a whole converted image.
    Copying bands into an array allocated once holds the decoded image, that array and one
    band (``python benchmarks/bench_read.py`` measures both)."""
    im.load()
    width, height = im.size
    rows = max(1, _COPY_BAND_BYTES // max(1, 4 * width * len(im.getbands())))
    for top in range(0, max(height, 1), rows):  # an empty image still yields its one band
        bottom = min(height, top + rows)
        band = im.crop((0, top, width, bottom))
        array = np.asarray(band.convert(convert) if convert else band)
        yield top, bottom, array[:, :, None] if array.ndim == 2 else array


def _oriented_empty(
    size: tuple[int, int], channels: int, dtype, orientation: int
) -> tuple[np.ndarray, np.ndarray]:
    """An uninitialised ``(height, width, channels)`` array for a picture stored ``size`` =
    (width, height) in its file, turned for EXIF ``orientation`` (1..8) as
    :func:`_apply_orientation` turns it, and a view of that array in the file's layout: rows
    stored into the view land where the turned picture wants them, so no second array is
    needed to turn it."""
    width, height = size
    turned = orientation in _QUARTER_TURNS
    out = np.empty((width, height, channels) if turned else (height, width, channels), dtype)
    # every orientation is its own inverse except the two quarter turns, each the other's
    inverse = {6: 8, 8: 6}.get(orientation, orientation)
    return out, _apply_orientation(out, inverse)


def _read_pixels(im, orientation: int, convert: str | None = None, dtype=None) -> np.ndarray:
    """``im``'s pixels as an ``H x W x C`` array turned for ``orientation``, copied band by
    band (:func:`_bands`); ``dtype`` (default: what numpy makes of the mode) casts each band,
    e.g. big-endian ``I;16B`` samples to native uint16."""
    bands = _bands(im, convert)
    top, bottom, first = next(bands)
    out, view = _oriented_empty(im.size, first.shape[2], dtype or first.dtype, orientation)
    view[top:bottom] = first
    del first
    for top, bottom, band in bands:
        view[top:bottom] = band
    return out


def _pil_to_array(im, path: Path, orientation: int = 1) -> np.ndarray:
    mode = im.mode
    convert = None
    if mode == "1":
        convert = "L"
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info or _palette_mode(im) == "RGBA"
        convert = "RGBA" if has_alpha else "RGB"
    elif mode in ("LA", "La", "RGBa"):
        convert = "RGBA"
    elif mode in ("RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        convert = "RGB"
    elif mode.startswith("I;16"):
        return _read_pixels(im, orientation, dtype=np.uint16)  # big-endian variants -> native
    elif mode == "I":
        arr = _read_pixels(im, orientation)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(
                f"{str(path)!r} is a 32-bit integer image with values outside 0..65535; only "
                "8- and 16-bit images are supported. Convert it to a 16-bit PNG."
            )
        return arr.astype(np.uint16)
    elif mode == "F":
        raise _float_image(path)
    elif mode not in ("L", "RGB", "RGBA"):
        convert = "RGB"
    arr = _read_pixels(im, orientation, convert)
    if arr.dtype != np.uint8:
        raise ImageReadError(f"{str(path)!r}: unsupported pixel format {mode!r}.")
    return arr


def _png16_colour_type(path: Path) -> int | None:
    """PNG colour type (2 RGB, 4 grey+alpha, 6 RGBA) when the file is 16-bit and Pillow would
    truncate it to 8 bits; None otherwise (16-bit grey is read fine as mode I;16)."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    depth, ctype = head[24], head[25]
    return ctype if depth == 16 and ctype in (2, 4, 6) else None


def _decode_png_as(path: Path, mode: str, rawmode: str) -> Iterator[tuple[int, int, np.ndarray]]:
    """Run Pillow's PNG decoder (which does the unfiltering/de-interlacing) with another
    unpacker of the same bits per pixel, to get at bytes its default unpacker drops; yields
    the result's :func:`_bands`."""

    with _open(path) as im:
        if len(im.tile) != 1 or im.tile[0][0] != "zip" or im.mode != mode:
            raise OSError("unexpected PNG layout")
        im.tile = [im.tile[0]._replace(args=rawmode)]
        yield from _bands(im)


def _read_png16_colour(
    path: Path, colour_type: int, size: tuple[int, int], orientation: int = 1
) -> np.ndarray:
    """A ``size`` = (width, height) 16-bit colour PNG as uint16, turned for ``orientation``:
    Pillow's decoder run twice (it has no unpacker that keeps both bytes of a sample), each
    band's bytes put in place."""
    channels = 4 if colour_type in (4, 6) else 3
    out, view = _oriented_empty(size, channels, np.uint16, orientation)
    if colour_type == 4:
        # 16-bit grey+alpha = 4 bytes/pixel: the 8-bit RGBA unpacker hands back all 4 bytes.
        for top, bottom, b in _decode_png_as(path, "RGBA", "RGBA"):
            b16 = b.astype(np.uint16)
            grey = (b16[..., 0] << 8) | b16[..., 1]
            rows = view[top:bottom]
            rows[..., 0] = rows[..., 1] = rows[..., 2] = grey
            rows[..., 3] = (b16[..., 2] << 8) | b16[..., 3]
        return out
    mode = "RGB" if colour_type == 2 else "RGBA"
    # PNG samples are big-endian: the ";16B" unpacker keeps the high bytes, ";16L" (which
    # assumes little-endian) keeps the low ones.
    _join_bytes(
        view,
        high=_decode_png_as(path, mode, f"{mode};16B"),
        low=_decode_png_as(path, mode, f"{mode};16L"),
    )
    return out


def _join_bytes(
    view: np.ndarray,
    *,
    high: Iterator[tuple[int, int, np.ndarray]],
    low: Iterator[tuple[int, int, np.ndarray]],
) -> None:
    """Fill the uint16 ``view`` from two decodes of one picture: the :func:`_bands` of its
    samples' high bytes, then those of their low bytes (one decode held at a time)."""
    for top, bottom, rows in high:
        view[top:bottom] = rows
        view[top:bottom] <<= 8
    for top, bottom, rows in low:
        view[top:bottom] |= rows


def _tiff16_colour_mode(im) -> str | None:
    """``"RGB"``/``"RGBA"`` when ``im`` is a TIFF of 16-bit unsigned colour samples that
    Pillow would truncate to 8 bits (its unpackers for those end in ``;16L``, ``;16B`` or, via
    libtiff, ``;16N``); None otherwise (16-bit grey is read fine as mode I;16)."""
    if im.format != "TIFF" or im.mode not in ("RGB", "RGBA"):
        return None
    tags = getattr(im, "tag_v2", {})
    bits = tags.get(258)
    bits = bits if isinstance(bits, tuple) else (bits,)
    if not bits or any(b != 16 for b in bits) or tags.get(339, 1) not in (1, (1,) * len(bits)):
        return None
    if not im.tile or any(_tile_rawmode(t)[:-1] != f"{im.mode};16" for t in im.tile):
        return None
    return im.mode


def _tile_rawmode(tile) -> str:
    args = tile.args
    raw = args[0] if isinstance(args, tuple) and args else args
    return raw if isinstance(raw, str) else ""


def _read_tiff16_colour(
    path: Path, mode: str, size: tuple[int, int], orientation: int = 1
) -> np.ndarray:
    """A ``size`` = (width, height) 16-bit colour TIFF as uint16, turned for ``orientation``:
    Pillow's decoder (raw or libtiff, which does the decompression and predictor) run twice,
    once with the unpacker that keeps the high byte of each sample and once with the one that
    keeps the low byte."""

    def decode(high: bool) -> Iterator[tuple[int, int, np.ndarray]]:
        with _open(path) as im:
            if im.mode != mode:
                raise OSError("unexpected TIFF layout")
            tiles = []
            for tile in im.tile:
                order = _tile_rawmode(tile)[-1]
                if order == "N":  # libtiff hands the samples over in this machine's order
                    order = "L" if sys.byteorder == "little" else "B"
                if not high:
                    order = "B" if order == "L" else "L"
                tiles.append(tile._replace(args=(f"{mode};16{order}", *tile.args[1:])))
            im.tile = tiles
            yield from _bands(im)

    out, view = _oriented_empty(size, len(mode), np.uint16, orientation)
    _join_bytes(view, high=decode(True), low=decode(False))
    return out


# IFD0 tags that describe the picture, not the file's encoding; only these are carried over
# (strip/tile layout, sample format, compression, thumbnail and resolution belong to the old
# file: copied into another they would be wrong).
_EXIF_KEEP = frozenset(
    {
        0x010E,  # ImageDescription
        0x010F,  # Make
        0x0110,  # Model
        0x0112,  # Orientation (set to 1)
        0x0131,  # Software
        0x0132,  # DateTime
        0x013B,  # Artist
        0x013C,  # HostComputer
        0x013E,  # WhitePoint
        0x013F,  # PrimaryChromaticities
        0x4746,  # Rating
        0x4749,  # RatingPercent
        0x8298,  # Copyright
        0x8769,  # the Exif sub-directory (exposure, DateTimeOriginal, lens, ...)
        0x8825,  # the GPS sub-directory
        0x9C9B,  # XPTitle
        0x9C9C,  # XPComment
        0x9C9D,  # XPAuthor
        0x9C9E,  # XPKeywords
        0x9C9F,  # XPSubject
    }
)
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003  # PixelXDimension, PixelYDimension in the Exif IFD


def _exif_tree(exif: Image.Exif) -> dict[int, Any]:
    """IFD0 of ``exif`` as a dict, its Exif and GPS sub-directories (and the Exif one's
    Interop) as nested dicts: the form Pillow serialises back (``Exif.tobytes``,
    ``ImageFileDirectory_v2``) without the source file."""
    tree: dict[int, Any] = {}
    for tag, value in exif.items():
        if tag in (_EXIF_IFD, _GPS_IFD):
            sub = dict(exif.get_ifd(tag))
            if tag == _EXIF_IFD and _INTEROP_IFD in sub:
                interop = dict(exif.get_ifd(_INTEROP_IFD))
                if interop:
                    sub[_INTEROP_IFD] = interop
                else:
                    del sub[_INTEROP_IFD]
            if sub:
                tree[tag] = sub
        else:
            tree[tag] = value
    return tree


def _exif_bytes(tree: dict[int, Any]) -> bytes:
    out = Image.Exif()
    for tag, value in tree.items():
        out[tag] = value
    return out.tobytes()


# An eXIf chunk larger than this is not read (a damaged or hostile length field).
_MAX_EXIF_CHUNK = 1 << 24


def _png_exif_chunk(path: Path) -> bytes | None:
    """The body of a PNG's eXIf chunk, found by walking the chunks (seeking past their data):
    Pillow finds one placed after the pixel data only by decoding them all."""
    with open(path, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            length, tag = struct.unpack(">I", head[:4])[0], head[4:]
            if tag == b"eXIf":
                return f.read(length) if length <= _MAX_EXIF_CHUNK else None
            if tag == b"IEND":
                return None
            f.seek(length + 4, os.SEEK_CUR)


def _source_exif(im, path: Path) -> Image.Exif:
    if im.format == "PNG" and "exif" not in im.info:
        raw = _png_exif_chunk(path)
        if raw is not None:
            found = Image.Exif()
            found.load(raw)
            return found
        # Image.getexif, not PngImageFile's: that one decodes the pixels to look further
        # (the walk above has looked); this one reads ImageMagick's text-chunk EXIF too.
        return Image.Image.getexif(im)
    return im.getexif()


def _clean_exif(im, path: Path, notes: list[str]) -> bytes | None:
    """The EXIF of ``im`` reduced to :data:`_EXIF_KEEP`, orientation 1 (see
    :class:`ImageInfo`); None when it has none, or (with a note) when it cannot be parsed."""
    try:
        source = _source_exif(im, path)
        if not source:
            return None
        tree = {k: v for k, v in _exif_tree(source).items() if k in _EXIF_KEEP}
        if 0x0112 in tree:
            tree[0x0112] = 1  # the pixels are returned as displayed
        if not tree:
            return None
        return _exif_bytes(tree)
    except Exception as exc:  # noqa: BLE001 - a damaged EXIF block must not fail the image
        notes.append(f"its EXIF block could not be parsed ({type(exc).__name__}); not carried over")
        return None


def _icc_space(profile: bytes) -> bytes | None:
    """The data colour space signature of an ICC profile (bytes 16..19 of its header:
    ``b"RGB "``, ``b"GRAY"``, ``b"CMYK"``, ...), None when it is too short to be a profile."""
    return profile[16:20] if len(profile) >= 128 else None


def _icc_fits(profile: bytes, channels: int) -> bool:
    """Whether a profile describes pixels of ``channels`` (1 grey; 3/4 RGB[A])."""
    return _icc_space(profile) == (b"GRAY" if channels == 1 else b"RGB ")


def _image_info(im, path: Path, *, channels: int) -> ImageInfo:
    notes: list[str] = []
    icc = im.info.get("icc_profile") or None
    if icc is not None and not _icc_fits(icc, channels):
        space = _icc_space(icc)
        what = space.decode("latin-1").strip() if space else "unreadable"
        notes.append(
            f"its ICC profile is for {what} pixels, not the {'grey' if channels == 1 else 'RGB'} "
            "pixels they were decoded to; not carried over"
        )
        icc = None
    return ImageInfo(
        format=im.format, icc_profile=icc, exif=_clean_exif(im, path, notes), notes=tuple(notes)
    )


def _exif_orientation(im, path: Path) -> int:
    """The EXIF orientation of ``im`` opened from ``path`` (1..8; 1 when absent or damaged),
    read without decoding pixels: Pillow's PNG plugin decodes the whole picture to look for an
    eXIf chunk after the pixel data (a third decode of a 16-bit PNG, and a whole decoded image
    held while :func:`image_header` checks the size), so a PNG's chunks are walked instead
    (:func:`_source_exif`). An orientation in the XMP packet counts when EXIF has none, as in
    Pillow's ``getexif``."""
    try:
        value = _source_exif(im, path).get(0x0112)
        if value is None and im.format == "PNG":
            value = Image.Image.getexif(im).get(0x0112)  # the XMP packet's (no decoding)
        value = int(value) if value is not None else 1
        return value if value in range(1, 9) else 1
    except Exception:  # a damaged EXIF block must not make the pixels unreadable
        return 1


def _orientation_to_apply(im, path: Path) -> int:
    """The EXIF orientation (1..8) lightsr must still apply to ``im``'s decoded pixels: its
    :func:`_exif_orientation`, except for a TIFF on a Pillow whose TIFF loader turns the picture
    itself as it decodes it (and reports the turned size from the header on), where turning
    again would be wrong (a TIFF tagged 6 came out turned 180 degrees, one tagged 3 not at
    all)."""
    if im.format == "TIFF" and _pillow_turns_tiff():
        return 1
    return _exif_orientation(im, path)


@functools.cache
def _pillow_turns_tiff() -> bool:
    """Whether this Pillow's TIFF loader applies the orientation tag on load (Pillow 13 does;
    asked of a 2x1 TIFF tagged 3, a half turn, rather than of a version number)."""
    exif = Image.Exif()
    exif[0x0112] = 3
    buffer = io.BytesIO()
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).save(buffer, format="TIFF", exif=exif)
    with Image.open(buffer, formats=["TIFF"]) as im:
        return int(np.asarray(im)[0, 0]) == 255


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels as displayed for EXIF orientation 1..8 (as PIL.ImageOps.exif_transpose)."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _as_hwc(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape:
        raise LightSRError(
            f"{what}: expected an H x W or H x W x C array with C in (1, 3, 4), "
            f"got shape {array.shape}."
        )
    return array


def write_image(
    path: str | os.PathLike,
    array: np.ndarray | RowBands,
    *,
    quality: int = 95,
    overwrite: bool = False,
    unique: bool = False,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> Path:
    """Write an ``H x W [x C]`` uint8 or uint16 array atomically; format from the suffix.
    ``array`` may be :class:`~lightsr.data.png.RowBands` (an image computed band by band):
    a PNG is then written as the bands come, holding one at a time; for Pillow's formats
    (JPEG, WebP, BMP, ...) the bands are pasted into Pillow's image, with no numpy copy of the
    whole; a 16-bit TIFF is written strip by strip as they come (:func:`write_tiff16`).

    uint16 needs ``.png`` or ``.tif``/``.tiff``. PNGs are written by
    :func:`lightsr.data.png.write_png` on ``torch.get_num_threads()`` threads (no copy of the
    image; Paeth rows, zlib run-length strategy), the rest by Pillow.
    What a format cannot hold (alpha in JPEG, ...) is refused by :func:`check_output_format`
    before anything is written. ``quality`` (1..100) applies to JPEG/WebP. Float arrays are
    refused: convert with :func:`tensor_to_image` (which rounds and clamps) first.

    ``icc_profile`` and ``exif`` (as :func:`read_image_with_info` returns them) are embedded
    where the format holds them (PNG, JPEG, WebP, TIFF) and the profile's colour space is the
    written pixels'; EXIF pixel dimensions are set to this image's.
    :func:`dropped_metadata` says beforehand what would be left out.

    An existing file is never replaced unless ``overwrite`` (else
    :class:`~lightsr.errors.OutputExistsError`); with ``unique`` the image goes to the first
    free name of ``path``, ``<stem>_1<suffix>``, ... instead, claimed atomically
    (:func:`lightsr.atomic.atomic_write_unique`). Returns the path written.
    """

    path = Path(path)
    rows = array if isinstance(array, RowBands) else None
    if rows is None:
        array = _as_hwc(np.asarray(array), f"write_image({str(path)!r})")
    suffix = path.suffix.lower()
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise LightSRError(f"quality must be an integer from 1 to 100, not {quality!r}.")
    dtype = np.dtype(array.dtype)
    h, w, c = array.shape
    if dtype in (np.uint8, np.uint16):
        check_output_format(path, channels=c, dtype=dtype, height=h, width=w)
    else:
        raise LightSRError(
            f"write_image({str(path)!r}): array dtype {dtype} is not uint8 or uint16. "
            "Convert float images with lightsr.data.io.tensor_to_image (round + clamp)."
        )
    # WebP stores grey as RGB: the profile must then be an RGB one.
    stored = 3 if (c == 1 and suffix == ".webp") else c
    icc, exif = _metadata_kept(suffix, stored, icc_profile, exif)
    if exif is not None:
        exif = _exif_with_size(exif, width=w, height=h)
    if suffix == ".png":
        # Our writer, not Pillow's: no copy of the image, several times faster (data/png.py)
        png_threads = max(1, torch.get_num_threads())

        def write_png_file(tmp: str) -> None:
            with open(tmp, "wb") as file:
                write_png(file, array, icc_profile=icc, exif=exif, threads=png_threads)

        return _publish(path, write_png_file, overwrite, unique)
    if dtype == np.uint16:  # a 16-bit TIFF, strip by strip as the rows come

        def write_tiff_file(tmp: str) -> None:
            with open(tmp, "wb") as file:
                write_tiff16(file, array, icc_profile=icc, exif=exif)

        return _publish(path, write_tiff_file, overwrite, unique)

    fmt = Image.registered_extensions()[suffix]
    if rows is not None:
        # Pillow's encoders need a whole image: the bands go straight into Pillow's own
        # (4 bytes a pixel for RGB), never into a numpy copy beside it.
        im = _pillow_image_of(rows)
    else:
        assert isinstance(array, np.ndarray)
        im = Image.fromarray(np.ascontiguousarray(array[:, :, 0] if c == 1 else array))
    if stored != c:
        im = im.convert("RGB")
    options: dict[str, Any] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if icc is not None:
        options["icc_profile"] = icc
    if exif is not None:
        options["exif"] = exif
    return _publish(path, lambda tmp: im.save(tmp, format=fmt, **options), overwrite, unique)


def _pillow_image_of(rows: RowBands) -> Image.Image:
    """An 8-bit Pillow image (L, RGB, RGBA) filled band by band from ``rows``."""
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[rows.channels]
    im = Image.new(mode, (rows.width, rows.height))
    row = 0
    for band in rows.checked():
        im.paste(Image.fromarray(band[:, :, 0] if rows.channels == 1 else band), (0, row))
        row += band.shape[0]
    return im


def _metadata_kept(
    suffix: str, channels: int, icc_profile: bytes | None, exif: bytes | None
) -> tuple[bytes | None, bytes | None]:
    """The (profile, EXIF) an image of ``channels`` written as ``suffix`` keeps."""
    if suffix not in _METADATA_SUFFIXES:
        return None, None
    icc = icc_profile if icc_profile and _icc_fits(icc_profile, channels) else None
    if exif is not None and suffix in (".jpg", ".jpeg") and len(exif) > _JPEG_MAX_EXIF:
        exif = None
    return icc, exif or None


def dropped_metadata(
    path: str | os.PathLike,
    *,
    channels: int,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> list[str]:
    """What of ``icc_profile`` / ``exif`` :func:`write_image` would leave out of ``path``
    (an image of ``channels``), each with the reason; empty when everything is kept."""
    suffix = Path(path).suffix.lower()
    name = suffix.lstrip(".").upper() or "this format"
    given = [w for w, v in (("ICC profile", icc_profile), ("EXIF", exif)) if v]
    if not given:
        return []
    if suffix not in _METADATA_SUFFIXES:
        return [f"{' and '.join(given)} not kept: {name} cannot hold them (use .png)"]
    stored = 3 if (channels == 1 and suffix == ".webp") else channels
    icc, kept_exif = _metadata_kept(suffix, stored, icc_profile, exif)
    out = []
    if icc_profile and icc is None:
        out.append("ICC profile not kept: its colour space is not the written pixels'")
    if exif and kept_exif is None:
        out.append(f"EXIF not kept: {len(exif):,} bytes, over JPEG's {_JPEG_MAX_EXIF:,} (use .png)")
    return out


def _exif_with_size(exif: bytes, *, width: int, height: int) -> bytes:
    """``exif`` with its PixelXDimension/PixelYDimension (when present) set to this image's
    size: the input's would be wrong for an upscaled output."""
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        tree = _exif_tree(parsed)
        sub = tree.get(_EXIF_IFD)
        if not sub or (_PIXEL_X not in sub and _PIXEL_Y not in sub):
            return exif
        if _PIXEL_X in sub:
            sub[_PIXEL_X] = int(width)
        if _PIXEL_Y in sub:
            sub[_PIXEL_Y] = int(height)
        return _exif_bytes(tree)
    except Exception:  # noqa: BLE001 - what cannot be rewritten is written as it was
        return exif


def _publish(path: Path, write: Callable[[str], object], overwrite: bool, unique: bool) -> Path:
    if unique and not overwrite:
        return atomic_write_unique(path, write)
    return atomic_write(path, write, overwrite=overwrite)


def check_output_format(
    path: str | os.PathLike,
    *,
    channels: int,
    dtype: np.dtype | type,
    height: int | None = None,
    width: int | None = None,
) -> None:
    """Raise :class:`LightSRError` (naming the fix) unless :func:`write_image` can store an
    image of ``channels`` (1, 3, 4) and ``dtype`` (uint8, uint16) and, when given, that size
    at ``path`` without losing anything: the suffix is one lightsr writes
    (:data:`WRITE_EXTENSIONS`), 16-bit goes to PNG, alpha to PNG/TIFF/WebP, colour not to
    PGM, and the size fits the format (JPEG 65,535, WebP 16,383 pixels a side). Reads no
    pixels: callers check every output before computing any. :func:`cannot_hold` gives the
    same verdict as a short reason."""
    name = str(path)
    suffix = Path(path).suffix.lower()
    if suffix not in WRITE_EXTENSIONS:
        raise LightSRError(
            f"cannot write {name!r}: lightsr does not write images with the suffix "
            f"{suffix or '(none)'!r}; use one of {', '.join(WRITE_EXTENSIONS)} (.png keeps "
            "everything)."
        )
    if np.dtype(dtype) == np.uint16 and suffix not in _16BIT_SUFFIXES:
        raise LightSRError(
            f"cannot write a 16-bit image to {name!r}: 16-bit output needs a .png or .tif "
            "name (or convert to uint8)."
        )
    if channels == 4 and suffix not in _ALPHA_SUFFIXES:
        fmt = "JPEG" if suffix in (".jpg", ".jpeg") else suffix.lstrip(".").upper()
        raise LightSRError(
            f"{fmt} cannot store an alpha channel: write {name!r} as .png (or .tif, .webp)."
        )
    if channels != 1 and suffix == ".pgm":
        raise LightSRError(
            f"PGM holds grey images only; this image has colour: write {name!r} as .png or .ppm."
        )
    limit = _MAX_SIDE.get(suffix)
    if limit is not None and max(height or 0, width or 0) > limit:
        raise LightSRError(
            f"{suffix} images hold at most {limit:,} pixels a side; {name!r} would be "
            f"{width:,}x{height:,}: write it as .png."
        )


def cannot_hold(
    suffix: str,
    *,
    channels: int,
    dtype: np.dtype | type,
    height: int | None = None,
    width: int | None = None,
) -> str | None:
    """Why an image of ``channels`` (1, 3, 4), ``dtype`` and size cannot be written as
    ``suffix`` (a short reason, e.g. ``"JPEG cannot hold an alpha channel"``), or None when it
    can: the rules of :func:`check_output_format`, for choosing a format instead of refusing."""
    suffix = suffix.lower()
    name = _FORMAT_NAMES.get(suffix, suffix.lstrip(".").upper())
    if suffix not in WRITE_EXTENSIONS:
        return f"lightsr does not write {suffix or 'files without a suffix'}"
    if np.dtype(dtype) == np.uint16 and suffix not in _16BIT_SUFFIXES:
        return f"{name} cannot hold 16 bits a sample"
    if channels == 4 and suffix not in _ALPHA_SUFFIXES:
        return f"{name} cannot hold an alpha channel"
    if channels != 1 and suffix == ".pgm":
        return "PGM holds grey images only"
    limit = _MAX_SIDE.get(suffix)
    if limit is not None and max(height or 0, width or 0) > limit:
        return f"{name} holds at most {limit:,} pixels a side"
    return None


# Uncompressed bytes per strip of a written TIFF: readers decode a strip at a time.
_TIFF_STRIP_BYTES = 1 << 18
_LONG_PLACEHOLDER = 1 << 31


def write_tiff16(
    file: BinaryIO,
    image: np.ndarray | RowBands,
    *,
    level: int = 6,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """Write a 16-bit TIFF (C = 1 grey, 3 RGB, 4 RGBA with unassociated alpha; little-endian,
    Deflate-compressed strips) of a uint16 array or :class:`RowBands` to the open, seekable
    binary ``file``, with ``icc_profile`` (tag 34675) and the tags of ``exif`` (its IFD0 tags
    and Exif/GPS sub-directories) when given.

    The directory (serialised by Pillow's ``ImageFileDirectory_v2``) comes first, the strips
    after it, each compressed and written as its rows arrive: the directory is written with
    placeholder strip offsets of the same width and rewritten at the end, so only one strip is
    held, never the image."""
    rows = image if isinstance(image, RowBands) else RowBands.of(_as_hwc(image, "write_tiff16"))
    if np.dtype(rows.dtype) != np.uint16:
        raise LightSRError(f"a 16-bit TIFF needs uint16 samples, got {rows.dtype}.")
    h, w, c = rows.shape
    per_strip = max(1, _TIFF_STRIP_BYTES // (w * c * 2))
    strips = -(-h // per_strip)
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    if exif:
        parsed = Image.Exif()
        parsed.load(exif)
        for tag, value in _exif_tree(parsed).items():
            if tag in _EXIF_KEEP:
                ifd[tag] = value
    ifd[256] = w  # ImageWidth
    ifd[257] = h  # ImageLength
    ifd[258] = (16,) * c  # BitsPerSample
    ifd[259] = 8  # Compression: Deflate (Adobe)
    ifd[262] = 1 if c == 1 else 2  # Photometric: min-is-black, RGB
    ifd[277] = c  # SamplesPerPixel
    ifd[278] = per_strip  # RowsPerStrip
    ifd[284] = 1  # PlanarConfiguration: chunky
    ifd[339] = (1,) * c  # SampleFormat: unsigned integer
    if c == 4:
        ifd[338] = 2  # ExtraSamples: unassociated alpha
    if icc_profile:
        ifd[34675] = icc_profile
    # Placeholders too large for SHORT: the tags are typed LONG now and stay so, so the real
    # offsets and counts rewrite the directory at the same length.
    ifd[273] = (_LONG_PLACEHOLDER,) * strips  # StripOffsets
    ifd[279] = (_LONG_PLACEHOLDER,) * strips  # StripByteCounts
    head = ifd.tobytes(8)
    start = file.tell()
    file.write(b"II*\0" + struct.pack("<I", 8) + head)
    offsets: list[int] = []
    counts: list[int] = []
    written = 0
    for block, _ in row_blocks(rows, per_strip):
        data = zlib.compress(np.ascontiguousarray(block, dtype="<u2").tobytes(), level)
        # relative to the end of the directory: Pillow adds that end when it writes them
        offsets.append(written)
        counts.append(len(data))
        written += len(data)
        file.write(data)
    end = file.tell()
    ifd[273] = tuple(offsets)
    ifd[279] = tuple(counts)
    final = ifd.tobytes(8)
    if len(final) != len(head):
        raise LightSRError("the TIFF directory changed size when its strips were filled in.")
    file.seek(start + 8)
    file.write(final)
    file.seek(end)


def encode_tiff16(
    array: np.ndarray,
    *,
    level: int = 6,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> bytes:
    """The bytes :func:`write_tiff16` writes for ``array`` (for small images and tests)."""
    buffer = io.BytesIO()
    write_tiff16(buffer, array, level=level, icc_profile=icc_profile, exif=exif)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Arrays <-> model tensors
# ---------------------------------------------------------------------------------------------


def image_to_tensor(array: np.ndarray):
    """``H x W [x C]`` uint8 (/255) or uint16 (/65535) -> float32 tensor (1, C, H, W) in [0, 1].
    Float arrays are taken as already in [0, 1]."""

    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise LightSRError(f"image_to_tensor: expected H x W x C, got shape {array.shape}.")
    if array.dtype == np.uint8:
        x = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        x = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        x = array.astype(np.float32)
    else:
        raise LightSRError(f"image_to_tensor: unsupported dtype {array.dtype}.")
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def tensor_to_image(tensor, dtype: type | np.dtype = np.uint8) -> np.ndarray:
    """Float tensor (1, C, H, W) or (C, H, W) in [0, 1] -> ``H x W x C`` uint8 or uint16.

    Values are clamped to [0, 1], scaled by 255 (or 65535) and rounded half away from zero
    (MATLAB's im2uint8), as the papers do before measuring.
    """

    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise LightSRError(f"tensor_to_image: dtype must be uint8 or uint16, not {dtype}.")
    t = tensor.detach()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise LightSRError(f"tensor_to_image: expected a batch of one, got {tuple(t.shape)}.")
        t = t[0]
    if t.dim() != 3:
        raise LightSRError(
            f"tensor_to_image: expected (1, C, H, W) or (C, H, W), got {tuple(t.shape)}."
        )
    peak = 255.0 if dtype == np.uint8 else 65535.0
    t = t.double() if t.dtype == torch.float64 else t.float()  # keep float64 precision
    t = torch.floor(t.clamp(0.0, 1.0) * peak + 0.5)
    return np.ascontiguousarray(t.permute(1, 2, 0).cpu().numpy().astype(dtype))


__all__ = [
    "IMAGE_EXTENSIONS",
    "READ_FORMATS",
    "WRITE_EXTENSIONS",
    "ImageHeader",
    "ImageInfo",
    "cannot_hold",
    "check_output_format",
    "dropped_metadata",
    "encode_png",
    "encode_tiff16",
    "write_tiff16",
    "image_header",
    "image_to_tensor",
    "is_image_suffix",
    "list_images",
    "lossy_format",
    "read_image",
    "read_image_info",
    "RowBands",
    "read_image_with_info",
    "tensor_to_image",
    "write_image",
]
