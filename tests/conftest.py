"""Shared test helpers.

Tests that need the benchmark images or the authors' checkpoints read them in place from
``../shared`` beside the checkout (or ``$LIGHTSR_SHARED``) and skip with a reason when absent,
so a fresh clone without it still passes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Spinning OpenMP threads crawl when the 2 cores are shared (CI neighbours, parallel jobs);
# passive waiting costs little when the machine is quiet. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# lightsr's cache (converted checkpoints, int8 graphs) goes to a folder of this test session:
# tests never read a user's cached files nor leave theirs behind.
_CACHE = tempfile.mkdtemp(prefix="lightsr-test-cache-")
os.environ["LIGHTSR_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO.parent / "shared"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test saying what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"needs {path} (the project's shared data/weights): not present here; put the "
            "shared folder at ../shared beside the checkout, or point LIGHTSR_SHARED at it"
        )
    return path


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def benchmark_script(name: str):
    """``benchmarks/<name>.py`` loaded as a module (the scripts are not a package). It is
    registered in ``sys.modules`` under ``name``: dataclasses look their module up there, and a
    script importing a sibling (``from bundled_report import ...``) finds the same module."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None, name
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def perturb_parameters_(model: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Scale every parameter of ``model`` in place by a factor in [0.5, 1.5) per element, so
    weight-norm gains no longer equal ||v|| and learned scalars are no longer their init: folds
    and converters then have work to do. Returns ``model``."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5 + torch.rand(p.shape, generator=generator))
    return model


def random_model(name: str, scale: int, seed: int = 0, **options) -> torch.nn.Module:
    """A registered model with its parameters perturbed (:func:`perturb_parameters_`)."""
    import lightsr  # after LIGHTSR_CACHE is set above

    torch.manual_seed(seed)
    model = lightsr.create_model(name, scale=scale, **options)
    return perturb_parameters_(model, torch.Generator().manual_seed(seed))


def synthetic_image(h: int, w: int, c: int = 3, dtype=None, seed: int = 0):
    """A smooth image plus noise (realistic content that uses the full range of ``dtype``,
    uint8 by default), H x W x C."""
    import numpy as np

    dtype = np.uint8 if dtype is None else dtype
    rng = np.random.default_rng(seed)
    peak = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.5 + 0.4 * np.sin(yy / 5.0)[..., None] * np.cos(xx[..., None] / 7.0 + np.arange(c))
    img = np.clip(base + 0.05 * rng.standard_normal((h, w, c)), 0, 1)
    return np.round(img * peak).astype(dtype)


def _openvino_installed() -> bool:
    from lightsr.quantize import openvino_available

    return openvino_available()


#: Skips a test where OpenVINO (the lightsr[openvino] extra) is not installed.
requires_openvino = pytest.mark.skipif(
    not _openvino_installed(), reason="OpenVINO not installed: pip install lightsr[openvino]"
)
#: The runtimes other than torch, for ``@pytest.mark.parametrize("engine", ENGINES)``.
ENGINES = ["onnxruntime", pytest.param("openvino", marks=requires_openvino)]
