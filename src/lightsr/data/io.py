"""Reading and writing images as numpy arrays, and converting them to model tensors.

Arrays are ``H x W x C`` (C = 1 grey, 3 RGB, 4 RGBA), ``uint8`` (0..255) or ``uint16``
(0..65535). Model tensors are float32 ``(1, C, H, W)`` in [0, 1].

Pillow decodes most formats; it cannot keep 16 bits of a colour PNG (it truncates to 8), so
those are decoded twice through Pillow's own PNG decoder with the high- and low-byte unpackers
and recombined, and 16-bit PNGs are written by a small zlib-based writer.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..atomic import atomic_write
from ..errors import ImageReadError, LightSRError

#: File suffixes treated as images when listing a folder (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Errors Pillow (and its C decoders) raise for files that are not images or are damaged.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)


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
    applied. A missing, unreadable or damaged file raises :class:`ImageReadError` naming it.
    """

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image {str(path)!r} does not exist (or is not a file).")
    try:
        with Image.open(path) as im:
            orientation = _exif_orientation(im)
            png16 = _png16_colour_type(path) if im.format == "PNG" else None
            arr = _read_png16_colour(path, png16) if png16 else _pil_to_array(im, path)
    except LightSRError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"image {str(path)!r} is too large to decode safely ({exc})."
        ) from None
    except _DECODE_ERRORS as exc:
        raise ImageReadError(
            f"cannot read {str(path)!r}: not an image or a damaged file "
            f"({type(exc).__name__}: {exc})."
        ) from None
    return np.ascontiguousarray(_apply_orientation(arr, orientation))


def _pil_to_array(im, path: Path) -> np.ndarray:
    mode = im.mode
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info or im.palette.mode == "RGBA"
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("LA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode in ("RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.uint16)  # big-endian variants -> native
        return arr[:, :, None]
    elif mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(
                f"{str(path)!r} is a 32-bit integer image with values outside 0..65535; only "
                "8- and 16-bit images are supported. Convert it to a 16-bit PNG."
            )
        return arr.astype(np.uint16)[:, :, None]
    elif mode == "F":
        raise ImageReadError(
            f"{str(path)!r} is a floating-point image; only 8- and 16-bit images are supported. "
            "Convert it to an 8- or 16-bit PNG."
        )
    elif mode not in ("L", "RGB", "RGBA"):
        im = im.convert("RGB")
    arr = np.asarray(im)
    if arr.dtype != np.uint8:
        raise ImageReadError(f"{str(path)!r}: unsupported pixel format {mode!r}.")
    return arr[:, :, None] if arr.ndim == 2 else arr


def _png16_colour_type(path: Path) -> int | None:
    """PNG colour type (2 RGB, 4 grey+alpha, 6 RGBA) when the file is 16-bit and Pillow would
    truncate it to 8 bits; None otherwise (16-bit grey is read fine as mode I;16)."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != _PNG_MAGIC or head[12:16] != b"IHDR":
        return None
    depth, ctype = head[24], head[25]
    return ctype if depth == 16 and ctype in (2, 4, 6) else None


def _decode_png_as(path: Path, mode: str, rawmode: str) -> np.ndarray:
    """Run Pillow's PNG decoder (which does the unfiltering/de-interlacing) with another
    unpacker of the same bits per pixel, to get at bytes its default unpacker drops."""

    with Image.open(path) as im:
        if len(im.tile) != 1 or im.tile[0][0] != "zip" or im.mode != mode:
            raise OSError("unexpected PNG layout")
        im.tile = [im.tile[0]._replace(args=rawmode)]
        im.load()
        return np.asarray(im)


def _read_png16_colour(path: Path, colour_type: int) -> np.ndarray:
    if colour_type == 4:
        # 16-bit grey+alpha = 4 bytes/pixel: the 8-bit RGBA unpacker hands back all 4 bytes.
        b = _decode_png_as(path, "RGBA", "RGBA").astype(np.uint16)
        grey = (b[..., 0] << 8) | b[..., 1]
        alpha = (b[..., 2] << 8) | b[..., 3]
        return np.stack([grey, grey, grey, alpha], axis=-1)
    mode = "RGB" if colour_type == 2 else "RGBA"
    # PNG samples are big-endian: the ";16B" unpacker keeps the high bytes, ";16L" (which
    # assumes little-endian) keeps the low ones.
    high = _decode_png_as(path, mode, f"{mode};16B").astype(np.uint16)
    low = _decode_png_as(path, mode, f"{mode};16L").astype(np.uint16)
    return (high << 8) | low


def _exif_orientation(im) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a damaged EXIF block must not make the pixels unreadable
        return 1


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


def write_image(path: str | os.PathLike, array: np.ndarray, *, quality: int = 95) -> None:
    """Write an ``H x W [x C]`` uint8 or uint16 array atomically; format from the suffix.

    uint16 needs ``.png`` (written by a small zlib-based PNG writer, any C). JPEG cannot store
    alpha. ``quality`` applies to JPEG/WebP. Float arrays are refused: convert with
    :func:`tensor_to_image` (which rounds and clamps) first.
    """

    path = Path(path)
    array = _as_hwc(array, f"write_image({str(path)!r})")
    suffix = path.suffix.lower()
    if array.dtype == np.uint16:
        if suffix != ".png":
            raise LightSRError(
                f"cannot write a 16-bit image to {str(path)!r}: 16-bit output needs a .png name "
                "(or convert to uint8)."
            )
        data = encode_png16(array)
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
        return
    if array.dtype != np.uint8:
        raise LightSRError(
            f"write_image({str(path)!r}): array dtype {array.dtype} is not uint8 or uint16. "
            "Convert float images with lightsr.data.io.tensor_to_image (round + clamp)."
        )

    formats = Image.registered_extensions()
    fmt = formats.get(suffix)
    if fmt is None:
        raise LightSRError(
            f"cannot tell the image format of {str(path)!r} from its suffix; use one of "
            f"{', '.join(IMAGE_EXTENSIONS)}."
        )
    if fmt == "JPEG" and array.shape[2] == 4:
        raise LightSRError(f"JPEG cannot store an alpha channel: write {str(path)!r} as .png.")
    im = Image.fromarray(np.ascontiguousarray(array[:, :, 0] if array.shape[2] == 1 else array))
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    atomic_write(path, lambda tmp: im.save(tmp, format=fmt, **options))


def encode_png16(array: np.ndarray, *, level: int = 6) -> bytes:
    """A 16-bit PNG (grey, grey+alpha... C = 1, 3 or 4; no filtering) of a uint16 array."""
    array = _as_hwc(array, "encode_png16")
    if array.dtype != np.uint16:
        raise LightSRError(f"encode_png16 needs a uint16 array, got {array.dtype}.")
    h, w, c = array.shape
    colour_type = {1: 0, 3: 2, 4: 6}[c]
    rows = np.ascontiguousarray(array, dtype=">u2").view(np.uint8).reshape(h, w * c * 2)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter type 0 per row

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (
        _PNG_MAGIC
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), level))
        + chunk(b"IEND", b"")
    )


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
    "encode_png16",
    "image_to_tensor",
    "list_images",
    "read_image",
    "tensor_to_image",
    "write_image",
]
