"""Every write is safe: nothing replaced unasked, names claimed atomically, no temp file left
behind (failures, SIGTERM, stale temps of dead writers), full disks and refused folders
reported as such, eval/convert never writing onto their inputs, one training per run folder.
"""

from __future__ import annotations

import builtins
import errno
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lightsr
import lightsr.atomic
import lightsr.cli.profile_cmd
import lightsr.upscale
from lightsr.atomic import (
    FolderLock,
    atomic_write,
    atomic_write_bytes,
    atomic_write_unique,
)
from lightsr.cli import main
from lightsr.config import config_from_dict
from lightsr.data.io import read_image, write_image
from lightsr.errors import ConfigError, FolderInUseError, OutputExistsError
from lightsr.models import a2f
from lightsr.models.base import SRModel
from lightsr.registry import _REGISTRY, register_model
from lightsr.train import train
from lightsr.upscale import upscale_files

linux_only = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir() or sys.platform == "win32",
    reason="needs /proc/self/fd (to tell temp-file writes apart) and POSIX signals",
)
ROOT = Path(__file__).resolve().parents[1]


def _files(folder: Path) -> list[str]:
    """Every name under ``folder`` (hidden included), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _temps(folder: Path) -> list[str]:
    return [n for n in _files(folder) if n.endswith(".tmp")]


def _write_text(path: Path, text: str) -> None:
    Path(path).write_text(text)


# ---------------------------------------------------------------------------------------------
# atomic_write: the rule
# ---------------------------------------------------------------------------------------------


def test_an_existing_file_is_never_replaced_unasked(tmp_path):
    target = tmp_path / "out.txt"
    target.write_bytes(b"the user's file")
    called = []
    with pytest.raises(OutputExistsError) as info:
        atomic_write(target, lambda tmp: called.append(tmp))
    message = str(info.value)
    assert str(target) in message and "--overwrite" in message and "overwrite=True" in message
    assert called == []  # refused before any work
    assert target.read_bytes() == b"the user's file"
    # a link (even a dangling one) is a taken name too
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputExistsError):
        atomic_write_bytes(tmp_path / "dangling", b"x")
    assert not (tmp_path / "nowhere").exists()
    # asked: replaced, and the permissions are a plain open()'s, not mkstemp's 0600
    atomic_write_bytes(target, b"new", overwrite=True)
    assert target.read_bytes() == b"new"
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert _files(tmp_path) == ["dangling", "out.txt"]


def _race(n_rounds: int, writer) -> list[list[object]]:
    """``writer(round, who, barrier)`` run by two threads per round, which meet at the barrier
    from inside their write callbacks so that both publish at the same moment."""
    rounds = []
    for r in range(n_rounds):
        barrier = threading.Barrier(2, timeout=10)
        results: list[object] = [None, None]

        def run(who: int, r=r, barrier=barrier, results=results) -> None:
            try:
                results[who] = writer(r, who, barrier)
            except Exception as exc:  # noqa: BLE001 - the outcome is what is checked
                results[who] = exc

        threads = [threading.Thread(target=run, args=(w,)) for w in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        rounds.append(results)
    return rounds


def test_two_writers_racing_for_one_name_one_wins_one_is_refused(tmp_path):
    def writer(r: int, who: int, barrier: threading.Barrier):
        def write(tmp: str) -> None:
            Path(tmp).write_text(f"round {r} writer {who}")
            barrier.wait()  # both temp files are complete: publish together

        return atomic_write(tmp_path / f"r{r}.txt", write)

    for r, results in enumerate(_race(20, writer)):
        wins = [w for w in (0, 1) if isinstance(results[w], Path)]
        refused = [w for w in (0, 1) if isinstance(results[w], OutputExistsError)]
        assert len(wins) == 1 and len(refused) == 1, results
        # the file holds the winner's data, whole
        assert (tmp_path / f"r{r}.txt").read_text() == f"round {r} writer {wins[0]}"
    assert _temps(tmp_path) == []


def test_two_writers_racing_for_a_numbered_name_get_distinct_files(tmp_path):
    (tmp_path / "img_x2.png").write_bytes(b"an earlier output")

    def writer(r: int, who: int, barrier: threading.Barrier):
        folder = tmp_path / f"r{r}"
        folder.mkdir(exist_ok=True)
        if r % 2:  # odd rounds: the first name is taken already
            (folder / "img_x2.png").write_bytes(b"earlier")

        def write(tmp: str) -> None:
            Path(tmp).write_text(f"writer {who}")
            barrier.wait()

        return atomic_write_unique(folder / "img_x2.png", write)

    for r, results in enumerate(_race(20, writer)):
        assert all(isinstance(p, Path) for p in results), results
        names = sorted(p.name for p in results)  # type: ignore[union-attr]
        first = ["img_x2_1.png", "img_x2_2.png"] if r % 2 else ["img_x2.png", "img_x2_1.png"]
        assert names == first
        # no result lost: each writer's data under its own name
        assert {p.read_text() for p in results} == {"writer 0", "writer 1"}  # type: ignore[union-attr]
        if r % 2:
            assert (tmp_path / f"r{r}" / "img_x2.png").read_bytes() == b"earlier"
    assert _temps(tmp_path) == []


def _unique_in_child(folder: str, who: int, barrier) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(f"process {who}")
        barrier.wait(timeout=20)

    atomic_write_unique(Path(folder) / "same.png", write)


@linux_only
def test_processes_racing_for_one_name_get_distinct_files(tmp_path):
    ctx = multiprocessing.get_context("fork")  # the children only write files: fork is safe
    for r in range(3):
        folder = tmp_path / f"r{r}"
        barrier = ctx.Barrier(3)
        procs = [
            ctx.Process(target=_unique_in_child, args=(str(folder), w, barrier)) for w in range(3)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert [p.exitcode for p in procs] == [0, 0, 0]
        assert _files(folder) == ["same.png", "same_1.png", "same_2.png"]
        assert sorted(p.read_text() for p in folder.iterdir()) == [
            "process 0",
            "process 1",
            "process 2",
        ]


def test_without_hard_links_names_are_claimed_with_o_excl(tmp_path, monkeypatch):
    def no_links(src, dst, *a, **k):
        raise OSError(errno.EPERM, "Operation not permitted")  # FAT, some FUSE/SMB mounts

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"first")
    with pytest.raises(OutputExistsError):
        atomic_write_bytes(target, b"second")
    assert atomic_write_unique(target, lambda tmp: _write_text(Path(tmp), "2")).name == "a_1.bin"
    assert target.read_bytes() == b"first" and (tmp_path / "a_1.bin").read_text() == "2"
    assert _files(tmp_path) == ["a.bin", "a_1.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "state.bin"
    target.write_bytes(b"previous")

    def fails(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("serialiser broke")

    with pytest.raises(RuntimeError, match="serialiser broke"):
        atomic_write(target, fails, overwrite=True)
    assert target.read_bytes() == b"previous" and _files(tmp_path) == ["state.bin"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@linux_only
def test_stale_temp_files_of_a_target_are_removed_on_its_next_write(tmp_path):
    host = lightsr.atomic._HOST
    dead, alive = _dead_pid(), os.getppid()
    stale_dead = f".out.png.{host}.{dead}.abc123.tmp"
    live = f".out.png.{host}.{alive}.abc123.tmp"  # a writer at work: kept
    other_host = f".out.png.ffffff.{dead}.abc123.tmp"  # a pid of another machine: kept
    old = ".out.png.q1w2e3r4.tmp"  # an older version's name, two hours old: removed
    fresh_old_style = ".out.png.z9x8c7v6.tmp"  # no pid and recent: kept
    other_target = f".other.png.{host}.{dead}.abc123.tmp"  # not this target: kept
    for name in (stale_dead, live, other_host, old, fresh_old_style, other_target):
        (tmp_path / name).write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(tmp_path / old, (two_hours_ago, two_hours_ago))
    write_image(tmp_path / "out.png", np.zeros((4, 4, 3), np.uint8))
    assert _files(tmp_path) == sorted(["out.png", live, other_host, fresh_old_style, other_target])


@linux_only
def test_sigterm_during_a_write_leaves_no_temp_file(tmp_path):
    """`lightsr export` killed (SIGTERM) while its file is half on disk: the CLI's handler
    turns the signal into SystemExit, atomic_write removes the temp file, the exit code is
    128 + 15, and neither the file nor its sidecar appears."""
    script = textwrap.dedent(
        """
        import sys, time
        import lightsr.atomic
        from lightsr.cli import main

        def slow(tmp, data):
            with open(tmp, "wb") as f:
                f.write(bytes(data[: len(data) // 2]))
            print("WRITING", flush=True)
            time.sleep(60)

        lightsr.atomic._write_all = slow
        sys.exit(main(sys.argv[1:]))
        """
    )
    out = tmp_path / "out"
    out.mkdir()
    argv = ["--model", "fsrcnn", "--scale", "2", "--torchscript", "--no-check"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "export", *argv, "-o", str(out / "m.pt")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "WRITING" in line:
                break
        assert len(_temps(out)) == 1  # the half-written temp file is there...
        proc.send_signal(15)
        rc = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert rc == 143, proc.stderr.read() if proc.stderr else ""
    assert _files(out) == []  # ...and gone: no temp, no model file, no sidecar


# ---------------------------------------------------------------------------------------------
# A full disk, a refused folder: said as such, nothing partial left
# ---------------------------------------------------------------------------------------------


def _disk_full(monkeypatch) -> None:
    """Writes into temp files (``*.tmp``) get half their bytes on disk, then ENOSPC: through
    os.write (lightsr's byte writer) and through files opened with builtins.open (Pillow)."""
    real_write, real_open = os.write, builtins.open

    def is_temp(fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp")
        except OSError:
            return False

    def write(fd: int, data) -> int:
        if is_temp(fd):
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    class Full:
        def __init__(self, f) -> None:
            self._f = f

        def write(self, data) -> int:
            self._f.write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name: str):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self._f.close()

    def open_(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        writing = any(c in mode for c in "wax+")
        if writing and isinstance(file, (str, os.PathLike)) and str(file).endswith(".tmp"):
            return Full(f)
        return f

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(builtins, "open", open_)


def _assert_disk_full_message(err: str, path: Path) -> None:
    assert f"no space left on the device writing {path}" in err, err
    assert "free space or choose another output folder" in err and "Traceback" not in err


@linux_only
def test_a_full_disk_during_convert_is_said_and_the_old_file_is_kept(tmp_path, monkeypatch, capsys):
    official = tmp_path / "a2f.pth"
    torch.save(a2f.to_official_state(lightsr.create_model("a2f_sd", scale=2)), official)
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(official), str(out)]) == 0
    before = out.read_bytes()
    _disk_full(monkeypatch)
    assert main(["convert", str(official), str(out), "--overwrite"]) == 1
    _assert_disk_full_message(capsys.readouterr().err, out)
    assert out.read_bytes() == before and _files(tmp_path) == ["a2f.pth", "out.safetensors"]


@linux_only
def test_a_full_disk_during_an_onnx_export_is_an_error_not_an_abort(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx")
    _disk_full(monkeypatch)
    out = tmp_path / "m.onnx"
    argv = ["export", "--model", "fsrcnn", "--scale", "2", "--onnx", "--no-check", "-o", str(out)]
    assert main(argv) == 1
    _assert_disk_full_message(capsys.readouterr().err, out)
    assert _files(tmp_path) == []  # no partial model, no temp, no sidecar


def _set(folder: Path, n: int = 2) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        write_image(folder / f"im{i}.png", rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))
    return folder


@linux_only
def test_a_full_disk_during_eval_save_sr_stops_with_the_reason(tmp_path, monkeypatch, capsys):
    data = _set(tmp_path / "Mini")
    out = tmp_path / "sr"
    _disk_full(monkeypatch)
    argv = ["eval", str(data), "--model", "bicubic", "--scale", "2", "--no-progress"]
    assert main([*argv, "--save-sr", str(out)]) == 1
    _assert_disk_full_message(capsys.readouterr().err, out / "Mini" / "im0.png")
    assert _files(out) == ["Mini"]  # stopped at the first image; nothing partial


@linux_only
def test_a_full_disk_stops_an_upscale_batch_with_the_reason(tmp_path, monkeypatch, capsys):
    data = _set(tmp_path / "in", 3)
    out = tmp_path / "out"
    calls = []
    real = lightsr.upscale.write_image

    def counted(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(lightsr.upscale, "write_image", counted)
    _disk_full(monkeypatch)
    argv = ["upscale", str(data), "-o", str(out), "--model", "bicubic", "--scale", "2", "--quiet"]
    assert main(argv) == 1
    _assert_disk_full_message(capsys.readouterr().err, out / "im0_x2.png")
    assert len(calls) == 1  # the batch stopped: every later file would fail the same way
    assert _files(out) == []


def _fake_profile(monkeypatch) -> None:
    class Report:  # profiling itself is another test's business
        scale = 2

        def summary(self) -> str:
            return "fsrcnn"

        def to_dict(self) -> dict:
            return {"model": "fsrcnn", "params": 1}

    monkeypatch.setattr(lightsr.cli.profile_cmd, "profile", lambda model, **kw: Report())


PROFILE = ["profile", "fsrcnn", "--scale", "2", "--no-runtime", "--no-memory", "--json"]


@linux_only
def test_a_full_disk_during_profile_json_is_said(tmp_path, monkeypatch, capsys):
    _fake_profile(monkeypatch)
    _disk_full(monkeypatch)
    assert main([*PROFILE, str(tmp_path / "p.json")]) == 1
    _assert_disk_full_message(capsys.readouterr().err, tmp_path / "p.json")
    assert _files(tmp_path) == []


def test_a_folder_that_refuses_files_is_said_naming_the_file(tmp_path, monkeypatch, capsys):
    _fake_profile(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores the mode: refuse as such a folder would

            def refuse(*a, dir=None, **k):
                raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/.x.tmp")

            monkeypatch.setattr(lightsr.atomic.tempfile, "mkstemp", refuse)
        assert main([*PROFILE, str(locked / "p.json")]) == 1
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    # the file asked for, not the temp file the OS refused
    assert f"permission denied: {locked / 'p.json'}: check its" in err, err
    assert ".tmp" not in err and "Traceback" not in err
    assert _files(locked) == []


# ---------------------------------------------------------------------------------------------
# The commands: --overwrite, inputs never written onto
# ---------------------------------------------------------------------------------------------


def test_convert_refuses_its_own_input_and_an_existing_out(tmp_path, capsys):
    official = tmp_path / "a2f.pth"
    torch.save(a2f.to_official_state(lightsr.create_model("a2f_sd", scale=2)), official)
    original = official.read_bytes()
    (tmp_path / "alias.pth").symlink_to(official)
    os.link(official, tmp_path / "hardlink.pth")
    for out in (official, tmp_path / "alias.pth", tmp_path / "hardlink.pth"):
        for extra in ([], ["--overwrite"]):  # the input is never replaced, even when told
            assert main(["convert", str(official), str(out), *extra]) == 2
            err = capsys.readouterr().err
            assert "is the input file" in err and "Choose another OUT" in err
    assert official.read_bytes() == original

    out = tmp_path / "out.safetensors"
    out.write_bytes(b"precious")
    assert main(["convert", str(official), str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err
    assert out.read_bytes() == b"precious"
    assert main(["convert", str(official), str(out), "--overwrite"]) == 0
    assert lightsr.load(out).arch_name == "a2f_sd"
    # the library rule is the same: lightsr.save refuses unless overwrite=True
    model = lightsr.load(out)
    before = out.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        lightsr.save(model, out)
    assert out.read_bytes() == before
    assert official.read_bytes() == original
    assert _temps(tmp_path) == []


def test_export_checks_the_file_and_its_sidecar_before_exporting(tmp_path, capsys):
    out = tmp_path / "m.pt"
    sidecar = tmp_path / "m.pt.json"
    sidecar.write_text("an earlier export's record")
    argv = ["export", "--model", "fsrcnn", "--scale", "2", "--torchscript", "--no-check"]
    assert main([*argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(sidecar) in err and "--overwrite" in err
    assert _files(tmp_path) == ["m.pt.json"] and sidecar.read_text() == "an earlier export's record"
    assert main([*argv, "-o", str(out), "--overwrite"]) == 0
    assert json.loads(sidecar.read_text())["format"] == "torchscript" and out.stat().st_size > 0


def test_profile_refuses_existing_outputs_before_profiling(tmp_path, monkeypatch, capsys):
    def never(*a, **k):
        raise AssertionError("profiled although the output was refused")

    monkeypatch.setattr(lightsr.cli.profile_cmd, "profile", never)
    monkeypatch.setattr(lightsr.cli.profile_cmd, "profile_all", never)
    out = tmp_path / "p.json"
    out.write_text("{}")
    assert main(["profile", "fsrcnn", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err
    assert main(["profile", "--all", "--json", str(out), "--csv", str(tmp_path / "t.csv")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    same = ["--json", str(tmp_path / "x"), "--csv", str(tmp_path / "x")]
    assert main(["profile", "--all", *same]) == 2
    assert "same file" in capsys.readouterr().err
    assert out.read_text() == "{}" and _files(tmp_path) == ["p.json"]


def test_eval_save_sr_never_writes_into_the_data(tmp_path, monkeypatch, capsys):
    import lightsr.cli.eval_cmd

    data = _set(tmp_path / "Mini")
    hr_bytes = {p.name: p.read_bytes() for p in data.iterdir()}
    (tmp_path / "link").symlink_to(data)
    argv = ["eval", str(data), "--model", "bicubic", "--scale", "2", "--no-progress"]
    real = lightsr.cli.eval_cmd.resolve_model
    built = []

    def counted(**kw):
        built.append(kw)
        return real(**kw)

    monkeypatch.setattr(lightsr.cli.eval_cmd, "resolve_model", counted)
    for save_sr, where in (
        (data, "is"),  # the dataset folder itself
        (data / "sub", "is inside"),
        (tmp_path, "holds"),  # SR would go to tmp_path/Mini/: onto the HR files
        (tmp_path / "link", "is"),  # a link to the data is the data
    ):
        assert main([*argv, "--save-sr", str(save_sr), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"--save-sr {str(save_sr)!r} {where} the evaluated data folder" in err, err
        assert str(data) in err and "outside the datasets" in err
    assert built == []  # refused before the model was even built
    assert {p.name: p.read_bytes() for p in data.iterdir()} == hr_bytes
    assert not (data / "sub").exists()

    # existing SR images: kept unless --overwrite, and --out the same
    out = tmp_path / "sr"
    (out / "Mini").mkdir(parents=True)
    (out / "Mini" / "im1.png").write_bytes(b"an earlier SR image")
    assert main([*argv, "--save-sr", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out / "Mini" / "im1.png") in err and "--overwrite" in err
    assert _files(out) == ["Mini", "Mini/im1.png"]
    assert main([*argv, "--save-sr", str(out), "--overwrite"]) == 0
    assert read_image(out / "Mini" / "im1.png").shape == (16, 20, 3)
    (tmp_path / "r.json").write_text("[]")
    assert main([*argv, "--out", str(tmp_path / "r.json")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "r.json").read_text() == "[]"
    assert {p.name: p.read_bytes() for p in data.iterdir()} == hr_bytes


def test_upscale_writers_racing_for_one_output_name_lose_nothing(tmp_path):
    src = tmp_path / "in.png"
    img = np.random.default_rng(1).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    write_image(src, img)
    out = tmp_path / "out"
    model = lightsr.create_model("bicubic", scale=2)
    reports: list = []

    def run() -> None:
        reports.append(upscale_files(src, out, model=model, tile=None, progress=False))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    written = sorted(dst.name for r in reports for _, dst in r.written)
    assert written == ["in_x2.png", "in_x2_1.png", "in_x2_2.png"]
    assert _files(out) == written
    first = read_image(out / "in_x2.png")
    assert all(np.array_equal(read_image(out / n), first) for n in written)


# ---------------------------------------------------------------------------------------------
# Training run folders
# ---------------------------------------------------------------------------------------------


class _Tiny(SRModel):
    def __init__(self, *, scale: int) -> None:
        super().__init__(scale=scale)
        self.conv = nn.Conv2d(3, 3 * scale * scale, 3, padding=1)
        self.up = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.up(self.conv(x))


if "_tiny_writes" not in _REGISTRY:
    register_model("_tiny_writes", paper="test", scales=(2,))(lambda *, scale: _Tiny(scale=scale))


def _recipe(tmp_path: Path, run: Path) -> Path:
    images = tmp_path / "hr"
    if not images.is_dir():
        _set(images, 3)
    recipe = tmp_path / f"{run.name}.json"
    recipe.write_text(
        json.dumps(
            {
                "model": "_tiny_writes",
                "scale": 2,
                "data": {"lr_patch": 6, "hr_dirs": [str(images)], "num_workers": 0},
                "batch_size": 2,
                "length": 2,
                "log_every": 1,
                "ckpt_every": 2,
                "progress": False,
                "out_dir": str(run),
            }
        )
    )
    return recipe


def test_a_second_train_on_a_locked_run_folder_fails_at_once(tmp_path, capsys):
    run = tmp_path / "run"
    recipe = _recipe(tmp_path, run)
    assert main(["train", str(recipe), "--stop-at", "1"]) == 130
    state = (run / "state.pt").read_bytes()
    with FolderLock(run):  # "another process" holds the folder
        assert (run / ".lock").read_text().strip() == str(os.getpid())
        for argv in (["train", "--resume", str(run)], ["train", str(recipe)]):
            t0 = time.perf_counter()
            assert main(argv) == 2
            assert time.perf_counter() - t0 < 5  # at once, not after loading data
            err = capsys.readouterr().err
            assert f"{str(run)!r} is in use by another process (pid {os.getpid()})" in err
            assert "set another out_dir" in err
    assert (run / "state.pt").read_bytes() == state
    # free again: a new run there is still refused (it holds one), pointing to --resume
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and f"lightsr train --resume {run}" in err
    assert (run / "state.pt").read_bytes() == state
    assert main(["train", "--resume", str(run)]) == 0  # and the run itself goes on
    assert json.loads((run / "config.json").read_text())["out_dir"] == str(run)
    with FolderLock(run):  # released when the run ended
        pass
    assert _temps(run) == []


def test_a_new_run_never_takes_over_a_folder_of_an_earlier_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": "other"}')
    (run / "log.jsonl").write_text('{"event": "start", "step": 0}\n')
    cfg = config_from_dict(json.loads(_recipe(tmp_path, run).read_text()))
    with pytest.raises(ConfigError) as info:
        train(cfg)
    message = str(info.value)
    assert "config.json, log.jsonl" in message and "another out_dir" in message
    assert (run / "config.json").read_text() == '{"model": "other"}'
    assert _files(run) == [".lock", "config.json", "log.jsonl"]
    FolderLock(run).acquire().release()  # the refusal released the lock


def test_folder_lock_names_the_holder(tmp_path):
    lock = FolderLock(tmp_path / "f", fix="or pick another").acquire()
    try:
        with pytest.raises(FolderInUseError) as info:
            FolderLock(tmp_path / "f", fix="or pick another").acquire()
        assert f"pid {os.getpid()}" in str(info.value) and "or pick another" in str(info.value)
    finally:
        lock.release()
    FolderLock(tmp_path / "f").acquire().release()


@linux_only
def test_a_full_disk_while_training_saves_is_said_and_leaves_no_temp(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    recipe = _recipe(tmp_path, run)
    _disk_full(monkeypatch)
    assert main(["train", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert "no space left on the device writing" in err and str(run) in err, err
    assert "Traceback" not in err and "RuntimeError" not in err
    assert _temps(run) == [] and not (run / "state.pt").exists()
