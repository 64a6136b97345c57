"""``lightsr eval --degrade PRESET``: each LR made from its HR by ``degrade_for_eval``, measured
exactly as the clean sets are, named in every output, refused with an LR folder.

Tiny synthetic sets in tmp_path (one grey image among them); the bundled a2f_sd x2 weights.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image

import lightsr
from lightsr import hub
from lightsr.cli import main
from lightsr.data.benchmark import BenchmarkSet
from lightsr.data.degrade import degrade_for_eval, to_uint8
from lightsr.data.io import read_image, write_image
from lightsr.data.resize import imresize, modcrop
from lightsr.errors import ConfigError
from lightsr.evaluate import evaluate, super_resolve
from lightsr.metrics import psnr, ssim
from lightsr.models.bicubic import Bicubic


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    """A set in the common layout: HR/ (sizes not multiples of the scales: modcrop matters)
    and an LR_bicubic_clamp/X2 folder that --degrade must not read."""
    root = tmp_path_factory.mktemp("sets") / "Mini"
    images = {
        "leaf": synthetic_image(41, 38, seed=1),
        "stone": synthetic_image(36, 45, seed=2),
        "grey": synthetic_image(34, 34, c=1, seed=3),
    }
    for name, img in images.items():
        write_image(root / "HR" / f"{name}.png", img)
        lr = imresize(modcrop(img, 2), 1 / 2, boundary="replicate")
        write_image(root / "LR_bicubic_clamp" / "X2" / f"{name}x2.png", lr)
    return root


def _by_hand(model, root: Path, scale: int, preset: str, seed: int) -> dict[str, tuple]:
    """Per image (PSNR-Y, SSIM-Y): the HR modcropped, degrade_for_eval of it (named by the file
    stem) rounded to uint8, the model, the papers' metrics with crop = scale."""
    out = {}
    for path in sorted((root / "HR").glob("*.png")):
        hr = modcrop(read_image(path), scale)
        rgb = np.repeat(hr, 3, axis=2) if hr.shape[2] == 1 else hr
        lr = degrade_for_eval(
            rgb.astype(np.float32) / np.float32(255),
            scale=scale,
            preset=preset,
            seed=seed,
            name=path.stem,
        )
        sr = super_resolve(model, to_uint8(lr))
        out[path.stem] = (psnr(sr, rgb, crop_border=scale), ssim(sr, rgb, crop_border=scale))
    return out


def _eval_json(root: Path, out: Path, *args: str) -> list[dict]:
    argv = ["eval", str(root), "--scale", "2", "--quiet", "--out", str(out), *args]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_eval_degrade_equals_the_metric_by_hand_and_is_deterministic(mini, tmp_path, capsys):
    got = _eval_json(mini, tmp_path / "a.json", "--model", "bicubic", "--degrade", "jpeg")
    (result,) = got
    want = _by_hand(Bicubic(scale=2, exact=True), mini, 2, "jpeg", 0)
    assert {im["name"]: (im["psnr"], im["ssim"]) for im in result["images"]} == want
    assert result["lr_source"] == "degrade:jpeg:seed0" and result["crop_border"] == 2
    assert result["dataset"] == "Mini" and not result["failures"]
    # the same numbers on a second run, in another process state
    again = _eval_json(mini, tmp_path / "b.json", "--model", "bicubic", "--degrade", "jpeg")
    assert [(im["name"], im["psnr"], im["ssim"], im["notes"]) for im in again[0]["images"]] == [
        (im["name"], im["psnr"], im["ssim"], im["notes"]) for im in result["images"]
    ]
    # the printed table names the preset and the seed
    printed = capsys.readouterr().out
    assert "degrade:jpeg:seed0" in printed
    # the clean LR folder gives other numbers; so does another seed
    clean = evaluate(Bicubic(scale=2, exact=True), BenchmarkSet.from_folder(mini, scale=2))
    assert clean.psnr != pytest.approx(result["psnr"], abs=0.01)
    seeded = _eval_json(
        mini, tmp_path / "c.json", "--model", "bicubic", "--degrade", "jpeg", "--degrade-seed", "7"
    )
    assert seeded[0]["lr_source"] == "degrade:jpeg:seed7"
    assert seeded[0]["psnr"] != result["psnr"]
    assert {im["name"]: (im["psnr"], im["ssim"]) for im in seeded[0]["images"]} == _by_hand(
        Bicubic(scale=2, exact=True), mini, 2, "jpeg", 7
    )


def test_eval_degrade_with_bundled_weights_and_csv(mini, tmp_path):
    out = tmp_path / "r.csv"
    argv = ["eval", str(mini), "--weights", "a2f_sd_x2", "--degrade", "realesrgan", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["lr_source"] for r in rows} == {"degrade:realesrgan:seed0"}
    model = lightsr.load(hub.fetch_weights("a2f_sd_x2"))
    want = _by_hand(model, mini, 2, "realesrgan", 0)
    per_image = {r["image"]: float(r["psnr"]) for r in rows if r["image"] != "mean"}
    assert per_image == {k: pytest.approx(v[0], abs=5e-7) for k, v in want.items()}  # %.6f


def test_degrade_with_an_lr_folder_is_refused(mini, tmp_path, capsys):
    base = ["eval", str(mini), "--model", "bicubic", "--scale", "2", "--quiet"]
    cases = [
        (["--degrade", "jpeg", "--lr-source", "folder"], "--lr-source folder"),
        (["--degrade", "jpeg", "--lr-dir", str(mini / "LR_bicubic_clamp" / "X2")], "--lr-dir"),
        (["--degrade-seed", "3"], "name a preset with --degrade"),
    ]
    for extra, named in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert named in err and "--degrade" in err
    with pytest.raises(SystemExit):  # argparse's own check of the choices
        main([*base, "--degrade", "sharp"])
    assert "invalid choice: 'sharp'" in capsys.readouterr().err
    # the library refuses the same, and an unknown preset, naming what to change
    with pytest.raises(ConfigError, match="lr_source 'folder-clamp'"):
        BenchmarkSet.from_folder(mini, scale=2, lr_source="folder-clamp", degrade="jpeg")
    with pytest.raises(ConfigError, match="unknown degradation preset 'sharp'"):
        BenchmarkSet.from_folder(mini, scale=2, degrade="sharp")
    with pytest.raises(ConfigError, match="degrade_seed"):
        BenchmarkSet.from_folder(mini, scale=2, degrade="jpeg", degrade_seed=-1)


def test_degraded_set_reads_no_lr_file(mini):
    ds = BenchmarkSet.from_folder(mini, scale=2, degrade="noise", degrade_seed=2)
    assert ds.lr_dir is None and all(p.lr_path is None for p in ds.pairs)
    item = ds[ds.names.index("grey")]
    # a grey HR stays one channel (measured as Y of the repeated channel); its LR is RGB
    assert item.hr.shape == (34, 34, 1) and item.lr.shape == (17, 17, 3)
    want = degrade_for_eval(
        np.repeat(item.hr, 3, axis=2).astype(np.float32) / np.float32(255),
        scale=2,
        preset="noise",
        seed=2,
        name="grey",
    )
    assert np.array_equal(item.lr, to_uint8(want))
