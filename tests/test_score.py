"""lightsr.score / `lightsr score`: existing SR images measured exactly as `lightsr eval` measures,
pairing by name, size checks, and the refusals (unpaired files, ambiguity, wrong sizes)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from conftest import shared_path, synthetic_image

from lightsr.cli import main
from lightsr.data.io import write_image
from lightsr.data.resize import modcrop
from lightsr.errors import DatasetError
from lightsr.score import pair_files, score_folders


def _folders(tmp_path, names=("a", "b"), size=(50, 46)):
    """GT images (sizes not multiples of 4, so modcrop matters) and an SR folder."""
    gt, sr = tmp_path / "gt", tmp_path / "sr"
    images = {}
    for i, name in enumerate(names):
        # kept inside [10, 200] so that +1 never saturates
        img = (synthetic_image(*size, seed=i).astype(np.int32) * 190 // 255 + 10).astype(np.uint8)
        write_image(gt / f"{name}.png", img)
        images[name] = img
    sr.mkdir()
    return gt, sr, images


# ---- the same numbers as eval ---------------------------------------------------------------


def test_score_of_evals_saved_sr_images_equals_eval(tmp_path, capsys):
    set5 = shared_path("data", "Set5")
    saved = tmp_path / "bicubic_x4"  # the folder name says the scale: no --scale needed
    eval_json = tmp_path / "eval.json"
    argv = ["eval", str(set5), "--model", "bicubic", "--scale", "4", "--quiet"]
    assert main([*argv, "--save-sr", str(saved), "--out", str(eval_json)]) == 0
    score_json = tmp_path / "score.json"
    # SR_DIR holding Set5/ (eval's --save-sr layout) is understood
    assert main(["score", str(set5), str(saved), "-o", str(score_json), "--quiet"]) == 0
    out = capsys.readouterr().out
    (ev,), (sc,) = json.loads(eval_json.read_text()), json.loads(score_json.read_text())
    assert sc["scale"] == 4 and sc["crop_border"] == 4 and sc["dataset"] == "Set5"
    assert [im["name"] for im in sc["images"]] == [im["name"] for im in ev["images"]]
    assert len(sc["images"]) == 5
    for a, b in zip(ev["images"], sc["images"]):
        assert abs(a["psnr"] - b["psnr"]) <= 1e-6 and abs(a["ssim"] - b["ssim"]) <= 1e-9
    assert abs(ev["psnr"] - sc["psnr"]) <= 1e-6
    assert f"{sc['psnr']:.4f}" in out  # the table eval prints


# ---- known numbers --------------------------------------------------------------------------


def test_psnr_of_a_known_offset_against_the_modcropped_hr(tmp_path):
    gt, sr, images = _folders(tmp_path)
    for name, img in images.items():
        write_image(sr / f"{name}_x4_SR.png", modcrop(img, 4) + 1)  # +1 on every channel
    result = score_folders(gt, sr, crop_border=0)
    # Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255: +1 on R, G, B moves Y by their sum / 255
    dy = (65.481 + 128.553 + 24.966) / 255
    assert result.scale == 4  # from the _x4 suffixes
    assert [r.name for r in result.images] == ["a", "b"] and not result.failures
    for r in result.images:
        assert r.psnr == pytest.approx(20 * math.log10(255 / dy), abs=1e-9)
        assert r.ssim == pytest.approx(1.0, abs=1e-4) and r.ssim < 1.0
    rgb = score_folders(gt, sr, crop_border=0, y_channel=False)
    assert rgb.images[0].psnr == pytest.approx(20 * math.log10(255), abs=1e-9)  # MSE 1


def test_crop_border_defaults_to_the_scale(tmp_path):
    gt, sr, images = _folders(tmp_path, names=("a",))
    out = modcrop(images["a"], 2).copy()
    out[:2] = 0  # damage only the 2-pixel border that is cropped at x2
    out[:, :2] = 0
    write_image(sr / "a.png", out)
    result = score_folders(gt, sr, scale=2)
    assert result.crop_border == 2 and math.isinf(result.images[0].psnr)
    assert not math.isinf(score_folders(gt, sr, scale=2, crop_border=1).images[0].psnr)


# ---- pairing --------------------------------------------------------------------------------


def test_pairing_by_suffix_patterns_and_an_explicit_suffix(tmp_path):
    gt, sr, _ = _folders(tmp_path, names=("baby", "bird", "head", "zebra"))
    gt_files = sorted(gt.glob("*.png"))
    names = ["baby.png", "birdx4.png", "head_X4.png", "zebra_SR.png"]
    pairs = pair_files(gt_files, [sr / n for n in names])
    assert [(p.name, p.sr_path.name, p.suffix) for p in pairs] == [
        ("baby", "baby.png", ""),
        ("bird", "birdx4.png", "x4"),
        ("head", "head_X4.png", "_X4"),
        ("zebra", "zebra_SR.png", "_SR"),
    ]
    # a method's own suffix is named explicitly; the default patterns do not guess it
    rcan = [sr / f"{p.stem}_RCAN_BIX4.png" for p in gt_files]
    with pytest.raises(DatasetError, match="without an HR file"):
        pair_files(gt_files, rcan)
    pairs = pair_files(gt_files, rcan, suffix="_RCAN_BIX4")
    assert [p.sr_path.name for p in pairs] == [f.name for f in rcan]


def test_unpaired_files_are_listed_on_both_sides(tmp_path):
    gt, sr, images = _folders(tmp_path, names=("a", "b", "c"))
    write_image(sr / "a.png", modcrop(images["a"], 2))
    write_image(sr / "zebra.png", modcrop(images["b"], 2))
    with pytest.raises(DatasetError) as info:
        score_folders(gt, sr, scale=2)
    msg = str(info.value)
    assert "2 HR file(s) without an SR file: b.png, c.png" in msg
    assert "1 SR file(s) without an HR file: zebra.png" in msg
    assert "--suffix" in msg


def test_two_sr_files_for_one_hr_are_refused(tmp_path):
    gt, sr, images = _folders(tmp_path, names=("a",))
    write_image(sr / "a.png", modcrop(images["a"], 2))
    write_image(sr / "a_x2.png", modcrop(images["a"], 2))
    with pytest.raises(DatasetError, match=r"HR files with several SR files: a\.png \(a\.png, "):
        score_folders(gt, sr, scale=2)
    # a named suffix is the only one: the other file is then a stray, named as such
    with pytest.raises(DatasetError, match=r"1 SR file\(s\) without an HR file: a\.png"):
        score_folders(gt, sr, scale=2, suffix="_x2")
    (sr / "a.png").unlink()
    assert score_folders(gt, sr, scale=2).images[0].name == "a"


def test_an_sr_file_that_fits_two_hr_files_is_refused(tmp_path):
    gt, sr, images = _folders(tmp_path, names=("img", "img_SR"))
    write_image(sr / "img_SR_x2.png", modcrop(images["img"], 2))
    with pytest.raises(DatasetError, match=r"img_SR_x2\.png \(HR img\.png or img_SR\.png\)"):
        pair_files(sorted(gt.glob("*.png")), [sr / "img_SR_x2.png"])


# ---- sizes and scale ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (lambda img: img, "full HR size"),  # 51x46, not the x4 modcrop 48x44
        (lambda img: modcrop(img, 4)[::4, ::4], "LR size"),
        (lambda img: modcrop(img, 2), "modcropped size at x2"),
    ],
)
def test_a_wrong_sr_size_names_both_sizes_and_the_likely_cause(tmp_path, make, cause):
    gt, sr, images = _folders(tmp_path, names=("a",), size=(51, 46))
    write_image(sr / "a.png", make(images["a"]))
    with pytest.raises(DatasetError) as info:
        score_folders(gt, sr, scale=4)
    msg = str(info.value)
    assert "a.png (51x46) modcropped to x4 is 48x44" in msg and cause in msg


def test_a_scale_the_sizes_cannot_tell_must_be_given(tmp_path, capsys):
    gt, sr, images = _folders(tmp_path, names=("a",), size=(48, 48))  # a multiple of 2, 3, 4, 8
    write_image(sr / "a.png", images["a"])
    with pytest.raises(DatasetError, match="pass --scale"):
        score_folders(gt, sr)
    # the only scale every size fits is taken
    gt2, sr2, images2 = _folders(tmp_path / "two", names=("a",), size=(50, 46))
    write_image(sr2 / "a.png", modcrop(images2["a"], 2))
    assert score_folders(gt2, sr2).scale == 2


# ---- the command ----------------------------------------------------------------------------


def test_cli_writes_evals_csv_and_never_replaces_unasked(tmp_path, capsys):
    gt, sr, images = _folders(tmp_path)
    for name, img in images.items():
        write_image(sr / f"{name}.png", modcrop(img, 2))
    out = tmp_path / "scores.csv"
    argv = ["score", str(gt), str(sr), "--scale", "2", "--label", "mine", "-o", str(out)]
    assert main([*argv, "--quiet"]) == 0
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows[0] == ["model", "dataset", "scale", "lr_source", "image", "psnr", "ssim", "notes"]
    assert [r[4] for r in rows[1:]] == ["a", "b", "mean"] and rows[1][0] == "mine"
    assert all(r[5] == "inf" for r in rows[1:])  # the SR is the modcropped HR itself
    capsys.readouterr()
    out.write_text("precious")
    assert main([*argv, "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "precious"
    assert main([*argv, "--quiet", "--overwrite"]) == 0 and out.read_text() != "precious"
    assert main(["score", str(gt), str(sr), "-o", str(tmp_path / "x.txt")]) == 2


def test_cli_a_grey_sr_for_a_colour_hr_fails_that_image(tmp_path, capsys):
    gt, sr, images = _folders(tmp_path)
    write_image(sr / "a.png", modcrop(images["a"], 2))
    write_image(sr / "b.png", modcrop(images["b"], 2)[..., :1])
    assert main(["score", str(gt), str(sr), "--scale", "2", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "1 image(s) failed" in captured.err and "b: ImageReadError" in captured.err
    assert "is grey but its HR b.png is colour" in captured.err
    assert "images" in captured.out  # a's row is still printed
