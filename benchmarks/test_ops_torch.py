"""Pure-torch operators vs ASTRA CPU and scikit-image: the LoDoPaB geometry (parallel beam)
and the same grid seen by a fan beam (flat and curved detector, as ``alara bench`` builds
it); for the fan groups ``astra-line`` is ASTRA's ``line_fanflat``.

Run: ``python -m pytest benchmarks/test_ops_torch.py --benchmark-only -s``
(``alara bench --impl torch,astra`` runs the same comparison as a command; the numbers in
docs/benchmarks.md come from it).
"""

from __future__ import annotations

import pytest
import torch

from alara import ops
from alara.cli import bench
from alara.geometry import lodopab

import peers  # benchmarks/ is put on sys.path by benchmarks/conftest.py

GEOMETRIES = {"lodopab": lodopab(), "fan": bench.fan_geometry("flat"),
              "fan-curved": bench.fan_geometry("curved")}
BATCHES = (1, 8)
ASTRA = [("lodopab", "line"), ("lodopab", "linear"), ("fan", "line_fanflat")]


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    return {
        (name, b): (torch.rand(b, 1, *g.grid.shape, generator=gen),
                    torch.rand(b, 1, *g.sinogram_shape, generator=gen))
        for name, g in GEOMETRIES.items() for b in BATCHES
    }


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["fp", "bp"])
def test_torch_backend(timed, data, geometry, batch, op):
    x, y = data[geometry, batch]
    fn = ops.project if op == "fp" else ops.backproject
    timed(f"{op} {geometry} b{batch}", "alara-torch", fn, x if op == "fp" else y,
          GEOMETRIES[geometry], "torch", rounds=2 if batch > 1 else 3)


@pytest.mark.parametrize("geometry, projector", ASTRA)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["fp", "bp"])
def test_astra_cpu(timed, data, geometry, projector, batch, op):
    fwd, bwd = peers.astra_cpu(GEOMETRIES[geometry], projector)
    x, y = data[geometry, batch]
    arg = (x if op == "fp" else y).numpy()
    name = "astra-line" if projector == "line_fanflat" else f"astra-{projector}"
    timed(f"{op} {geometry} b{batch}", name, fwd if op == "fp" else bwd, arg,
          rounds=2 if batch > 1 else 3)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["fp", "bp"])
def test_skimage(timed, data, batch, op):
    fwd, bwd = peers.skimage_radon(GEOMETRIES["lodopab"])
    x = data["lodopab", batch][0].numpy()
    arg = x if op == "fp" else fwd(x)
    timed(f"{op} lodopab b{batch}", "skimage-radon", fwd if op == "fp" else bwd, arg,
          rounds=1 if batch > 1 else 2)
