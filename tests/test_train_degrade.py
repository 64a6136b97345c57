"""Training on degraded LR (``data.degradation``): the LR of a patch is made from its HR patch
on the fly, the same whichever worker loads it and after a resume; the clean path is as before;
the config is checked, round-trips and is recorded in the run's files.

Tiny synthetic images and a tiny registered model; every test runs in a few seconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import lightsr
from lightsr.config import config_from_dict, load_config
from lightsr.data.degrade import PRESETS, degrade, rng_for, to_uint8
from lightsr.data.training import (
    PairStore,
    PatchDataset,
    StepBatchSampler,
    degradation_from_table,
    dihedral,
    find_training_images,
    make_loader,
)
from lightsr.errors import ConfigError
from lightsr.models.base import SRModel
from lightsr.registry import _REGISTRY, register_model
from lightsr.train import read_state, resume_config, train

SCALE, LR_PATCH = 2, 8


class _Tiny(SRModel):
    def __init__(self, *, scale: int) -> None:
        super().__init__(scale=scale)
        self.head = nn.Conv2d(3, 4, 3, padding=1)
        self.tail = nn.Conv2d(4, 3 * scale * scale, 3, padding=1)
        self.up = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.up(self.tail(torch.relu(self.head(x))))


if "_tiny_degrade" not in _REGISTRY:
    register_model("_tiny_degrade", paper="test", scales=(2,))(lambda *, scale: _Tiny(scale=scale))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(34, 38), (40, 30), (36, 36), (31, 42), (28, 29)]):
        # smooth content (as photos): blur and noise then change it visibly
        base = rng.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3), dtype=np.uint8)
        Image.fromarray(base).resize((w, h), Image.BILINEAR).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def hr_store(images) -> PairStore:
    found = find_training_images([images], scale=SCALE, lr_source="resize")
    return PairStore(found, scale=SCALE, make_lr=False, min_lr_size=LR_PATCH)


@pytest.fixture(scope="module")
def pair_store(images) -> PairStore:
    found = find_training_images([images], scale=SCALE)
    return PairStore(found, scale=SCALE, boundary="mirror", min_lr_size=LR_PATCH)


def _batches(ds: PatchDataset, *, start: int, workers: int, n: int):
    sampler = StepBatchSampler(
        n_images=len(ds.store), batch_size=4, steps_per_epoch=2, seed=ds.seed, start_step=start
    )
    it = iter(make_loader(ds, sampler, num_workers=workers))
    return [next(it) for _ in range(n)]


def _assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (lr_a, hr_a), (lr_b, hr_b) in zip(a, b):
        assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_b)


# ---------------------------------------------------------------------------------------------
# The degraded samples
# ---------------------------------------------------------------------------------------------


def test_degraded_lr_is_degrade_of_the_hr_patch_with_the_item_generator(hr_store, pair_store):
    config = PRESETS["blur_noise_jpeg"]
    ds = PatchDataset(hr_store, lr_patch=LR_PATCH, seed=5, augment=False, degradation=config)
    clean = PatchDataset(pair_store, lr_patch=LR_PATCH, seed=5, augment=False)
    differs = 0
    for epoch, item in [(0, 0), (0, 3), (1, 3), (2, 7)]:
        lr, hr = ds[(epoch, item)]
        # the HR patch is the one the clean dataset of the same seed cuts
        assert torch.equal(hr, clean[(epoch, item)][1])
        hr8 = hr.numpy().transpose(1, 2, 0)
        want = degrade(
            hr8.astype(np.float32) / np.float32(255),
            scale=SCALE,
            config=config,
            rng=rng_for(5, "train-degrade", epoch, item),
        )
        assert np.array_equal(lr.numpy().transpose(1, 2, 0), to_uint8(want))
        assert lr.dtype == torch.uint8 and lr.shape == (3, LR_PATCH, LR_PATCH)
        differs += not torch.equal(lr, clean[(epoch, item)][0])
    assert differs == 4  # not the bicubic LR


def test_augment_is_the_same_flip_for_lr_and_hr(hr_store):
    config = PRESETS["jpeg"]
    plain = PatchDataset(hr_store, lr_patch=LR_PATCH, seed=1, augment=False, degradation=config)
    flipped = PatchDataset(hr_store, lr_patch=LR_PATCH, seed=1, augment=True, degradation=config)
    transforms = set()
    for item in range(12):
        lr0, hr0 = (t.numpy().transpose(1, 2, 0) for t in plain[(0, item)])
        lr1, hr1 = (t.numpy().transpose(1, 2, 0) for t in flipped[(0, item)])
        # degradation first, then one transform of both (the augment draw follows the crop's)
        ts = [
            t
            for t in range(8)
            if np.array_equal(dihedral(lr0, t), lr1) and np.array_equal(dihedral(hr0, t), hr1)
        ]
        assert ts, item
        transforms.add(ts[0])
    assert len(transforms) > 3


def test_degraded_batches_do_not_depend_on_workers_or_the_start_step(hr_store):
    ds = PatchDataset(
        hr_store,
        lr_patch=LR_PATCH,
        seed=0,
        degradation=degradation_from_table({"preset": "realesrgan"}),
    )
    ref = _batches(ds, start=0, workers=0, n=5)
    _assert_same_batches(ref, _batches(ds, start=0, workers=2, n=5))
    # a resumed loader (starting at step 3) gives the unbroken one's batches 3 and 4
    _assert_same_batches(ref[3:], _batches(ds, start=3, workers=0, n=2))
    _assert_same_batches(ref[3:], _batches(ds, start=3, workers=1, n=2))
    # every sample draws afresh: the same item in two epochs is degraded differently
    assert not torch.equal(ds[(0, 1)][0], ds[(1, 1)][0])


class _ThreadCount(PatchDataset):
    def __getitem__(self, key):
        lr, _ = super().__getitem__(key)
        return lr, torch.tensor([torch.get_num_threads()])


def test_data_workers_run_one_thread_each(hr_store):
    ds = _ThreadCount(hr_store, lr_patch=LR_PATCH, seed=0, degradation=PRESETS["noise"])
    for _, threads in _batches(ds, start=0, workers=2, n=3):
        assert threads.tolist() == [[1]] * 4


# ---------------------------------------------------------------------------------------------
# The clean path is unchanged
# ---------------------------------------------------------------------------------------------


def _old_patch(store: PairStore, seed: int, epoch: int, item: int, p: int, augment: bool):
    """PatchDataset.__getitem__ as it was before degradation existed (uint8 HWC arrays)."""
    rng = np.random.default_rng([seed, 2, epoch, item])
    n = item % len(store)
    lr, hr = store.lr[n], store.hr[n]
    s = store.scale
    y = int(rng.integers(0, lr.shape[0] - p + 1))
    x = int(rng.integers(0, lr.shape[1] - p + 1))
    lr_p, hr_p = lr[y : y + p, x : x + p], hr[y * s : (y + p) * s, x * s : (x + p) * s]
    if augment:
        t = int(rng.integers(0, 8))
        lr_p, hr_p = dihedral(lr_p, t), dihedral(hr_p, t)
    return lr_p, hr_p


@pytest.mark.parametrize("augment", [True, False])
def test_clean_patches_are_those_of_the_old_dataset(pair_store, augment):
    ds = PatchDataset(pair_store, lr_patch=LR_PATCH, seed=11, augment=augment)
    assert ds.degradation is None
    for epoch in range(3):
        for item in range(10):
            lr, hr = ds[(epoch, item)]
            want_lr, want_hr = _old_patch(pair_store, 11, epoch, item, LR_PATCH, augment)
            assert np.array_equal(lr.numpy().transpose(1, 2, 0), want_lr)
            assert np.array_equal(hr.numpy().transpose(1, 2, 0), want_hr)


def test_hr_only_store_holds_the_paired_stores_hr(images, pair_store, hr_store, tmp_path):
    assert pair_store.has_lr and len(pair_store.lr) == len(pair_store.hr)
    assert not hr_store.has_lr and hr_store.lr == []
    assert hr_store.names == pair_store.names
    for a, b in zip(hr_store.hr, pair_store.hr):
        assert np.array_equal(a, b)
    # on disk: an HR-only run writes no LR files, and a paired run then completes the entries
    found = find_training_images([images], scale=SCALE, lr_source="resize")
    cache = tmp_path / "cache"
    disk = PairStore(found, scale=SCALE, cache_dir=cache, make_lr=False, min_lr_size=LR_PATCH)
    assert sorted(p.name.rsplit("_", 1)[1] for p in cache.iterdir()) == ["hr.npy"] * 5
    assert all(np.array_equal(a, b) for a, b in zip(disk.hr, pair_store.hr))
    paired = PairStore(found, scale=SCALE, cache_dir=cache, min_lr_size=LR_PATCH)
    assert all(np.array_equal(a, b) for a, b in zip(paired.lr, pair_store.lr))
    with pytest.raises(ConfigError, match="make_lr=False"):
        PatchDataset(hr_store, lr_patch=LR_PATCH, seed=0)


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------

_TOML = """
model = "_tiny_degrade"
scale = 2

[data]
lr_patch = 8

[data.degradation]
preset = "realesrgan"
final_jpeg_range = [60, 95]

[data.degradation.orders.2]
noise_prob = 0.5
kernel = {sigma_range = [0.2, 1.0]}
"""


def test_config_overrides_the_preset_and_round_trips(tmp_path):
    path = tmp_path / "deg.toml"
    path.write_text(_TOML)
    cfg = load_config(path)
    got = degradation_from_table(cfg.data.degradation)
    base = PRESETS["realesrgan"]
    assert got is not None and got != base
    assert got.final_jpeg_range == (60, 95) and got.final_sinc_prob == base.final_sinc_prob
    assert got.orders[0] == base.orders[0]  # order 1 untouched
    second = got.orders[1]
    assert second.noise_prob == 0.5 and second.kernel.sigma_range == (0.2, 1.0)
    assert second.kernel.size_range == base.orders[1].kernel.size_range
    assert second.noise_range == base.orders[1].noise_range
    # through JSON (config.json, the checkpoint's extra, state.pt) and back
    again = config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and degradation_from_table(again.data.degradation) == got
    # the same from a command-line override
    cli = load_config(path, ["data.degradation.orders.2.noise_prob=0.25"])
    assert degradation_from_table(cli.data.degradation).orders[1].noise_prob == 0.25
    # a list replaces the orders, each from OrderConfig's defaults
    listed = degradation_from_table({"preset": "jpeg", "orders": [{"jpeg_prob": 0.0}]})
    assert len(listed.orders) == 1 and listed.orders[0].jpeg_prob == 0.0
    assert listed.orders[0].noise_range == (1.0, 30.0)
    assert degradation_from_table({}) is None


@pytest.mark.parametrize(
    "table, match",
    [
        ({"preset": "realesrgan", "final_jpeg_prb": 0.5}, r"final_jpeg_prb`.*'final_jpeg_prob'"),
        ({"preset": "realesrgan", "final_jpeg_range": [30, 101]}, r"final_jpeg_range` = "),
        ({"preset": "jpeg", "final_sinc_prob": "high"}, r"final_sinc_prob` = 'high'"),
        ({"preset": "realesrgan", "orders": {"3": {}}}, r"no order '3'.*orders 1\.\.2"),
        ({"preset": "noise", "orders": {"1": {"nois_prob": 1}}}, r"orders\.1\.nois_prob`"),
        (
            {"preset": "realesrgan", "orders": {"2": {"kernel": {"sigma_range": [2, 1]}}}},
            r"orders\.2\.kernel\.sigma_range` = .*min > max",
        ),
        ({"preset": "realesrgan", "orders": 3}, r"`data\.degradation\.orders` must be a table"),
        ({"preset": "hdr"}, r"preset` = 'hdr'.*realesrgan"),
        ({"final_jpeg_prob": 1.0}, r"names no `preset`.*realesrgan"),
    ],
)
def test_bad_degradation_tables_are_refused_naming_the_key(table, match):
    with pytest.raises(ConfigError, match=match) as info:
        degradation_from_table(table)
    if "prb" in match:  # an unknown key lists the valid ones
        assert "Valid keys here:" in str(info.value) and "preset" in str(info.value)


def _cfg(images: Path, out: Path, *extra: str):
    return load_config(
        None,
        [
            "model=_tiny_degrade",
            f"scale={SCALE}",
            f"data.lr_patch={LR_PATCH}",
            f"data.hr_dirs=['{images}']",
            "data.num_workers=0",
            "batch_size=4",
            "length=6",
            "log_every=2",
            "ckpt_every=3",
            "progress=false",
            "tensorboard=false",
            f"out_dir='{out}'",
            "data.degradation.preset='blur_noise_jpeg'",
            "data.degradation.final_jpeg_range=[40,90]",
            *extra,
        ],
    )


def test_a_bad_override_fails_before_the_run_starts(images, tmp_path):
    cfg = _cfg(images, tmp_path / "run", "data.degradation.orders.1.blur_prb=0.5")
    with pytest.raises(ConfigError, match=r"orders\.1\.blur_prb`.*'blur_prob'"):
        train(cfg)
    assert not (tmp_path / "run").exists()
    # LR files cannot be read and made at once
    with pytest.raises(ConfigError, match="data.lr_dirs"):
        _cfg(images, tmp_path / "run", f"data.lr_dirs=['{images}']")


# ---------------------------------------------------------------------------------------------
# A run: exact resume, recorded config
# ---------------------------------------------------------------------------------------------


class _Killed(Exception):
    pass


def test_killed_and_resumed_degraded_run_equals_unbroken_run(images, tmp_path):
    unbroken = train(_cfg(images, tmp_path / "a"))

    def kill_at_4(step: int, model) -> None:
        if step == 4:
            raise _Killed

    with pytest.raises(_Killed):
        train(_cfg(images, tmp_path / "b"), hooks=[kill_at_4])
    assert read_state(tmp_path / "b")["step"] == 3
    resumed = train(resume_config(tmp_path / "b"), resume=tmp_path / "b")
    assert resumed.step == unbroken.step == 6
    a, b = unbroken.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the degradation is part of the run: changing it on resume is refused
    with pytest.raises(ConfigError, match="data.degradation.final_jpeg_range"):
        resume_config(tmp_path / "b", ["data.degradation.final_jpeg_range=[30,90]"])
    # the run's files say what it trained on: config.json and the checkpoint (the preset's
    # values resolved, so the checkpoint describes itself whatever a later preset says)
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["data"]["degradation"] == {
        "preset": "blur_noise_jpeg",
        "final_jpeg_range": [40, 90],
    }
    extra = lightsr.load(tmp_path / "b" / "last.safetensors").checkpoint_extra
    want = asdict(degradation_from_table(saved["data"]["degradation"]))
    assert extra["degradation"] == json.loads(json.dumps(want))
    assert extra["degradation"]["final_jpeg_range"] == [40, 90]
