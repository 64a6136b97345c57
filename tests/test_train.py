"""Training: exact resume, deterministic patches, DIV2K layout, DDP on CPU, clear errors.

Everything runs on a tiny registered model and a folder of tiny synthetic images.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import lightsr
from lightsr import hub
from lightsr.config import load_config
from lightsr.data.io import image_to_tensor
from lightsr.data.resize import imresize
from lightsr.data.training import (
    PairStore,
    PatchDataset,
    StepBatchSampler,
    dihedral,
    find_training_images,
    make_loader,
    to_unit,
    with_downscaled_copies,
)
from lightsr.errors import CheckpointError, ConfigError, DatasetError
from lightsr.models.base import SRModel
from lightsr.registry import _REGISTRY, register_model
from lightsr.train import (
    ema_decay_at,
    lr_at,
    make_schedule,
    read_log,
    read_state,
    resume_config,
    train,
)

# ---------------------------------------------------------------------------------------------
# A tiny model (registered on import, also in spawned DDP workers) and tiny images
# ---------------------------------------------------------------------------------------------


class _Tiny(SRModel):
    def __init__(self, *, scale: int, width: int = 4) -> None:
        super().__init__(scale=scale)
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.tail = nn.Conv2d(width, 3 * scale * scale, 3, padding=1)
        self.up = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.up(self.tail(torch.relu(self.head(x))))


def _register() -> None:
    for name, width in (("_tiny_train", 4), ("_tiny_train_wide", 6)):
        if name not in _REGISTRY:
            register_model(name, paper="test", scales=(2, 3))(
                lambda *, scale, _w=width: _Tiny(scale=scale, width=_w)
            )


_register()


def _write_images(folder: Path, sizes, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        # smooth-ish content so that the LR is not pure noise
        base = rng.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        img.save(folder / f"{i:04d}.png")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    _write_images(folder, [(30, 34), (28, 40), (36, 26), (32, 32), (27, 31)])
    return folder


def _cfg(images: Path, out: Path, *extra: str):
    return load_config(
        None,
        [
            "model=_tiny_train",
            "scale=2",
            "data.lr_patch=6",
            f"data.hr_dirs=['{images}']",
            "data.num_workers=0",
            "batch_size=4",
            "length=6",
            "log_every=2",
            "ckpt_every=3",
            "progress=false",
            f"out_dir='{out}'",
            *extra,
        ],
    )


class _Killed(Exception):
    pass


def _kill_at(k: int):
    def hook(step: int, model) -> None:
        if step == k:
            raise _Killed

    return hook


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# ---------------------------------------------------------------------------------------------
# Exact resume
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        # AdamP state, a warmed-up EMA, in-process loading
        ("optim.name=adamp", "ema_decay=0.9", "ema_warmup=true"),
        ("data.num_workers=1", "schedule.every=2"),  # a worker process, a changing lr
    ],
    ids=["adamp-ema-workers0", "adam-workers1"],
)
def test_killed_and_resumed_run_equals_unbroken_run(images, tmp_path, extra):
    # k = 3 steps, checkpoint every 3; the kill comes at step 4, after the checkpoint.
    full = train(_cfg(images, tmp_path / "full", *extra))
    assert full.step == 6
    with pytest.raises(_Killed):
        train(_cfg(images, tmp_path / "broken", *extra), hooks=[_kill_at(4)])
    assert read_state(tmp_path / "broken")["step"] == 3
    resumed = train(resume_config(tmp_path / "broken"), resume=tmp_path / "broken")
    assert resumed.step == 6
    _assert_same_weights(full.model, resumed.model)
    if full.ema is not None:
        _assert_same_weights(full.ema, resumed.ema)
    # the training moved the weights (a resume of an untrained model would also be "equal")
    fresh = lightsr.create_model("_tiny_train", scale=2)
    assert not torch.equal(fresh.head.weight, full.model.head.weight)
    # the log of the broken run keeps no records past its checkpoint, and ends like the full
    log = [json.loads(x) for x in (tmp_path / "broken" / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if r["event"] == "train"]
    assert steps == [2, 4, 6]
    full_log = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log if r["step"] == 6] == [
        r["loss"] for r in full_log if r["step"] == 6
    ]
    # last.safetensors is a lightsr checkpoint of the final weights
    last = lightsr.load(tmp_path / "broken" / "last.safetensors")
    _assert_same_weights(last, full.model)
    assert last.checkpoint_extra["step"] == 6


def test_warmed_up_ema_averages_the_steps_so_far(images, tmp_path):
    # decay min(0.99, (1 + t) / (10 + t)): 0.1 at the first update, 2/11 at the second; a
    # plain EMA at 0.99 would still be 98% the starting weights after two steps.
    assert [ema_decay_at(t, 0.99, warmup=True) for t in (0, 1, 1000)] == [0.1, 2 / 11, 0.99]
    assert ema_decay_at(0, 0.99, warmup=False) == 0.99
    seen = []
    torch.manual_seed(0)  # the run's seed: its starting weights
    start = lightsr.create_model("_tiny_train", scale=2).state_dict()
    cfg = _cfg(images, tmp_path / "run", "length=2", "ema_decay=0.99", "ema_warmup=true")
    result = train(cfg, hooks=[lambda step, m: seen.append(copy.deepcopy(m.state_dict()))])
    for key, ema in result.ema.state_dict().items():
        if not ema.is_floating_point():
            continue
        expected = 0.1 * start[key] + 0.9 * seen[0][key]
        expected = 2 / 11 * expected + 9 / 11 * seen[1][key]
        torch.testing.assert_close(ema, expected)
        assert not torch.allclose(ema, seen[1][key])  # it is an average, not the last weights


def test_stop_signal_writes_state_and_resume_continues(images, tmp_path):
    full = train(_cfg(images, tmp_path / "full", "ckpt_every=100"))

    def interrupt(step, model):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: handled between steps

    stopped = train(_cfg(images, tmp_path / "run", "ckpt_every=100"), hooks=[interrupt])
    assert stopped.stopped and stopped.step == 3  # the flag is seen at the next step boundary
    assert read_state(tmp_path / "run")["step"] == 3
    resumed = train(resume_config(tmp_path / "run"), resume=tmp_path / "run")
    _assert_same_weights(full.model, resumed.model)


def test_a_signal_to_the_workers_too_still_stops_cleanly(images, tmp_path):
    """`pkill -f` or Ctrl-C signal the DataLoader workers as well as the trainer: the workers
    ignore it, the trainer stops at the next step with its state saved."""
    import multiprocessing

    extra = ("ckpt_every=100", "data.num_workers=1")
    full = train(_cfg(images, tmp_path / "full", *extra))
    signalled = []

    def terminate_all(step, model):
        if step == 2:
            workers = multiprocessing.active_children()
            for w in workers:
                os.kill(w.pid, signal.SIGTERM)
            signalled.extend(workers)
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = train(_cfg(images, tmp_path / "run", *extra), hooks=[terminate_all])
    assert signalled, "the run had no worker process to signal"
    assert stopped.stopped and read_state(tmp_path / "run")["step"] == 3
    resumed = train(resume_config(tmp_path / "run"), resume=tmp_path / "run")
    _assert_same_weights(full.model, resumed.model)


def _write_recipe(tmp_path: Path, images: Path, *lines: str) -> Path:
    """A recipe file of the tiny model writing to tmp_path/run, for the CLI tests."""
    recipe = tmp_path / "tiny.toml"
    body = "\n".join(lines)
    recipe.write_text(
        f"""
model = "_tiny_train"
scale = 2
batch_size = 4
log_every = 1
progress = false
out_dir = "{(tmp_path / "run").as_posix()}"
{body}
[data]
hr_dirs = ["{images.as_posix()}"]
lr_patch = 6
num_workers = 0
"""
    )
    return recipe


def test_resume_can_extend_the_run_through_the_cli(images, tmp_path):
    from lightsr.cli import main

    recipe = _write_recipe(tmp_path, images, "length = 3", "ckpt_every = 3")
    assert main(["train", str(recipe)]) == 0
    assert main(["train", "--resume", str(tmp_path / "run"), "length=6"]) == 0
    unbroken = train(_cfg(images, tmp_path / "ref"))
    _assert_same_weights(lightsr.load(tmp_path / "run" / "last.safetensors"), unbroken.model)
    # starting again in the same folder is refused instead of overwriting
    assert main(["train", str(recipe)]) == 2


def test_stop_at_ends_a_session_early_and_resume_finishes_the_same_run(images, tmp_path):
    from lightsr.cli import main

    recipe = _write_recipe(
        tmp_path, images, "length = 6", 'schedule.kind = "cosine"', "ckpt_every = 100"
    )
    assert main(["train", str(recipe), "--stop-at", "2"]) == 130  # stopped, resumable
    assert read_state(tmp_path / "run")["step"] == 2
    # a stop at or before the step reached names the problem instead of doing nothing
    with pytest.raises(ConfigError, match="already at step 2"):
        train(resume_config(tmp_path / "run"), resume=tmp_path / "run", stop_at=2)
    with pytest.raises(ConfigError, match="at least 1"):
        train(resume_config(tmp_path / "run"), resume=tmp_path / "run", stop_at=0)
    assert read_state(tmp_path / "run")["step"] == 2  # and leaves the run as it was
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    unbroken = train(_cfg(images, tmp_path / "ref", "schedule.kind=cosine", "log_every=1"))
    _assert_same_weights(lightsr.load(tmp_path / "run" / "last.safetensors"), unbroken.model)


def test_resume_after_a_torn_log_line(images, tmp_path):
    # A process killed in the middle of an append leaves half a record and no newline.
    train(_cfg(images, tmp_path / "run", "length=3", "log_every=1"))
    log = tmp_path / "run" / "log.jsonl"
    with open(log, "a", encoding="utf-8") as f:
        f.write('{"event": "train", "loss": 0.1')
    assert [r["step"] for r in read_log(tmp_path / "run") if r["event"] == "train"] == [1, 2, 3]
    resumed = train(resume_config(tmp_path / "run", ["length=5"]), resume=tmp_path / "run")
    assert resumed.step == 5
    # the torn line is gone and the records after it are whole lines of their own
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records if r["event"] == "train"] == [1, 2, 3, 4, 5]
    assert not any('"loss": 0.1{' in line for line in lines)


def test_resume_may_not_change_the_length_of_a_cosine_schedule(images, tmp_path):
    train(_cfg(images, tmp_path / "run", "length=2", "schedule.kind=cosine"))
    # why: the cosine factor of every remaining step depends on the total
    two, four = (
        make_schedule(_cfg(images, tmp_path, f"length={n}", "schedule.kind=cosine"), 1)
        for n in (2, 4)
    )
    assert lr_at(1, two) != lr_at(1, four)
    with pytest.raises(
        ConfigError,
        match=r"length 4 \(the run has 2\): cosine schedules depend on length.*"
        r"Start a new run or keep length",
    ):
        resume_config(tmp_path / "run", ["length=4"])
    # other resumable changes are still accepted (a step schedule may still be extended:
    # test_resume_can_extend_the_run_through_the_cli)
    assert resume_config(tmp_path / "run", ["log_every=1"]).length == 2


# ---------------------------------------------------------------------------------------------
# Clear errors
# ---------------------------------------------------------------------------------------------


def test_resume_from_a_run_of_another_model_is_refused(images, tmp_path):
    train(_cfg(images, tmp_path / "run", "length=1"))
    other = _cfg(images, tmp_path / "run", "model=_tiny_train_wide")
    with pytest.raises(
        ConfigError, match=r"holds a run of _tiny_train x2.*trains _tiny_train_wide"
    ):
        train(other, resume=tmp_path / "run")
    # a changed setting that alters the computation is named
    with pytest.raises(ConfigError, match=r"optim\.lr \(0\.0001 in the run, 0\.001 now\)"):
        resume_config(tmp_path / "run", ["optim.lr=1e-3"])
    with pytest.raises(CheckpointError, match="holds no resumable training state"):
        resume_config(tmp_path / "nothing")


def test_a_run_saved_before_a_setting_existed_resumes_at_its_default(images, tmp_path):
    # A run saved by an older lightsr has no record of a newer key (data.hr_downscales); at the
    # key's default the run resumes, at any other value it is refused like any changed setting.
    train(_cfg(images, tmp_path / "run", "length=4"), stop_at=2)
    path = tmp_path / "run" / "state.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    del state["config"]["data"]["hr_downscales"]
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"data\.hr_downscales \(None in the run, \[0\.8\] now\)"):
        resume_config(tmp_path / "run", ["data.hr_downscales=[0.8]"])
    train(resume_config(tmp_path / "run"), resume=tmp_path / "run")
    assert read_log(tmp_path / "run")[-1]["step"] == 4


def test_missing_data_folder_and_unknown_key(images, tmp_path):
    cfg = _cfg(images, tmp_path / "run", f"data.hr_dirs=['{tmp_path / 'nope'}']")
    with pytest.raises(DatasetError, match=r"'.*nope' \(data\.hr_dirs\[0\]\) does not exist"):
        train(cfg)
    with pytest.raises(ConfigError, match=r"unknown config key `data\.lr_pach`.*'lr_patch'"):
        _cfg(images, tmp_path / "run", "data.lr_pach=6")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        train(_cfg(images, tmp_path / "run", f"data.hr_dirs=['{empty}']"))


def test_images_smaller_than_the_patch_are_skipped_or_refused(images, tmp_path):
    folder = tmp_path / "mixed"
    _write_images(folder, [(30, 30), (10, 40)])  # LR 5x20 < 6x6 patch
    found = find_training_images([folder], scale=2)
    with pytest.warns(UserWarning, match=r"1 training image\(s\) are smaller.*0001\.png"):
        store = PairStore(found, scale=2, min_lr_size=6)
    assert store.names == ["0000.png"]
    with pytest.raises(ConfigError, match="smaller than the patch"):
        PairStore(found, scale=2, min_lr_size=6, small="error")


# ---------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------


def test_patch_pairs_are_aligned_crops_of_the_exact_bicubic_lr(images):
    store = PairStore(find_training_images([images], scale=2), scale=2, boundary="mirror")
    hr_full = np.asarray(Image.open(images / "0001.png"))
    # the cached LR is MATLAB's imresize of the whole (modcropped) HR image
    assert np.array_equal(store.lr[1], imresize(hr_full[:28, :40], 0.5, boundary="mirror"))
    ds = PatchDataset(store, lr_patch=6, seed=3, augment=True)
    seen = set()
    for item in range(1, 60, 5):  # items of image 1
        lr, hr = ds[(0, item)]
        assert lr.dtype == hr.dtype == torch.uint8 and ds.peak == 255
        lr8, hr8 = lr.numpy().transpose(1, 2, 0), hr.numpy().transpose(1, 2, 0)
        # the loop's float conversion is the library's image_to_tensor, bit for bit
        assert torch.equal(to_unit(lr[None], ds.peak), image_to_tensor(lr8))
        # find the flip/rotation and position: the HR crop must be at twice the LR position
        matches = [
            (t, y, x)
            for t in range(8)
            for y in range(store.lr[1].shape[0] - 5)
            for x in range(store.lr[1].shape[1] - 5)
            if np.array_equal(dihedral(store.lr[1][y : y + 6, x : x + 6], t), lr8)
            and np.array_equal(
                dihedral(store.hr[1][2 * y : 2 * y + 12, 2 * x : 2 * x + 12], t), hr8
            )
        ]
        assert matches, item
        seen.add(matches[0][0])
    assert len(seen) > 3  # several of the 8 transforms occur


def test_dihedral_gives_the_8_distinct_transforms():
    a = np.arange(12).reshape(2, 2, 3)
    outs = {dihedral(a, t).tobytes() + bytes(dihedral(a, t).shape) for t in range(8)}
    assert len(outs) == 8


def test_data_depends_on_the_step_only_not_on_workers_or_start(images):
    store = PairStore(find_training_images([images], scale=2), scale=2)
    ds = PatchDataset(store, lr_patch=6, seed=0)

    def batches(start: int, workers: int, n: int):
        sampler = StepBatchSampler(
            n_images=len(store), batch_size=4, steps_per_epoch=2, seed=0, start_step=start
        )
        it = iter(make_loader(ds, sampler, num_workers=workers))
        return [next(it) for _ in range(n)]

    ref = batches(0, 0, 5)
    for got in (batches(3, 0, 2), batches(3, 2, 2)):
        for (lr_a, hr_a), (lr_b, hr_b) in zip(ref[3:], got):
            assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_b)
    # consecutive epochs draw different permutations and crops
    assert not torch.equal(ref[0][0], ref[2][0])


def test_ranks_take_contiguous_shares_of_the_global_batch():
    kw = dict(n_images=10, batch_size=6, steps_per_epoch=3, seed=1)
    whole = StepBatchSampler(**kw)
    shares = [StepBatchSampler(**kw, rank=r, world_size=3) for r in range(3)]
    for step in range(7):
        assert sum((s.batch(step) for s in shares), []) == whole.batch(step)
    with pytest.raises(ConfigError, match="must divide by the number of processes"):
        StepBatchSampler(**kw, world_size=4)
    # an epoch visits distinct items (a permutation of n_items = max(10, 3 * 6) = 18)
    items = [i for step in range(3) for _, i in whole.batch(step)]
    assert sorted(items) == list(range(18))


def test_div2k_layout_uses_the_shipped_lr_files(tmp_path):
    root = tmp_path / "DIV2K"
    _write_images(root / "DIV2K_train_HR", [(24, 28), (26, 30)])
    lr_dir = root / "DIV2K_train_LR_bicubic" / "X2"
    lr_dir.mkdir(parents=True)
    rng = np.random.default_rng(5)
    given = {}
    for hr in sorted((root / "DIV2K_train_HR").iterdir()):
        h, w = np.asarray(Image.open(hr)).shape[:2]
        # LR that differs from our resize, so the test sees which one is used
        given[hr.stem] = rng.integers(0, 256, (h // 2, w // 2, 3), dtype=np.uint8)
        Image.fromarray(given[hr.stem]).save(lr_dir / f"{hr.stem}x2.png")
    found = find_training_images([root], scale=2)
    assert [(i.hr.name, i.lr.name) for i in found] == [
        ("0000.png", "0000x2.png"),
        ("0001.png", "0001x2.png"),
    ]
    store = PairStore(found, scale=2)
    assert np.array_equal(store.lr[0], given["0000"])
    # lr_source="resize" ignores the files; at x3 there is no LR folder, so LR is made
    made = PairStore(find_training_images([root], scale=2, lr_source="resize"), scale=2)
    hr0 = np.asarray(Image.open(root / "DIV2K_train_HR" / "0000.png"))
    assert np.array_equal(made.lr[0], imresize(hr0, 0.5))
    assert find_training_images([root], scale=3)[0].lr is None
    with pytest.raises(ConfigError, match="has no LR folder"):
        find_training_images([root], scale=3, lr_source="folder")
    # two LR candidates for one HR image: refused, not one picked silently
    Image.fromarray(given["0000"]).save(lr_dir / "0000.png")
    with pytest.raises(
        DatasetError,
        match=r"two LR candidates .* for the HR image 0000\.png at x2: 0000x2\.png, 0000\.png",
    ):
        find_training_images([root], scale=2)
    (lr_dir / "0000.png").unlink()
    (lr_dir / "0001x2.png").unlink()
    with pytest.raises(DatasetError, match=r"no LR file for 0001\.png"):
        find_training_images([root], scale=2)


def test_disk_cache_gives_the_same_pairs(images, tmp_path):
    found = find_training_images([images], scale=2)
    mem = PairStore(found, scale=2, boundary="replicate")
    disk = PairStore(found, scale=2, boundary="replicate", cache_dir=tmp_path / "cache")
    again = PairStore(found, scale=2, boundary="replicate", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2 * len(found)
    for a, b, c in zip(mem.lr + mem.hr, disk.lr + disk.hr, again.lr + again.hr):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    # another boundary rule is another cache entry, and other pixels
    mirror = PairStore(found, scale=2, boundary="mirror", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 4 * len(found)
    assert not all(np.array_equal(a, b) for a, b in zip(mem.lr, mirror.lr))


def test_downscaled_copies_are_matlab_resizes_of_the_hr_with_their_own_lr(images, tmp_path):
    found = find_training_images([images], scale=2)
    with pytest.warns(UserWarning, match=r"0000\.png@0\.5 \(LR 8x7\)"):
        store = PairStore(with_downscaled_copies(found, [0.8, 0.5]), scale=2, min_lr_size=8)
    # 5 originals, 5 at 0.8, and at 0.5 only 0003.png (32x32 -> LR 8x8) reaches the patch
    assert store.names[5:] == [f"000{i}.png@0.8" for i in range(5)] + ["0003.png@0.5"]
    hr_full = np.asarray(Image.open(images / "0001.png"))  # 28 x 40
    small = imresize(hr_full, 0.8, boundary="mirror")  # 23 x 32, modcropped to 22 x 32
    assert small.shape == (23, 32, 3)
    assert np.array_equal(store.hr[6], small[:22])
    assert np.array_equal(store.lr[6], imresize(small[:22], 0.5, boundary="mirror"))
    # the disk cache keeps copies apart from the originals (another key per factor)
    cached = PairStore(
        with_downscaled_copies(found, [0.8]), scale=2, min_lr_size=8, cache_dir=tmp_path / "c"
    )
    assert len(list((tmp_path / "c").glob("*.npy"))) == 2 * 10
    assert all(np.array_equal(a, b) for a, b in zip(cached.hr, store.hr[:10]))
    for bad in ([1.0], [0.0], [0.8, 0.8]):
        with pytest.raises(ConfigError, match="hr_downscales"):
            with_downscaled_copies(found, bad)


def test_a_run_with_downscaled_copies_trains_on_them(images, tmp_path):
    cfg = _cfg(images, tmp_path / "run", "data.hr_downscales=[0.8]", "length=2")
    train(cfg)
    start = read_log(tmp_path / "run")[0]
    assert start["event"] == "start" and start["images"] == 10  # 5 originals + 5 copies
    with pytest.raises(ConfigError, match=r"hr_downscales.*strictly between 0 and 1"):
        train(_cfg(images, tmp_path / "run2", "data.hr_downscales=[1.5]"))


# ---------------------------------------------------------------------------------------------
# Validation, best checkpoint, mixed precision
# ---------------------------------------------------------------------------------------------


def test_validation_writes_a_loadable_best_checkpoint(images, tmp_path):
    from lightsr.data.benchmark import open_benchmark
    from lightsr.evaluate import evaluate

    val_root = tmp_path / "val"
    _write_images(val_root / "Mini" / "HR", [(24, 24), (20, 28)], seed=9)
    result = train(
        _cfg(images, tmp_path / "run", f"val.root='{val_root}'", "val.sets=['Mini']", "val.every=3")
    )
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    vals = [r for r in log if r["event"] == "val"]
    assert [r["step"] for r in vals] == [3, 6]
    best = lightsr.load(tmp_path / "run" / "best.safetensors")
    # best.safetensors is what `lightsr eval --checkpoint` reads; its PSNR is the logged best
    psnr = evaluate(best, open_benchmark(val_root / "Mini", scale=2)).psnr
    best_val = max(r["sets"]["Mini"]["psnr"] for r in vals)
    assert psnr == pytest.approx(best_val, abs=1e-9) == pytest.approx(result.best_psnr, abs=1e-9)
    assert best.checkpoint_extra["step"] in (3, 6)
    with pytest.raises(DatasetError):
        train(_cfg(images, tmp_path / "run2", "val.sets=['NoSuchSet']"))


def test_bf16_autocast_runs_and_stays_close_to_fp32(images, tmp_path):
    fp32 = train(_cfg(images, tmp_path / "a", "length=2", "log_every=1"))
    bf16 = train(_cfg(images, tmp_path / "b", "length=2", "log_every=1", "amp=bf16"))
    assert bf16.last_loss == pytest.approx(fp32.last_loss, rel=2e-2)
    assert bf16.last_loss != fp32.last_loss  # bf16 was really used


def test_channels_last_training_matches_the_contiguous_layout(images, tmp_path):
    """The layout is a speed choice only: the same steps give the same weights to float
    rounding, and the run really trained in channels-last."""
    nhwc = train(_cfg(images, tmp_path / "a", "length=3"))
    nchw = train(_cfg(images, tmp_path / "b", "length=3", "channels_last=false"))
    assert nhwc.model.head.weight.is_contiguous(memory_format=torch.channels_last)
    assert not nchw.model.head.weight.is_contiguous(memory_format=torch.channels_last)
    moved = nchw.model.head.weight - lightsr.create_model("_tiny_train", scale=2).head.weight
    assert moved.abs().max() > 1e-4  # it trained
    for a, b in zip(nhwc.model.parameters(), nchw.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_init_from_copies_the_matching_body_and_keeps_a_fresh_tail(images, tmp_path):
    """A x3 run started from a x2 checkpoint: the body (same names, same shapes) starts from the
    x2 weights, the x3 upsampling conv (another shape) from a fresh draw; the log says which."""
    donor = train(_cfg(images, tmp_path / "x2", "length=2"))
    ckpt = tmp_path / "x2" / "last.safetensors"
    start = ("scale=3", "length=1", "optim.lr=1e-12", f"init_from='{ckpt}'")
    run = train(_cfg(images, tmp_path / "x3", *start))
    torch.testing.assert_close(run.model.head.weight, donor.model.head.weight, rtol=0, atol=1e-9)
    torch.manual_seed(0)  # the run's seed: a fresh model draws the same tail
    fresh = lightsr.create_model("_tiny_train", scale=3)
    torch.testing.assert_close(run.model.tail.weight, fresh.tail.weight, rtol=0, atol=1e-9)
    log = read_log(tmp_path / "x3" / "log.jsonl")
    init = next(r for r in log if r["event"] == "init_from")
    assert init["kept_fresh"] == ["tail.bias", "tail.weight"]
    assert init["copied"] == 2


def test_init_from_refuses_a_missing_file_and_another_architecture(images, tmp_path):
    with pytest.raises(ConfigError, match="neither a checkpoint file nor a weights name"):
        train(_cfg(images, tmp_path / "a", f"init_from='{tmp_path / 'nope.safetensors'}'"))
    other = tmp_path / "other.safetensors"
    lightsr.save(lightsr.create_model("fsrcnn", scale=2), other)
    with pytest.raises(ConfigError, match="shares no tensor"):
        train(_cfg(images, tmp_path / "b", f"init_from='{other}'"))


def test_init_from_takes_a_weights_name_and_logs_its_lineage(images, tmp_path):
    """``init_from = "a2f_sd_x4"`` (the bundled x4 entry) starts an A2F-SD x2 run from its
    body; the log names the entry and the sha256 of its file."""
    args = ("model=a2f_sd", "length=1", "optim.lr=1e-12", "init_from='a2f_sd_x4'")
    run = train(_cfg(images, tmp_path / "x2", *args))
    donor = hub.load_weights("a2f_sd_x4").state_dict()
    trained = run.model.state_dict()
    body = [k for k in trained if k in donor and donor[k].shape == trained[k].shape]
    assert len(body) > 10
    for k in body:
        torch.testing.assert_close(trained[k], donor[k], rtol=0, atol=1e-6)
    init = next(r for r in read_log(tmp_path / "x2" / "log.jsonl") if r["event"] == "init_from")
    assert init["weights"] == "a2f_sd_x4"
    assert init["sha256"] == hub.get_weights("a2f_sd_x4").sha256
    assert init["kept_fresh"]  # the x2 tail is another shape


# ---------------------------------------------------------------------------------------------
# DDP: 2 processes, gloo, CPU
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, images: str, out: str, dump: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    _register()
    result = train(_cfg(Path(images), Path(out)))
    torch.save(result.model.state_dict(), Path(dump) / f"rank{rank}.pt")


def test_ddp_two_processes_match_one_process(images, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(
        _ddp_worker,
        args=(2, _free_port(), str(images), str(tmp_path / "ddp"), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key  # the ranks stay in sync, bit for bit
    single = train(_cfg(images, tmp_path / "single")).model.state_dict()
    for key in r0:
        torch.testing.assert_close(r0[key], single[key], rtol=1e-5, atol=1e-6)
    # only rank 0 wrote the run folder, and its state records the world size
    assert read_state(tmp_path / "ddp")["world_size"] == 2
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        ".lock",  # rank 0's run-folder lock
        "config.json",
        "last.safetensors",
        "log.jsonl",
        "state.pt",
    ]
