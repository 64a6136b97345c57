"""Cost of a model, measured the way the papers and the NTIRE efficient-SR challenges measure it.

One report type, :class:`ProfileReport`, made by :func:`profile`:

* **Parameters** — ``sum(p.numel())`` of the model as given (training form: weight-normalised
  convs count ``weight_g`` and ``weight_v``, FMEN counts its RRRB expansions and BatchNorms),
  and of its folded form (:func:`lightsr.reparameterize`).
* **Multi-Adds** (the papers' column) — multiply-accumulates of one forward pass producing a
  1280x720 output: the LR input is ``ceil(720/s) x ceil(1280/s)``. At x2 and x4 that is exactly
  360x640 and 180x320; at x3 there is no integer LR size, and we use 240x427 (a 1281x720 output),
  the ceiling, as the papers' x3 figures imply.
* **NTIRE protocol** — at a 256x256 LR input: FLOPs *reported as multiply-accumulates*,
  activations (number of elements of every convolution output), number of convolution calls.
* **Peak memory** of one forward pass and **runtime** (median of repeated forward passes after
  warm-up) on the chosen device and thread count, and the achieved FLOP/s against the machine's
  measured matmul peak (fp32, and bf16 where the hardware has it).

What is counted (and what is not)
---------------------------------
Counting happens at the ATen dispatcher (a ``TorchDispatchMode``), not with module hooks, so
convolutions called as functions (``F.conv2d``: weight-normalised convs, training-form FMEN,
dynamic convs) are seen — hook-based counters (thop, ptflops, the NTIRE ``model_summary``)
count those as 0. Only the outermost op of each call is seen (the mode is off while an op
runs), so an ``aten.conv2d`` that decomposes into ``aten.convolution`` counts once.

* Convolution (any of ``aten.conv{1,2,3}d``, ``aten.convolution``, ``aten._convolution``, the
  cuDNN/MKL-DNN/slow/depthwise variants, and the transposed ones):
  MACs = output elements x (in_channels / groups) x kernel elements; transposed convolutions
  count input elements x (out_channels / groups) x kernel elements. Bias adds are not counted.
* Matrix products (``linear``, ``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``matmul``, ``mv``,
  ...): output elements x contraction length.
* **Not counted**: element-wise arithmetic, activations (ReLU, sigmoid, ...), pooling,
  interpolation (the bicubic image path of MAFFSRN), normalisation, pixel shuffle, padding,
  concatenation, and the weight-normalisation arithmetic (g·v/‖v‖). This is the convention of
  the papers' Multi-Adds and of the NTIRE FLOPs, and it is the headline figure. It is not tuned
  to match any paper: where a paper's figure differs from a full count, the test says so.
* Activations are the elements of every convolution output only (the NTIRE definition);
  matrix-product outputs are not included.

Against the published figures (Multi-Adds at 720p, G = 1e9 MACs)
------------------------------------------------------------------
* A²F: SD 70.64 / 31.68 / 18.02 (x2/x3/x4; paper 71.2 / 31.9 / 18.2), S x4 18.50 (18.6),
  M x4 56.48 (56.7), L x4 76.89 (77.2): within 1%.
* FMEN-S x4 folded at 256x256: 22.28 G MACs, 72.09 M activations, 34 convs, as NTIRE 2022.
* MAFFSRN: the full count is 86.07 / 39.96 / 23.77 (MAFFSRN-L x4 44.49); the paper prints
  77.2 / 34.2 / 19.3 (38.6). Leaving out exactly the *weight-normalised* convolutions (the
  head, the three 1x1 fusion convs of every group, both tail branches) gives 77.20 / 34.34 /
  19.30 (38.60), which reproduces all four figures (x3: 34.26 with a 240x426 input). No other
  omission tried comes as close (the 5x5 tail alone, the attention gates, or only the 3x3
  convs do not), so the authors' counter evidently did not see weight-normalised convs.
  The full count is what :func:`profile` reports; the test pins both.

Counting runs on PyTorch's ``meta`` device (shapes only, no arithmetic), so counting even a
720p forward pass of RCAN takes seconds, not minutes. A model whose forward cannot run on
``meta`` (e.g. it calls ``.item()``) is counted on the CPU under ``inference_mode`` instead;
the report names the device.

Peak memory
-----------
* CUDA: ``torch.cuda.max_memory_allocated`` over one forward pass after
  ``reset_peak_memory_stats``. ``peak_memory_mb`` is the increase over what was allocated before
  the forward (weights and input excluded: activations, workspace and output);
  ``peak_memory_allocated_mb`` is the absolute figure the NTIRE challenges report.
* CPU: the increase of the process's peak resident memory (``VmHWM``) during one forward pass,
  measured in a fresh ``spawn``-ed process so that nothing else this process did pollutes it.
  In that process: glibc's mmap threshold is pinned to 64 KiB (large buffers are returned to
  the OS when freed), one warm-up forward pass absorbs one-time costs (thread pools, oneDNN
  kernels), then ``VmHWM`` is reset (``/proc/self/clear_refs``), the baseline ``VmRSS`` is read
  (weights, input, libraries), one forward pass runs, and ``VmHWM`` minus the baseline is the
  figure. Without ``clear_refs`` (non-Linux, or restricted) the warm-up is skipped and the figure
  is an upper bound (``memory_method`` says which).

Runtime
-------
Median over ``reps`` forward passes after ``warmup`` passes, under ``inference_mode``, fp32,
batch 1, random input. CUDA: CUDA events around the forward pass only. CPU:
``time.perf_counter`` at the stated thread count (``torch.set_num_threads``). Runtime and
memory are measured at ``runtime_size`` (default the NTIRE 256x256 LR input). Achieved
GFLOP/s = 2 x MACs at that size / median time.
"""

from __future__ import annotations

from ..hardware import cpu_has_native_bf16, device_name
from .counting import (
    HD_OUTPUT,
    NTIRE_SIZE,
    ConvRecord,
    OpCount,
    count_ops,
    lr_size_for_output,
    multi_adds_720p,
)
from .measure import measure_peak_flops, measure_peak_memory, measure_runtime
from .plot import load_psnr_results, plot_psnr_vs_multiadds, require_matplotlib
from .report import CSV_COLUMNS, ProfileReport, profile, profile_all, read_results, write_results

__all__ = [
    "HD_OUTPUT",
    "NTIRE_SIZE",
    "ConvRecord",
    "OpCount",
    "CSV_COLUMNS",
    "ProfileReport",
    "count_ops",
    "cpu_has_native_bf16",
    "device_name",
    "load_psnr_results",
    "lr_size_for_output",
    "measure_peak_flops",
    "measure_peak_memory",
    "measure_runtime",
    "multi_adds_720p",
    "plot_psnr_vs_multiadds",
    "profile",
    "profile_all",
    "read_results",
    "require_matplotlib",
    "write_results",
]
