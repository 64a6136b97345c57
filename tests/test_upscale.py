"""lightsr.upscale: tiling equals untiled inference, image types round-trip, files, CLI."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path
from conftest import synthetic_image as _image
from torch import nn

import lightsr
import lightsr.cli.upscale_cmd
import lightsr.hardware
import lightsr.hub
from lightsr.cli import main
from lightsr.data.io import read_image, write_image
from lightsr.errors import CheckpointError, LightSRError
from lightsr.models.base import SRModel
from lightsr.models.bicubic import Bicubic
from lightsr.probe import ReceptiveField, bytes_per_lr_pixel, output_convs, receptive_field
from lightsr.upscale import (
    Upscaler,
    _tile_windows,
    auto_tile_size,
    output_path,
    resize_image,
    upscale_files,
    upscale_image,
)


class LocalNet(SRModel):
    """Three 3x3 convs + pixel shuffle + nearest skip: receptive field exactly 3 LR pixels."""

    def __init__(self, *, scale: int = 2, min_input_size: int = 1) -> None:
        super().__init__(scale=scale, min_input_size=min_input_size)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(8, 3 * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.body(x) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


class GlobalNet(LocalNet):
    """LocalNet with a global-average-pooled channel gain (like A2F's channel attention)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * (1.0 + 0.5 * x.mean(dim=(2, 3), keepdim=True).mean())


def _net(cls=LocalNet, **kw) -> SRModel:
    torch.manual_seed(0)
    model = cls(**kw).eval()
    with torch.no_grad():  # larger weights than default init, so tiles would show seams
        for p in model.parameters():
            p.mul_(3.0)
    return model


# ---------------------------------------------------------------------------------------------
# Receptive field and tile layout
# ---------------------------------------------------------------------------------------------


def test_receptive_field_is_measured_exactly():
    assert receptive_field(_net()) == ReceptiveField(3, False)
    glob = receptive_field(_net(GlobalNet))
    assert glob.is_global and glob.radius == 24
    fmen = lightsr.reparameterize(lightsr.create_model("fmen_s", scale=2))
    # 34 3x3 convs on the longest path (head, warm-up, 4 x (ERB + HFAB gate), lr_conv, tail)
    assert receptive_field(fmen).radius == 34


def test_tile_windows_cover_every_pixel_once_with_context():
    for n, tile, ov in [(100, 32, 3), (97, 10, 5), (40, 64, 2), (65, 16, 0)]:
        windows = _tile_windows(n, tile, ov)
        covered = np.zeros(n, int)
        sizes = {w1 - w0 for _, _, w0, w1 in windows}
        assert len(sizes) == 1  # same window size everywhere (one compiled shape)
        for c0, c1, w0, w1 in windows:
            covered[c0:c1] += 1
            assert c1 - c0 <= tile
            assert c0 - w0 >= ov or w0 == 0
            assert w1 - c1 >= ov or w1 == n
        assert (covered == 1).all()


# ---------------------------------------------------------------------------------------------
# Tiled == untiled
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tile", [8, 13, 25])
def test_tiled_equals_untiled_on_a_local_model(tile):
    model = _net()
    img = _image(61, 47)
    x = torch.from_numpy(img / 255.0).float().permute(2, 0, 1)[None]
    full = Upscaler(model, tile=None).upscale_tensor(x)
    tiled = Upscaler(model, tile=tile).upscale_tensor(x)
    assert (full - tiled).abs().max() <= 1e-5
    assert np.array_equal(Upscaler(model, tile=None)(img), Upscaler(model, tile=tile)(img))


def test_too_small_overlap_shows_seams():
    # the check above could not fail if tiles were not seen at all: with overlap 1 < 3 they are
    model = _net()
    img = _image(61, 47)
    full = Upscaler(model, tile=None)(img).astype(int)
    seams = Upscaler(model, tile=13, overlap=1)(img).astype(int)
    assert np.abs(full - seams).max() > 2


def test_tiled_fmen_s_equals_untiled():
    model = lightsr.create_model("fmen_s", scale=2)
    img = _image(100, 20)  # 100 > 24 + 2 * 34: four row tiles with full context
    runner = Upscaler(model, tile=24)
    assert runner.overlap == 34 and len(_tile_windows(100, 24, 34)) == 5
    x = torch.from_numpy(img / 255.0).float().permute(2, 0, 1)[None]
    full = Upscaler(model, tile=None).upscale_tensor(x)
    assert (runner.upscale_tensor(x) - full).abs().max() <= 1e-5


def test_global_model_tiling_deviation_on_a2f_official():
    """A2F's channel attention averages over its input, so tiles cannot match exactly.
    Measured on a 96 x 96 LR crop of Set5 baby x4 with 48-pixel tiles and 8 pixels of overlap
    (2 x 2 windows of 64 x 64): a few grey levels at most, PSNR against untiled above 50 dB."""
    weights = shared_path("weights", "official", "a2f_sd_x4.pt")
    lr = read_image(shared_path("data", "Set5", "LR_bicubic", "X4", "babyx4.png"))[16:112, 16:112]
    model = lightsr.load_official(weights)
    full = Upscaler(model, tile=None)(lr).astype(float)
    tiled = Upscaler(model, tile=48, overlap=8)(lr).astype(float)
    diff = np.abs(full - tiled)
    psnr = 10 * np.log10(255**2 / np.mean((full - tiled) ** 2))
    assert 0 < diff.max() <= 8
    assert psnr > 50


# ---------------------------------------------------------------------------------------------
# Image types
# ---------------------------------------------------------------------------------------------


def test_uint16_keeps_16_bits():
    model = _net()
    img = _image(30, 22, dtype=np.uint16)
    out = Upscaler(model, tile=None)(img)
    assert out.dtype == np.uint16 and out.shape == (60, 44, 3)
    x = torch.from_numpy(img / 65535.0).float().permute(2, 0, 1)[None]
    y = Upscaler(model, tile=None).upscale_tensor(x)[0].permute(1, 2, 0).numpy()
    expected = np.floor(np.clip(y, 0, 1) * 65535 + 0.5)
    assert np.abs(out.astype(float) - expected).max() <= 1  # float32 rounding of x / 65535
    assert len(np.unique(out)) > 4 * 256  # not an 8-bit result scaled up


def test_grey_equals_mean_of_rgb_replicate():
    model = _net()
    grey = _image(30, 22, c=1)
    out = Upscaler(model, tile=7)(grey)
    assert out.shape == (60, 44, 1) and out.dtype == np.uint8
    rgb = np.repeat(grey.astype(np.float32) / 255.0, 3, axis=2)
    y = Upscaler(model, tile=None)(rgb)  # float in, float out: unrounded
    expected = np.floor(np.clip(y.mean(axis=2, keepdims=True), 0, 1) * 255 + 0.5)
    assert np.abs(out.astype(float) - expected).max() <= 1
    assert (out.astype(float) == expected).mean() > 0.999
    assert upscale_image(model, grey[:, :, 0], tile=None).shape == (60, 44)  # 2-D stays 2-D


@pytest.mark.parametrize("mode", ["bicubic", "model"])
def test_rgba_colour_through_model_and_alpha_separately(mode):
    model = _net()
    rgb = _image(30, 22)
    alpha = _image(30, 22, c=1, seed=3)
    out = Upscaler(model, tile=9, alpha=mode)(np.concatenate([rgb, alpha], axis=2))
    assert out.shape == (60, 44, 4)
    assert np.array_equal(out[:, :, :3], Upscaler(model, tile=None)(rgb))
    other = Bicubic(scale=2) if mode == "bicubic" else model
    assert np.array_equal(out[:, :, 3:], Upscaler(other, tile=None)(alpha))


def _joined(runner: Upscaler, image: np.ndarray) -> tuple[np.ndarray, list[int]]:
    bands = list(runner.bands(image))
    return np.concatenate(bands, axis=0), [b.shape[0] for b in bands]


@pytest.mark.parametrize(
    "c, dtype, tile, alpha",
    [
        (3, np.uint8, 13, "bicubic"),
        (3, np.uint16, 8, "bicubic"),
        (1, np.uint8, 9, "bicubic"),
        (4, np.uint8, 11, "bicubic"),
        (4, np.uint16, 11, "model"),
        (3, np.float32, 10, "bicubic"),
        (3, np.uint8, None, "bicubic"),
    ],
)
def test_bands_are_the_call_bit_for_bit(c, dtype, tile, alpha):
    # GlobalNet is not tile-exact (its gain averages over the window): bands equal the whole
    # call only if they run the very windows it runs
    model = _net(cls=GlobalNet)
    img = _image(61, 47, c=c, dtype=None if dtype == np.float32 else dtype, seed=2)
    if dtype == np.float32:
        img = img.astype(np.float32) / 255.0
    runner = Upscaler(model, tile=tile, overlap=3, alpha=alpha)
    whole = runner(img)
    joined, heights = _joined(runner, img)
    assert joined.dtype == whole.dtype
    np.testing.assert_array_equal(joined, whole)
    assert len(heights) == (1 if tile is None else len(_tile_windows(61, tile, 3)))
    assert max(heights) <= 2 * (tile or 61)  # one row of tiles at a time, not the image
    if dtype == np.float32:  # the check can fail: other windows give other (float) pixels
        other = np.concatenate(list(Upscaler(model, tile=tile + 1, overlap=3).bands(img)))
        assert not np.array_equal(other, whole)


def test_bands_of_a_grey_2d_image_are_2d():
    grey = _image(30, 22, c=1)[:, :, 0]
    runner = Upscaler(_net(), tile=7)
    bands = list(runner.bands(grey))
    assert all(b.ndim == 2 for b in bands) and len(bands) > 1
    np.testing.assert_array_equal(np.concatenate(bands), runner(grey))


@pytest.mark.parametrize(
    "c, dtype, tile, outscale, filter",
    [
        (3, np.uint8, 13, 1.5, "bicubic"),  # shrinks the x2 output
        (1, np.uint8, 9, 3.5, "bicubic"),
        (4, np.uint16, 11, 2.5, "lanczos"),
        (3, np.float32, 10, 0.7, "lanczos"),
        (3, np.uint8, None, 3.5, "lanczos"),
    ],
)
def test_bands_with_outscale_are_the_call_bit_for_bit(c, dtype, tile, outscale, filter):
    model = _net(cls=GlobalNet)
    img = _image(61, 47, c=c, dtype=None if dtype == np.float32 else dtype, seed=4)
    if dtype == np.float32:
        img = img.astype(np.float32) / 255.0
    runner = Upscaler(model, tile=tile, overlap=3, outscale=outscale, outscale_filter=filter)
    whole = runner(img)
    assert whole.shape[:2] == runner.output_size(61, 47)
    # the network's whole output, then the whole-image resize: what the bands must equal
    network = Upscaler(model, tile=tile, overlap=3)(img)
    resized = resize_image(
        network if network.ndim == 3 else network[:, :, None],
        runner.output_size(61, 47),
        filter=filter,
    )
    np.testing.assert_array_equal(whole, resized.reshape(whole.shape))
    joined, heights = _joined(runner, img)
    assert joined.dtype == whole.dtype
    np.testing.assert_array_equal(joined, whole)
    if tile is not None:  # resized as the rows of tiles come, not at the end
        assert len(heights) > 1


def test_bands_refuse_bad_input():
    with pytest.raises(LightSRError, match="uint8, uint16 or float"):
        next(Upscaler(_net(), tile=8).bands(_image(20, 20).astype(np.int32)))


def test_constant_alpha_is_carried_over():
    rgba = np.concatenate([_image(12, 10), np.full((12, 10, 1), 255, np.uint8)], axis=2)
    out = Upscaler(_net(), tile=None)(rgba)
    assert (out[:, :, 3] == 255).all()


def test_bicubic_matches_matlab_imresize():
    from lightsr.data.resize import imresize

    img = np.random.default_rng(1).random((9, 13, 3))
    for scale in (2, 3, 4):
        x = torch.from_numpy(img).permute(2, 0, 1)[None]
        ours = Bicubic(scale=scale)(x)[0].permute(1, 2, 0).numpy()
        assert np.abs(ours - imresize(img, scale)).max() < 1e-12


def test_small_images_are_padded_and_cropped():
    model = _net(min_input_size=16)
    img = _image(6, 20)
    with pytest.raises(LightSRError):
        model(torch.zeros(1, 3, 6, 20))
    out = Upscaler(model, tile=None)(img)
    assert out.shape == (12, 40, 3)
    # padding is at the bottom: rows farther than the receptive field (3) from it are exact
    ref = Upscaler(_net(min_input_size=1), tile=None)(img)
    assert np.array_equal(out[: (6 - 3) * 2], ref[: (6 - 3) * 2])
    maffsrn = lightsr.create_model("maffsrn", scale=2)  # needs 13 x 13
    assert Upscaler(maffsrn, tile=None)(_image(5, 9)).shape == (10, 18, 3)


# ---------------------------------------------------------------------------------------------
# Memory: auto tile and out-of-memory retry
# ---------------------------------------------------------------------------------------------


def test_auto_tile_follows_available_memory(monkeypatch):
    model = _net()
    cpu = torch.device("cpu")
    monkeypatch.setattr(lightsr.upscale, "available_memory", lambda d: 4 * 2**30)
    big = auto_tile_size(model, device=cpu)
    monkeypatch.setattr(lightsr.upscale, "available_memory", lambda d: 16 * 2**20)
    small = auto_tile_size(model, device=cpu)
    assert big == 512  # capped on CPU
    assert 32 <= small < big
    # tile + context must fit: per-pixel estimate x window area <= the memory share
    per_px = bytes_per_lr_pixel(model, 4)
    assert per_px * small**2 <= 0.25 * 16 * 2**20


def test_out_of_memory_halves_the_tile_and_retries(monkeypatch):
    model = _net()
    img = _image(61, 47)
    runner = Upscaler(model, tile=40)
    real = runner._forward
    sizes = []

    def flaky(x):
        sizes.append(max(x.shape[-2:]))
        if sizes[-1] > 30:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(x)

    monkeypatch.setattr(runner, "_forward", flaky)
    with pytest.warns(UserWarning, match="out of memory"):
        out = runner(img)
    assert runner.tile == 20
    assert np.array_equal(out, Upscaler(model, tile=None)(img))


# ---------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------


def test_bf16_is_close_and_keeps_image_convs_fp32():
    model = _net()
    img = _image(24, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no native bf16" on CPUs without it
        runner = Upscaler(model, tile=None, precision="bf16")
    wrapped = [m for m in runner.model.modules() if type(m).__name__ == "_Float32Conv"]
    assert len(wrapped) == 1 and wrapped[0].conv.out_channels == 12
    out = runner(img).astype(int)
    ref = Upscaler(model, tile=None)(img).astype(int)
    assert 0 < np.abs(out - ref).max() <= 3


def _bf16_runner(model: SRModel) -> Upscaler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no native bf16" on CPUs without it
        return Upscaler(model, tile=None, precision="bf16")


def _fp32_names(runner: Upscaler) -> list[str]:
    return [n for n, m in runner.model.named_modules() if type(m).__name__ == "_Float32Conv"]


def test_bf16_keeps_the_final_c_to_3_conv_of_edsr_fp32():
    # EDSR's image comes from a 64 -> 3 conv after the pixel shuffle: a rule looking for
    # 3 * s^2 output channels finds nothing at x2.
    torch.manual_seed(0)
    runner = _bf16_runner(lightsr.create_model("edsr_baseline", scale=2))
    assert _fp32_names(runner) == ["upsampler.0", "tail"]
    assert runner.model.tail.conv.out_channels == 3
    dtypes = {}

    def hook(name):
        return lambda _m, _i, out: dtypes.__setitem__(name, out.dtype)

    runner.model.tail.register_forward_hook(hook("tail"))
    runner.model.body_conv.register_forward_hook(hook("body"))
    runner(_image(8, 8))
    assert dtypes == {"tail": torch.float32, "body": torch.bfloat16}


def test_bf16_leaves_idn_internal_48_channel_convs_alone():
    # At x4, 3 * s^2 = 48 is also the width of IDN's distillation convs; only the conv that
    # feeds the pixel shuffle produces image values.
    model = lightsr.create_model("idn", scale=4)
    n48 = sum(isinstance(m, nn.Conv2d) and m.out_channels == 48 for m in model.modules())
    assert n48 > 1
    assert _fp32_names(_bf16_runner(model)) == ["upsampler.0"]


def test_output_convs_finds_both_branches_of_a_summed_tail():
    model = lightsr.reparameterize(lightsr.create_model("maffsrn", scale=2))
    assert output_convs(model) == [model.tail3, model.tail5]


# ---------------------------------------------------------------------------------------------
# Files and CLI
# ---------------------------------------------------------------------------------------------


def test_upscale_files_roundtrips_types(tmp_path):
    model = _net()
    images = {
        "rgb8.png": _image(20, 16),
        "grey8.png": _image(20, 16, c=1),
        "rgba8.png": np.concatenate([_image(20, 16), _image(20, 16, c=1, seed=5)], axis=2),
        "rgb16.png": _image(20, 16, dtype=np.uint16),
        "grey16.png": _image(20, 16, c=1, dtype=np.uint16),
    }
    for name, arr in images.items():
        write_image(tmp_path / name, arr)
    out_dir = tmp_path / "out"
    report = upscale_files(tmp_path, out_dir, model=model, tile=8, progress=False)
    assert not report.failed and not report.skipped and len(report.written) == 5
    runner = Upscaler(model, tile=None)
    for name, arr in images.items():
        got = read_image(out_dir / name.replace(".png", "_x2.png"))
        assert got.dtype == arr.dtype and got.shape == (40, 32, arr.shape[2])
        assert np.array_equal(got, runner(arr))


def test_folder_with_text_and_corrupt_png_finishes_and_reports(tmp_path):
    write_image(tmp_path / "a.png", _image(12, 10))
    write_image(tmp_path / "b.jpg", _image(12, 10))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.warns(UserWarning):
        report = upscale_files([tmp_path], tmp_path / "out", model=_net(), progress=False)
    assert sorted(p.name for p, _ in report.written) == ["a.png", "b.jpg"]
    assert [p.name for p, _ in report.skipped] == ["notes.txt"]
    assert [p.name for p, _ in report.failed] == ["broken.png"]
    assert "broken.png" in report.failed[0][1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x2.png", "b_x2.png"]


def test_inputs_from_files_folders_and_globs(tmp_path):
    from lightsr.upscale import expand_inputs

    for name in ("a.png", "b.PNG", "c.jpg", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    files, skipped = expand_inputs(
        [str(tmp_path / "*.png"), tmp_path, str(tmp_path / "missing*.png")]
    )
    assert [f.name for f in files] == ["a.png", "b.PNG", "c.jpg"]  # each once, hidden skipped
    assert [(p.name, r.split(" (")[0]) for p, r in skipped] == [
        ("missing*.png", "no such file, folder or glob match")
    ]
    # "**" reaches into subfolders; an earlier output there (its output would go beside it)
    # is skipped as in a folder
    (tmp_path / "sub" / "deep").mkdir()
    for name in ("d.png", "d_x4.png"):
        (tmp_path / "sub" / "deep" / name).write_bytes(b"")
    files, skipped = expand_inputs([str(tmp_path / "**" / "*.png")], skip_outputs_of_scale=4)
    found = [f.relative_to(tmp_path).as_posix() for f in files]
    assert found == ["a.png", "sub/deep/d.png"]  # (glob's *.png is case-sensitive: no b.PNG)
    assert [p.name for p, _ in skipped] == ["d_x4.png"]


def test_output_names_never_overwrite(tmp_path):
    src = tmp_path / "photo.jpg"
    assert output_path(src, scale=4, out_dir=None) == tmp_path / "photo_x4.png"
    (tmp_path / "photo_x4.png").write_bytes(b"old")
    (tmp_path / "photo_x4_1.png").write_bytes(b"old")
    assert output_path(src, scale=4, out_dir=None) == tmp_path / "photo_x4_2.png"
    assert output_path(src, scale=4, out_dir=None, overwrite=True) == tmp_path / "photo_x4.png"


def test_cli_upscale(tmp_path, capsys):
    write_image(tmp_path / "in.png", _image(10, 12))
    (tmp_path / "readme.txt").write_text("x")
    assert main(["upscale", str(tmp_path), "--model", "bicubic", "--scale", "3", "--quiet"]) == 0
    out = read_image(tmp_path / "in_x3.png")
    assert np.array_equal(out, upscale_image(Bicubic(scale=3), _image(10, 12)))
    assert "skipped" in capsys.readouterr().err
    # second run: a new name, the first file is untouched
    assert main(["upscale", str(tmp_path / "in.png"), "--model", "bicubic", "--scale", "3"]) == 0
    assert (tmp_path / "in_x3_1.png").exists()
    # random weights are refused, naming the fix
    assert main(["upscale", str(tmp_path / "in.png"), "--model", "fmen_s"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_cli_upscale_with_checkpoint_and_scale_check(tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    fsrcnn = lightsr.create_model("fsrcnn", scale=2)  # receptive field 7: cheap exact tiles
    lightsr.save(fsrcnn, ckpt)
    img = _image(40, 36)
    write_image(tmp_path / "in.png", img)
    args = ["upscale", str(tmp_path / "in.png"), "--checkpoint", str(ckpt), "-o", str(tmp_path)]
    assert main([*args, "--scale", "4"]) == 2
    assert "x2" in capsys.readouterr().err
    windows = []
    real = Upscaler._forward

    def counted(self, x):
        windows.append(tuple(x.shape[-2:]))
        return real(self, x)

    monkeypatch.setattr(Upscaler, "_forward", counted)
    assert main([*args, "--tile", "8", "--quiet"]) == 0  # overlap auto = 7
    # 5 x 5 tiles of 8 x 8 (36 -> 5 cores of 8 or fewer), each read as a 22 x 22 window
    assert windows == [(22, 22)] * 25
    got = read_image(tmp_path / "in_x2.png")
    assert np.array_equal(got, Upscaler(fsrcnn, tile=None)(img))


def test_output_folder_that_cannot_be_created_is_a_clear_error(tmp_path, capsys):
    write_image(tmp_path / "in.png", _image(10, 12))
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(LightSRError, match="cannot create the output folder"):
        upscale_files(tmp_path / "in.png", tmp_path / "file" / "out", model=_net(), tile=None)
    argv = ["upscale", str(tmp_path / "in.png"), "--model", "bicubic", "--scale", "2"]
    assert main([*argv, "-o", str(tmp_path / "file" / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot create the output folder" in err and "Traceback" not in err


def test_a_failed_write_is_recorded_and_the_batch_goes_on(tmp_path, monkeypatch):
    import lightsr.upscale

    for name in ("a.png", "b.png", "c.png"):
        write_image(tmp_path / name, _image(10, 12))
    real = lightsr.upscale.write_image

    def flaky(path, image, **kwargs):
        if "b_x2" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, image, **kwargs)

    monkeypatch.setattr(lightsr.upscale, "write_image", flaky)
    with pytest.warns(UserWarning, match="Permission denied"):
        report = upscale_files(tmp_path, tmp_path / "out", model=_net(), tile=None)
    assert [s.name for s, _ in report.written] == ["a.png", "c.png"]
    assert [s.name for s, _ in report.failed] == ["b.png"]
    assert "Permission denied" in report.failed[0][1] and "b_x2.png" in report.failed[0][1]


def test_cli_turns_os_errors_into_a_message(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/somewhere/out")

    monkeypatch.setattr(lightsr.cli.upscale_cmd, "upscale_files", refuse)
    write_image(tmp_path / "in.png", _image(10, 12))
    argv = ["upscale", str(tmp_path / "in.png"), "--model", "bicubic", "--scale", "2"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "permission denied: /somewhere/out" in err and "Traceback" not in err


def test_a_second_run_over_a_folder_skips_the_first_runs_outputs(tmp_path, capsys):
    write_image(tmp_path / "in.png", _image(10, 12))
    argv = ["upscale", str(tmp_path), "--model", "bicubic", "--scale", "3", "--quiet"]
    assert main(argv) == 0
    assert main(argv) == 0  # in.png again -> in_x3_1.png; in_x3.png itself is skipped
    assert main(argv) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["in.png", "in_x3.png", "in_x3_1.png", "in_x3_2.png"]
    err = capsys.readouterr().err
    assert "skipped" in err and "earlier output" in err
    # written to another folder, every file is an input
    report = upscale_files(tmp_path, tmp_path / "out", model=Bicubic(scale=3), tile=None)
    assert sorted(s.name for s, _ in report.written) == names and not report.skipped
    # a glob behaves like the folder
    with pytest.warns(UserWarning, match="earlier output"):
        report = upscale_files(str(tmp_path / "*.png"), model=Bicubic(scale=3), tile=None)
    assert [s.name for s, _ in report.written] == ["in.png"]
    # another scale's outputs are ordinary inputs; a file named explicitly is always upscaled
    report = upscale_files(str(tmp_path / "in_x3_[12].png"), model=Bicubic(scale=2), tile=None)
    assert [s.name for s, _ in report.written] == ["in_x3_1.png", "in_x3_2.png"]
    report = upscale_files(tmp_path / "in_x3.png", model=Bicubic(scale=3), tile=None)
    assert [d.name for _, d in report.written] == ["in_x3_x3.png"]


def test_default_model_without_bundled_weights_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(lightsr.hub, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="--checkpoint"):
        lightsr.hub.default_model(4)


def test_model_name_of_the_default_uses_the_bundled_weights(monkeypatch, tmp_path):
    """`--model a2f_sd --scale 2` is the bundled x2 model when the default is an A2F-SD; a
    model with no bundled weights still refuses to run with random ones."""
    monkeypatch.setattr(lightsr.hub, "WEIGHTS_DIR", tmp_path)
    trained = lightsr.create_model("a2f_sd", scale=2)
    lightsr.save(trained, tmp_path / "default_x2.safetensors")
    got = lightsr.hub.resolve_model(model="a2f_sd", scale=2).model
    assert got.arch_name == "a2f_sd" and got.scale == 2
    for key, value in trained.state_dict().items():
        assert torch.equal(got.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="random weights"):
        lightsr.hub.resolve_model(model="fmen_s", scale=2)
    with pytest.raises(CheckpointError, match="random weights"):
        lightsr.hub.resolve_model(model="a2f_sd", scale=3)  # no default_x3 here
