"""The seven baselines of the GGAS/CWSS paper: the [0, 1] contract and the fixed image paths
(mean shift, bicubic skip), range conversion, options. Parameter counts, forward shapes, batch
independence, gradients, folding and save/load are checked over every registered model in
tests/test_models.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightsr
from lightsr.errors import ConfigError, InputSizeError, UnsupportedScaleError
from lightsr.layers.common import DIV2K_RGB_MEAN, bicubic_upsample
from lightsr.models.imdn import contrast
from lightsr.models.rcan import RCAN

# The parameter counts of these baselines are pinned with every other model's in
# tests/test_models.py (one table for the whole registry).
BASELINES = ("fsrcnn", "memnet", "carn", "idn", "edsr_baseline", "imdn", "rcan")
SMALL = [name for name in BASELINES if name != "rcan"]


def test_mean_shift_is_not_stored() -> None:
    model = lightsr.create_model("edsr_baseline", scale=2)
    assert not any("mean" in key for key in model.state_dict())
    assert {name for name, _ in model.named_buffers()} == {"sub_mean.shift", "add_mean.shift"}


def _last_conv(model: nn.Module) -> nn.Conv2d:
    """The conv whose output becomes the image (before pixel shuffle / the fixed image path)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1]


def _small_rcan(scale: int) -> RCAN:
    return RCAN(scale=scale, n_groups=1, n_blocks=2)


@pytest.mark.parametrize("name", [*SMALL, "rcan"])
def test_zero_reconstruction_leaves_the_fixed_image_path(name: str) -> None:
    """With the last conv zeroed, the output is exactly the model's fixed image path:
    the DIV2K mean (mean-shift models), bicubic(x) (IDN, MemNet) or 0 (IMDN, FSRCNN)."""
    torch.manual_seed(0)
    model = _small_rcan(2) if name == "rcan" else lightsr.create_model(name, scale=2)
    conv = _last_conv(model)
    # The last conv is the reconstruction: its output width is 3 (tail) or 3 * scale^2.
    assert conv.out_channels in (3, 12)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    x = torch.rand(2, 3, 7, 9)
    with torch.no_grad():
        y = model.eval()(x)
    assert y.shape == (2, 3, 14, 18)
    if name in ("edsr_baseline", "carn", "rcan"):
        expected = torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1).expand_as(y)
    elif name in ("idn", "memnet"):
        expected = bicubic_upsample(x, 2)
    else:
        expected = torch.zeros_like(y)
    assert torch.equal(y, expected)


def test_edsr_rgb_range_is_a_pure_range_conversion() -> None:
    """EDSR is positively homogeneous in (input, biases): rgb_range=255 with every bias x255
    must give the rgb_range=1 output (both in [0, 1])."""
    torch.manual_seed(1)
    unit = lightsr.create_model("edsr_baseline", scale=2)
    wide = lightsr.create_model("edsr_baseline", scale=2, rgb_range=255.0)
    state = {k: (v * 255 if k.endswith("bias") else v) for k, v in unit.state_dict().items()}
    wide.load_state_dict(state)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        a, b = unit(x), wide(x)
    assert 0.1 < a.abs().mean() < 10  # a non-trivial output, not both zero
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_imdn_contrast_is_population_std_plus_mean() -> None:
    z = torch.randn(2, 5, 6, 7)
    expected = z.std(dim=(2, 3), unbiased=False, keepdim=True) + z.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(contrast(z), expected, rtol=1e-6, atol=1e-6)


def test_unsupported_scale_and_bad_options_raise_clear_errors() -> None:
    with pytest.raises(UnsupportedScaleError, match="supports scales"):
        lightsr.create_model("imdn", scale=5)
    with pytest.raises(ConfigError, match="no option 'gggas'.*ggas"):
        lightsr.create_model("edsr_baseline", scale=2, gggas=True)
    with pytest.raises(ConfigError, match="rgb_range"):  # the builder's own option is listed
        lightsr.create_model("edsr_baseline", scale=2, rgb_rang=255)
    with pytest.raises(ConfigError, match="must be a bool"):
        lightsr.create_model("carn", scale=2, ggas="yes")
    with pytest.raises(ConfigError, match="odd"):
        lightsr.create_model("idn", scale=2, ggas=True, ggas_kernel_size=4)
    with pytest.raises(InputSizeError, match=r"\(N, 3, H, W\)"):
        lightsr.create_model("fsrcnn", scale=2)(torch.rand(1, 1, 8, 8))
