"""Counting MACs, activations and convolutions at the ATen dispatcher (see the package
docstring for what is counted)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import ConfigError, LightSRError

aten = torch.ops.aten

#: Output size (width, height) of the papers' Multi-Adds figure.
HD_OUTPUT = (1280, 720)
#: LR input side of the NTIRE efficient-SR protocol.
NTIRE_SIZE = 256


# ---------------------------------------------------------------------------------------------
# Counting at the dispatcher
# ---------------------------------------------------------------------------------------------


def _packets(*names: str) -> frozenset:
    # Some backend ops do not exist in every build; keep those that do.
    return frozenset(
        getattr(aten, n) for n in names if hasattr(aten, n)
    )  # OpOverloadPacket objects


# Convolutions whose third-from-left "transposed" flag lives at args[6].
_CONV_GENERIC = _packets("convolution", "_convolution", "convolution_overrideable")
_CONV_OPS = _CONV_GENERIC | _packets(
    # seen under inference_mode, before CompositeImplicit decomposition
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "_convolution_mode",
    # backend kernels (seen only if called directly)
    "mkldnn_convolution",
    "cudnn_convolution",
    "cudnn_convolution_transpose",
    "miopen_convolution",
    "miopen_convolution_transpose",
    "miopen_depthwise_convolution",
    "_slow_conv2d_forward",
    "thnn_conv2d",
    "slow_conv3d",
    "slow_conv3d_forward",
    "slow_conv_dilated2d",
    "slow_conv_dilated3d",
    "slow_conv_transpose2d",
    "slow_conv_transpose3d",
    "_conv_depthwise2d",
    "conv_depthwise3d",
    "_nnpack_spatial_convolution",
)
# Matrix products: (packet, index of the left operand); MACs = out elements x its last dim.
_MM_OPS = {
    p: i
    for names, i in (
        (("mm", "bmm", "matmul", "mv", "dot", "vdot", "inner"), 0),
        (("addmm", "baddbmm", "addbmm", "addmv", "_addmm_activation"), 1),
    )
    for p in _packets(*names)
}
_LINEAR_OPS = _packets("linear", "mkldnn_linear")


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    return None


@dataclass
class ConvRecord:
    """One counted convolution or matrix-product call."""

    scope: str  # qualified name of the innermost module that was running ("" for the root)
    op: str  # the ATen op, e.g. "aten.convolution.default"
    kind: str  # "conv" or "matmul"
    kernel: tuple[int, ...]  # spatial kernel size (convs), () for matmul
    groups: int
    in_channels: int
    out_channels: int
    transposed: bool
    out_shape: tuple[int, ...]
    macs: int


@dataclass
class OpCount:
    """Multiply-accumulates, conv activations and conv calls of one forward pass."""

    input_shape: tuple[int, ...]
    device: str  # where the forward pass ran for counting: "meta" or "cpu"
    records: list[ConvRecord] = field(default_factory=list)

    @property
    def macs(self) -> int:
        """All counted multiply-accumulates (convolutions + matrix products)."""
        return sum(r.macs for r in self.records)

    @property
    def conv_macs(self) -> int:
        return sum(r.macs for r in self.records if r.kind == "conv")

    @property
    def matmul_macs(self) -> int:
        return sum(r.macs for r in self.records if r.kind == "matmul")

    @property
    def activations(self) -> int:
        """Elements of every convolution output (the NTIRE definition)."""
        return sum(math.prod(r.out_shape) for r in self.records if r.kind == "conv")

    @property
    def convs(self) -> int:
        """Number of convolution calls (the NTIRE "#Conv")."""
        return sum(1 for r in self.records if r.kind == "conv")

    def by_scope(self, depth: int | None = None) -> dict[str, int]:
        """MACs grouped by module name, truncated to ``depth`` dotted components."""
        out: dict[str, int] = {}
        for r in self.records:
            key = r.scope if depth is None else ".".join(r.scope.split(".")[:depth])
            out[key] = out.get(key, 0) + r.macs
        return out


class _CountingMode(TorchDispatchMode):
    """Records every convolution / matrix product that reaches the dispatcher."""

    def __init__(self, scopes: list[str]) -> None:
        super().__init__()
        self.records: list[ConvRecord] = []
        self._scopes = scopes  # live stack maintained by module hooks (labels only)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)  # the mode is off inside: nested ops are not seen twice
        packet = func.overloadpacket
        if packet in _CONV_OPS:
            self._conv(func, packet, args, kwargs, out)
        elif packet in _MM_OPS:
            a = args[_MM_OPS[packet]]
            self._matmul(func, out, int(a.shape[-1]) if a.dim() else 1)
        elif packet in _LINEAR_OPS:
            w = args[1] if len(args) > 1 else kwargs["weight"]
            self._matmul(func, out, int(w.shape[-1]))
        return out

    def _scope(self) -> str:
        return self._scopes[-1] if self._scopes else ""

    def _conv(self, func, packet, args, kwargs, out) -> None:
        x = args[0]
        w = args[1] if len(args) > 1 else kwargs["weight"]
        y = _first_tensor(out)
        if y is None:
            return
        if packet in _CONV_GENERIC:
            transposed = bool(args[6]) if len(args) > 6 else bool(kwargs.get("transposed"))
        else:
            transposed = "transpose" in packet.__name__
        kernel = tuple(int(k) for k in w.shape[2:])
        per_element = int(w.shape[1]) * math.prod(kernel)
        if transposed:
            # weight (C_in, C_out/groups, k...): each input element feeds C_out/groups x k taps
            macs = x.numel() * per_element
            in_ch, out_ch = int(w.shape[0]), int(y.shape[1])
        else:
            # weight (C_out, C_in/groups, k...): each output element sums C_in/groups x k taps
            macs = y.numel() * per_element
            in_ch, out_ch = int(x.shape[1]), int(w.shape[0])
        groups = max(1, (out_ch if transposed else in_ch) // int(w.shape[1]))
        self.records.append(
            ConvRecord(
                scope=self._scope(),
                op=str(func),
                kind="conv",
                kernel=kernel,
                groups=groups,
                in_channels=in_ch,
                out_channels=out_ch,
                transposed=transposed,
                out_shape=tuple(int(s) for s in y.shape),
                macs=int(macs),
            )
        )

    def _matmul(self, func, out, contraction: int) -> None:
        y = _first_tensor(out)
        if y is None:
            return
        self.records.append(
            ConvRecord(
                scope=self._scope(),
                op=str(func),
                kind="matmul",
                kernel=(),
                groups=1,
                in_channels=contraction,
                out_channels=int(y.shape[-1]) if y.dim() else 1,
                transposed=False,
                out_shape=tuple(int(s) for s in y.shape),
                macs=int(y.numel() * contraction),
            )
        )


def _run_counted(model: nn.Module, x: torch.Tensor) -> list[ConvRecord]:
    names = {id(m): n for n, m in model.named_modules()}
    scopes: list[str] = []

    # Global module hooks only *label* records with the running module; counting itself is
    # done by the dispatch mode, which also sees F.conv2d calls that no module hook would.
    def pre(module, _args):
        name = names.get(id(module))
        if name is not None:
            scopes.append(name)

    def post(module, _args, _out):
        name = names.get(id(module))
        if name is not None and scopes and scopes[-1] == name:
            scopes.pop()

    handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
    mode = _CountingMode(scopes)
    try:
        with mode:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return mode.records


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def count_ops(
    model: nn.Module,
    input_size: int | Sequence[int],
    *,
    in_channels: int | None = None,
    device: str = "meta",
) -> OpCount:
    """Count MACs, conv activations and conv calls of one forward pass at ``input_size``.

    ``input_size`` is the LR (H, W) (or one int for a square), batch 1. ``in_channels``
    defaults to ``model.in_channels`` or 3. ``device="meta"`` runs on shapes only (fast) and
    falls back to the CPU under ``inference_mode`` when the forward cannot run there;
    ``device="cpu"`` always runs for real. ``model`` itself is never modified.
    """
    h, w = _size2(input_size)
    c = int(in_channels if in_channels else getattr(model, "in_channels", 3))
    if device not in ("meta", "cpu"):
        raise ConfigError(f"count_ops runs on 'meta' or 'cpu', not {device!r}.")
    if device == "meta":
        try:
            # deepcopy then .to("meta") drops the storage: the copy holds shapes only.
            meta_model = copy.deepcopy(model).eval().to("meta")
            with torch.no_grad():
                records = _run_counted(meta_model, torch.zeros(1, c, h, w, device="meta"))
            return OpCount(input_shape=(1, c, h, w), device="meta", records=records)
        except LightSRError:
            raise  # e.g. input too small: the CPU would say the same
        except Exception:  # noqa: BLE001  (any op without a meta kernel, .item(), ...)
            pass
    cpu_model = copy.deepcopy(model).eval().to("cpu")
    with torch.inference_mode():
        records = _run_counted(cpu_model, torch.zeros(1, c, h, w))
    return OpCount(input_shape=(1, c, h, w), device="cpu", records=records)


def _scale_of(model: nn.Module, scale: int | None) -> int:
    own = getattr(model, "scale", None)
    if scale is None:
        if own is None:
            raise ConfigError("the model has no .scale attribute: pass scale=... to profile it.")
        return int(own)
    if own is not None and int(own) != int(scale):
        raise ConfigError(f"scale={scale} was given but the model is a x{own} model.")
    return int(scale)


def lr_size_for_output(scale: int, output: tuple[int, int] = HD_OUTPUT) -> tuple[int, int]:
    """LR (H, W) whose x``scale`` output covers ``output`` = (width, height): the ceiling.

    x2 -> (360, 640), x3 -> (240, 427), x4 -> (180, 320) for the 1280x720 output.
    """
    width, height = output
    return (math.ceil(height / scale), math.ceil(width / scale))


def multi_adds_720p(model: nn.Module, *, scale: int | None = None, device: str = "meta") -> int:
    """The papers' Multi-Adds: MACs of one forward pass producing a 1280x720 output."""
    s = _scale_of(model, scale)
    return count_ops(model, lr_size_for_output(s), device=device).macs
