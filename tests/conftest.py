"""Shared fixtures: small geometries of every kind, seeded randomness."""

from __future__ import annotations

import math

import pytest
import torch

from alara.geometry import FanBeam, ImageGrid, ParallelBeam, uniform_angles


def small_geometries() -> dict[str, object]:
    """One small geometry per kind (non-square grids catch transposition bugs)."""
    grid = ImageGrid((24, 20), (-0.12, -0.10), (0.12, 0.10))
    return {
        "parallel": ParallelBeam(grid, uniform_angles(17), 31, 0.011, bin_offset=0.003),
        "fan-flat": FanBeam(grid, uniform_angles(19, 0, 2 * math.pi), 33, 0.016,
                            src_radius=0.4, det_radius=0.3),
        "fan-curved": FanBeam(grid, uniform_angles(19, 0, 2 * math.pi), 33, 0.016,
                              src_radius=0.4, det_radius=0.3, detector="curved"),
    }


@pytest.fixture(params=list(small_geometries()))
def geometry(request):
    return small_geometries()[request.param]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
