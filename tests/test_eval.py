"""Benchmark folders (layouts, bad input) and the evaluation pipeline / `lightsr eval`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from lightsr.cli import main
from lightsr.data.benchmark import BenchmarkSet, open_benchmark
from lightsr.data.io import read_image, write_image
from lightsr.data.resize import imresize, modcrop
from lightsr.errors import DatasetError, LightSRError
from lightsr.evaluate import _transforms, evaluate, super_resolve
from lightsr.metrics import psnr, ssim
from lightsr.models.base import SRModel
from lightsr.models.bicubic import Bicubic


class NearestUp(SRModel):
    """Pixel replication: its SR output is known exactly (np.repeat of the LR)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


class Lopsided(SRModel):
    """Not flip-equivariant: makes self-ensemble change the result."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + 0.1 * (x - torch.roll(x, 1, dims=-1))
        return F.interpolate(y, scale_factor=self.scale, mode="bilinear")


def _crops(n: int = 3, size: tuple[int, int] = (50, 46)) -> dict[str, np.ndarray]:
    """Small natural crops (not multiples of 4, to exercise modcrop)."""
    files = sorted(shared_path("data", "Set5", "HR").glob("*.png"))[:n]
    return {p.stem: read_image(p)[40 : 40 + size[0], 60 : 60 + size[1]] for p in files}


def _make_set(root, images, scale, lr_folder="LR_bicubic_clamp", boundary="replicate"):
    for name, img in images.items():
        write_image(root / "HR" / f"{name}.png", img)
        if lr_folder:
            lr = imresize(modcrop(img, scale), 1 / scale, boundary=boundary)
            write_image(root / lr_folder / f"X{scale}" / f"{name}x{scale}.png", lr)
    return root


def _repeat_up(lr: np.ndarray, s: int) -> np.ndarray:
    return np.repeat(np.repeat(lr, s, axis=0), s, axis=1)


# ---- layouts --------------------------------------------------------------------------------


def test_shared_layout_reads_lr_folder(tmp_path):
    imgs = _crops()
    root = _make_set(tmp_path / "Mini", imgs, 4)
    ds = open_benchmark(root, scale=4)
    assert (ds.name, ds.lr_source, len(ds)) == ("Mini", "folder-clamp", 3)
    item = ds[0]
    assert item.hr.shape == (48, 44, 3)  # modcropped
    assert np.array_equal(
        item.lr, read_image(root / "LR_bicubic_clamp" / "X4" / f"{item.name}x4.png")
    )
    # the same folder passed as .../HR
    assert open_benchmark(root / "HR", scale=4).lr_source == "folder-clamp"
    with pytest.raises(DatasetError, match="LR_bicubic/X4"):
        open_benchmark(root, scale=4, lr_source="folder-mirror")
    with pytest.raises(DatasetError, match="LR_bicubic_clamp"):
        open_benchmark(root, scale=2, lr_source="folder")


def test_lr_from_folder_equals_imresize_replicate(tmp_path):
    root = _make_set(tmp_path / "Mini", _crops(), 3)
    a = open_benchmark(root, scale=3, lr_source="folder-clamp")
    b = open_benchmark(root, scale=3, lr_source="imresize-replicate")
    c = open_benchmark(root, scale=3, lr_source="imresize-mirror")
    assert b.lr_source == "imresize-replicate" and c.boundary == "mirror"
    differ = 0
    for i in range(len(a)):
        assert np.array_equal(a[i].lr, b[i].lr)
        differ += int(np.count_nonzero(a[i].lr != c[i].lr))
    assert differ > 0  # the boundary rule matters at the border


def test_div2k_layout(tmp_path):
    imgs = {"0801": _crops(1)["baby"], "0802": _crops(2)["bird"]}
    for name, img in imgs.items():
        write_image(tmp_path / "DIV2K_valid_HR" / f"{name}.png", img)
        lr = imresize(modcrop(img, 2), 1 / 2, boundary="mirror")
        write_image(tmp_path / "DIV2K_valid_LR_bicubic" / "X2" / f"{name}x2.png", lr)
    for path in (tmp_path / "DIV2K_valid_HR", tmp_path):
        ds = open_benchmark(path, scale=2)
        assert (ds.name, ds.lr_source, ds.names) == (
            "DIV2K_valid",
            "folder-mirror",
            ["0801", "0802"],
        )
        assert np.array_equal(ds[1].lr, imresize(modcrop(imgs["0802"], 2), 1 / 2))


def test_plain_folder_and_explicit_lr_dir(tmp_path):
    imgs = _crops(2)
    for name, img in imgs.items():
        write_image(tmp_path / "plain" / f"{name}.png", img)
        write_image(tmp_path / "lows" / f"{name}.png", imresize(modcrop(img, 2), 1 / 2))
    ds = open_benchmark(tmp_path / "plain", scale=2)
    assert ds.lr_source == "imresize-replicate" and "imresize" in ds.notes[0]
    want = imresize(modcrop(imgs["baby"], 2), 1 / 2, boundary="replicate")
    assert np.array_equal(ds[0].lr, want)
    ds2 = BenchmarkSet.from_folder(tmp_path / "plain", scale=2, lr_dir=tmp_path / "lows")
    assert ds2.lr_source == "folder"
    assert np.array_equal(ds2[0].lr, imresize(modcrop(imgs["baby"], 2), 1 / 2))


# ---- bad input --------------------------------------------------------------------------------


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="no images"):
        open_benchmark(tmp_path / "empty", scale=4)
    with pytest.raises(DatasetError, match="does not exist"):
        open_benchmark(tmp_path / "nowhere", scale=4)
    with pytest.raises(DatasetError, match="lr_source"):
        open_benchmark(tmp_path / "empty", scale=4, lr_source="opencv")


def test_mismatched_pairs(tmp_path):
    root = _make_set(tmp_path / "Mini", _crops(), 2)
    (root / "LR_bicubic_clamp" / "X2" / "birdx2.png").unlink()
    with pytest.raises(DatasetError, match=r"1 HR image\(s\) without an LR \(bird"):
        open_benchmark(root, scale=2)
    write_image(root / "LR_bicubic_clamp" / "X2" / "birdx2.png", np.zeros((25, 23, 3), np.uint8))
    write_image(root / "LR_bicubic_clamp" / "X2" / "zebrax2.png", np.zeros((25, 23, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"LR image\(s\) without an HR \(zebra\)"):
        open_benchmark(root, scale=2)


def test_two_lr_candidates_for_one_hr_image_are_refused(tmp_path):
    root = _make_set(tmp_path / "Mini", _crops(2), 2)
    lr_dir = root / "LR_bicubic_clamp" / "X2"
    (lr_dir / "bird.png").write_bytes((lr_dir / "birdx2.png").read_bytes())
    with pytest.raises(
        DatasetError,
        match=r"two LR candidates .* for the HR image bird\.png at x2: birdx2\.png, bird\.png",
    ):
        open_benchmark(root, scale=2)


def test_hr_named_like_an_lr_file_pairs_with_its_own_name(tmp_path):
    # "shotx2.png" at x2: its LR is "shotx2x2.png" or "shotx2.png", never a "shot" HR's
    img = np.random.default_rng(3).integers(0, 256, (20, 18, 3), dtype=np.uint8)
    lr = imresize(img, 1 / 2)
    write_image(tmp_path / "hr" / "shotx2.png", img)
    write_image(tmp_path / "lr" / "shotx2.png", lr)
    ds = BenchmarkSet.from_folder(tmp_path / "hr", scale=2, lr_dir=tmp_path / "lr")
    assert ds.names == ["shotx2"] and np.array_equal(ds[0].lr, lr)


def test_wrong_lr_size_fails_that_image_only(tmp_path):
    imgs = _crops()
    root = _make_set(tmp_path / "Mini", imgs, 2)
    bad = np.zeros((26, 23, 3), np.uint8)  # one row too many for the 50x46 HR at x2
    write_image(root / "LR_bicubic_clamp" / "X2" / "birdx2.png", bad, overwrite=True)
    ds = open_benchmark(root, scale=2)
    with pytest.raises(DatasetError, match=r"birdx2\.png.* is 26x23.*needs 25x23 at x2"):
        ds[1]
    result = evaluate(NearestUp(scale=2), ds)
    assert [im.name for im in result.images] == ["baby", "butterfly"]
    assert len(result.failures) == 1 and result.failures[0][0] == "bird"
    assert result.psnr == pytest.approx(np.mean([im.psnr for im in result.images]))


def test_unreadable_image_is_reported_not_fatal(tmp_path):
    root = _make_set(tmp_path / "Mini", _crops(), 2)
    (root / "HR" / "baby.png").write_bytes(b"garbage")
    result = evaluate(NearestUp(scale=2), open_benchmark(root, scale=2))
    assert len(result.images) == 2
    assert result.failures[0][0] == "baby" and "ImageReadError" in result.failures[0][1]


def test_grey_rgba_and_16bit_are_handled(tmp_path):
    rgb = _crops(1)["baby"]
    grey = rgb[..., :1]
    alpha = np.full(rgb.shape[:2] + (1,), 128, np.uint8)
    variants = {
        "rgb": rgb,
        "greyrep": np.repeat(grey, 3, axis=2),
        "grey": grey,
        "rgba": np.concatenate([rgb, alpha], axis=2),
        "rgb16": rgb.astype(np.uint16) * 257,
    }
    for name, img in variants.items():
        write_image(tmp_path / "set" / f"{name}.png", img)
    ds = open_benchmark(tmp_path / "set", scale=2)
    by_name = {ds.names[i]: ds[i] for i in range(len(ds))}
    assert by_name["grey"].hr.shape[2] == 1 and "grey" in by_name["grey"].notes[0]
    assert "alpha channel dropped" in by_name["rgba"].notes[0]
    assert "16-bit" in by_name["rgb16"].notes[0]
    assert np.array_equal(by_name["rgb16"].hr, by_name["rgb"].hr)
    result = {r.name: r for r in evaluate(Bicubic(scale=2, exact=True), ds).images}
    assert result["grey"].psnr == result["greyrep"].psnr  # Y of the repeated channel
    assert result["grey"].ssim == result["greyrep"].ssim
    assert result["rgba"].psnr == result["rgb"].psnr == result["rgb16"].psnr


# ---- the evaluation pipeline ------------------------------------------------------------------


def test_pipeline_matches_direct_computation(tmp_path):
    imgs = _crops()
    root = _make_set(tmp_path / "Mini", imgs, 4)
    result = evaluate(NearestUp(scale=4), open_benchmark(root, scale=4))
    assert result.crop_border == 4 and not result.failures
    for im in result.images:
        hr = modcrop(imgs[im.name], 4)
        sr = _repeat_up(imresize(hr, 1 / 4, boundary="replicate"), 4)
        assert im.psnr == psnr(sr, hr, crop_border=4)
        assert im.ssim == ssim(sr, hr, crop_border=4)
    assert result.psnr == pytest.approx(np.mean([im.psnr for im in result.images]), abs=1e-12)
    with pytest.raises(LightSRError, match="x2"):
        evaluate(NearestUp(scale=2), open_benchmark(root, scale=4))


def test_self_ensemble():
    x = torch.rand(1, 3, 5, 7)
    for k in range(8):
        fwd, inv = _transforms(k)
        assert torch.equal(inv(fwd(x)), x)
    assert len({tuple(_transforms(k)[0](x).flatten()[:12].tolist()) for k in range(8)}) == 8
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    # an equivariant model is unchanged by self-ensemble
    near = NearestUp(scale=2)
    assert np.array_equal(super_resolve(near, lr, self_ensemble=True), _repeat_up(lr, 2))
    # otherwise it is the mean of the 8 back-transformed outputs, then rounded
    model = Lopsided(scale=2)
    t = torch.from_numpy(lr.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    with torch.inference_mode():
        outs = [_transforms(k)[1](model(_transforms(k)[0](t))) for k in range(8)]
    want = torch.floor(torch.stack(outs).mean(0).clamp(0, 1) * 255 + 0.5)[0].permute(1, 2, 0)
    got = super_resolve(model, lr, self_ensemble=True)
    assert np.abs(got.astype(int) - want.numpy().astype(int)).max() <= 1
    assert not np.array_equal(got, super_resolve(model, lr))


def test_bicubic_baseline_regression():
    """The Bicubic row, via evaluate: CONVENTIONS' butterfly x2 value (mirror LR from float
    HR) is reproduced when the LR is made the same way."""
    hr = modcrop(read_image(shared_path("data", "Set5", "HR", "butterfly.png")), 2)
    lr = np.floor(np.clip(imresize(hr / 255.0, 1 / 2), 0, 1) * 255 + 0.5).astype(np.uint8)
    sr = super_resolve(Bicubic(scale=2, exact=True), lr)
    assert psnr(sr, hr, crop_border=2) == pytest.approx(27.43860, abs=1e-5)
    assert ssim(sr, hr, crop_border=2) == pytest.approx(0.91597, abs=1e-5)


def test_save_sr(tmp_path):
    root = _make_set(tmp_path / "Mini", _crops(2), 2)
    evaluate(NearestUp(scale=2), open_benchmark(root, scale=2), save_sr=tmp_path / "out")
    saved = read_image(tmp_path / "out" / "Mini" / "baby.png")
    lr = read_image(root / "LR_bicubic_clamp" / "X2" / "babyx2.png")
    assert np.array_equal(saved, _repeat_up(lr, 2))


# ---- the CLI ----------------------------------------------------------------------------------


def test_cli_eval_bicubic_writes_csv_and_json(tmp_path, capsys):
    a = _make_set(tmp_path / "SetA", _crops(2), 2)
    b = _make_set(tmp_path / "SetB", _crops(3), 2, lr_folder=None)
    out_csv, out_json = tmp_path / "r.csv", tmp_path / "r.json"
    argv = ["eval", str(a), str(b), "--model", "bicubic", "--scale", "2", "--no-progress"]
    assert main([*argv, "--per-image", "--out", str(out_csv)]) == 0
    printed = capsys.readouterr().out
    assert "SetA" in printed and "imresize-replicate" in printed and "butterfly" in printed
    rows = list(csv.DictReader(out_csv.open()))
    means = {r["dataset"]: float(r["psnr"]) for r in rows if r["image"] == "mean"}
    direct = evaluate(Bicubic(scale=2, exact=True), open_benchmark(a, scale=2))
    assert means["SetA"] == pytest.approx(direct.psnr, abs=1e-6)
    assert main([*argv, "--out", str(out_json)]) == 0
    data = json.loads(out_json.read_text())
    assert [d["dataset"] for d in data] == ["SetA", "SetB"]
    assert data[0]["psnr"] == pytest.approx(direct.psnr) and data[1]["n_images"] == 3


def test_cli_eval_reports_failures_and_errors(tmp_path, capsys):
    root = _make_set(tmp_path / "Mini", _crops(), 2)
    bad = np.zeros((5, 5, 3), np.uint8)
    write_image(root / "LR_bicubic_clamp" / "X2" / "birdx2.png", bad, overwrite=True)
    rc = main(["eval", str(root), "--model", "bicubic", "--scale", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "Mini/bird" in captured.err and "(1 failed)" in captured.out
    # no model named: the bundled default, by the same rule as `lightsr upscale`
    assert main(["eval", str(root), "--scale", "2", "--no-progress"]) == 1  # bird still fails
    assert "a2f_sd (bundled default x2)" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "nothing"), "--model", "bicubic", "--scale", "2"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_eval_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "Set").mkdir()
    argv = ["eval", str(tmp_path / "Set"), "--model", "bicubic", "--scale", "2"]
    assert main([*argv, "--device", "cuda", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--device cpu" in err


def test_cli_eval_checks_a_checkpoint_against_model_and_scale(tmp_path, capsys):
    import lightsr

    ckpt = tmp_path / "f.safetensors"
    lightsr.save(lightsr.create_model("fsrcnn", scale=2), ckpt)
    (tmp_path / "Set").mkdir()
    argv = ["eval", str(tmp_path / "Set"), "--checkpoint", str(ckpt), "--no-progress"]
    assert main([*argv, "--scale", "3"]) == 2
    assert "x2 model, not x3" in capsys.readouterr().err
    assert main([*argv, "--model", "idn"]) == 2
    assert "--model fsrcnn" in capsys.readouterr().err
