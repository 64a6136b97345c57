"""`lightsr upscale` output control: format and quality, name suffix, outscale, skip-existing,
self-ensemble, ICC/EXIF carried over, 16-bit PNG/TIFF, the start line, bad combinations."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import synthetic_image as _image
from PIL import Image, ImageCms, ImageFile, TiffImagePlugin, features
from torch import nn

import lightsr
import lightsr.cli.upscale_cmd
import lightsr.hub as hub
import lightsr.upscale
from lightsr.cli import main
from lightsr.data.io import (
    encode_tiff16,
    image_header,
    read_image,
    read_image_info,
    read_image_with_info,
    write_image,
)
from lightsr.data.resize import imresize
from lightsr.errors import LightSRError
from lightsr.models.base import SRModel
from lightsr.models.bicubic import Bicubic
from lightsr.upscale import OutputOptions, Upscaler, resize_image, upscale_files

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
DATETIME_ORIGINAL, ORIENTATION, MAKE = 0x9003, 0x0112, 0x010F


class TinyNet(SRModel):
    """Two 3x3 convs + pixel shuffle + nearest skip, seeded: a real network in microseconds,
    not flip-equivariant (so the self-ensemble changes its output)."""

    def __init__(self, *, scale: int = 2) -> None:
        super().__init__(scale=scale)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(8, 3 * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.body(x) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def _net(scale: int = 2) -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet(scale=scale).eval()
    with torch.no_grad():  # larger weights than default init: transforms and tiles would show
        for p in model.parameters():
            p.mul_(3.0)
    return model


def _fsrcnn(scale: int) -> SRModel:
    """A registered model (the CLI rebuilds it from a checkpoint), seeded; receptive field 7."""
    torch.manual_seed(0)
    return lightsr.create_model("fsrcnn", scale=scale)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _srgb() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[MAKE] = "TestCam"
    exif[ORIENTATION] = orientation
    exif[0x0100] = 9999  # ImageWidth: describes the old file, must not be carried
    exif[EXIF_IFD] = {DATETIME_ORIGINAL: "2021:06:07 08:09:10", 0xA002: 20, 0xA003: 12}
    exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.5), 3: "E", 4: (2.0, 17.0, 40.2)}
    return exif


def _open_exif(path: Path) -> tuple[dict, bytes | None]:
    """The EXIF of a written file as a dict (Exif and GPS sub-directories as nested dicts,
    read while the file is open: Pillow reads a TIFF's lazily) and its ICC profile."""
    with Image.open(path) as im:
        exif = im.getexif()
        tree = dict(exif)
        for tag in (EXIF_IFD, GPS_IFD):
            if tag in tree:
                tree[tag] = dict(exif.get_ifd(tag))
        return tree, im.info.get("icc_profile")


# ---------------------------------------------------------------------------------------------
# Format and quality
# ---------------------------------------------------------------------------------------------


def test_jpeg_quality_sets_pillows_tables_and_the_size(tmp_path):
    img = _image(40, 48)
    write_image(tmp_path / "in.png", img)
    sizes = {}
    for q in (30, 95):
        report = upscale_files(
            tmp_path / "in.png", tmp_path / f"q{q}", model=_net(), format="jpg", quality=q
        )
        (dst,) = [d for _, d in report.written]
        assert dst.name == "in_x2.jpg"
        ref = io.BytesIO()
        Image.fromarray(img).save(ref, format="JPEG", quality=q)
        with Image.open(dst) as got, Image.open(ref) as want:
            assert got.format == "JPEG" and got.size == (96, 80)
            assert got.quantization == want.quantization  # Pillow's tables for quality q
        sizes[q] = dst.stat().st_size
    assert sizes[30] < 0.7 * sizes[95]
    # the CLI's --quality is the same setting
    argv = ["upscale", str(tmp_path / "in.png"), "--model", "bicubic", "--scale", "2"]
    assert main([*argv, "-o", str(tmp_path / "cli"), "--format", "jpg", "--quality", "30"]) == 0
    with Image.open(tmp_path / "cli" / "in_x2.jpg") as got, Image.open(ref) as q95:
        assert got.quantization != q95.quantization  # q95 is what `ref` holds last
        ref30 = io.BytesIO()
        Image.fromarray(img).save(ref30, format="JPEG", quality=30)
        assert got.quantization == Image.open(ref30).quantization


def test_format_default_is_the_inputs_kind_where_it_can_hold_the_image(tmp_path, capsys):
    rgba = np.concatenate([_image(12, 10), _image(12, 10, c=1, seed=3)], axis=2)
    write_image(tmp_path / "a.jpg", _image(12, 10))
    write_image(tmp_path / "b.jpeg", _image(12, 10))
    write_image(tmp_path / "c.png", rgba)
    write_image(tmp_path / "d.webp", rgba)
    write_image(tmp_path / "e.tif", _image(12, 10, dtype=np.uint16))
    write_image(tmp_path / "f.bmp", _image(12, 10))
    write_image(tmp_path / "g.webp", _image(3, 4100))  # x4: 16,400 wide, over WebP's 16,383
    argv = ["upscale", str(tmp_path), "-o", str(tmp_path / "out"), "--model", "bicubic"]
    assert main([*argv, "--scale", "4", "--quiet"]) == 0
    out = tmp_path / "out"
    formats = {p.name: Image.open(p).format for p in sorted(out.iterdir())}
    assert formats == {
        "a_x4.jpg": "JPEG",
        "b_x4.jpeg": "JPEG",  # the input's own spelling of the suffix
        "c_x4.png": "PNG",
        "d_x4.webp": "WEBP",
        "e_x4.tif": "TIFF",
        "f_x4.png": "PNG",
        "g_x4.png": "PNG",
    }
    assert read_image(out / "d_x4.webp").shape == (48, 40, 4)  # alpha kept in WebP
    assert read_image(out / "e_x4.tif").dtype == np.uint16
    err = capsys.readouterr().err
    assert "f.bmp: written as PNG: the input is BMP" in err
    assert "g.webp: written as PNG, not WebP (the input's format): WebP holds at most" in err
    assert "a.jpg: written" not in err  # no note where the format is the input's
    # asked for: jpg falls back to PNG for alpha and 16-bit, and says so
    report = _quiet(
        upscale_files,
        [tmp_path / "c.png", tmp_path / "e.tif", tmp_path / "a.jpg"],
        tmp_path / "asked",
        model=Bicubic(scale=2),
        format="jpg",
    )
    assert [d.name for _, d in report.written] == ["c_x2.png", "e_x2.png", "a_x2.jpg"]
    notes = {s.name: n for s, n in report.notes}
    assert notes == {
        "c.png": "written as PNG, not JPEG (asked for): JPEG cannot hold an alpha channel",
        "e.tif": "written as PNG, not JPEG (asked for): JPEG cannot hold 16 bits a sample",
    }
    assert read_image(tmp_path / "asked" / "e_x2.png").dtype == np.uint16
    # the library's default stays PNG for every input (lossless; the CLI asks for "auto")
    report = upscale_files(tmp_path / "a.jpg", tmp_path / "lib", model=Bicubic(scale=2))
    assert [d.name for _, d in report.written] == ["a_x2.png"]


def test_two_inputs_with_one_output_name_keep_both(tmp_path):
    write_image(tmp_path / "a.png", _image(8, 8))
    write_image(tmp_path / "a.jpg", _image(8, 8, seed=4))
    for flags in ([], ["--overwrite"], ["--skip-existing"]):
        out = tmp_path / f"out{len(flags)}{''.join(flags)}"
        argv = ["upscale", str(tmp_path / "a.jpg"), str(tmp_path / "a.png"), "-o", str(out)]
        assert main([*argv, "--model", "bicubic", "--scale", "2", "--format", "png", *flags]) == 0
        assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "a_x2_1.png"], flags
        # each file is its own input's output: nothing replaced, nothing skipped
        got = {read_image(p).tobytes() for p in out.iterdir()}
        want = {
            Upscaler(Bicubic(scale=2))(read_image(tmp_path / n)).tobytes()
            for n in ("a.png", "a.jpg")
        }
        assert got == want


# ---------------------------------------------------------------------------------------------
# Names: --suffix, --skip-existing
# ---------------------------------------------------------------------------------------------


def test_suffix_names_the_outputs_and_an_empty_one_needs_another_folder(tmp_path, capsys):
    write_image(tmp_path / "in.png", _image(8, 10))
    base = ["upscale", str(tmp_path), "--model", "bicubic", "--scale", "3", "--quiet"]
    assert main([*base, "--suffix", "_up{scale}"]) == 0
    assert (tmp_path / "in_up3.png").exists()
    # a second run over the folder knows its own outputs by the suffix and skips them
    assert main([*base, "--suffix", "_up{scale}"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "in_up3.png", "in_up3_1.png"]
    assert "in_up3.png: looks like an earlier output (name ends in _up3)" in capsys.readouterr().err
    # empty: the input's own name, in another folder
    assert main([*base, "--suffix", "", "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "in.png",
        "in_up3.png",
        "in_up3_1.png",
    ]
    # empty beside the inputs: each output would be its input; refused per file, none touched
    before = (tmp_path / "in.png").read_bytes()
    assert main(["upscale", str(tmp_path / "in.png"), "--model", "bicubic", "--suffix", ""]) == 1
    assert "is the input's own name" in capsys.readouterr().err
    assert (tmp_path / "in.png").read_bytes() == before
    with pytest.raises(LightSRError, match="holds '/'"):
        OutputOptions(name_suffix="_x2/sub")


def test_skip_existing_leaves_the_file_alone_and_says_so(tmp_path, capsys):
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, _image(8, 8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_x2.png").write_bytes(b"an earlier result, not to be touched")
    os.utime(out / "a_x2.png", ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    argv = ["upscale", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out)]
    argv += ["--model", "bicubic", "--scale", "2", "--quiet"]
    assert main([*argv, "--skip-existing"]) == 0
    assert (out / "a_x2.png").read_bytes() == b"an earlier result, not to be touched"
    assert (out / "a_x2.png").stat().st_mtime_ns == 1_000_000_000_000_000_000
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "b_x2.png"]
    err = capsys.readouterr().err
    assert "1 written, 1 already there (kept), 0 skipped, 0 failed" in err
    assert f"kept    {tmp_path / 'a.png'}: its output {out / 'a_x2.png'} exists" in err
    # everything done already: nothing written, and that is success
    b_mtime = (out / "b_x2.png").stat().st_mtime_ns
    assert main([*argv, "--skip-existing"]) == 0
    assert "0 written, 2 already there (kept)" in capsys.readouterr().err
    assert (out / "b_x2.png").stat().st_mtime_ns == b_mtime
    # without the flag a new numbered name, as always
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a_x2.png",
        "a_x2_1.png",
        "b_x2.png",
        "b_x2_1.png",
    ]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_files_are_written_from_bands_not_a_whole_output(tmp_path, monkeypatch, suffix):
    """upscale_files never holds the whole output for a PNG: the bands go to the writer as
    they are computed (other formats join them); the pixels are the whole call's."""
    image = _image(40, 30, c=4 if suffix == ".png" else 3, seed=5)
    write_image(tmp_path / "a.png", image)
    runner = Upscaler(Bicubic(scale=2), tile=8, progress=False)
    expected = runner(image)
    heights: list[int] = []
    real = Upscaler.bands

    def recorded(self, img):
        for band in real(self, img):
            heights.append(band.shape[0])
            yield band

    def refused(self, img):
        raise AssertionError("the whole-image call ran")

    monkeypatch.setattr(Upscaler, "bands", recorded)
    monkeypatch.setattr(Upscaler, "__call__", refused)
    report = upscale_files(tmp_path / "a.png", tmp_path / "out", model=runner, suffix=suffix)
    ((_, written),) = report.written
    assert sum(heights) == 80 and len(heights) > 2 and max(heights) < 40
    if suffix == ".png":
        np.testing.assert_array_equal(read_image(written), expected)
    else:
        assert written.suffix == ".jpg" and read_image(written).shape == expected.shape


def test_skip_existing_when_the_output_appears_during_the_run(tmp_path, monkeypatch):
    """Another process writes the output after the preflight: the name is claimed atomically
    at publishing, so that file is kept and the input counted as already done."""
    write_image(tmp_path / "a.png", _image(8, 8))
    real = Upscaler.bands

    def and_meanwhile(self, image):  # runs as the PNG is written, band by band
        (tmp_path / "out" / "a_x2.png").write_bytes(b"theirs")
        yield from real(self, image)

    monkeypatch.setattr(Upscaler, "bands", and_meanwhile)
    report = upscale_files(
        tmp_path / "a.png", tmp_path / "out", model=Bicubic(scale=2), skip_existing=True
    )
    assert not report.written and not report.failed
    assert report.existing == [(tmp_path / "a.png", tmp_path / "out" / "a_x2.png")]
    assert (tmp_path / "out" / "a_x2.png").read_bytes() == b"theirs"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x2.png"]  # no temp left


# ---------------------------------------------------------------------------------------------
# Outscale
# ---------------------------------------------------------------------------------------------


def test_outscale_is_the_network_then_matlab_bicubic_or_lanczos(tmp_path):
    img = _image(13, 10)  # 3.5 * 13 = 45.5: rounded half up to 46
    net = _net(scale=4)
    network = Upscaler(net, tile=None)(img)
    up = Upscaler(net, tile=None, outscale=3.5)
    assert up.output_size(13, 10) == (46, 35)
    got = up(img)
    assert got.shape == (46, 35, 3) and got.dtype == np.uint8
    assert np.array_equal(got, imresize(network, output_shape=(46, 35)))
    # tiled: the same
    assert np.array_equal(Upscaler(net, tile=4, outscale=3.5)(img), got)
    # Lanczos: Pillow's, per channel in float, rounded half up
    lanczos = Upscaler(net, tile=None, outscale=3.5, outscale_filter="lanczos")(img)
    planes = [
        np.asarray(
            Image.fromarray(network[:, :, c].astype(np.float32)).resize(
                (35, 46), Image.Resampling.LANCZOS
            )
        )
        for c in range(3)
    ]
    want = np.floor(np.clip(np.stack(planes, axis=2), 0, 255) + 0.5).astype(np.uint8)
    assert np.array_equal(lanczos, want) and not np.array_equal(lanczos, got)
    # smaller than the network's scale: antialiased (MATLAB's kernel stretched)
    small = Upscaler(net, tile=None, outscale=1.5)(img)
    assert small.shape == (20, 15, 3)
    assert np.array_equal(small, imresize(network, output_shape=(20, 15)))
    # the CLI writes that size, named by it
    fsrcnn = _fsrcnn(4)
    write_image(tmp_path / "in.png", img)
    lightsr.save(fsrcnn, tmp_path / "net.safetensors")
    argv = ["upscale", str(tmp_path / "in.png"), "--checkpoint", str(tmp_path / "net.safetensors")]
    assert main([*argv, "--outscale", "3.5", "-o", str(tmp_path), "--quiet"]) == 0
    want = Upscaler(fsrcnn, tile=None, outscale=3.5)(img)
    assert np.array_equal(read_image(tmp_path / "in_x3.5.png"), want)


@pytest.mark.parametrize(
    "fmt, c, dtype, outscale, filter",
    [
        ("png", 4, np.uint8, 1.5, "bicubic"),  # shrinks the x2 network's output
        ("tiff", 3, np.uint16, 3.5, "lanczos"),  # written strip by strip
        ("png", 1, np.uint16, 2.5, "bicubic"),
        ("tiff", 3, np.uint8, 3.5, "lanczos"),  # 8-bit: Pillow's image filled band by band
    ],
)
def test_outscale_files_are_the_whole_call(tmp_path, fmt, c, dtype, outscale, filter):
    """upscale_files resizes the network's bands as they come (Upscaler.bands): the file holds
    the whole call's pixels, at the outscale's size, in every writer."""
    img = _image(37, 29, c=c, dtype=dtype, seed=6)
    src = tmp_path / f"in.{'tif' if fmt == 'tiff' else 'png'}"
    write_image(src, img if c > 1 else img[:, :, 0])
    runner = Upscaler(_net(), tile=8, outscale=outscale, outscale_filter=filter, progress=False)
    report = _quiet(upscale_files, src, tmp_path / "out", model=runner, format=fmt)
    assert not report.failed and len(report.written) == 1
    got = read_image(report.written[0][1])
    want = Upscaler(_net(), tile=None, outscale=outscale, outscale_filter=filter)(img)
    assert got.shape[:2] == runner.output_size(37, 29) and got.dtype == want.dtype
    np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_outscale_keeps_alpha_and_16_bits():
    rgba = np.concatenate(
        [_image(9, 11, dtype=np.uint16), _image(9, 11, c=1, dtype=np.uint16, seed=2)], axis=2
    )
    net = _net()
    network = Upscaler(net, tile=None)(rgba)
    got = Upscaler(net, tile=None, outscale=2.5)(rgba)
    assert got.shape == (23, 28, 4) and got.dtype == np.uint16  # 22.5 -> 23, 27.5 -> 28
    assert np.array_equal(got, imresize(network, output_shape=(23, 28)))
    grey = Upscaler(net, tile=None, outscale=2.5)(rgba[:, :, 0])
    assert grey.shape == (23, 28)


def test_the_output_limit_counts_the_final_and_the_network_size():
    img = _image(10, 10)
    # x4 network then 6x: 40x40 = 1,600 from the network, 60x60 = 3,600 in the end
    with pytest.raises(LightSRError, match=r"x6 output would be 60x60 = 3,600 pixels"):
        Upscaler(Bicubic(scale=4), tile=None, outscale=6, max_output_pixels=2000)(img)
    # x4 network then 2x: 20x20 in the end, but the network's 40x40 is held first
    with pytest.raises(LightSRError, match=r"x4 network output would be 40x40 = 1,600 pixels"):
        Upscaler(Bicubic(scale=4), tile=None, outscale=2, max_output_pixels=1000)(img)
    assert Upscaler(Bicubic(scale=4), tile=None, outscale=2, max_output_pixels=1600)(img).shape == (
        20,
        20,
        3,
    )
    for bad in (0, -1.5, float("nan"), float("inf"), True, "3"):
        with pytest.raises(LightSRError, match="outscale must be a number above 0"):
            Upscaler(Bicubic(scale=2), outscale=bad)


# ---------------------------------------------------------------------------------------------
# Self-ensemble
# ---------------------------------------------------------------------------------------------


def test_self_ensemble_is_the_mean_of_the_8_transforms_tiled_or_not():
    net = _net()
    x = torch.rand(1, 3, 18, 23, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs = []
        for flip_w in (False, True):
            for flip_h in (False, True):
                for transpose in (False, True):
                    t = x.flip(-1) if flip_w else x
                    t = t.flip(-2) if flip_h else t
                    t = t.transpose(-1, -2) if transpose else t
                    y = net(t)
                    y = y.transpose(-1, -2) if transpose else y
                    y = y.flip(-2) if flip_h else y
                    outs.append(y.flip(-1) if flip_w else y)
        want = torch.stack(outs).mean(0)
        plain = net(x)
    untiled = Upscaler(net, tile=None, self_ensemble=True).upscale_tensor(x)
    tiled = Upscaler(net, tile=7, self_ensemble=True).upscale_tensor(x)
    assert torch.allclose(untiled, want, atol=2e-5)
    assert torch.allclose(tiled, untiled, atol=2e-5)
    assert (untiled - plain).abs().max() > 0.05  # the ensemble changed the result
    # on uint8 images and through the CLI flag
    img = _image(14, 12)
    a = Upscaler(net, tile=None, self_ensemble=True)(img)
    b = Upscaler(net, tile=5, self_ensemble=True)(img)
    assert np.array_equal(a, b) and not np.array_equal(a, Upscaler(net, tile=None)(img))


def test_evaluate_self_ensemble_uses_the_same_function():
    net = _net()
    lr = _image(10, 9)
    got = lightsr.evaluate.super_resolve(net, lr, self_ensemble=True)
    x = torch.from_numpy(lr.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        want = lightsr.evaluate.ensemble_x8(net, x)
    assert np.array_equal(got, lightsr.data.io.tensor_to_image(want))


# ---------------------------------------------------------------------------------------------
# Metadata: ICC, EXIF, orientation; 16-bit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff"])
def test_icc_and_exif_follow_and_the_orientation_is_applied_once(tmp_path, fmt):
    stored = _image(12, 20)  # displayed 20 high, 12 wide: EXIF orientation 6 (turn right)
    icc = _srgb()
    src = tmp_path / "photo.jpg"
    Image.fromarray(stored).save(src, quality=98, icc_profile=icc, exif=_exif(orientation=6))
    displayed = read_image(src)
    assert displayed.shape == (20, 12, 3)
    report = upscale_files(src, tmp_path / "out", model=Bicubic(scale=2), format=fmt)
    (dst,) = [d for _, d in report.written]
    exif, got_icc = _open_exif(dst)
    assert got_icc == icc
    assert exif[MAKE] == "TestCam" and exif[ORIENTATION] == 1
    # the input's ImageWidth (9999) is not carried; a TIFF has its own, the true one
    assert exif.get(0x0100) == (24 if fmt == "tiff" else None)
    sub = exif[EXIF_IFD]
    assert sub[DATETIME_ORIGINAL] == "2021:06:07 08:09:10"
    assert (sub[0xA002], sub[0xA003]) == (24, 40)  # the output's size, not the input's
    assert exif[GPS_IFD] == {1: "N", 2: (48.0, 51.0, 29.5), 3: "E", 4: (2.0, 17.0, 40.2)}
    out = read_image(dst)
    assert out.shape == (40, 24, 3)  # displayed orientation, upscaled; not turned again
    if fmt in ("png", "tiff"):  # lossless: exactly the upscaled displayed pixels
        assert np.array_equal(out, Upscaler(Bicubic(scale=2))(displayed))


def test_metadata_left_out_on_request_or_where_it_does_not_fit(tmp_path, capsys):
    icc = _srgb()
    src = tmp_path / "a.png"
    Image.fromarray(_image(8, 8)).save(src, icc_profile=icc, exif=_exif())
    argv = ["upscale", str(src), "--model", "bicubic", "--scale", "2", "--quiet"]
    assert main([*argv, "-o", str(tmp_path / "none"), "--no-metadata"]) == 0
    exif, got_icc = _open_exif(tmp_path / "none" / "a_x2.png")
    assert got_icc is None and not exif
    # BMP holds neither: written without them, with a note
    report = upscale_files(src, tmp_path / "bmp", model=Bicubic(scale=2), suffix=".bmp")
    assert [n for _, n in report.notes] == [
        "ICC profile and EXIF not kept: BMP cannot hold them (use .png)"
    ]
    # a profile for other pixels (here a grey one on an RGB image) is not carried
    grey_icc = icc[:16] + b"GRAY" + icc[20:]
    Image.fromarray(_image(8, 8)).save(tmp_path / "g.png", icc_profile=grey_icc)
    info = read_image_info(tmp_path / "g.png")
    assert info.icc_profile is None and "ICC profile is for GRAY pixels" in info.notes[0]
    report = upscale_files(tmp_path / "g.png", tmp_path / "g", model=Bicubic(scale=2))
    assert "ICC profile is for GRAY pixels" in report.notes[0][1]
    assert _open_exif(tmp_path / "g" / "g_x2.png")[1] is None


def test_exif_after_the_pixel_data_of_a_png_is_found_without_decoding(tmp_path, monkeypatch):
    src = tmp_path / "late.png"
    Image.fromarray(_image(6, 6)).save(src)
    data = src.read_bytes()
    body = _exif().tobytes()[6:]  # eXIf holds the TIFF data without "Exif\0\0"
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + body))
    src.write_bytes(data[:-12] + chunk + data[-12:])  # before IEND, after IDAT
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixels decoded"))
    with Image.open(src) as im, pytest.raises(pytest.fail.Exception):
        im.getexif()  # Pillow's own way decodes the pixels to find it
    info = read_image_info(src)
    exif = Image.Exif()
    exif.load(info.exif)
    assert exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] == "2021:06:07 08:09:10"


def _be_tiff16(arr: np.ndarray) -> bytes:
    """A big-endian ("MM"), uncompressed 16-bit RGB TIFF written by hand: another writer's
    byte order than lightsr's."""
    h, w, c = arr.shape
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"MM")
    data = arr.astype(">u2").tobytes()
    ifd[256], ifd[257], ifd[258], ifd[259], ifd[262] = w, h, (16,) * c, 1, 2
    ifd[273], ifd[277], ifd[278], ifd[279], ifd[284] = 0, c, h, len(data), 1
    return b"MM\0*" + struct.pack(">I", 8) + ifd.tobytes(8) + data


def test_16_bit_png_and_tiff_stay_16_bit(tmp_path):
    rgb16 = _image(10, 9, dtype=np.uint16)
    rgba16 = np.concatenate([rgb16, _image(10, 9, c=1, dtype=np.uint16, seed=7)], axis=2)
    write_image(tmp_path / "a.png", rgb16)
    (tmp_path / "b.tif").write_bytes(encode_tiff16(rgba16))
    (tmp_path / "c.tiff").write_bytes(_be_tiff16(rgb16))
    Image.fromarray(rgb16[:, :, 0]).save(tmp_path / "d.tif")  # Pillow's own 16-bit grey TIFF
    for name, arr in (("b.tif", rgba16), ("c.tiff", rgb16), ("d.tif", rgb16[:, :, :1])):
        assert np.array_equal(read_image(tmp_path / name), arr), name
        head = image_header(tmp_path / name)
        assert (head.channels, head.dtype) == (arr.shape[2], np.uint16)
    net = _net()
    report = upscale_files(tmp_path, tmp_path / "out", model=net, format="auto", tile=None)
    assert sorted(d.name for _, d in report.written) == [
        "a_x2.png",
        "b_x2.tif",
        "c_x2.tiff",
        "d_x2.tif",
    ]
    runner = Upscaler(net, tile=None)
    for src, dst in report.written:
        got = read_image(dst)
        assert got.dtype == np.uint16 and np.array_equal(got, runner(read_image(src))), dst.name
    # asked for WebP: it holds 8 bits only, so the 16-bit image goes to PNG, all 16 kept
    report = upscale_files(tmp_path / "b.tif", tmp_path / "w", model=net, format="webp")
    assert report.written[0][1].name == "b_x2.png"
    assert read_image(report.written[0][1]).dtype == np.uint16
    # ICC and EXIF in our 16-bit writers
    icc = _srgb()
    for name in ("m.png", "m.tif"):
        write_image(tmp_path / name, rgb16, icc_profile=icc, exif=_exif().tobytes())
        arr, info = read_image_with_info(tmp_path / name)
        assert np.array_equal(arr, rgb16) and info.icc_profile == icc
        exif = Image.Exif()
        exif.load(info.exif)
        assert exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] == "2021:06:07 08:09:10"
        assert exif.get_ifd(GPS_IFD)[2] == (48.0, 51.0, 29.5)


# ---------------------------------------------------------------------------------------------
# The CLI: start line, threads, refusals
# ---------------------------------------------------------------------------------------------


def test_start_line_names_model_weights_device_and_settings(tmp_path, capsys):
    write_image(tmp_path / "in.png", _image(10, 12))
    # fp32 and torch as asked: what "auto" picks depends on the CPU (tests/test_precision.py)
    # and on whether ONNX Runtime is installed (tests/test_backend.py)
    argv = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "o"), "--quiet"]
    argv += ["--precision", "fp32", "--backend", "torch"]
    assert main([*argv, "--model", "bicubic", "--scale", "2", "--tile", "none"]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first == (
        "lightsr upscale: bicubic x2 (weights none) on cpu, fp32, torch, untiled; writes "
        "<stem>_x2.<the input's format (png, jpg, webp, tiff; else png)>, JPEG/WebP quality "
        "95, ICC/EXIF kept"
    )
    ckpt = tmp_path / "net.safetensors"
    lightsr.save(_fsrcnn(2), ckpt)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:12]
    args = ["--checkpoint", str(ckpt), "--tile", "8", "--self-ensemble", "--format", "webp"]
    assert main([*argv, *args, "--quality", "80", "--overwrite", "--threads", "1"]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first == (
        f"lightsr upscale: fsrcnn x2 (weights net.safetensors, sha256 {sha}) on cpu, fp32, "
        "torch, tile 8 (overlap 7), self-ensemble x8; writes <stem>_x2.webp, JPEG/WebP "
        "quality 80, "
        "ICC/EXIF kept"
    )
    assert torch.get_num_threads() == 1
    torch.set_num_threads(min(2, os.cpu_count() or 1))  # as conftest set it


BAD = [
    (["--skip-existing", "--overwrite"], "--skip-existing keeps existing outputs"),
    (["--format", "png", "--quality", "80"], "PNG output is lossless"),
    (["--format", "tiff", "--quality", "80"], "TIFF output is lossless"),
    (["-o", "x.png", "--quality", "80"], "is a lossless .png file"),
    (["-o", "x.png", "--format", "jpg"], "name the output x.jpg, or drop --format"),
    (["--outscale-filter", "lanczos"], "does nothing without --outscale"),
    (["--suffix", "a/b"], "holds '/'"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_combinations_are_refused_before_the_model_loads(
    extra, message, tmp_path, capsys, monkeypatch
):
    write_image(tmp_path / "in.png", _image(6, 6))

    def never(**kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(lightsr.cli.upscale_cmd, "resolve_model", never)
    monkeypatch.chdir(tmp_path)
    assert main(["upscale", "in.png", "--model", "bicubic", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]  # nothing written


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--quality", "0"], "the quality runs from 1 to 100, not 0"),
        (["--quality", "high"], "expected a whole number 1..100"),
        (["--outscale", "-2"], "expected a number above 0"),
        (["--outscale", "nan"], "expected a number above 0"),
        (["--format", "gif"], "invalid choice: 'gif'"),
    ],
)
def test_bad_values_are_usage_errors(extra, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["upscale", "x.png", *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_library_refusals_name_the_fix(tmp_path):
    write_image(tmp_path / "in.png", _image(6, 6))
    with pytest.raises(LightSRError, match="pass one of them"):
        upscale_files(
            tmp_path / "in.png", model=Bicubic(scale=2), overwrite=True, skip_existing=True
        )
    with pytest.raises(LightSRError, match="both choose the output format"):
        upscale_files(tmp_path / "in.png", model=Bicubic(scale=2), suffix=".png", format="jpg")
    with pytest.raises(LightSRError, match="not one of auto, png, jpg, webp, tiff"):
        OutputOptions(format="gif")
    with pytest.raises(LightSRError, match="quality must be an integer from 1 to 100"):
        OutputOptions(format="jpg", quality=101)
    with pytest.raises(LightSRError, match="filter must be one of bicubic, lanczos"):
        resize_image(_image(4, 4), (8, 8), filter="nearest")
    assert lightsr.upscale.check_outscale(None) is None


def test_jpeg_through_a_clean_model_prints_the_photo_hint(tmp_path, capsys, monkeypatch):
    """A JPEG upscaled by a model trained on clean bicubic LR gets one line naming the photo
    weights of its scale; a PNG, or a checkpoint trained on degradations, gets none."""
    photo = hub.WeightsEntry(
        name="test_photo_x2",
        arch="fsrcnn",
        scale=2,
        source="trained here",
        licence="MIT (lightsr)",
        training_data="test",
        bundled="none.safetensors",
        degradation="photo",
    )
    # The shipped photo entries leave, so the hint can only name this one.
    clean_only = {k: v for k, v in hub.WEIGHTS.items() if not v.degradation}
    monkeypatch.setattr(hub, "WEIGHTS", {**clean_only, photo.name: photo})
    Image.fromarray(_image(12, 10)).save(tmp_path / "photo.jpg", quality=80)
    write_image(tmp_path / "shot.png", _image(12, 10))
    clean = tmp_path / "clean.safetensors"
    lightsr.save(_fsrcnn(2), clean)
    trained = tmp_path / "photo.safetensors"
    lightsr.save(_fsrcnn(2), trained, extra={"degradation": {"preset": "photo"}})

    def hint(ckpt: Path, name: str) -> list[str]:
        out = tmp_path / f"o_{ckpt.stem}_{name.replace('.', '_')}"  # a folder
        argv = ["upscale", str(tmp_path / name), "-o", str(out), "--checkpoint", str(ckpt)]
        assert main([*argv, "--quiet", "--precision", "fp32"]) == 0
        return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("hint:")]

    lines = hint(clean, "photo.jpg")
    assert len(lines) == 1 and "--weights test_photo_x2" in lines[0] and "1 JPEG" in lines[0]
    assert hint(clean, "shot.png") == []
    # other lossy inputs: a camera JPEG with a preview (Pillow's MPO), a lossy WebP, an AVIF;
    # a lossless WebP gets none
    frames = [Image.fromarray(_image(12, 10)), Image.fromarray(255 - _image(12, 10))]
    frames[0].save(tmp_path / "cam.jpg", format="MPO", save_all=True, append_images=frames[1:])
    assert "1 JPEG input" in hint(clean, "cam.jpg")[0]
    frames[0].save(tmp_path / "web.webp", quality=80)
    assert "1 WebP input" in hint(clean, "web.webp")[0]
    frames[0].save(tmp_path / "flat.webp", lossless=True)
    assert hint(clean, "flat.webp") == []
    if features.check("avif"):
        frames[0].save(tmp_path / "pic.avif", quality=80)
        assert "1 AVIF input" in hint(clean, "pic.avif")[0]
    try:
        import pillow_heif
    except ImportError:
        return
    pillow_heif.register_heif_opener()
    frames[0].save(tmp_path / "phone.heic", quality=80)
    assert "1 HEIC input" in hint(clean, "phone.heic")[0]
    assert hint(trained, "photo.jpg") == []
