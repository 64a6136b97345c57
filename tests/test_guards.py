"""Run-time guards: a diverging run stops (last good checkpoint kept, strict JSON log), a NaN
model writes no image, outputs are bounded and checked before any compute, and bad arguments
and odd input files are clear errors. Tiny models and images; seeded."""

from __future__ import annotations

import json
import math
import os
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_image as _photo
from PIL import Image
from torch import nn

import lightsr
import lightsr.cli.train_cmd
import lightsr.cli.upscale_cmd
import lightsr.data.io
import lightsr.upscale
from lightsr.cli import main
from lightsr.data.io import (
    WRITE_EXTENSIONS,
    check_output_format,
    encode_png,
    image_header,
    read_image,
    write_image,
)
from lightsr.errors import ConfigError, DivergedError, ImageReadError, LightSRError
from lightsr.hub import check_scale
from lightsr.models.base import SRModel
from lightsr.models.bicubic import Bicubic
from lightsr.registry import _REGISTRY, register_model
from lightsr.train import _Log, train
from lightsr.upscale import (
    DEFAULT_MAX_OUTPUT_PIXELS,
    Upscaler,
    expand_inputs,
    upscale_files,
)


def _strict_loads(line: str):
    """json.loads that refuses the NaN/Infinity tokens Python's json writes by default."""

    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(line, parse_constant=refuse)


# ---------------------------------------------------------------------------------------------
# Training: divergence stops the run
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hr_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(30, 34), (28, 40), (36, 26), (32, 32)]):
        base = rng.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3), dtype=np.uint8)
        Image.fromarray(base).resize((w, h), Image.BILINEAR).save(folder / f"{i}.png")
    return folder


def _train_args(hr: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"data.hr_dirs=['{hr}']",
        "data.lr_patch=8",
        "data.num_workers=0",
        "batch_size=4",
        "length=12",
        "log_every=1",
        "ckpt_every=3",
        "progress=false",
        "device=cpu",
        "seed=0",
        f"out_dir='{out}'",
        *extra,
    ]


def test_diverging_run_stops_keeps_the_last_checkpoint_and_logs_strict_json(
    hr_images, tmp_path, capsys, monkeypatch
):
    """fsrcnn x2 at lr 1e-3, multiplied by 1e15 from the 4th update on (lr 1e12): the loss on
    the weights of step 4 is NaN. The run stops at step 5 with exit code 2, the checkpoint of
    step 3 is byte-identical afterwards, and every log line is strict JSON."""
    recipe = tmp_path / "r.toml"
    recipe.write_text('model = "fsrcnn"\nscale = 2\n')
    run = tmp_path / "run"
    snapshot: dict[str, bytes] = {}

    argv = _train_args(
        hr_images,
        run,
        "optim.lr=1e-3",
        "schedule.kind=multistep",
        "schedule.milestones=[3]",
        "schedule.gamma=1e15",
    )
    # the checkpoint of step 3, as written, before the run goes on
    real_train = lightsr.cli.train_cmd.train

    def snap(step: int, model) -> None:
        if step == 3:
            for name in ("last.safetensors", "state.pt"):
                snapshot[name] = (run / name).read_bytes()

    def train_with_hook(cfg, **kw):
        return real_train(cfg, hooks=[snap], **kw)

    monkeypatch.setattr(lightsr.cli.train_cmd, "train", train_with_hook)
    code = main(["train", str(recipe), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert "diverged at step 5" in err and "the loss is nan" in err
    assert "optim.lr" in err and "optim.grad_clip" in err and "step 3" in err
    assert "Traceback" not in err
    assert set(snapshot) == {"last.safetensors", "state.pt"}
    for name, data in snapshot.items():
        assert (run / name).read_bytes() == data, f"{name} changed after the divergence"
    saved = lightsr.load(run / "last.safetensors")
    assert all(torch.isfinite(t).all() for t in saved.state_dict().values())

    records = [_strict_loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "train"] == [1, 2, 3, 4]
    last = records[-1]
    assert last["event"] == "diverged" and last["step"] == 5 and last["saved_step"] == 3
    assert last["loss"] is None and last["nonfinite"] == {"loss": "nan"}


class _Unused(SRModel):
    """A tiny net with a parameter the loss never sees: NaN there leaves the loss finite, so
    only the weight check before a checkpoint can catch it."""

    def __init__(self, *, scale: int) -> None:
        super().__init__(scale=scale)
        self.conv = nn.Conv2d(3, 3 * scale * scale, 3, padding=1)
        self.up = nn.PixelShuffle(scale)
        self.spare = nn.Parameter(torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.up(self.conv(x))


if "_guard_unused" not in _REGISTRY:
    register_model("_guard_unused", paper="test", scales=(2,))(
        lambda *, scale: _Unused(scale=scale)
    )


def test_nonfinite_weights_are_never_saved(hr_images, tmp_path):
    from lightsr.config import load_config

    run = tmp_path / "run"
    cfg = load_config(None, ["model=_guard_unused", "scale=2", *_train_args(hr_images, run)])

    def poison(step: int, model) -> None:
        if step == 4:  # after the checkpoint of step 3, before the one of step 6
            with torch.no_grad():
                model.spare[1] = float("inf")

    before: dict[str, bytes] = {}

    def snap(step: int, model) -> None:
        if step == 3:
            before.update({p.name: p.read_bytes() for p in run.iterdir() if p.is_file()})

    with pytest.raises(DivergedError, match=r"diverged at step 6: the weights .* 1 NaN/Inf"):
        train(cfg, hooks=[snap, poison])
    for name in ("last.safetensors", "state.pt"):
        assert (run / name).read_bytes() == before[name], f"{name} changed"
    records = [_strict_loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert records[-1] == {
        "event": "diverged",
        "step": 6,
        "saved_step": 3,
        "nonfinite_values": 1,
    }


def test_log_writes_nonfinite_values_as_null_and_says_so(tmp_path):
    log = _Log(tmp_path, enabled=True, resume_step=None, tb=False)
    log.write(
        {
            "event": "val",
            "step": 7,
            "sets": {"Set5": {"psnr": math.inf, "ssim": math.nan, "images": 5}},
            "extra": [1.0, -math.inf],
        }
    )
    line = (tmp_path / "log.jsonl").read_text().splitlines()[0]
    record = _strict_loads(line)
    assert record["sets"]["Set5"] == {"psnr": None, "ssim": None, "images": 5}
    assert record["extra"] == [1.0, None]
    assert record["nonfinite"] == {
        "sets.Set5.psnr": "inf",
        "sets.Set5.ssim": "nan",
        "extra[1]": "-inf",
    }


# ---------------------------------------------------------------------------------------------
# Inference: a non-finite output is a failure, not a black image
# ---------------------------------------------------------------------------------------------


class _BrightBlowsUp(SRModel):
    """Nearest upscaling, divided by zero (Inf/NaN) when the image is bright on average."""

    def __init__(self, *, scale: int = 2) -> None:
        super().__init__(scale=scale)
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")
        return y * self.gain / (x.mean() < 0.5).float()


def test_nonfinite_output_fails_that_file_and_the_batch_goes_on(tmp_path):
    write_image(tmp_path / "a_bright.png", np.full((8, 10, 3), 230, np.uint8))
    write_image(tmp_path / "b_dark.png", np.full((8, 10, 3), 20, np.uint8))
    with pytest.warns(UserWarning, match="NaN/Inf"):
        report = upscale_files(tmp_path, tmp_path / "out", model=_BrightBlowsUp(), tile=None)
    assert [s.name for s, _ in report.failed] == ["a_bright.png"]
    reason = report.failed[0][1]
    assert "produced NaN/Inf" in reason and "no image written" in reason
    assert [s.name for s, _ in report.written] == ["b_dark.png"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b_dark_x2.png"]
    assert np.array_equal(read_image(tmp_path / "out" / "b_dark_x2.png"), np.full((16, 20, 3), 20))


def test_nan_weights_checkpoint_fails_every_image_with_the_reason(tmp_path, capsys):
    torch.manual_seed(0)
    model = lightsr.create_model("fsrcnn", scale=2)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    ckpt = tmp_path / "nan.safetensors"
    lightsr.save(model, ckpt)
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, _photo(12, 10))
    out = tmp_path / "out"
    argv = ["upscale", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out)]
    assert main([*argv, "--checkpoint", str(ckpt), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "0 written, 0 skipped, 2 failed" in err
    assert err.count("NaN/Inf values") >= 2 and "use another checkpoint" in err
    assert not any(out.iterdir())  # no black images


def test_upscale_array_refuses_nan_input_and_oversize_output():
    up = Upscaler(Bicubic(scale=2), tile=None, max_output_pixels=100)
    with pytest.raises(LightSRError, match=r"--max-output-pixels 160\b"):
        up(np.zeros((8, 5, 3), np.uint8))  # 16 x 10 = 160 > 100
    assert up(np.zeros((5, 5), np.uint8)).shape == (10, 10)  # exactly 100: allowed
    bad = np.zeros((4, 4, 3), np.float32)
    bad[1, 1, 1] = np.nan
    with pytest.raises(LightSRError, match="NaN/Inf"):
        Upscaler(Bicubic(scale=2), tile=None)(bad)
    with pytest.raises(LightSRError, match="max_output_pixels"):
        Upscaler(Bicubic(scale=2), max_output_pixels=0)


# ---------------------------------------------------------------------------------------------
# Output size and format: checked from headers, for every input, before any compute
# ---------------------------------------------------------------------------------------------


def _bomb(path: Path, side: int = 9000) -> Path:
    """A 1-bit palette PNG: a few KB on disk, side x side RGB pixels once decoded."""
    im = Image.new("P", (side, side), 0)
    im.putpalette([40, 80, 120, 200, 200, 200])
    im.save(path, bits=1, optimize=True)
    return path


def test_default_limit_passes_a_photo_x4_and_refuses_the_bomb(tmp_path, monkeypatch):
    up = Upscaler(Bicubic(scale=4), tile=None)
    assert up.max_output_pixels == DEFAULT_MAX_OUTPUT_PIXELS == 16384**2
    up.check_output_size(3000, 4000)  # a 12 MP photo x4 = 192 MP
    bomb = _bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 16_000
    # refused from the header: no pixel is decoded, the model never runs
    monkeypatch.setattr(lightsr.upscale, "read_image", _never("read_image"))
    monkeypatch.setattr(Upscaler, "_forward", _never("the model"))
    with pytest.warns(UserWarning, match="over the limit"):
        report = upscale_files(bomb, tmp_path / "out", model=up)
    (src, reason), *rest = report.failed
    assert src == bomb and not rest and not report.written
    assert "36,000x36,000 = 1,296.0 megapixels" in reason
    assert "--max-output-pixels 1296000000" in reason and "max_output_pixels=" in reason


def _never(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} was called")

    return fail


def test_every_input_is_checked_before_the_model_runs_on_any(tmp_path, monkeypatch):
    """A batch of four into .jpg: RGBA and 16-bit cannot be JPEG, one output is too large;
    all three are reported before the first forward pass, then the good one runs."""
    write_image(tmp_path / "a_rgba.png", _photo(8, 8, 4))
    (tmp_path / "b_16bit.png").write_bytes(encode_png(_photo(8, 8, 3, np.uint16)))
    write_image(tmp_path / "c_good.png", _photo(8, 8, 3))
    write_image(tmp_path / "d_large.png", _photo(40, 40, 3))
    events: list[str] = []
    real_header, real_forward = lightsr.upscale.image_header, Upscaler._forward

    def header(path):
        events.append(f"header {Path(path).name}")
        return real_header(path)

    def forward(self, x):
        events.append("forward")
        return real_forward(self, x)

    monkeypatch.setattr(lightsr.upscale, "image_header", header)
    monkeypatch.setattr(Upscaler, "_forward", forward)
    up = Upscaler(Bicubic(scale=2), tile=None, max_output_pixels=60 * 60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = upscale_files(tmp_path, tmp_path / "out", model=up, suffix=".jpg")
    assert events == [
        "header a_rgba.png",
        "header b_16bit.png",
        "header c_good.png",
        "header d_large.png",
        "forward",
    ]
    reasons = {s.name: r for s, r in report.failed}
    assert set(reasons) == {"a_rgba.png", "b_16bit.png", "d_large.png"}
    assert "alpha channel" in reasons["a_rgba.png"] and ".png" in reasons["a_rgba.png"]
    assert "16-bit" in reasons["b_16bit.png"] and ".png" in reasons["b_16bit.png"]
    assert "80x80 = 6,400 pixels" in reasons["d_large.png"]
    assert [s.name for s, _ in report.written] == ["c_good.png"]


def test_cli_refuses_bad_output_names_and_folders_before_loading_a_model(
    tmp_path, monkeypatch, capsys
):
    write_image(tmp_path / "in.png", _photo(8, 8, 4))
    argv = ["upscale", str(tmp_path / "in.png"), "--model", "bicubic", "--scale", "2"]
    monkeypatch.setattr(lightsr.cli.upscale_cmd, "resolve_model", _never("resolve_model"))
    # -o x.gif: a format lightsr does not write; it must not become a folder
    assert main([*argv, "-o", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err
    assert "does not write .gif" in err and ".png" in err and "Traceback" not in err
    assert not (tmp_path / "x.gif").exists()
    monkeypatch.undo()
    # RGBA into a .jpg name: refused before compute, nothing written
    monkeypatch.setattr(Upscaler, "_forward", _never("the model"))
    assert main([*argv, "-o", str(tmp_path / "x.jpg")]) == 1
    err = capsys.readouterr().err
    assert "JPEG cannot store an alpha channel" in err and "as .png" in err
    assert not (tmp_path / "x.jpg").exists()
    # an output folder that exists but takes no files
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
    elif Path("/sys/kernel").is_dir():
        locked = Path("/sys/kernel")  # root may write anywhere but into sysfs
    else:
        pytest.skip("no folder this user cannot write to")
    assert main([*argv, "-o", str(locked)]) == 2
    err = capsys.readouterr().err
    assert "cannot write into the output folder" in err and "-o" in err


@pytest.mark.parametrize("suffix", WRITE_EXTENSIONS)
def test_format_check_agrees_with_what_is_written(tmp_path, suffix):
    """For every suffix x channels x depth: check_output_format refuses exactly what would be
    lost or fail; what it lets through is written and read back with every channel."""
    for c in (1, 3, 4):
        for dtype in (np.uint8, np.uint16):
            img = _photo(6, 7, c, dtype, seed=c)
            path = tmp_path / f"c{c}_{np.dtype(dtype).name}{suffix}"
            try:
                check_output_format(path, channels=c, dtype=dtype, height=6, width=7)
            except LightSRError as exc:
                assert ".png" in str(exc)  # the fix is named
                with pytest.raises(LightSRError):
                    write_image(path, img)
                assert not path.exists()
                continue
            write_image(path, img)
            back = read_image(path)
            assert back.dtype == dtype
            if suffix == ".webp" and c == 1:
                back = back[:, :, :1]  # WebP stores grey as RGB (R = G = B)
            assert back.shape == img.shape, (suffix, c, dtype)
            if suffix not in (".jpg", ".jpeg", ".webp"):  # lossless formats: exact
                assert np.array_equal(back, img), (suffix, c, dtype)
    with pytest.raises(LightSRError, match="16,383"):
        check_output_format("big.webp", channels=3, dtype=np.uint8, height=100, width=20000)


def test_image_header_reads_no_pixels_and_matches_read_image(tmp_path):
    bomb = _bomb(tmp_path / "bomb.png")
    head = image_header(bomb)
    assert (head.width, head.height, head.channels, head.dtype) == (9000, 9000, 3, np.uint8)
    cases = {
        "grey.png": _photo(5, 6, 1),
        "rgba.png": _photo(5, 6, 4),
        "rgb.jpg": _photo(5, 6, 3),
    }
    for name, arr in cases.items():
        write_image(tmp_path / name, arr)
    (tmp_path / "rgb16.png").write_bytes(encode_png(_photo(5, 6, 3, np.uint16)))
    Image.fromarray(_photo(5, 6, 1, np.uint16)[:, :, 0]).save(tmp_path / "grey16.png")
    for name in [*cases, "rgb16.png", "grey16.png"]:
        head, arr = image_header(tmp_path / name), read_image(tmp_path / name)
        assert (head.height, head.width, head.channels, head.dtype) == arr.shape + (arr.dtype,)


# ---------------------------------------------------------------------------------------------
# Arguments and odd inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["upscale", "x.png", "--scale", "0"], "scale 0 is not supported: use 2, 3 or 4"),
        (["upscale", "x.png", "--scale", "-2"], "scale -2 is not supported: use 2, 3 or 4"),
        (["eval", "Set5", "--scale", "0"], "use 2, 3 or 4"),
        (["profile", "fsrcnn", "--scale", "0"], "use 2, 3 or 4"),
        (["profile", "fsrcnn", "--reps", "0"], "--reps: must be at least 1, not 0"),
        (["profile", "fsrcnn", "--warmup", "-1"], "--warmup: must be 0 or more"),
        (["profile", "fsrcnn", "--threads", "0"], "--threads: must be at least 1"),
        (["profile", "fsrcnn", "--size", "0"], "--size: must be at least 1"),
        (["eval", "Set5", "--threads", "0"], "--threads: must be at least 1"),
        (["eval", "Set5", "--crop-border", "-1"], "--crop-border: must be 0 or more"),
        (["upscale", "x.png", "--max-output-pixels", "0"], "at least 1 pixel"),
        (["upscale", "x.png", "--max-output-pixels", "lots"], "pixel count"),
    ],
)
def test_bad_numbers_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_max_output_pixels_forms():
    from lightsr.cli._args import pixel_count

    assert pixel_count("5e8") == 500_000_000
    assert pixel_count("20000x20000") == 400_000_000
    assert pixel_count("none") is None
    with pytest.raises(ConfigError, match=r"2, 3 or 4"):
        check_scale(0)


def test_bogus_device_is_a_clear_error_in_every_command(tmp_path, hr_images, capsys):
    write_image(tmp_path / "in.png", _photo(8, 8))
    recipe = tmp_path / "r.toml"
    recipe.write_text('model = "fsrcnn"\nscale = 2\n')
    commands = [
        ["upscale", str(tmp_path / "in.png"), "--model", "bicubic", "--device", "bogus"],
        ["eval", str(hr_images), "--model", "bicubic", "--scale", "2", "--device", "bogus"],
        ["profile", "fsrcnn", "--device", "bogus"],
        ["train", str(recipe), *_train_args(hr_images, tmp_path / "run", "device=bogus")],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "device 'bogus' is not a torch device: use auto, cpu, cuda" in err, argv
        assert "Traceback" not in err
    assert not list(tmp_path.glob("in_x*")) and not (tmp_path / "run").exists()


def test_named_special_files_are_skipped_with_the_reason(tmp_path):
    good = tmp_path / "good.png"
    write_image(good, _photo(6, 6))
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.png"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    dangling = tmp_path / "dangling.png"
    dangling.symlink_to(tmp_path / "gone.png")
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    named = [fifo, sock_path, dangling, loop, Path("/dev/null"), good]
    try:
        files, skipped = expand_inputs(named)
        assert files == [good]
        reasons = dict(skipped)
        assert "FIFO" in reasons[fifo] and "block" in reasons[fifo]
        assert "socket" in reasons[sock_path]
        assert "dangling" in reasons[dangling] and "gone.png" in reasons[dangling]
        assert "loop" in reasons[loop]
        assert "character device" in reasons[Path("/dev/null")]
        # the same found in a folder: listed, not silently dropped
        _, in_folder = expand_inputs([tmp_path])
        assert sorted(p.name for p, _ in in_folder) == [
            "dangling.png",
            "loop.png",
            "pipe.png",
            "sock.png",
        ]
        # and read_image never opens a FIFO (it would block)
        with pytest.raises(ImageReadError, match="not a regular file"):
            read_image(fifo)
        with pytest.warns(UserWarning, match="skipping"):
            report = upscale_files(named, tmp_path / "out", model=Bicubic(scale=2), tile=None)
        assert [s for s, _ in report.written] == [good] and len(report.skipped) == 5
    finally:
        sock.close()
