"""lightsr.profile: MAC / activation / conv counts against hand counts, the papers' tables and
the NTIRE figures; memory and runtime measurements; the CLI and the results files."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path
from torch import nn

import lightsr
from lightsr.cli import main
from lightsr.errors import ConfigError
from lightsr.layers.weight_norm import WNConv2d
from lightsr.profile import (
    count_ops,
    load_psnr_results,
    lr_size_for_output,
    measure_peak_memory,
    multi_adds_720p,
    plot_psnr_vs_multiadds,
    profile,
    profile_all,
    write_results,
)

# ---------------------------------------------------------------------------------------------
# Small modules with hand-countable costs (module level: the memory test pickles them into a
# spawned process).
# ---------------------------------------------------------------------------------------------


class TwoLayer(nn.Module):
    """conv3x3 3->8 (pad 1, a module) then F.conv2d 8->4 3x3 (pad 0, a bare function call)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.w2 = nn.Parameter(torch.randn(4, 8, 3, 3))
        self.scale = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(torch.relu(self.conv(x)), self.w2)


class Mixed(nn.Module):
    """Depthwise 5x5, transposed 4x4/2 (groups 2), linear over the width, weight-norm conv."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(6, 6, 5, padding=2, groups=6)
        self.up = nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1, groups=2)
        self.fc = nn.Linear(20, 7)
        self.wn = WNConv2d(4, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.dw(x))  # (1, 4, 2H, 2W) with W = 10 -> width 20
        return self.wn(self.fc(y))


class NeedsItem(nn.Module):
    """A forward that cannot run on the meta device (``.item()``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.scale = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * float(x.mean().item() + 1.0)


class Allocates(nn.Module):
    """Holds ``held_mib`` of weights; its forward touches ``temp_mib`` of scratch memory."""

    def __init__(self, held_mib: int, temp_mib: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.register_buffer("held", torch.ones(held_mib * 2**18))
        self.temp = temp_mib * 2**18
        self.scale = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scratch = torch.ones(self.temp)  # every page written: resident
        return self.conv(x) + scratch[:1] + self.held[:1]


# ---------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_two_layer_hand_count_includes_functional_conv(device):
    count = count_ops(TwoLayer(), (10, 12), device=device)
    conv1 = (8 * 10 * 12) * (3 * 3 * 3)  # out elements x in/groups x kernel = 25,920
    conv2 = (4 * 8 * 10) * (8 * 3 * 3)  # F.conv2d, valid padding: 23,040
    assert count.device == device
    assert count.macs == conv1 + conv2 == 48_960
    assert count.activations == 8 * 10 * 12 + 4 * 8 * 10 == 1_280
    assert count.convs == 2
    assert [r.scope for r in count.records] == ["conv", ""]  # F.conv2d runs in the root


def test_grouped_transposed_linear_and_weight_norm_hand_count():
    count = count_ops(Mixed(), (5, 10), in_channels=6)
    dw = 6 * 5 * 10 * (1 * 25)  # depthwise: in/groups = 1
    up = (6 * 5 * 10) * (2 * 16)  # transposed: input elements x out/groups x kernel
    fc = (4 * 10 * 7) * 20  # output elements x contraction (20)
    wn = 5 * 10 * 7 * 4  # WNConv2d runs F.conv2d
    assert [r.macs for r in count.records] == [dw, up, fc, wn]
    assert count.conv_macs == dw + up + wn and count.matmul_macs == fc
    assert count.convs == 3  # the linear layer is not a conv
    assert count.activations == 6 * 5 * 10 + 4 * 10 * 20 + 5 * 10 * 7
    assert [r.groups for r in count.records if r.kind == "conv"] == [6, 2, 1]


def test_meta_and_cpu_counts_agree_and_match_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    model = lightsr.create_model("a2f_sd", scale=2)
    meta, cpu = (count_ops(model, (20, 24), device=d) for d in ("meta", "cpu"))
    # The ops differ (inference_mode on the CPU shows aten.conv2d before it decomposes into
    # aten.convolution); what is counted must not.
    strip = [(r.scope, r.kernel, r.groups, r.out_shape, r.macs) for r in meta.records]
    assert strip == [(r.scope, r.kernel, r.groups, r.out_shape, r.macs) for r in cpu.records]
    flops = FlopCounterMode(display=False)
    with flops, torch.no_grad():
        model(torch.rand(1, 3, 20, 24))
    assert flops.get_total_flops() == 2 * meta.macs  # it counts 2 FLOPs per MAC


def test_count_falls_back_to_cpu_when_meta_cannot_run():
    count = count_ops(NeedsItem(), (4, 6))
    assert count.device == "cpu" and count.macs == 2 * 4 * 6 * 3


def test_lr_size_for_720p():
    assert [lr_size_for_output(s) for s in (2, 3, 4)] == [(360, 640), (240, 427), (180, 320)]


# ---------------------------------------------------------------------------------------------
# Papers' and challenges' figures
# ---------------------------------------------------------------------------------------------


def test_fmen_s_x4_ntire_figures():
    train = lightsr.create_model("fmen_s", scale=4)
    folded = lightsr.reparameterize(train)
    report = profile(folded, runtime=False, memory=False)
    assert report.form == "folded" and report.params == 341_066
    assert report.ntire_macs == pytest.approx(22.28e9, rel=0.005)
    assert report.ntire_activations == pytest.approx(72.09e6, rel=0.005)
    assert report.ntire_convs == 34
    # training form: RRRB expansions and BN paths cost more than their folded 3x3 convs
    assert count_ops(train, 256).macs > report.ntire_macs


@pytest.mark.parametrize(
    ("name", "scale", "paper_g"),
    [
        ("a2f_sd", 2, 71.2),
        ("a2f_sd", 3, 31.9),
        ("a2f_sd", 4, 18.2),
        ("a2f_s", 4, 18.6),
        ("a2f_m", 4, 56.7),
        ("a2f_l", 4, 77.2),
    ],
)
def test_a2f_multi_adds_match_paper(name, scale, paper_g):
    macs = multi_adds_720p(lightsr.create_model(name, scale=scale))
    assert macs / 1e9 == pytest.approx(paper_g, rel=0.02)


# Full count of the authors' network (every conv), and the paper's figures.
MAFFSRN_FULL = {("maffsrn", 2): 86.07, ("maffsrn", 3): 39.96, ("maffsrn", 4): 23.77}
MAFFSRN_PAPER = {("maffsrn", 2): 77.2, ("maffsrn", 3): 34.2, ("maffsrn", 4): 19.3}


@pytest.mark.parametrize(
    ("name", "scale", "full_g", "paper_g"),
    [(n, s, MAFFSRN_FULL[n, s], MAFFSRN_PAPER[n, s]) for n, s in MAFFSRN_FULL]
    + [("maffsrn_l", 4, 44.49, 38.6)],
)
def test_maffsrn_multi_adds_full_count_and_what_the_paper_left_out(name, scale, full_g, paper_g):
    model = lightsr.create_model(name, scale=scale)
    count = count_ops(model, lr_size_for_output(scale))
    assert count.macs / 1e9 == pytest.approx(full_g, rel=0.01)
    # The paper's figures are the count without the weight-normalised convs (head, the 1x1
    # fusion convs, both tail branches); see the lightsr.profile docstring.
    wn = {n for n, m in model.named_modules() if isinstance(m, WNConv2d)}
    without_wn = sum(r.macs for r in count.records if r.scope not in wn)
    assert without_wn / 1e9 == pytest.approx(paper_g, rel=0.005)


# ---------------------------------------------------------------------------------------------
# The report, memory, runtime
# ---------------------------------------------------------------------------------------------


def test_profile_report_is_consistent_with_its_parts():
    model = lightsr.create_model("a2f_sd", scale=4)
    report = profile(model, threads=1, runtime_size=24, memory=False, warmup=1, reps=3)
    assert report.params == report.params_training == 319_672
    # folding merges each WN conv's g and v into one weight
    assert report.params_folded == sum(
        p.numel() for p in lightsr.reparameterize(model).parameters()
    )
    assert report.params_folded < report.params
    assert report.multi_adds_720p == multi_adds_720p(model)
    assert report.ntire_macs == count_ops(model, 256).macs
    assert report.runtime_reps == 3 and report.threads == 1
    assert report.runtime_min_ms <= report.runtime_ms
    macs24 = count_ops(model, 24).macs
    assert report.achieved_gflops == pytest.approx(2 * macs24 / report.runtime_ms / 1e6)
    assert report.fraction_of_peak_fp32 == pytest.approx(
        report.achieved_gflops / report.peak_gflops_fp32
    )
    d = report.to_dict()
    assert json.loads(json.dumps(d))["lr_size_720p"] == [180, 320]
    assert not model.folded and next(model.parameters()).device.type == "cpu"


def test_peak_memory_counts_forward_scratch_not_weights():
    # 48 MiB of weights sit in the baseline; the forward touches 32 MiB of scratch.
    result = measure_peak_memory(Allocates(48, 32), 8, threads=1)
    assert result["peak_memory_mb"] is not None, result["memory_method"]
    assert 31 <= result["peak_memory_mb"] < 40


def test_scale_mismatch_and_missing_cuda_are_clear_errors():
    model = TwoLayer()
    with pytest.raises(ConfigError, match="x1 model"):
        profile(model, scale=2, runtime=False, memory=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            profile(model, device="cuda", memory=False)


# ---------------------------------------------------------------------------------------------
# profile_all, files, CLI
# ---------------------------------------------------------------------------------------------


def test_profile_all_writes_json_and_csv(tmp_path):
    reports = profile_all(models=["a2f_sd"], scales=[2, 4], runtime=False, memory=False)
    assert [(r.scale, r.form) for r in reports] == [
        (2, "training"),
        (2, "folded"),
        (4, "training"),
        (4, "folded"),
    ]
    train4, folded4 = reports[2:]
    assert folded4.params == train4.params_folded and folded4.params_training is None
    # weight norm folds without changing any convolution
    assert folded4.multi_adds_720p == train4.multi_adds_720p
    write_results(reports, tmp_path / "p.json", csv_path=tmp_path / "p.csv", metadata={"k": 1})
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["metadata"]["k"] == 1
    assert data["results"][2]["multi_adds_720p"] == train4.multi_adds_720p
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("model,scale,form,params")
    assert lines[3].startswith(f"a2f_sd,4,training,{train4.params},")


def test_psnr_results_reader_and_plot(tmp_path):
    (tmp_path / "eval_a.json").write_text(
        json.dumps(
            {
                "results": [
                    {
                        "model": "a2f_sd",
                        "scale": 4,
                        "dataset": "Set5",
                        "psnr": 32.06,
                        "images": [{"name": "baby.png", "psnr": 34.1}],
                    },
                    {"model": "a2f_sd", "scale": 2, "dataset": "Set5", "psnr": 37.9},
                    {"model": "maffsrn", "scale": 4, "dataset": "Set14", "psnr": 28.5},
                ]
            }
        )
    )
    (tmp_path / "eval_b.json").write_text(
        json.dumps({"model": "maffsrn", "x4": {"Set5": {"psnr_y": 32.18, "ssim_y": 0.89}}})
    )
    (tmp_path / "profile_all.json").write_text(json.dumps({"model": "x", "psnr": 1.0}))
    psnr = load_psnr_results(tmp_path)
    assert psnr == {"a2f_sd": 32.06, "maffsrn": 32.18}
    pytest.importorskip("matplotlib")
    reports = profile_all(models=["a2f_sd"], scales=[4], runtime=False, memory=False)
    n = plot_psnr_vs_multiadds(reports, psnr, tmp_path / "fig.png")
    assert n == 1 and (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_profile_json_counts_only(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(
        [
            "profile",
            "a2f_sd",
            "--scale",
            "3",
            "--folded",
            "--no-runtime",
            "--no-memory",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["form"] == "folded" and report["lr_size_720p"] == [240, 427]
    assert report["multi_adds_720p"] == multi_adds_720p(lightsr.create_model("a2f_sd", scale=3))
    assert "Multi-Adds 720p" in capsys.readouterr().out


def test_cli_errors_name_the_fix(capsys):
    assert main(["profile", "--no-runtime"]) == 2
    assert "name a model" in capsys.readouterr().err
    assert main(["profile", "a2f_sd", "--all"]) == 2
    assert "--all profiles every model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "scale", "paper_g"),
    [("carn", 2, 222.8), ("carn", 4, 90.9), ("imdn", 2, 158.8), ("imdn", 4, 40.9)],
)
def test_baseline_multi_adds_match_their_papers(name, scale, paper_g):
    # Independent published counts (CARN, ECCV 2018; IMDN, ACM MM 2019), full networks.
    macs = multi_adds_720p(lightsr.create_model(name, scale=scale))
    assert macs / 1e9 == pytest.approx(paper_g, rel=0.005)


def test_profile_all_reuses_measurements_only_when_folding_changes_nothing():
    opts = dict(scales=[4], memory=False, runtime_size=16, reps=3, warmup=0, flops_peak=False)
    plain = profile_all(models=["fsrcnn"], **opts)
    assert plain[1].runtime_ms == plain[0].runtime_ms
    assert any("unchanged" in n for n in plain[1].notes)
    wn = profile_all(models=["a2f_s"], **opts)  # WNConv2d -> Conv2d: a different network
    assert not any("unchanged" in n for n in wn[1].notes)
    assert wn[1].runtime_reps == 3


def test_cli_profiles_an_authors_checkpoint(tmp_path):
    path = shared_path("weights", "official", "a2f_sd_x4.pt")
    out = tmp_path / "r.json"
    argv = ["profile", "--checkpoint", str(path), "--no-runtime", "--no-memory"]
    assert main([*argv, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["model"], report["scale"], report["params"]) == ("a2f_sd", 4, 319_672)
    assert report["multi_adds_720p"] / 1e9 == pytest.approx(18.2, rel=0.02)
    assert main([*argv, "--scale", "2"]) == 2  # a x4 file is not a x2 model


def test_cli_all_writes_csv_without_json(tmp_path, capsys, monkeypatch):
    import lightsr.cli.profile_cmd

    small = profile_all(models=["fsrcnn"], scales=[2], runtime=False, memory=False)
    monkeypatch.setattr(lightsr.cli.profile_cmd, "profile_all", lambda **kw: small)
    out = tmp_path / "all.csv"
    assert main(["profile", "--all", "--no-runtime", "--no-memory", "--csv", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and lines[1].startswith(f"fsrcnn,2,training,{small[0].params},")
    assert not list(tmp_path.glob("*.json"))
    assert f"wrote {out}" in capsys.readouterr().out
    # --csv alone with one model would silently write nothing: refused instead
    assert main(["profile", "fsrcnn", "--no-runtime", "--csv", str(out)]) == 2
    assert "with --all" in capsys.readouterr().err


def test_cli_plot_checks_matplotlib_before_the_run(monkeypatch, capsys, tmp_path):
    import sys

    import lightsr.cli.profile_cmd

    ran = []
    monkeypatch.setattr(lightsr.cli.profile_cmd, "profile_all", lambda **kw: ran.append(kw) or [])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    rc = main(["profile", "--all", "--no-runtime", "--plot", str(tmp_path / "f.png")])
    assert rc == 2 and ran == []
    assert "pip install" in capsys.readouterr().err


def test_cpu_bf16_detection_reads_flags_and_assumes_none_when_unreadable(monkeypatch):
    import builtins

    import lightsr.hardware
    import lightsr.profile
    import lightsr.upscale

    # one implementation, used by upscale and profile too
    assert lightsr.upscale.cpu_has_native_bf16 is lightsr.hardware.cpu_has_native_bf16
    assert lightsr.profile.cpu_has_native_bf16 is lightsr.hardware.cpu_has_native_bf16
    monkeypatch.setattr(lightsr.hardware, "cpu_flags", lambda: {"avx512f", "amx_bf16"})
    assert lightsr.hardware.cpu_has_native_bf16()
    monkeypatch.undo()
    real_open = builtins.open

    def no_cpuinfo(path, *a, **k):
        if str(path) == "/proc/cpuinfo":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    assert lightsr.hardware.cpu_flags() is None
    assert lightsr.hardware.cpu_has_native_bf16() is False


def test_cpu_kind_names_the_instruction_set_the_vm_shows(monkeypatch):
    # The same Zen 4 (family 25, model 17) was lent showing AVX2 only and later AVX-512 with
    # bf16: its benchmark files must not overwrite each other.
    import lightsr.hardware as hw

    assert hw.cpu_isa(["avx2", "fma"]) == "avx2"
    assert hw.cpu_isa(["avx2", "avx512f", "avx512_vnni"]) == "avx512"
    assert hw.cpu_isa(["avx2", "avx512f", "avx512_bf16", "avx512_vnni"]) == "avx512-bf16"
    assert hw.cpu_isa(["avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]) == "amx"
    assert hw.cpu_isa([]) == "sse"
    fields = {"model name": "AMD EPYC", "cpu family": "25", "model": "17"}
    monkeypatch.setattr(hw, "_cpuinfo_field", fields.get)
    monkeypatch.setattr(hw, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    avx2 = hw.cpu_kind()
    monkeypatch.setattr(hw, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert (avx2, hw.cpu_kind()) == (
        "AMD EPYC (family 25, model 17, avx2)",
        "AMD EPYC (family 25, model 17, avx512-bf16)",
    )
    monkeypatch.setattr(hw, "cpu_flags", lambda: None)
    assert hw.cpu_kind() == "AMD EPYC (family 25, model 17)"
