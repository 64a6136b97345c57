"""Every registered model declares what the inference wrapper needs (receptive field, or that
tiles cannot be exact), and each declaration is true, checked with the gradient probe the
wrapper falls back on (:func:`lightsr.probe.probe_receptive_field`), at the smallest probe size
that can tell: a field of r is seen on a (2 (r + 2) + 1)^2 probe as exactly r, and a declared
global model must reach past the overlap given to such models (``GLOBAL_OVERLAP``).

(A forward perturbation test cannot replace the gradient here: at random init, ReLU paths to the
edge of a deep network's field are often dead for a given input.)
"""

from __future__ import annotations

import pytest

import lightsr
from lightsr.probe import GLOBAL_OVERLAP, probe_receptive_field, receptive_field

MODELS = lightsr.list_models()


@pytest.mark.parametrize("name", MODELS)
def test_every_model_declares_its_receptive_field_or_global_ops(name: str) -> None:
    model = lightsr.create_model(name, scale=2)
    declared = model.receptive_field is not None or model.tile_exact is False
    assert declared, (
        f"{name} declares neither receptive_field nor tile_exact=False: add one to its "
        "@register_model (see lightsr.registry.register_model)"
    )


@pytest.mark.parametrize("name", MODELS)
def test_declarations_are_true(name: str) -> None:
    model = lightsr.reparameterize(lightsr.create_model(name, scale=2))
    if model.tile_exact is False:
        probed = probe_receptive_field(model, limit=GLOBAL_OVERLAP + 1)
        assert probed.is_global, f"{name}: declared global, but its field is {probed.radius}"
        assert receptive_field(model).is_global
        return
    r = model.receptive_field
    probed = probe_receptive_field(model, limit=r + 2)
    assert (probed.radius, probed.is_global) == (r, False), f"{name}: declared {r}, probed {probed}"
    assert receptive_field(model) == probed


def test_options_that_change_the_structure_drop_the_registered_declaration() -> None:
    """GGAS widens FSRCNN's field (7 -> 9): a model built with options is probed, not trusted
    to the registration's figure."""
    plain = lightsr.create_model("fsrcnn", scale=2)
    gated = lightsr.create_model("fsrcnn", scale=2, ggas=True)
    assert plain.receptive_field == 7 and gated.receptive_field is None
    assert receptive_field(gated).radius == 9
