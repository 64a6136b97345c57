"""Optimisers not in torch: AdamP (Heo et al., "AdamP: Slowing Down the Slowdown for Momentum
Optimizers on Scale-invariant Weights", ICLR 2021), which MAFFSRN trains with.

Weights followed by a normalisation (or weight-normalised, as MAFFSRN's ``weight_v``) are scale
invariant: the loss does not change with their norm, so the radial part of an Adam step only
inflates the norm and shrinks the effective step. AdamP detects such weights (the gradient is
nearly orthogonal to the weight) and removes the radial component from the update.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim import Optimizer


def _cosine_abs(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """|cos(a_i, b_i)| for each row i of two (R, D) matrices."""
    num = (a * b).sum(dim=1).abs()
    return num / (a.norm(dim=1) * b.norm(dim=1) + eps)


def _project(
    p: torch.Tensor, grad: torch.Tensor, update: torch.Tensor, *, delta: float, eps: float
) -> tuple[torch.Tensor, bool]:
    """The update with its radial component removed when ``p`` looks scale invariant.

    Two views are tried: per output channel (rows = dim 0) and the whole tensor as one row. A
    view counts as scale invariant when max |cos(grad, p)| over its rows is below
    ``delta / sqrt(row length)`` (the cosine of random vectors is about 1/sqrt(D)).
    Returns (update, projected?).
    """
    for rows in (p.shape[0], 1):
        pv = p.reshape(rows, -1)
        gv = grad.reshape(rows, -1)
        if _cosine_abs(gv, pv, eps).max() < delta / math.sqrt(pv.shape[1]):
            unit = pv / (pv.norm(dim=1, keepdim=True) + eps)
            uv = update.reshape(rows, -1)
            uv = uv - unit * (unit * uv).sum(dim=1, keepdim=True)
            return uv.reshape(p.shape), True
    return update, False


class AdamP(Optimizer):
    """Adam with projection of the update onto the tangent space of scale-invariant weights.

    Arguments as :class:`torch.optim.Adam`, plus ``delta`` (cosine threshold, 0.1 in the paper)
    and ``wd_ratio`` (weight decay multiplier for projected weights, 0.1). Tensors with one
    dimension (biases, gains) are never projected. Decoupled weight decay as in the paper's
    algorithm: ``p <- p * (1 - lr * weight_decay * ratio)``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        *,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        nesterov: bool = False,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError("lr, eps and weight_decay must be non-negative")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            delta=delta,
            wd_ratio=wd_ratio,
            nesterov=nesterov,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                step = float(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias1 = 1 - beta1**step
                bias2 = 1 - beta2**step
                denom = (exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(group["eps"])
                if group["nesterov"]:
                    update = (beta1 * exp_avg + (1 - beta1) * grad) / denom
                else:
                    update = exp_avg / denom
                ratio = 1.0
                if p.dim() > 1:
                    update, projected = _project(
                        p, grad, update, delta=group["delta"], eps=group["eps"]
                    )
                    if projected:
                        ratio = group["wd_ratio"]
                if group["weight_decay"] > 0:
                    p.mul_(1 - group["lr"] * group["weight_decay"] * ratio)
                p.add_(update, alpha=-group["lr"] / bias1)
        return loss


__all__ = ["AdamP"]
