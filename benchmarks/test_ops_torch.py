"""Pure-torch operators on the LoDoPaB geometry vs ASTRA CPU and scikit-image.

Run: ``python -m pytest benchmarks/test_ops_torch.py --benchmark-only -s``
"""

from __future__ import annotations

import pytest
import torch

from alara import ops
from alara.geometry import lodopab

import peers  # benchmarks/ is put on sys.path by benchmarks/conftest.py

GEOMETRY = lodopab()
BATCHES = (1, 8)


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    return {
        b: (torch.rand(b, 1, *GEOMETRY.grid.shape, generator=gen),
            torch.rand(b, 1, *GEOMETRY.sinogram_shape, generator=gen))
        for b in BATCHES
    }


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["fp", "bp"])
def test_torch_backend(timed, data, batch, op):
    x, y = data[batch]
    fn = ops.project if op == "fp" else ops.backproject
    arg = x if op == "fp" else y
    timed(f"{op} lodopab b{batch}", "alara-torch", fn, arg, GEOMETRY, "torch",
          rounds=2 if batch > 1 else 3)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["fp", "bp"])
@pytest.mark.parametrize("projector", ["line", "linear"])
def test_astra_cpu(timed, data, batch, op, projector):
    fwd, bwd = peers.astra_cpu(GEOMETRY, projector)
    x, y = data[batch]
    arg = (x if op == "fp" else y).numpy()
    timed(f"{op} lodopab b{batch}", f"astra-{projector}", fwd if op == "fp" else bwd, arg,
          rounds=2 if batch > 1 else 3)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["fp", "bp"])
def test_skimage(timed, data, batch, op):
    fwd, bwd = peers.skimage_radon(GEOMETRY)
    x = data[batch][0].numpy()
    arg = x if op == "fp" else fwd(x)
    timed(f"{op} lodopab b{batch}", "skimage-radon", fwd if op == "fp" else bwd, arg,
          rounds=1 if batch > 1 else 2)
