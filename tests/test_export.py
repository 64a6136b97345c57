"""lightsr.export: ONNX, TorchScript and OpenVINO IR from the folded model match PyTorch at
other sizes."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import shared_path

import lightsr
from lightsr.cli import main
from lightsr.errors import LightSRError, OutputExistsError
from lightsr.export import (
    PARITY_TOLERANCE,
    TORCHSCRIPT_METADATA_FILE,
    export_model,
    read_export_metadata,
)
from lightsr.quantize import openvino_core


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


@pytest.mark.parametrize("name", ["fmen_s", "maffsrn"])
def test_openvino_ir_matches_pytorch_and_describes_itself(tmp_path, name):
    pytest.importorskip("onnx")
    ov = pytest.importorskip("openvino")
    model = _model(name)
    path = tmp_path / f"{name}.xml"
    report = export_model(model, path, weights="w")
    assert report.format == "openvino" and report.parity_status == "ok" and report.ok
    assert [p["input_hw"] for p in report.parity] == [[32, 32], [45, 61]]
    assert (tmp_path / f"{name}.bin").stat().st_size > 4 * report.params  # fp32 weights
    assert 'element_type="f16"' not in path.read_text()  # not save_model's fp16 default
    want = _expected_metadata(model, weights="w")
    assert read_export_metadata(path) == want == report.metadata
    # as an OpenVINO user reads it, at a third size (MAFFSRN resizes to a shape it reads)
    core = openvino_core()  # lightsr's: see openvino_core for why not a second
    ir = core.read_model(str(path))
    assert ir.get_rt_info(["lightsr"]).value["arch"] == name
    ir.reshape({0: ov.PartialShape([1, 3, 23, 37])})
    compiled = core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = torch.rand(1, 3, 23, 37)
    y = torch.from_numpy(compiled.create_infer_request().infer({0: x.numpy()})[0].copy())
    with torch.no_grad():
        ref = model(x)
    assert y.shape == (1, 3, 46, 74) and (y - ref).abs().max() <= PARITY_TOLERANCE


def test_openvino_ir_never_replaces_a_bin_and_needs_an_xml_name(tmp_path):
    pytest.importorskip("openvino")
    binary = tmp_path / "m.bin"
    binary.write_bytes(b"someone else's weights")
    with pytest.raises(OutputExistsError, match="m.bin"):
        export_model(_model("fsrcnn"), tmp_path / "m.xml")
    assert binary.read_bytes() == b"someone else's weights"
    assert not (tmp_path / "m.xml").exists()
    with pytest.raises(LightSRError, match="name it 'm.xml'"):
        export_model(_model("fsrcnn"), tmp_path / "m.ir", format="openvino")
    report = export_model(_model("fsrcnn"), tmp_path / "m.xml", overwrite=True)
    assert report.ok and binary.read_bytes() != b"someone else's weights"


def test_an_xml_appearing_meanwhile_is_left_alone_and_no_bin_is_left(tmp_path, monkeypatch):
    """Another process creates the .xml after the check and before lightsr publishes its own:
    lightsr's export fails naming it, leaves that file as it was and takes its .bin back."""
    pytest.importorskip("openvino")
    import lightsr.export

    real = lightsr.export.atomic_write_bytes

    def racing(target, data, **kwargs):
        if Path(target).suffix == ".xml":
            Path(target).write_text("another process's IR")
        return real(target, data, **kwargs)

    monkeypatch.setattr(lightsr.export, "atomic_write_bytes", racing)
    with pytest.raises(OutputExistsError):
        export_model(_model("fsrcnn"), tmp_path / "m.xml")
    assert (tmp_path / "m.xml").read_text() == "another process's IR"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.xml"]


def test_cli_export_openvino_beside_onnx(tmp_path, capsys, monkeypatch):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    argv = ["export", "--model", "fsrcnn", "--scale", "2", "--onnx", "--openvino", "-o", "m.xml"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "m.onnx (onnx): parity ok" in out and "m.xml (openvino): parity ok" in out
    for name in ("m.onnx", "m.onnx.json", "m.xml", "m.bin", "m.xml.json"):
        assert (tmp_path / name).is_file(), name
    assert main([*argv[:-2], "--openvino", "-o", "ir"]) == 0  # a stem: ir.xml + ir.bin
    assert (tmp_path / "ir.xml").is_file() and (tmp_path / "ir.bin").is_file()
    assert main(argv) == 2  # never silently replaced
    assert "--overwrite" in capsys.readouterr().err


def test_openvino_export_without_openvino_names_the_fix(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(LightSRError, match=r"lightsr\[openvino\]"):
        export_model(_model("fsrcnn"), tmp_path / "m.xml")
    assert not (tmp_path / "m.xml").exists() and not (tmp_path / "m.bin").exists()


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
    with pytest.raises(LightSRError, match=r"\.onnx, \.pt or \.xml \(OpenVINO IR\)"):
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

    def broken(folded, x, path, *rest):
        run = real(folded, x, path, *rest)  # the file is written here

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


def test_an_ir_failing_the_check_is_removed_with_its_bin(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    import lightsr.export

    real = lightsr.export._export_openvino

    def broken(*args):
        run, reference = real(*args)  # the .xml and .bin are written here
        return (lambda inp: run(inp)[..., :-1]), reference

    monkeypatch.setattr(lightsr.export, "_export_openvino", broken)
    with pytest.raises(LightSRError, match="[Rr]emoved"):
        export_model(_model("fsrcnn"), tmp_path / "m.xml")
    assert list(tmp_path.iterdir()) == []  # no .xml, .bin, sidecar or temp file


# ---- metadata in the exported files ---------------------------------------------------------


def _expected_metadata(model, **known):
    return {
        "arch": model.arch_name,
        "options": json.dumps(model.arch_options, sort_keys=True),
        "scale": str(model.scale),
        "form": "folded",
        "input_range": "[0, 1]",
        "input_layout": "NCHW float32 RGB",
        "output_range": "[0, 1], unclamped (clamp before converting to 8 bits)",
        "output_layout": "NCHW float32 RGB, scale x the input height and width",
        "lightsr_version": lightsr.__version__,
        **known,
    }


def test_onnx_metadata_round_trip(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = lightsr.create_model("fsrcnn", scale=3, ggas=True)  # options are recorded
    path = tmp_path / "m.onnx"
    report = export_model(model, path, source_sha256="ab" * 32, weights="my_weights")
    want = _expected_metadata(model, source_sha256="ab" * 32, weights="my_weights")
    assert json.loads(want["options"]) == {"ggas": True}
    assert report.metadata == want and report.metadata_status == "ok" and report.ok
    assert read_export_metadata(path) == want
    # what any ONNX runtime user sees, read independently of lightsr
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == want
    assert json.loads((tmp_path / "m.onnx.json").read_text())["metadata"] == want


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_metadata_round_trip(tmp_path):
    model = _model("fsrcnn", scale=2)
    path = tmp_path / "m.pt"
    report = export_model(model, path)  # random weights: no sha256, no name
    want = _expected_metadata(model)
    assert report.metadata == want and "source_sha256" not in want
    assert read_export_metadata(path) == want
    extra = {TORCHSCRIPT_METADATA_FILE: ""}  # how a libtorch / torch.jit user reads it
    torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra[TORCHSCRIPT_METADATA_FILE]) == want


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cli_records_the_checkpoints_sha256_and_a_weights_name(tmp_path, monkeypatch, capsys):
    model = _model("fmen_s", scale=2)
    ckpt = tmp_path / "fmen_s_x2.safetensors"
    lightsr.save(model, ckpt)
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--checkpoint", str(ckpt), "--torchscript", "-o", "c.pt"]) == 0
    assert "metadata ok" in capsys.readouterr().out
    meta = read_export_metadata(tmp_path / "c.pt")
    assert meta["source_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert "weights" not in meta and meta["arch"] == "fmen_s" and meta["scale"] == "2"
    # named (bundled) weights: their name and the bundled file's sha256
    assert main(["export", "--weights", "a2f_sd_x2", "--torchscript", "--output", "w.pt"]) == 0
    meta = read_export_metadata(tmp_path / "w.pt")
    bundled = lightsr.fetch_weights("a2f_sd_x2")
    assert meta["weights"] == "a2f_sd_x2" and meta["arch"] == "a2f_sd"
    assert meta["source_sha256"] == hashlib.sha256(bundled.read_bytes()).hexdigest()
    # the positional CHECKPOINT and --checkpoint are one thing: both is an error
    assert main(["export", str(ckpt), "--checkpoint", str(ckpt), "--torchscript"]) == 2
    assert "two checkpoints" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_metadata_that_reads_back_different_fails_the_export(tmp_path, monkeypatch, capsys):
    import lightsr.export

    real = lightsr.export.read_export_metadata

    def tampered(path):
        return {**real(path), "scale": "3"}

    monkeypatch.setattr(lightsr.export, "read_export_metadata", tampered)
    model = _model("fsrcnn", scale=2)
    report = export_model(model, tmp_path / "m.pt")
    assert not report.ok and report.parity_status == "ok"
    assert report.metadata_status == "failed: scale: wrote '2', read '3'"
    lightsr.save(model, tmp_path / "f.safetensors")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "f.safetensors", "--torchscript", "-o", "cli.pt"]) == 1
    assert "metadata failed: scale" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_files_without_lightsr_metadata_are_named(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Identity(), torch.rand(1)), str(plain))
    with pytest.raises(LightSRError, match="without lightsr metadata"):
        read_export_metadata(plain)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    if _has_onnx():  # without onnx the error names the package to install instead
        with pytest.raises(LightSRError, match="neither a TorchScript nor an ONNX file"):
            read_export_metadata(junk)
    with pytest.raises(LightSRError, match="does not exist"):
        read_export_metadata(tmp_path / "missing.onnx")


def _has_onnx() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True
