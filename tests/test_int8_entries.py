"""Named int8 weights (``a2f_sd_x2_int8``, ...): an int8 entry is its base's file run at int8,
in every command that takes ``--weights``: upscale and eval run int8 (the same graph as
``--precision int8``), export writes the quantized ONNX, the others refuse naming the base."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import REPO

import lightsr
import lightsr.quantize as quantize
from lightsr.cli import _args, main
from lightsr.data.io import read_image, write_image
from lightsr.export import read_export_metadata
from lightsr.train import resolve_init_source
from lightsr.upscale import Upscaler, resolve_backend

INT8, BASE = "a2f_sd_x2_int8", "a2f_sd_x2"


@pytest.fixture
def small_calibration(monkeypatch):
    """int8 calibrated on 4 patches of 24x24 instead of 32 of 48x48 (a few seconds instead of
    ~15): the same for every path of a test, so they share one cached graph (the session's
    cache, tests/conftest.py)."""
    pytest.importorskip("onnxruntime")
    full = quantize.synthetic_calibration
    monkeypatch.setattr(
        quantize, "synthetic_calibration", lambda *, scale: full(scale=scale, count=4, size=24)
    )


def _sample(tmp_path, h: int = 24, w: int = 32):
    path = tmp_path / "in" / "sample.png"
    path.parent.mkdir(exist_ok=True)
    write_image(path, read_image(REPO / "examples" / "sample.png")[:h, :w])
    return path


def _upscale(src, out, *flags: str) -> int:
    # untiled: no tile or receptive-field probe, only the network
    return main(["upscale", str(src), "-o", str(out), "--quiet", "--tile", "none", *flags])


def test_upscale_int8_name_equals_its_base_at_precision_int8(tmp_path, small_calibration, capsys):
    src = _sample(tmp_path)
    out = {k: tmp_path / f"{k}.png" for k in ("name", "flag", "fp32")}
    assert _upscale(src, out["name"], "--weights", INT8) == 0
    start = capsys.readouterr().err
    engine = resolve_backend("auto", torch.device("cpu"), "int8")[0]  # the CLI's default
    assert f"weights {INT8}: {BASE} at int8" in start and f", int8 ({engine}, " in start
    assert _upscale(src, out["flag"], "--weights", BASE, "--precision", "int8") == 0
    assert out["name"].read_bytes() == out["flag"].read_bytes()  # byte for byte
    fp32 = ("--weights", BASE, "--precision", "fp32", "--backend", "torch")
    assert _upscale(src, out["fp32"], *fp32) == 0
    assert not np.array_equal(read_image(out["name"]), read_image(out["fp32"]))  # int8 ran


@pytest.mark.parametrize("command", ["upscale", "eval"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_precision_contradicting_an_int8_name_is_refused(tmp_path, capsys, command, precision):
    src = _sample(tmp_path)
    target = ["-o", str(tmp_path / "out.png")] if command == "upscale" else []
    argv = [command, str(src if command == "upscale" else src.parent), *target]
    assert main([*argv, "--weights", INT8, "--precision", precision]) == 2
    err = capsys.readouterr().err
    assert f"--weights {INT8} is {BASE} run at int8" in err
    assert f"--precision {precision} was asked" in err and f"--weights {BASE}" in err
    assert not (tmp_path / "out.png").exists()


def test_eval_of_an_int8_name_is_eval_at_precision_int8(tmp_path, small_calibration, capsys):
    folder = _sample(tmp_path, 64, 96).parent  # one HR image; LR by MATLAB imresize
    results = {}
    for key, extra in (
        ("name", ["--weights", INT8]),
        ("flag", ["--weights", BASE, "--precision", "int8"]),
        ("fp32", ["--weights", BASE]),
    ):
        out = tmp_path / f"{key}.json"
        assert main(["eval", str(folder), *extra, "--quiet", "-o", str(out)]) == 0
        results[key] = json.loads(out.read_text())[0]
    assert results["name"]["psnr"] == results["flag"]["psnr"]
    assert results["name"]["psnr"] != results["fp32"]["psnr"]
    assert abs(results["name"]["psnr"] - results["fp32"]["psnr"]) < 1.0  # int8, not garbage
    assert results["name"]["model"] == f"{INT8} (trained here, {BASE} at int8)"
    assert results["flag"]["model"] == f"{BASE} (trained here), int8"
    assert main(["eval", str(folder), "--weights", INT8, "--report", str(tmp_path / "r")]) == 2
    assert "--report draws its images with the model at fp32" in capsys.readouterr().err


def test_export_of_an_int8_name_writes_the_graph_upscale_runs(tmp_path, small_calibration):
    path = tmp_path / "q.onnx"
    assert main(["export", "--weights", INT8, "--onnx", "-o", str(path)]) == 0
    meta = read_export_metadata(path)
    entry = lightsr.hub.get_weights(BASE)
    assert (meta["precision"], meta["weights"], meta["source_sha256"]) == (
        "int8",
        INT8,
        entry.sha256,
    )
    sidecar = json.loads((tmp_path / "q.onnx.json").read_text())
    assert sidecar["precision"] == "int8" and sidecar["parity_status"] == "ok"
    ort = pytest.importorskip("onnxruntime")
    x = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"lr": x.numpy()})[0]
    runner = Upscaler(lightsr.load(BASE), tile=None, precision="int8")
    assert runner.int8 is not None
    assert np.array_equal(got, runner.int8(x).numpy())


def test_openvino_ir_of_an_int8_name_is_what_the_openvino_backend_runs(tmp_path, small_calibration):
    ov = pytest.importorskip("openvino")
    path = tmp_path / "q.xml"
    assert main(["export", "--weights", INT8, "--openvino", "-o", str(path)]) == 0
    assert (tmp_path / "q.bin").is_file()
    meta = read_export_metadata(path)
    assert (meta["precision"], meta["weights"]) == ("int8", INT8)
    sidecar = json.loads((tmp_path / "q.xml.json").read_text())
    assert (
        sidecar["parity_status"] == "ok" and max(p["max_abs_diff"] for p in sidecar["parity"]) == 0
    )
    # read as any OpenVINO user would, at other sizes: the openvino backend's int8 values. A
    # small input runs in the model as read (any shape), as the backend runs small inputs; a
    # large one in the model reshaped to its size, as the backend runs tiles.
    core = quantize.openvino_core()  # lightsr's: see openvino_core for why not a second
    runner = Upscaler(lightsr.load(BASE), tile=None, precision="int8", backend="openvino")
    assert runner.int8 is not None
    big = quantize._OPENVINO_ANY_SHAPE_MAX_PIXELS // 256 + 1
    for seed, (h, w) in enumerate([(20, 28), (big, 256)]):
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
        model = core.read_model(str(path))
        if h * w > quantize._OPENVINO_ANY_SHAPE_MAX_PIXELS:
            model.reshape({0: ov.PartialShape([1, 3, h, w])})
        # the backend's hint: bf16 for the kept convs where it runs them so (native bf16)
        hint = {"fp32": "f32", "bf16": "bf16"}[runner.int8.report.floats]
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        got = compiled.create_infer_request().infer({0: x.numpy()})[0]
        assert np.array_equal(got, runner.int8(x).numpy()), (h, w)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["export", "--weights", INT8, "--torchscript"], "exports to ONNX or OpenVINO IR only"),
        (["profile", "--weights", INT8, "--no-runtime"], f"profile --weights {BASE}"),
        (["compare", "x.png", "--weights", INT8, "--report", "r"], f"compare --weights {BASE}"),
    ],
)
def test_commands_that_cannot_run_int8_refuse_naming_the_base(tmp_path, capsys, argv, says):
    argv = [a if a not in ("x.png", "r") else str(tmp_path / a) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and f"{INT8} is {BASE} run at int8" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_load_of_an_int8_name_is_its_base_fp32_model_with_a_warning():
    with pytest.warns(UserWarning, match=f'{INT8} is {BASE} run at int8.*precision="int8"'):
        model = lightsr.load(INT8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the base itself loads without one
        base = lightsr.load(BASE)
    assert model.checkpoint_extra["weights"] == BASE
    sa, sb = model.state_dict(), base.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_cannot_start_from_an_int8_name():
    with pytest.raises(lightsr.ConfigError, match=f"init_from = '{BASE}'"):
        resolve_init_source(INT8)


def test_committed_int8_costs_were_measured_with_the_current_fp32_convs_and_meet_the_bar():
    # docs/ZOO.md and `lightsr list --weights` state each int8 entry's cost from
    # benchmarks/results/zoo.json. A change of lightsr.quantize.KEEP_FP32 (or of which convs
    # count as image convs) changes what NAME_int8 runs: its row must then be re-measured
    # (python benchmarks/zoo_table.py --only NAME_int8 ...). The fast-path issue's bar: at most
    # 0.1 dB on each of Set5, Set14 and B100.
    from lightsr import hub

    rows = json.loads((REPO / "benchmarks" / "results" / "zoo.json").read_text())["entries"]
    int8_rows = {r["name"]: r for r in rows if r["precision"] == "int8"}
    assert set(int8_rows) == {e.name for e in hub.list_weights() if e.precision == "int8"}
    for name, row in int8_rows.items():
        assert row["status"] == "measured", name
        entry = hub.get_weights(name)
        layout = lightsr.create_model(entry.arch, scale=entry.scale, **entry.options)
        folded = lightsr.reparameterize(layout)
        assert row.get("int8_kept_fp32") == quantize.default_keep_fp32(folded), (
            f"{name} was measured keeping {row.get('int8_kept_fp32')} in fp32; re-measure it"
        )
        assert set(row["cost"]) == {"Set5", "Set14", "B100"}, name
        assert min(row["cost"].values()) >= -0.1, (name, row["cost"])


def _calibration_folder(tmp_path):
    """Two HR images large enough for patches and one too small (skipped by its header)."""
    folder = tmp_path / "calib"
    folder.mkdir()
    img = read_image(REPO / "examples" / "sample.png")
    write_image(folder / "a.png", img[:100, :150])
    write_image(folder / "b.png", np.ascontiguousarray(img[28:, 40:][:, ::-1]))
    write_image(folder / "tiny.png", img[:20, :20])
    return folder


def test_calibration_from_files_equals_patches_of_the_decoded_images(tmp_path):
    folder = _calibration_folder(tmp_path)
    files = sorted(folder.glob("*.png"))
    decoded = [read_image(f) for f in files]
    expected = quantize.calibration_patches(decoded, scale=2, count=6, size=24, seed=3)
    for given in ([folder], files):
        got = quantize.calibration_from_files(given, scale=2, count=6, size=24, seed=3)
        assert len(got) == 6 and all(torch.equal(a, b) for a, b in zip(got, expected))
    other_seed = quantize.calibration_from_files([folder], scale=2, count=6, size=24, seed=4)
    assert not all(torch.equal(a, b) for a, b in zip(other_seed, expected))
    with pytest.raises(lightsr.errors.LightSRError, match="no calibration image is at least"):
        quantize.calibration_from_files([folder / "tiny.png"], scale=2, count=6, size=24)


def test_upscale_int8_calibration_runs_the_graph_calibrated_on_those_images(
    tmp_path, small_calibration, monkeypatch, capsys
):
    full = quantize.calibration_from_files

    def small(paths, *, scale):  # 4 patches of 24x24: seconds, not ~15 s
        return full(paths, scale=scale, count=4, size=24)

    monkeypatch.setattr(_args, "calibration_from_files", small)  # what the CLI calls
    src, folder = _sample(tmp_path), _calibration_folder(tmp_path)
    out = {k: tmp_path / f"{k}.png" for k in ("own", "default")}
    assert _upscale(src, out["own"], "--weights", INT8, "--int8-calibration", str(folder)) == 0
    assert _upscale(src, out["default"], "--weights", INT8) == 0
    calibration = small([folder], scale=2)
    engine = resolve_backend("auto", torch.device("cpu"), "int8")[0]  # the CLI's default
    runner = Upscaler(
        lightsr.load(BASE), tile=None, precision="int8", backend=engine, calibration=calibration
    )
    assert np.array_equal(read_image(out["own"]), runner(read_image(src)))
    assert not np.array_equal(read_image(out["own"]), read_image(out["default"]))
    # a flag that would change nothing is refused, and nothing is written
    refused = tmp_path / "refused.png"
    assert _upscale(src, refused, "--weights", BASE, "--int8-calibration", str(folder)) == 2
    assert "--int8-calibration applies to int8, but this runs" in capsys.readouterr().err
    assert not refused.exists()


def test_export_int8_calibration_names_its_images_and_needs_int8(tmp_path, capsys, monkeypatch):
    full = quantize.calibration_from_files
    monkeypatch.setattr(
        _args, "calibration_from_files", lambda p, *, scale: full(p, scale=scale, count=4, size=24)
    )
    path = tmp_path / "m.onnx"
    folder = _calibration_folder(tmp_path)
    argv = ["export", "--onnx", "-o", str(path), "--int8-calibration", str(folder), "--weights"]
    assert main([*argv, BASE]) == 2
    assert "runs fp32: name an int8 entry (--weights NAME_int8 --onnx)" in capsys.readouterr().err
    assert not path.exists() and not path.with_name("m.onnx.json").exists()
    assert main([*argv, INT8]) == 0
    calibration = json.loads(path.with_name("m.onnx.json").read_text())["int8"]["calibration"]
    assert calibration.startswith(f"4 patches of 2 HR image(s) from {folder} ")
