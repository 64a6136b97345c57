"""``precision="auto"``: bf16 only where it is native and the model is measured bf16-safe.

The rule (lightsr.hardware.auto_precision) is checked both ways by faking the CPU flags; the
bf16-safety declarations are re-measured on Set5 with the authors' weights (slow, shared).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import shared_path, synthetic_image

import lightsr
import lightsr.hardware
from lightsr.cli import main
from lightsr.data.io import read_image
from lightsr.data.resize import modcrop
from lightsr.errors import LightSRError
from lightsr.hardware import auto_precision, device_has_native_bf16
from lightsr.metrics import psnr
from lightsr.quantize import openvino_available
from lightsr.registry import get_spec, list_models
from lightsr.upscale import Upscaler, resolve_precision

CPU = torch.device("cpu")

#: Every model declared bf16-safe, and the weights its declaration was measured with: an
#: authors' file (``*.pt``, in ../shared) or a lightsr hub entry (bundled).
#: A new declaration without an entry here fails test_every_declaration_has_a_measurement.
# One file per model keeps the suite short (x2 Set5 in emulated bf16 takes ~40 s on 2 cores);
# A2F-SD x2 measured -0.004 dB the same way (benchmarks/bench_backends.py).
MEASURED_WITH = {
    "a2f_sd": ("a2f_sd_x4.pt",),
    "fmen_s": ("fmen_s_x4.pt",),
    "maffsrn": ("maffsrn_x4",),
}
#: Per model and scale, the weights ``bf16_engine_scales`` (OpenVINO's bf16, image convs
#: included) was measured with; False: measured and declared unsafe, checked to lose more.
ENGINE_MEASURED_WITH = {
    ("a2f_sd", 2): "a2f_sd_x2",
    ("a2f_sd", 3): "a2f_sd_x3",
    ("a2f_sd", 4): "a2f_sd_x4.pt",
    ("fmen_s", 4): "fmen_s_x4.pt",
    ("maffsrn", 2): False,
    ("maffsrn", 3): "maffsrn_x3",
    ("maffsrn", 4): "maffsrn_x4",
}
#: The ones re-measured below: one scale per model and the declared-unsafe one keep the suite
#: short; `python benchmarks/bf16_declarations.py` measures them all.
ENGINE_REMEASURED = (("a2f_sd", 4), ("fmen_s", 4), ("maffsrn", 2), ("maffsrn", 4))


def _measured_model(weights: str):
    if weights.endswith(".pt"):
        return lightsr.load_official(shared_path("weights", "official", weights))
    return lightsr.hub.load_weights(weights)


def _flags(monkeypatch, flags):
    monkeypatch.setattr(lightsr.hardware, "cpu_flags", lambda: flags)


def _tiny_safe_model():
    torch.manual_seed(0)
    model = lightsr.create_model("fmen_s", scale=2)
    assert model.bf16_safe is True  # set from the registration
    return model


# ---------------------------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------------------------


def test_auto_never_picks_emulated_bf16(monkeypatch):
    # Zen 1 / Ice Lake-like flags: bf16 would be emulated, slower than fp32
    _flags(monkeypatch, frozenset({"avx2", "fma", "avx512f", "avx512_vnni"}))
    assert lightsr.hardware.cpu_has_native_bf16() is False
    assert auto_precision(CPU, bf16_safe=True) == ("fp32", "auto: no native bf16 on this CPU")
    runner = Upscaler(_tiny_safe_model(), tile=None)
    assert runner.precision == "fp32"
    assert "fp32 (auto: no native bf16 on this CPU)" in runner.describe()


def test_auto_picks_bf16_where_native_and_declared_safe(monkeypatch):
    for flags in ({"avx512f", "avx512_bf16"}, {"amx_tile", "amx_bf16"}):
        _flags(monkeypatch, frozenset(flags))
        precision, why = auto_precision(CPU, bf16_safe=True)
        assert precision == "bf16" and "native bf16" in why
    runner = Upscaler(_tiny_safe_model(), tile=None)
    assert runner.precision == "bf16"
    assert "bf16 (auto: native bf16 on this CPU" in runner.describe()


def test_auto_keeps_fp32_for_models_not_measured_safe(monkeypatch):
    _flags(monkeypatch, frozenset({"avx512_bf16"}))
    assert auto_precision(CPU, bf16_safe=None)[0] == "fp32"
    assert auto_precision(CPU, bf16_safe=False)[0] == "fp32"
    torch.manual_seed(0)
    runner = Upscaler(lightsr.create_model("maffsrn_l", scale=2), tile=None)
    assert runner.precision == "fp32"
    assert "not measured bf16-safe" in runner.precision_reason


def test_auto_bf16_runs_in_openvino_only_at_the_scales_measured_there(monkeypatch):
    # MAFFSRN is bf16-safe in torch (image convs fp32) at every scale, but OpenVINO's bf16,
    # which rounds the image convs too, lost 0.054 dB on Set5 at x2: x2 stays in torch.
    _flags(monkeypatch, frozenset({"avx512f", "avx512_bf16"}))
    monkeypatch.setattr(lightsr.upscale, "openvino_available", lambda: True)
    declared = {s: lightsr.create_model("maffsrn", scale=s).bf16_in_engines for s in (2, 3, 4)}
    assert declared == {2: False, 3: True, 4: True}
    torch.manual_seed(0)
    runner = Upscaler(lightsr.create_model("maffsrn", scale=2), tile=None, backend="auto")
    assert (runner.precision, runner.backend) == ("bf16", "torch")
    assert "image convs" in runner.backend_reason
    assert lightsr.reparameterize(lightsr.create_model("maffsrn", scale=4)).bf16_in_engines


def test_auto_keeps_fp32_when_the_flags_cannot_be_read(monkeypatch):
    _flags(monkeypatch, None)
    assert auto_precision(CPU, bf16_safe=True)[0] == "fp32"


def test_auto_on_cuda_asks_the_gpu(monkeypatch):
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    for supported, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported, **kw: s)
        assert device_has_native_bf16(gpu)[0] is supported
        assert auto_precision(gpu, bf16_safe=True)[0] == expected


def test_named_precisions_are_taken_as_asked_and_int8_only_on_cpu():
    assert resolve_precision("fp32", CPU) == ("fp32", "asked for")
    assert resolve_precision("int8", CPU) == ("int8", "asked for")
    with pytest.raises(LightSRError, match="int8 runs on the CPU"):
        resolve_precision("int8", torch.device("cuda"))
    with pytest.raises(LightSRError, match="auto, fp32"):
        resolve_precision("fp8", CPU)


def test_auto_is_the_default_and_explicit_fp32_is_unchanged(monkeypatch):
    _flags(monkeypatch, frozenset({"avx2"}))
    model = _tiny_safe_model()
    img = synthetic_image(12, 10)
    auto = Upscaler(model, tile=None)
    assert auto.precision_reason.startswith("auto:")
    assert np.array_equal(auto(img), Upscaler(model, tile=None, precision="fp32")(img))


def test_upscale_command_prints_the_precision_and_why(monkeypatch, tmp_path, capsys):
    _flags(monkeypatch, frozenset({"avx2", "fma"}))
    src = tmp_path / "in.png"
    lightsr.write_image(src, synthetic_image(16, 16))
    rc = main(["upscale", str(src), "-o", str(tmp_path / "out"), "--model", "bicubic"])
    assert rc == 0
    assert "fp32 (auto: no native bf16 on this CPU)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The declarations
# ---------------------------------------------------------------------------------------------


def test_every_declaration_has_a_measurement():
    declared = {n for n in list_models() if get_spec(n).bf16_safe}
    assert declared == set(MEASURED_WITH)
    in_engines = {(n, s) for n in list_models() for s in get_spec(n).bf16_engine_scales}
    assert in_engines == {key for key, weights in ENGINE_MEASURED_WITH.items() if weights}


def _set5_psnr(runner: Upscaler, scale: int) -> float:
    hr_dir = shared_path("data", "Set5", "HR")
    lr_dir = shared_path("data", "Set5", "LR_bicubic", f"X{scale}")
    values = []
    for hr_path in sorted(hr_dir.glob("*.png")):
        hr = modcrop(read_image(hr_path), scale)
        lr = read_image(lr_dir / f"{hr_path.stem}x{scale}.png")
        values.append(psnr(runner(lr), hr, crop_border=scale, y_channel=True))
    return float(np.mean(values))


@pytest.mark.slow
@pytest.mark.parametrize("name,file", [(n, f) for n, files in MEASURED_WITH.items() for f in files])
def test_declared_bf16_safe_models_stay_within_0_02_db_of_fp32(name, file):
    # On a CPU without native bf16 this is emulated: numerically the same, only slower
    # (bf16 inputs, fp32 accumulation), so the measurement holds for native machines too.
    model = _measured_model(file)
    assert model.arch_name == name and model.bf16_safe is True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no native bf16" on CPUs without it
        bf16 = Upscaler(model, tile=None, precision="bf16")
    fp32 = Upscaler(model, tile=None, precision="fp32")
    delta = _set5_psnr(bf16, model.scale) - _set5_psnr(fp32, model.scale)
    assert delta != 0.0  # bf16 really ran
    assert abs(delta) <= 0.02, f"{name} ({file}): bf16 - fp32 = {delta:+.4f} dB on Set5"


@pytest.mark.slow
@pytest.mark.skipif(
    not (lightsr.hardware.cpu_has_native_bf16() and openvino_available()),
    reason="OpenVINO's bf16 runs only on a CPU with native bf16 (AVX512-BF16/AMX in "
    "/proc/cpuinfo), with OpenVINO installed (pip install lightsr[openvino])",
)
@pytest.mark.parametrize(("name", "scale"), ENGINE_REMEASURED)
def test_openvino_bf16_stays_within_0_02_db_of_fp32_where_declared(name, scale):
    # What `lightsr upscale` runs by default on such a CPU where declared (precision auto ->
    # bf16, backend auto -> OpenVINO). OpenVINO computes every layer in bf16, image convs
    # included, so torch's measurement above does not carry over: MAFFSRN x2 loses more.
    weights = ENGINE_MEASURED_WITH[(name, scale)] or f"{name}_x{scale}"
    model = _measured_model(weights)
    assert (model.arch_name, model.scale) == (name, scale)
    assert model.bf16_in_engines is bool(ENGINE_MEASURED_WITH[(name, scale)])
    bf16 = Upscaler(model, tile=None, precision="bf16", backend="openvino")
    fp32 = Upscaler(model, tile=None, precision="fp32")
    delta = _set5_psnr(bf16, scale) - _set5_psnr(fp32, scale)
    assert delta != 0.0  # bf16 really ran
    measured = f"{name} x{scale} ({weights}): OpenVINO bf16 - fp32 = {delta:+.4f} dB on Set5"
    assert (abs(delta) <= 0.02) is model.bf16_in_engines, measured
