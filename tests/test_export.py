"""lightsr.export: ONNX and TorchScript from the folded model match PyTorch at other sizes."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import shared_path

import lightsr
from lightsr.cli import main
from lightsr.errors import LightSRError
from lightsr.export import PARITY_TOLERANCE, export_model


def _model(name: str, scale: int = 2):
    torch.manual_seed(0)
    return lightsr.create_model(name, scale=scale).eval()


@pytest.mark.parametrize("name", ["fmen_s", "a2f_sd", "maffsrn"])
def test_onnx_matches_pytorch_at_two_sizes(tmp_path, name):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _model(name)
    path = tmp_path / f"{name}.onnx"
    report = export_model(model, path)
    assert report.parity_status == "ok"
    assert [p["input_hw"] for p in report.parity] == [[32, 32], [45, 61]]
    assert all(p["max_abs_diff"] <= PARITY_TOLERANCE for p in report.parity)
    sidecar = json.loads((tmp_path / f"{name}.onnx.json").read_text())
    assert sidecar["parity"] == report.parity and sidecar["arch"] == name
    # a third size, independently of export_model's own check; FMEN-S is exported folded
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 23, 37)
    y = torch.from_numpy(session.run(None, {"lr": x.numpy()})[0])
    with torch.no_grad():
        ref = model(x)
    assert y.shape == (1, 3, 46, 74)
    assert (y - ref).abs().max() <= PARITY_TOLERANCE
    if name == "fmen_s":
        assert report.params == sum(p.numel() for p in lightsr.reparameterize(model).parameters())
        assert report.params < sum(p.numel() for p in model.parameters())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_matches_pytorch_at_another_size(tmp_path):
    # MAFFSRN resizes to a size read from a tensor's shape: the trace must keep it symbolic
    model = _model("maffsrn")
    path = tmp_path / "maffsrn.pt"
    report = export_model(model, path)
    assert report.format == "torchscript" and report.parity_status == "ok"
    assert max(p["max_abs_diff"] for p in report.parity) <= PARITY_TOLERANCE
    loaded = torch.jit.load(str(path))
    x = torch.rand(1, 3, 29, 17)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() <= PARITY_TOLERANCE


def test_official_fmen_s_onnx_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    model = lightsr.load_official(shared_path("weights", "official", "fmen_s_x4.pt"))
    report = export_model(model, tmp_path / "fmen_s_x4.onnx")
    # FMEN computes in 0..255 internally: float rounding is larger than for [0, 1] networks
    assert report.parity_status == "ok"
    assert 0 < max(p["max_abs_diff"] for p in report.parity) <= PARITY_TOLERANCE


def test_parity_skipped_without_onnxruntime(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    report = export_model(_model("fmen_s"), tmp_path / "m.onnx")
    assert report.parity_status.startswith("skipped: onnxruntime is not installed")
    assert report.ok and report.parity == []
    assert (tmp_path / "m.onnx").stat().st_size > 100_000  # the export itself still happened


def test_onnx_without_onnx_package_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(LightSRError, match="pip install onnx"):
        export_model(_model("fmen_s"), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(LightSRError, match=".onnx or .pt"):
        export_model(_model("fmen_s"), tmp_path / "m.bin")


def test_cli_export_checkpoint(tmp_path, capsys, monkeypatch):
    model = _model("fmen_s", scale=3)
    ckpt = tmp_path / "fmen_s_x3.safetensors"
    lightsr.save(model, ckpt)
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(ckpt), "--torchscript"]) == 0
    assert "parity ok" in capsys.readouterr().out
    sidecar = json.loads((tmp_path / "fmen_s_x3.pt.json").read_text())
    assert sidecar["scale"] == 3 and sidecar["parity_status"] == "ok"
    # never silently replaced
    assert main(["export", str(ckpt), "--torchscript"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--torchscript", "--overwrite", "--no-check"]) == 0
    assert json.loads((tmp_path / "fmen_s_x3.pt.json").read_text())["parity_status"].startswith(
        "skipped"
    )
    # a checkpoint of another scale is refused
    assert main(["export", str(ckpt), "--scale", "4", "--torchscript", "-o", "x.pt"]) == 2


def test_cli_export_random_weights_needs_scale(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--model", "fmen_s", "--torchscript"]) == 2
    assert "--scale" in capsys.readouterr().err
    assert main(["export", "--model", "fmen_s", "--scale", "2", "--torchscript"]) == 0
    assert (tmp_path / "fmen_s_x2_random.pt").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("fault", ["shape", "crash"])
def test_a_file_failing_the_check_is_removed(tmp_path, monkeypatch, fault):
    import lightsr.export

    real = lightsr.export._export_torchscript

    def broken(folded, x, path, overwrite):
        run = real(folded, x, path, overwrite)  # the file is written here

        def bad(inp):
            if fault == "crash":
                raise RuntimeError("shape [1, 3, 64, 64] is invalid for input of size 36")
            return run(inp)[..., :-1]  # a size baked into the graph

        return bad

    monkeypatch.setattr(lightsr.export, "_export_torchscript", broken)
    path = tmp_path / "fsrcnn.pt"
    with pytest.raises(LightSRError, match="[Rr]emoved") as info:
        export_model(_model("fsrcnn"), path)
    assert str(path) in str(info.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a sidecar, nor a temp file
