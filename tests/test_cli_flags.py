"""One flag vocabulary across the subcommands (--quiet, --threads, --device, -o/--out,
--overwrite, --weights/--checkpoint), no progress frames on a pipe, `convert -o`,
`profile --folded` printing both forms, and the skip messages of tests needing ../shared."""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, shared_path, synthetic_image

import lightsr
from lightsr.cli import build_parser, main
from lightsr.data.io import write_image
from lightsr.models import a2f
from lightsr.upscale import PRECISIONS


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in p._actions for s in a.option_strings}


#: The vocabulary flags each command must have (a command has those that apply to it: list
#: writes nothing and runs no network; convert and score run none either).
EXPECTED = {
    "eval": {"--quiet", "--threads", "--device", "-o", "--out", "--overwrite", "--weights",
             "--weights-dir", "--checkpoint", "--precision"},
    "score": {"--quiet", "-o", "--out", "--overwrite"},
    "profile": {"--quiet", "--threads", "--device", "--overwrite", "--weights", "--weights-dir",
                "--checkpoint"},
    "export": {"--threads", "-o", "--out", "--overwrite", "--weights", "--weights-dir",
               "--checkpoint"},
    "convert": {"-o", "--out", "--overwrite"},
    "train": {"--quiet", "--threads", "--device"},
    "upscale": {"--quiet", "--threads", "--device", "-o", "--out", "--overwrite", "--weights",
                "--weights-dir", "--checkpoint", "--precision"},
    "compare": {"--quiet", "--threads", "--device", "--overwrite", "--weights", "--weights-dir",
                "--checkpoint"},
    "list": set(),
}  # fmt: skip


def test_every_command_is_covered_and_has_its_flags():
    commands = _subparsers()
    assert set(commands) == set(EXPECTED), "add the new command to EXPECTED"
    for name, want in EXPECTED.items():
        have = set(_options(commands[name]))
        assert want <= have, f"lightsr {name} lacks {sorted(want - have)}"
        # the help lists every flag it accepts but the hidden aliases
        text = commands[name].format_help()
        for flag in want:
            assert flag in text, f"lightsr {name} --help does not show {flag}"


SAME_HELP = ("--threads", "--quiet", "--checkpoint")
# Held to one help text (compare's --weights and --checkpoint take several values, so their
# help differs by design; its --device and --threads are checked below).
HELP_CHECKED = {"eval", "score", "profile", "export", "convert", "train", "list", "upscale"}


@pytest.mark.parametrize("flag", SAME_HELP)
def test_a_flag_means_the_same_on_every_command(flag):
    helps = {
        name: _options(p)[flag].help
        for name, p in _subparsers().items()
        if flag in _options(p) and name in HELP_CHECKED
    }
    assert len(helps) >= 2 and len(set(helps.values())) == 1, helps


def test_device_flags_share_one_help_but_their_default():
    texts = {
        name: _options(p)["--device"].help.split(" (default")[0]
        for name, p in _subparsers().items()
        if "--device" in _options(p)
    }
    assert (
        set(texts) == {"eval", "profile", "train", "upscale", "compare"}
        and len(set(texts.values())) == 1
    ), texts


def test_precision_flags_share_choices_and_help_but_their_default():
    options = {
        name: _options(p)["--precision"]
        for name, p in _subparsers().items()
        if "--precision" in _options(p)
    }
    assert set(options) == {"eval", "upscale"}
    assert {tuple(a.choices) for a in options.values()} == {tuple(PRECISIONS)}
    texts = {name: a.help.split(" (default")[0] for name, a in options.items()}
    assert len(set(texts.values())) == 1, texts
    assert "NAME_int8 means int8" in texts["eval"]
    # parsed as None when not given: only a precision the user named can contradict an int8
    # entry; each command applies its own default (upscale auto, eval fp32)
    assert build_parser().parse_args(["eval", "S"]).precision is None
    assert "(default auto)" in options["upscale"].help
    assert "(default fp32" in options["eval"].help


def test_old_spellings_are_accepted_but_not_shown():
    parser = build_parser()
    args = parser.parse_args(["eval", "Set5", "--no-progress"])
    assert args.quiet is True
    assert "--no-progress" not in _subparsers()["eval"].format_help()
    args = parser.parse_args(["export", "x.safetensors", "--onnx", "--output", "y.onnx"])
    assert args.out == "y.onnx"
    assert "--output" not in _subparsers()["export"].format_help()


def test_bad_counts_are_usage_errors(capsys):
    for argv in (["eval", "S", "--threads", "0"], ["profile", "fsrcnn", "--threads", "x"]):
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args(argv)
        assert info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


# ---- no progress frames on a pipe -----------------------------------------------------------


def test_eval_draws_no_progress_frames_when_stderr_is_a_pipe(tmp_path):
    for i in range(3):  # several images: a bar would redraw between them
        write_image(tmp_path / "Set" / f"im{i}.png", synthetic_image(48, 40, seed=i))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    run = subprocess.run(
        [sys.executable, "-m", "lightsr", "eval", str(tmp_path / "Set"), "--model", "bicubic",
         "--scale", "2"],
        capture_output=True,
        env=env,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    assert b"PSNR-Y" in run.stdout and b"3" in run.stdout
    assert b"\r" not in run.stderr and b"it/s" not in run.stderr, run.stderr.decode()


# ---- convert, profile, train ----------------------------------------------------------------


def test_convert_with_o_refuses_to_replace_unasked(tmp_path, capsys):
    official = tmp_path / "a2f.pth"
    torch.save(a2f.to_official_state(lightsr.create_model("a2f_sd", scale=2)), official)
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"precious")
    assert main(["convert", str(official), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert main(["convert", str(official), "-o", str(out), "--overwrite"]) == 0
    assert lightsr.load(out).arch_name == "a2f_sd"
    assert main(["convert", str(official), str(out), "-o", str(out)]) == 2
    assert "name the output once" in capsys.readouterr().err
    assert main(["convert", str(official)]) == 2
    assert "name the output file" in capsys.readouterr().err


def test_profile_folded_prints_and_writes_both_forms(tmp_path, capsys):
    out = tmp_path / "p.json"
    argv = ["profile", "fmen_s", "--scale", "2", "--folded", "--no-runtime", "--no-memory"]
    assert main([*argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    model = lightsr.create_model("fmen_s", scale=2)
    n_train = sum(p.numel() for p in model.parameters())
    n_folded = sum(p.numel() for p in lightsr.reparameterize(model).parameters())
    assert n_folded < n_train
    assert text.index("fmen_s x2 (training)") < text.index("fmen_s x2 (folded)")
    assert f"params            {n_train:,}" in text and f"params            {n_folded:,}" in text
    data = json.loads(out.read_text())
    assert (data["form"], data["params"], data["params_training"]) == ("folded", n_folded, n_train)
    assert data["training_form"]["form"] == "training"
    assert data["training_form"]["params"] == n_train
    assert data["training_form"]["multi_adds_720p"] > data["multi_adds_720p"]


def test_train_flags_are_spellings_of_config_keys(capsys):
    recipe = str(REPO / "configs" / "fmen_s.toml")
    argv = ["train", recipe, "--print-config", "--device", "cpu", "--quiet", "--threads", "1"]
    assert main(argv) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["device"] == "cpu" and cfg["progress"] is False
    assert main(["train", recipe, "device=cpu", "--device", "cpu", "--print-config"]) == 2
    assert "give one of them" in capsys.readouterr().err


# ---- skip messages --------------------------------------------------------------------------


def test_the_shared_path_skip_names_both_places():
    with pytest.raises(pytest.skip.Exception) as info:
        shared_path("no", "such", "file")
    assert "../shared" in str(info.value) and "LIGHTSR_SHARED" in str(info.value)


def _skip_reasons(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string given to pytest.skip / skipif / importorskip reasons."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if not name.endswith(("skip", "skipif", "xfail")):
            continue
        parts = [*node.args, *(k.value for k in node.keywords if k.arg in ("reason", "msg"))]
        text = " ".join(
            s.value
            for p in parts
            for s in ast.walk(p)
            if isinstance(s, ast.Constant) and isinstance(s.value, str)
        )
        found.append((node.lineno, text))
    return found


def test_skips_about_shared_files_name_lightsr_shared():
    bad = []
    checked = 0
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for line, text in _skip_reasons(ast.parse(path.read_text(encoding="utf-8"))):
            if "shared" in text.lower():
                checked += 1
                if "LIGHTSR_SHARED" not in text or "../shared" not in text:
                    bad.append(f"{path.name}:{line}")
    assert checked >= 1  # conftest.shared_path's own skip is seen
    assert not bad, (
        f"skips about the shared files must name ../shared and LIGHTSR_SHARED: {bad} "
        "(use conftest.shared_path)"
    )
