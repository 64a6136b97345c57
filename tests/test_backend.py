"""``Upscaler(backend=...)``: fp32 through ONNX Runtime or OpenVINO equals torch (to float
rounding) through every path of the inference contract (tiles, 16-bit, alpha, self-ensemble),
tiles equal untiled exactly for a tile-exact model (fp32 and OpenVINO's int8), and the choice
(auto, errors) is said."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import ENGINES, requires_openvino, shared_path, synthetic_image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import lightsr  # noqa: E402
import lightsr.upscale  # noqa: E402
from lightsr.cli import main  # noqa: E402
from lightsr.data.io import write_image  # noqa: E402
from lightsr.errors import LightSRError  # noqa: E402
from lightsr.models.base import SRModel  # noqa: E402
from lightsr.quantize import (  # noqa: E402
    OrtModel,
    onnxruntime_model,
    openvino_available,
    openvino_model,
)
from lightsr.upscale import Upscaler, resolve_backend  # noqa: E402

CPU = torch.device("cpu")
#: ONNX Runtime's MLAS, OpenVINO's kernels and oneDNN sum in different orders: measured max
#: |diff| 4e-7 (A2F-SD) and 7e-7 (FMEN-S) with ONNX Runtime, 5e-7 and 4e-7 with OpenVINO, on
#: outputs up to 1.2; the bound leaves 100x for other CPUs' kernels.
FLOAT_TOL = 1e-4


def _seeded(arch: str, scale: int = 4) -> SRModel:
    torch.manual_seed(0)
    return lightsr.create_model(arch, scale=scale)


def _float(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]


def _pair(model, engine: str = "onnxruntime", **options) -> tuple[Upscaler, Upscaler]:
    """(``engine``, torch) fp32 Upscalers of ``model`` with the same options."""
    other = Upscaler(model, precision="fp32", backend=engine, **options)
    return other, Upscaler(model, precision="fp32", backend="torch", **options)


def _close_uint(a: np.ndarray, b: np.ndarray, *, levels: int = 1, share: float = 0.999) -> None:
    """Rounded outputs of two float paths within FLOAT_TOL: a value next to a rounding
    boundary may go either way (one level), and only a few do."""
    assert a.shape == b.shape and a.dtype == b.dtype
    diff = np.abs(a.astype(np.int64) - b)
    assert diff.max() <= levels
    assert (diff == 0).mean() >= share


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("arch", ["a2f_sd", "fmen_s"])
def test_engine_equals_torch_on_a_fixed_image(arch: str, engine: str) -> None:
    model = _seeded(arch)
    img = synthetic_image(40, 48)
    ort, ref = _pair(model, engine, tile=None)
    assert ort.onnx_model is not None and ref.onnx_model is None
    a, b = ort.upscale_tensor(_float(img)), ref.upscale_tensor(_float(img))
    assert float(b.abs().max()) > 0.1  # a real output, not a zero map that would always match
    assert float((a - b).abs().max()) <= FLOAT_TOL
    _close_uint(ort(img), ref(img))


def test_onnxruntime_equals_torch_with_the_authors_fmen_s() -> None:
    model = lightsr.load_official(shared_path("weights", "official", "fmen_s_x4.pt"))
    img = synthetic_image(48, 40, seed=3)
    ort, ref = _pair(model, tile=None)
    a, b = ort.upscale_tensor(_float(img)), ref.upscale_tensor(_float(img))
    assert float((a - b).abs().max()) <= FLOAT_TOL
    _close_uint(ort(img), ref(img))


@pytest.mark.parametrize("engine", ENGINES)
def test_tiled_engine_equals_untiled_exactly_for_a_tile_exact_model(engine: str) -> None:
    # FMEN-S has no global operation: with its receptive field as overlap a tile sees every
    # input its core depends on, and the engines' per-pixel sums do not depend on the
    # window size, so the stitched float output is bit-identical.
    model = _seeded("fmen_s")
    # Few, large tiles: every new window shape costs the engine a fresh plan.
    img = synthetic_image(100, 90, seed=1)
    untiled = Upscaler(model, tile=None, precision="fp32", backend=engine)
    tiled = Upscaler(model, tile=24, precision="fp32", backend=engine)
    assert len(lightsr.upscale._tile_windows(100, 24, tiled.overlap)) > 1  # really tiled
    assert torch.equal(tiled.upscale_tensor(_float(img)), untiled.upscale_tensor(_float(img)))


@pytest.mark.parametrize("engine", ENGINES)
def test_sixteen_bit_alpha_and_self_ensemble_go_through_the_engine(engine: str) -> None:
    model = _seeded("fmen_s", scale=2)
    rgb16 = synthetic_image(24, 20, dtype=np.uint16, seed=4)
    alpha16 = synthetic_image(24, 20, c=1, dtype=np.uint16, seed=5)
    rgba16 = np.concatenate([rgb16, alpha16], axis=2)
    ort, ref = _pair(model, engine, tile=None, alpha="model", self_ensemble=True)
    assert ort.onnx_model is not None and ort.onnx_model.engine == engine
    a, b = ort(rgba16), ref(rgba16)
    # FLOAT_TOL is 6.6 levels of 65535; measured: at most 1
    assert a.dtype == np.uint16 and a.shape == (48, 40, 4)
    _close_uint(a, b, levels=7, share=0.99)
    # and in float, where no rounding hides a difference
    ens = ort.upscale_tensor(_float(synthetic_image(24, 20, seed=6)))
    ens_ref = ref.upscale_tensor(_float(synthetic_image(24, 20, seed=6)))
    assert float((ens - ens_ref).abs().max()) <= FLOAT_TOL


@requires_openvino
def test_openvino_compiles_large_shapes_each_and_small_ones_once(monkeypatch) -> None:
    """The OpenVINO runner compiles a large input's shape (OpenVINO then plans its buffers)
    and runs every small input, whatever its size, in one model compiled for any shape; two
    compiled models are kept. Which model ran, compiled anew or not, the output is the same
    bit for bit and torch's within FLOAT_TOL."""
    import lightsr.quantize as quantize

    core = quantize.openvino_core()
    compiled: list[str] = []

    class Counting:  # the Core, counting compiles (its methods cannot be patched)
        def __getattr__(self, name):
            return getattr(core, name)

        def compile_model(self, model, *args):
            shape = model.input(0).get_partial_shape()
            compiled.append("any" if shape.is_dynamic else str(shape[2]))
            return core.compile_model(model, *args)

    monkeypatch.setattr(quantize, "openvino_core", Counting)
    model = openvino_model(_seeded("fmen_s", scale=2))
    ref = _seeded("fmen_s", scale=2).eval()
    side = int(quantize._OPENVINO_ANY_SHAPE_MAX_PIXELS**0.5) + 1  # just past small
    sizes = [(20, 24), (16, 28), (side, side), (20, 24), (side + 1, side), (side, side)]
    sizes += [(24, 18)]
    outs = [model(_float(synthetic_image(h, w, seed=h * w))) for h, w in sizes]
    # small sizes share "any"; each large shape compiles, evicting the least recently used:
    # the second large shape evicts the first (used before the fourth input, a small one),
    # which compiles anew and evicts "any", so the last small input compiles "any" again
    assert compiled == ["any", str(side), str(side + 1), str(side), "any"]
    assert torch.equal(outs[0], outs[3]) and torch.equal(outs[2], outs[5])
    with torch.no_grad():
        for (h, w), out in zip(sizes, outs, strict=True):
            want = ref(_float(synthetic_image(h, w, seed=h * w)))
            assert float((out - want).abs().max()) <= FLOAT_TOL, (h, w)


def test_session_threads_follow_torch() -> None:
    model = onnxruntime_model(_seeded("fmen_s", scale=2))
    before = torch.get_num_threads()
    x = _float(synthetic_image(16, 16))
    try:
        torch.set_num_threads(1)
        a = model(x)
        assert model.threads == 1
        torch.set_num_threads(2)
        b = model(x)
        assert model.threads == 2
    finally:
        torch.set_num_threads(before)
    assert float((a - b).abs().max()) <= FLOAT_TOL
    fixed = OrtModel(model.onnx, scale=2, min_input_size=1, threads=1)
    fixed(x)
    assert fixed.threads == 1


def test_auto_picks_the_engine_per_precision(monkeypatch) -> None:
    monkeypatch.setattr(lightsr.upscale, "openvino_available", lambda: True)
    monkeypatch.setattr(lightsr.upscale, "cpu_has_native_bf16", lambda: True)
    assert resolve_backend("auto", CPU, "fp32") == ("openvino", "auto: fp32 on the CPU")
    assert resolve_backend("auto", CPU, "int8") == ("openvino", "auto: int8 on the CPU")
    engine_safe = {"bf16_in_engines": True}
    assert resolve_backend("auto", CPU, "bf16", **engine_safe) == (
        "openvino",
        "auto: native bf16 on the CPU",
    )
    # OpenVINO rounds the image convs too: only a model measured safe that way (MAFFSRN x2 is
    # not: -0.054 dB on Set5) gets it; torch's bf16 keeps them fp32
    for unmeasured in (None, False):
        backend, why = resolve_backend("auto", CPU, "bf16", bf16_in_engines=unmeasured)
        assert backend == "torch" and "image convs" in why
    assert resolve_backend("auto", CPU, "fp16") == ("torch", "auto: fp16 runs in torch")
    assert resolve_backend("auto", torch.device("cuda"), "fp32")[0] == "torch"
    assert resolve_backend("auto", torch.device("cuda"), "bf16")[0] == "torch"
    assert resolve_backend("auto", CPU, "fp32", compile=True)[0] == "torch"
    assert resolve_backend("auto", CPU, "bf16", network=False)[0] == "torch"
    # torch has no int8: the library default keeps int8's first engine
    assert resolve_backend("torch", CPU, "int8")[0] == "onnxruntime"
    # emulated bf16 stays torch's (OpenVINO would run f32 and call it bf16)
    monkeypatch.setattr(lightsr.upscale, "cpu_has_native_bf16", lambda: False)
    backend, why = resolve_backend("auto", CPU, "bf16")
    assert backend == "torch" and "no native bf16" in why
    # each engine missing: the next one, and the reason names the extra
    monkeypatch.setattr(lightsr.upscale, "openvino_available", lambda: False)
    backend, why = resolve_backend("auto", CPU, "int8")
    assert backend == "onnxruntime" and "lightsr[openvino]" in why
    monkeypatch.setattr(lightsr.upscale, "cpu_has_native_bf16", lambda: True)
    backend, why = resolve_backend("auto", CPU, "bf16", **engine_safe)
    assert backend == "torch" and "lightsr[openvino]" in why
    assert resolve_backend("auto", CPU, "fp32") == (
        "onnxruntime",
        "auto: fp32 on the CPU, OpenVINO not installed",
    )
    monkeypatch.setattr(lightsr.upscale, "onnxruntime_available", lambda: False)
    backend, why = resolve_backend("auto", CPU, "fp32")
    assert backend == "torch" and "lightsr[openvino]" in why


@pytest.mark.parametrize(
    ("device", "precision", "compile", "fix"),
    [
        ("cuda", "fp32", False, "--device cpu"),
        ("cpu", "bf16", False, "--precision fp32"),
        ("cpu", "fp16", False, "--precision fp32"),
        ("cpu", "fp32", True, "drop --compile"),
    ],
)
def test_onnxruntime_refuses_what_it_cannot_run(device, precision, compile, fix) -> None:
    with pytest.raises(LightSRError, match=fix):
        resolve_backend("onnxruntime", torch.device(device), precision, compile=compile)


@pytest.mark.parametrize(
    ("device", "precision", "native_bf16", "compile", "fix"),
    [
        ("cuda", "fp32", True, False, "--device cpu"),
        ("cpu", "fp16", True, False, "--precision fp32"),
        ("cpu", "bf16", False, False, "lacks"),
        ("cpu", "int8", True, True, "drop --compile"),
    ],
)
def test_openvino_refuses_what_it_cannot_run(
    monkeypatch, device, precision, native_bf16, compile, fix
) -> None:
    monkeypatch.setattr(lightsr.upscale, "cpu_has_native_bf16", lambda: native_bf16)
    with pytest.raises(LightSRError, match=fix):
        resolve_backend("openvino", torch.device(device), precision, compile=compile)
    if precision == "bf16":  # the same CPU with native bf16 may
        monkeypatch.setattr(lightsr.upscale, "cpu_has_native_bf16", lambda: True)
        assert resolve_backend("openvino", CPU, "bf16") == ("openvino", "asked for")


def test_unknown_backend_and_missing_engines_are_named(monkeypatch) -> None:
    model = _seeded("fmen_s", scale=2)
    with pytest.raises(LightSRError, match="not one of torch, onnxruntime, openvino, auto"):
        Upscaler(model, backend="tensorrt")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(LightSRError, match=r"lightsr\[openvino\]"):
        Upscaler(model, precision="fp32", backend="openvino")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(LightSRError, match=r"lightsr\[onnx\]"):
        Upscaler(model, precision="fp32", backend="onnxruntime")


def test_start_line_says_which_backend_and_why(tmp_path, capsys, monkeypatch) -> None:
    model = _seeded("fmen_s", scale=2)
    # where OpenVINO is absent auto falls back to ONNX Runtime and says why
    monkeypatch.setattr(lightsr.upscale, "openvino_available", lambda: False)
    line = Upscaler(model, tile=None, precision="fp32", backend="auto").describe()
    assert "fp32, onnxruntime (auto: fp32 on the CPU, OpenVINO not installed), untiled" in line
    assert ", torch, " in Upscaler(model, tile=None, precision="fp32").describe()
    # the CLI defaults to auto, and --backend torch is taken as asked
    write_image(tmp_path / "in.png", synthetic_image(12, 10))
    lightsr.save(model, tmp_path / "net.safetensors")
    argv = ["upscale", str(tmp_path / "in.png"), "--checkpoint", str(tmp_path / "net.safetensors")]
    assert main([*argv, "-o", str(tmp_path / "a"), "--quiet", "--precision", "fp32"]) == 0
    assert "fp32, onnxruntime (auto: fp32 on the CPU, OpenVINO" in capsys.readouterr().err
    assert main([*argv, "-o", str(tmp_path / "b"), "--quiet", "--backend", "torch"]) == 0
    assert ", torch, " in capsys.readouterr().err
    if openvino_available():
        monkeypatch.undo()
        assert main([*argv, "-o", str(tmp_path / "c"), "--quiet", "--precision", "fp32"]) == 0
        assert "fp32, openvino (auto: fp32 on the CPU)" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ENGINES)
def test_bicubic_runs_in_torch_under_auto_and_an_explicit_engine_says_why(engine: str) -> None:
    bicubic = lightsr.create_model("bicubic", scale=2)
    runner = Upscaler(bicubic, tile=None, precision="fp32", backend="auto")
    assert (runner.backend, runner.backend_reason) == ("torch", "auto: no network to export")
    fix = f"the {engine} backend could not export.*--backend torch"
    with pytest.raises(LightSRError, match=fix):
        Upscaler(bicubic, tile=None, precision="fp32", backend=engine)


def test_the_export_is_cached_checked_and_keyed_by_the_weights(tmp_path) -> None:
    from lightsr.deploy import reparameterize
    from lightsr.quantize import exported_graph_bytes

    model = _seeded("fmen_s", scale=2)
    folded = reparameterize(model).eval()
    x = torch.rand(1, 3, 20, 24)
    first, cached = exported_graph_bytes(folded, cache_dir=tmp_path)
    assert not cached and len(list(tmp_path.glob("*.onnx"))) == 1
    again, cached = exported_graph_bytes(folded, cache_dir=tmp_path)
    assert cached and again == first
    # the engine built from the cached graph computes the model
    runner = onnxruntime_model(model, cache_dir=tmp_path)
    assert (runner(x) - folded(x)).abs().max() <= FLOAT_TOL
    # other weights: another entry, not the cached graph
    other = reparameterize(_seeded("fmen_s", scale=2)).eval()
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    assert exported_graph_bytes(other, cache_dir=tmp_path)[1] is False
    assert len(list(tmp_path.glob("*.onnx"))) == 2
    # a damaged entry (its bytes no longer match their hash) is exported again
    (entry,) = [p for p in tmp_path.glob("*.onnx") if p.read_bytes() == first]
    entry.write_bytes(first[:-10])
    remade, cached = exported_graph_bytes(folded, cache_dir=tmp_path)
    assert not cached and remade == first


def test_a_cache_entry_the_engine_cannot_load_is_made_again(tmp_path) -> None:
    import hashlib

    from lightsr.deploy import reparameterize
    from lightsr.quantize import _export_example, _export_key

    model = _seeded("fmen_s", scale=2)
    folded = reparameterize(model).eval()
    key = _export_key(folded, _export_example(folded))
    junk = b"not an onnx graph"
    (tmp_path / f"{key}-{hashlib.sha256(junk).hexdigest()[:16]}.onnx").write_bytes(junk)
    x = torch.rand(1, 3, 20, 24)
    runner = onnxruntime_model(model, cache_dir=tmp_path)
    assert (runner(x) - folded(x)).abs().max() <= FLOAT_TOL
    (entry,) = tmp_path.glob(f"{key}-*.onnx")  # the refused entry is gone, the export kept
    assert entry.read_bytes() == runner.onnx


# Two OpenVINO runners dropped in the order they were made, then Ctrl-C. Run in a child: the
# failure this guards against kills the whole process (SIGSEGV, no traceback).
_TWO_RUNNERS_THEN_CTRL_C = """
import gc, os, signal
import numpy as np, torch
import lightsr
from lightsr.quantize import openvino_model

torch.manual_seed(0)
first, second = (openvino_model(lightsr.create_model("fsrcnn", scale=s)) for s in (2, 3))
first(torch.rand(1, 3, 12, 12))
second(torch.rand(1, 3, 12, 12))
del first
gc.collect()
del second
gc.collect()
handled = []
signal.signal(signal.SIGINT, lambda *_: handled.append(True))
os.kill(os.getpid(), signal.SIGINT)
print("handled" if handled else "not handled")
"""


@requires_openvino
def test_ctrl_c_after_openvino_runners_come_and_go_is_handled():
    """Each openvino.Core swaps the thread's alternate signal stack and puts the previous one
    back when it goes: Cores dropped in creation order left a freed stack, and Ctrl-C then
    killed the process. lightsr keeps one Core (quantize.openvino_core)."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _TWO_RUNNERS_THEN_CTRL_C], capture_output=True, text=True
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-500:]}"
    assert done.stdout.strip().endswith("handled") and "not" not in done.stdout
