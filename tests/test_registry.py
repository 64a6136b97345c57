"""The registry and checkpoint contracts: names, scales, options, checkpoint descriptions and
their errors, atomic writes, the bundled weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lightsr

# Parameter counts, and the forward/backward/fold/save-load contracts over every registered
# model, are checked in tests/test_models.py.


def test_unknown_model_names_the_closest() -> None:
    with pytest.raises(lightsr.UnknownModelError, match="a2f_sd") as info:
        lightsr.create_model("a2f-sdd", scale=4)
    assert "lightsr list" in str(info.value)


def test_names_are_normalised() -> None:
    assert lightsr.create_model("A2F-SD", scale=2).arch_name == "a2f_sd"


def test_unsupported_scale() -> None:
    with pytest.raises(lightsr.UnsupportedScaleError, match=r"\[2, 3, 4\]"):
        lightsr.create_model("fmen_s", scale=8)


@pytest.fixture(scope="module")
def a2f_x4_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "a2f_sd_x4.safetensors"
    lightsr.save(lightsr.create_model("a2f_sd", scale=4), path)
    return path


def test_load_refuses_another_architecture(a2f_x4_file: Path) -> None:
    with pytest.raises(lightsr.CheckpointError, match="holds a a2f_sd model, not fmen_s"):
        lightsr.load(a2f_x4_file, expect_arch="fmen_s")


def test_load_refuses_another_scale(a2f_x4_file: Path) -> None:
    with pytest.raises(lightsr.CheckpointError, match="x4 model, not x2"):
        lightsr.load(a2f_x4_file, expect_scale=2)


def test_weights_of_another_scale_do_not_load_silently(tmp_path: Path) -> None:
    """A file whose description lies (x2 weights described as x4) fails loudly, not wrongly."""
    from safetensors.torch import load_file, save_file

    src = tmp_path / "x2.safetensors"
    lightsr.save(lightsr.create_model("a2f_sd", scale=2), src)
    forged = tmp_path / "forged.safetensors"
    description = {
        "format": "lightsr-checkpoint-v1",
        "arch": "a2f_sd",
        "scale": "4",
        "options": "{}",
        "folded": "false",
        "extra": "{}",
    }
    save_file(load_file(str(src)), str(forged), metadata=description)
    with pytest.raises(lightsr.CheckpointError, match="shape mismatch"):
        lightsr.load(forged)


@pytest.mark.parametrize(
    "content", [b"", b"not a checkpoint at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 64]
)
def test_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(lightsr.CheckpointError, match="not a lightsr checkpoint"):
        lightsr.load(path)
    with pytest.raises(lightsr.CheckpointError):
        lightsr.load_any(path)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(lightsr.CheckpointError, match="does not exist"):
        lightsr.load(tmp_path / "nope.safetensors")


def test_safetensors_without_our_metadata(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(lightsr.CheckpointError, match="without lightsr metadata"):
        lightsr.load(path)


def test_foreign_state_dict_is_not_recognised(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"features.0.weight": torch.zeros(4, 3, 3, 3)}, path)
    with pytest.raises(lightsr.CheckpointError, match="not a released checkpoint"):
        lightsr.load_official(path)


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that dies half-way leaves the previous file intact and no temp file behind."""
    import lightsr.atomic

    path = tmp_path / "model.safetensors"
    model = lightsr.create_model("fsrcnn", scale=2)
    lightsr.save(model, path)
    before = path.read_bytes()

    def dying_write(tmp, data):
        Path(tmp).write_bytes(bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lightsr.atomic, "_write_all", dying_write)
    with pytest.raises(OSError, match="No space left") as info:
        lightsr.save(model, path, overwrite=True)
    assert info.value.filename == str(path)  # the file asked for, not the temp file
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bundled_default_model_beats_bicubic(scale: int) -> None:
    """The shipped weights are trained: on the repository's sample image, downscaled with
    MATLAB bicubic, they restore more than bicubic upscaling does (PSNR-Y, crop = scale)."""
    from lightsr.data.io import image_to_tensor, read_image, tensor_to_image
    from lightsr.data.resize import modcrop
    from lightsr.hub import bundled_weights

    path = bundled_weights("default", scale)
    if path is None:
        pytest.skip(f"no bundled x{scale} weights in this checkout")
    model = lightsr.load(path, expect_scale=scale)
    hr = modcrop(read_image(Path(__file__).parents[1] / "examples" / "sample.png"), scale)
    lr = lightsr.imresize(hr, 1 / scale)
    with torch.inference_mode():
        sr = tensor_to_image(model(image_to_tensor(lr)).clamp(0, 1))
    bicubic = lightsr.imresize(lr, scale)
    gain = lightsr.psnr(sr, hr, crop_border=scale) - lightsr.psnr(bicubic, hr, crop_border=scale)
    assert gain > 0.5, gain


@pytest.mark.parametrize(
    ("name", "options", "bad", "valid"),
    [
        ("a2f_sd", {"ggas": True}, "ggas", "none besides scale"),
        ("maffsrn", {"ggas": True}, "ggas", "gate_relu"),
    ],
)
def test_unknown_option_names_it_and_the_valid_ones(name, options, bad, valid) -> None:
    with pytest.raises(lightsr.ConfigError) as info:
        lightsr.create_model(name, scale=4, **options)
    message = str(info.value)
    assert f"option(s) {bad}" in message and valid in message
    # accepted options still work and are recorded for save/load
    assert lightsr.create_model("maffsrn", scale=2, gate_relu=False).arch_options == {
        "gate_relu": False
    }


def test_atomic_write_syncs_the_file_before_the_rename(tmp_path, monkeypatch) -> None:
    import os
    import stat

    from lightsr.atomic import atomic_write

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(f"fsync {kind}")
        if kind == "dir":
            raise OSError(22, "Invalid argument")  # as some file systems answer: ignored
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "out.txt"
    # replacing (overwrite=True) publishes with os.replace; a new name is claimed with os.link
    target.write_text("old")
    atomic_write(target, lambda tmp: Path(tmp).write_text("data"), overwrite=True)
    assert events == ["fsync file", "replace", "fsync dir"]
    assert target.read_text() == "data"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_load_any_accepts_none_expectations(a2f_x4_file: Path) -> None:
    model = lightsr.load_any(a2f_x4_file, expect_arch=None, expect_scale=None)
    assert (model.arch_name, model.scale) == ("a2f_sd", 4)
    with pytest.raises(lightsr.CheckpointError, match="--scale 4"):
        lightsr.load_any(a2f_x4_file, expect_arch=None, expect_scale=2)


def test_load_any_checks_an_authors_file() -> None:
    from conftest import shared_path

    path = shared_path("weights", "official", "a2f_sd_x4.pt")
    assert lightsr.load_any(path, expect_arch="a2f-sd", expect_scale=None).scale == 4
    with pytest.raises(lightsr.CheckpointError, match="not x2.*--scale 4"):
        lightsr.load_any(path, expect_scale=2)
    with pytest.raises(lightsr.CheckpointError, match="not fmen_s.*--model a2f_sd"):
        lightsr.load_any(path, expect_arch="fmen_s")
