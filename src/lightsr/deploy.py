"""Re-parameterisation: fold a trained model into its inference form.

One verb: every fusable block has a ``fuse()`` method that returns its inference-form
replacement (``WNConv2d`` -> ``Conv2d``; FMEN's RRRB -> one 3x3 conv; BatchNorms into convs).
:func:`reparameterize` walks the model bottom-up, so a block's ``fuse()`` sees its children
already fused. Nothing is ever fused inside ``forward()``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .models.base import SRModel


def _fuse_tree(module: nn.Module) -> nn.Module:
    for name, child in list(module.named_children()):
        fused = _fuse_tree(child)
        if fused is not child:
            setattr(module, name, fused)
    fuse = getattr(module, "fuse", None)
    if callable(fuse) and not isinstance(module, SRModel):
        return fuse()
    return module


@torch.no_grad()
def reparameterize(model: SRModel, *, inplace: bool = False) -> SRModel:
    """Return the inference form of ``model`` (a copy unless ``inplace``), in eval mode.

    The folded model computes the same function as ``model.eval()`` up to float rounding;
    BatchNorm statistics are folded as they stand, so fold only a trained model.
    """
    if getattr(model, "folded", False):
        return model if inplace else copy.deepcopy(model)
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    _fuse_tree(target)
    fuse_root = getattr(target, "fuse_root", None)
    if callable(fuse_root):
        fuse_root()
    target.folded = True
    return target.eval()
