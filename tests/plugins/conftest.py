"""Shared small geometries and phantoms for the built-in plugin tests (CPU, 2 cores)."""

from __future__ import annotations

import pytest
import torch

from alara import phantom
from alara.geometry import ImageGrid, ParallelBeam, uniform_angles


def small_geometry(n: int = 32, views: int = 30) -> ParallelBeam:
    bins = int(round(n * 1.42))
    return ParallelBeam(ImageGrid.square(n, 0.26), uniform_angles(views), bins, 0.26 * 1.42 / bins)


@pytest.fixture(scope="session")
def geom() -> ParallelBeam:
    return small_geometry()


@pytest.fixture(scope="session")
def shepp(geom) -> torch.Tensor:
    """Modified Shepp-Logan, x in [0, 0.3], [2, 1, 32, 32] float64 (second one flipped)."""
    img = phantom.rasterize(phantom.shepp_logan(0.12, scale=0.3), geom.grid)
    return torch.stack([img, img.flip(0)])[:, None]


@pytest.fixture(scope="session")
def ellipse(geom):
    """``ellipse(a, b)``: a uniform ellipse (x = 0.25) with semi-axes a (world x) and b
    (world y) on the small grid, [1, 1, H, W] float64."""

    def make(a: float, b: float, value: float = 0.25) -> torch.Tensor:
        return phantom.rasterize([phantom.Ellipse(value, a, b, 0.0, 0.0)], geom.grid)[None, None]

    return make
