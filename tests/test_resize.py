"""MATLAB imresize: bit-exact against every published LR image in ../shared/data, and the
fast torch path's measured deviation from the exact path; Resize band by band equals Resize
whole; Pillow's Lanczos reproduced."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image

from lightsr.data import resize as resize_module
from lightsr.data.io import read_image
from lightsr.data.resize import Resize, imresize, imresize_torch, modcrop
from lightsr.errors import LightSRError

# (set, LR folder, boundary rule): LR_bicubic = MATLAB's mirror rule, _clamp = replicate.
LR_FOLDERS = [
    ("Set5", "LR_bicubic", "mirror"),
    ("Set5", "LR_bicubic_clamp", "replicate"),
    ("Set14", "LR_bicubic_clamp", "replicate"),
    ("B100", "LR_bicubic_clamp", "replicate"),
]


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize(("dataset", "folder", "boundary"), LR_FOLDERS)
def test_bit_exact_against_published_lr(dataset, folder, boundary, scale):
    hr_dir = shared_path("data", dataset, "HR")
    lr_dir = shared_path("data", dataset, folder, f"X{scale}")
    hr_files = sorted(hr_dir.glob("*.png"))
    assert len(hr_files) == {"Set5": 5, "Set14": 14, "B100": 100}[dataset]
    for hr_path in hr_files:
        hr = read_image(hr_path)
        lr = read_image(lr_dir / f"{hr_path.stem}x{scale}.png")
        out = imresize(modcrop(hr, scale), 1 / scale, boundary=boundary)
        assert out.dtype == np.uint8
        assert out.shape == lr.shape, hr_path.name
        mismatched = int(np.count_nonzero(out != lr))
        assert mismatched == 0, f"{hr_path.name} x{scale}: {mismatched} values differ"


def test_uint8_rounding_between_passes_matters():
    """Without MATLAB's uint8 intermediate, ~10-15% of pixels miss the published files."""
    hr = modcrop(read_image(shared_path("data", "Set5", "HR", "butterfly.png")), 4)
    lr = read_image(shared_path("data", "Set5", "LR_bicubic", "X4", "butterflyx4.png"))
    float_path = imresize(hr.astype(np.float64), 1 / 4)
    rounded = np.floor(np.clip(float_path, 0, 255) + 0.5).astype(np.uint8)
    frac = np.mean(rounded != lr)
    assert 0.03 < frac < 0.3
    assert np.array_equal(imresize(hr, 1 / 4), lr)


def test_boundary_rules_differ_only_at_the_border():
    hr = modcrop(read_image(shared_path("data", "Set5", "HR", "bird.png")), 3)
    a = imresize(hr, 1 / 3, boundary="mirror").astype(int)
    b = imresize(hr, 1 / 3, boundary="replicate").astype(int)
    ys, xs = np.nonzero(np.any(a != b, axis=2))
    h, w = a.shape[:2]
    assert len(ys) > 0
    depth = np.minimum(np.minimum(ys, h - 1 - ys), np.minimum(xs, w - 1 - xs))
    assert depth.max() <= 2


def test_output_size_and_scale_forms():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    assert imresize(img, 1 / 2).shape == (4, 3, 3)  # ceil(in * scale)
    assert imresize(img, 3).shape == (21, 15, 3)
    assert imresize(img[:, :, 0], 1 / 2).shape == (4, 3)
    big = rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)
    # output_shape gives scale = out/in per axis: the same weights as the scale form
    assert np.array_equal(imresize(big, output_shape=(6, 9)), imresize(big, 1 / 4))
    # a per-axis scale tuple
    assert imresize(big, (0.5, 0.25)).shape == (12, 9, 3)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_constant_image_stays_constant(dtype):
    img = np.full((13, 17, 3), 200, dtype=dtype)
    for scale in (1 / 4, 1 / 3, 2, 3):
        out = imresize(img, scale, boundary="replicate")
        assert out.dtype == dtype
        np.testing.assert_allclose(out.astype(np.float64), 200.0, atol=1e-9)


def test_uint16_keeps_range_and_tracks_uint8():
    """uint16 input is rounded/clipped in its own range: for 257*x input (x uint8) the result
    is within one uint8 level of 257 * imresize(x)."""
    img8 = read_image(shared_path("data", "Set5", "HR", "head.png"))[:120, :120]
    out16 = imresize(img8.astype(np.uint16) * 257, 1 / 3)
    out8 = imresize(img8, 1 / 3)
    assert out16.dtype == np.uint16
    assert np.abs(out16 / 257.0 - out8).max() <= 1.0


@pytest.mark.parametrize("boundary", ["mirror", "replicate"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_torch_path_deviation_is_bounded(scale, boundary):
    hr = modcrop(read_image(shared_path("data", "Set5", "HR", "butterfly.png")), scale)
    x = hr.astype(np.float64) / 255.0
    exact_down = imresize(x, 1 / scale, boundary=boundary)
    t = torch.from_numpy(x.transpose(2, 0, 1)[None]).float()
    fast_down = imresize_torch(t, 1 / scale, boundary=boundary)[0].permute(1, 2, 0).double()
    assert np.abs(fast_down.numpy() - exact_down).max() < 1e-6  # measured <= 4e-7
    exact_up = imresize(exact_down, scale, boundary=boundary)
    t_lr = torch.from_numpy(exact_down.transpose(2, 0, 1)[None]).float()
    fast_up = imresize_torch(t_lr, scale, boundary=boundary)[0].permute(1, 2, 0).double()
    assert fast_up.shape == exact_up.shape
    assert np.abs(fast_up.numpy() - exact_up).max() < 2e-5  # measured <= 8e-6 (x3)


def test_torch_path_batches_and_rejects_bad_sizes():
    g = torch.Generator().manual_seed(0)
    batch = torch.rand(3, 3, 24, 24, generator=g)
    out = imresize_torch(batch, 1 / 4)
    for i in range(3):  # each image of the batch as if resized alone
        single = imresize(batch[i].permute(1, 2, 0).double().numpy(), 1 / 4)
        assert np.abs(out[i].permute(1, 2, 0).double().numpy() - single).max() < 1e-6
    with pytest.raises(LightSRError, match="modcrop"):
        imresize_torch(torch.rand(1, 3, 25, 24), 1 / 4)
    with pytest.raises(LightSRError):
        imresize_torch(torch.rand(1, 3, 24, 24), 0.3)


def test_bad_arguments():
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(LightSRError, match="boundary"):
        imresize(img, 1 / 2, boundary="reflect")
    with pytest.raises(LightSRError):
        imresize(img)
    with pytest.raises(LightSRError, match="dtype"):
        imresize(img.astype(np.int32), 1 / 2)


def test_modcrop_keeps_top_left():
    img = np.arange(7 * 10).reshape(7, 10)
    assert np.array_equal(modcrop(img, 3), img[:6, :9])


# ---------------------------------------------------------------------------------------------
# Resize: band by band, and Pillow's Lanczos
# ---------------------------------------------------------------------------------------------


def _random_image(rng, h, w, c, dtype):
    shape = (h, w) if c is None else (h, w, c)
    if dtype in (np.uint8, np.uint16):
        return rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    return rng.random(shape).astype(dtype)


def _split(image, rng):
    """``image``'s rows in bands of random heights (1 row included)."""
    bands, row = [], 0
    while row < image.shape[0]:
        step = int(rng.choice([1, 2, 5, 17]))
        bands.append(image[row : row + step])
        row += step
    return bands


@pytest.mark.parametrize("filter", ["bicubic", "lanczos"])
def test_bands_equal_the_whole_resize_bit_for_bit(filter, monkeypatch):
    # a small step makes every output come in many steps, reading rows held from earlier
    # bands and dropping the rows no later output reads
    monkeypatch.setattr(resize_module, "_STEP_VALUES", 40)
    rng = np.random.default_rng(5)
    cases = 0
    for dtype in (np.uint8, np.uint16, np.float32, np.float64):
        for c in (None, 1, 3, 4):
            # shrink and grow per axis, so both pass orders and skipped passes occur
            for out_h, out_w in ((13, 40), (57, 11), (29, 23), (23, 19), (29, 61)):
                image = _random_image(rng, 23, 19, c, dtype)
                for boundary in ("mirror", "replicate") if filter == "bicubic" else ("mirror",):
                    resize = Resize(
                        (23, 19), (out_h, out_w), dtype=dtype, filter=filter, boundary=boundary
                    )
                    whole = resize(image)
                    joined = np.concatenate(list(resize.bands(_split(image, rng))))
                    assert joined.dtype == whole.dtype and joined.shape == whole.shape
                    np.testing.assert_array_equal(joined, whole)
                    cases += 1
    assert cases == {"bicubic": 160, "lanczos": 80}[filter]


def test_whole_resize_is_imresize():
    rng = np.random.default_rng(2)
    image = _random_image(rng, 31, 26, 3, np.uint8)
    for shape in ((8, 7), (70, 50), (31, 52)):
        ours = Resize((31, 26), shape, dtype=np.uint8)(image)
        np.testing.assert_array_equal(ours, imresize(image, output_shape=shape))
    # the scale form's own weights (scale 1/4, not out/in = 8/31)
    ours = Resize((31, 26), (8, 7), dtype=np.uint8, scales=(0.25, 0.25))(image)
    np.testing.assert_array_equal(ours, imresize(image, 1 / 4))
    assert not np.array_equal(ours, imresize(image, output_shape=(8, 7)))


def test_bands_stream_instead_of_holding_the_image():
    """The first output band comes after a few input bands, not after the whole input."""
    height, width = 400, 64
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    read = []

    def source():
        for row in range(0, height, 10):
            read.append(row)
            yield image[row : row + 10]

    for filter in ("bicubic", "lanczos"):
        read.clear()
        for out_h in (170, 900):  # shrink (a wide kernel) and grow
            resize = Resize((height, width), (out_h, 100), dtype=np.uint8, filter=filter)
            bands = resize.bands(source())
            first = next(bands)
            assert len(read) <= 3, (filter, out_h, len(read))
            rows = first.shape[0] + sum(b.shape[0] for b in bands)
            assert rows == out_h
            read.clear()


def test_bad_bands_are_refused():
    resize = Resize((10, 8), (20, 16), dtype=np.uint8)
    image = np.zeros((10, 8, 3), np.uint8)
    with pytest.raises(LightSRError, match="rows of 8 pixels"):
        list(resize.bands([image[:, :7]]))
    with pytest.raises(LightSRError, match="same width and channels"):
        list(resize.bands([image[:5], image[5:, :, :2]]))
    with pytest.raises(LightSRError, match="too many rows"):
        list(resize.bands([image, image[:1]]))
    with pytest.raises(LightSRError, match="too few rows"):
        list(resize.bands([image[:9]]))
    with pytest.raises(LightSRError, match="uint16"):
        list(Resize((10, 8), (20, 16), dtype=np.uint16).bands([image]))
    with pytest.raises(LightSRError, match="filter must be one of bicubic, lanczos"):
        Resize((10, 8), (20, 16), dtype=np.uint8, filter="nearest")
    with pytest.raises(LightSRError, match="dtype int32"):
        Resize((10, 8), (20, 16), dtype=np.int32)


def test_lanczos_is_pillows_bit_for_bit():
    """Pillow runs the horizontal pass; the vertical one reproduces Pillow's (its weights and
    float arithmetic), float32 between: equal to Pillow's width resize followed by its height
    resize. Pillow 13 runs the
    height first in one call when the height shrinks much more than the width (PR 9549);
    outscale scales both axes alike, where a single Pillow call is equal as well."""
    lanczos = Image.Resampling.LANCZOS
    rng = np.random.default_rng(0)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        out_h, out_w = (int(v) for v in rng.integers(1, 110, 2))
        plane = (rng.random((h, w)) * 300 - 20).astype(np.float32)
        im = Image.fromarray(plane)
        pillow = np.asarray(im.resize((out_w, h), lanczos).resize((out_w, out_h), lanczos))
        ours = Resize((h, w), (out_h, out_w), dtype=np.float32, filter="lanczos")(plane)
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, pillow)
    for factor in (1.25, 1.5, 2.5, 3.5):  # outscale's shapes: both axes grow alike
        h, w = (int(v) for v in rng.integers(5, 60, 2))
        size = (math.floor(h * factor + 0.5), math.floor(w * factor + 0.5))
        plane = (rng.random((h, w)) * 255).astype(np.float32)
        pillow = np.asarray(Image.fromarray(plane).resize(size[::-1], lanczos))
        ours = Resize((h, w), size, dtype=np.float32, filter="lanczos")(plane)
        np.testing.assert_array_equal(ours, pillow)
    # integers: Pillow's float result rounded half up and clipped
    image = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    want = np.asarray(Image.fromarray(image.astype(np.float32)).resize((18, 21), lanczos))
    want = np.floor(np.clip(want, 0, 255) + 0.5).astype(np.uint8)
    got = Resize((9, 7), (21, 18), dtype=np.uint8, filter="lanczos")(image)
    np.testing.assert_array_equal(got, want)
