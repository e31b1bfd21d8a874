"""Small geometries of every kind, for the tests of operators and of plugins.

Non-square grids, detector offsets, a finely sampled detector and exact 45 degree views
catch the index, transposition and tie-breaking bugs that square LoDoPaB-like cases hide.
"""

from __future__ import annotations

import math

import torch

from alara.geometry import FanBeam, Geometry, ImageGrid, ParallelBeam, uniform_angles

__all__ = ["small_geometries", "tiny_geometries"]


def small_geometries() -> dict[str, Geometry]:
    """24 x 20 pixels, 5-19 views: quick enough for exhaustive agreement tests."""
    grid = ImageGrid((24, 20), (-0.12, -0.10), (0.12, 0.10))
    angles_fan = uniform_angles(19, 0, 2 * math.pi)
    return {
        "parallel": ParallelBeam(grid, uniform_angles(17), 31, 0.011, bin_offset=0.003),
        # ds < pixel size: more than three bins per pixel
        "parallel-fine": ParallelBeam(grid, uniform_angles(13, 0.1, 3.0), 97, 0.0031),
        "parallel-45": ParallelBeam(grid, torch.tensor([0.0, math.pi / 4, math.pi / 2,
                                                        3 * math.pi / 4, 2.0]), 31, 0.011),
        "fan-flat": FanBeam(grid, angles_fan, 33, 0.016, src_radius=0.4, det_radius=0.3),
        "fan-curved": FanBeam(grid, angles_fan, 33, 0.016, src_radius=0.4, det_radius=0.3,
                              detector="curved"),
    }


def tiny_geometries() -> dict[str, Geometry]:
    """6 x 5 pixels, 5 views, 9 bins: small enough for gradcheck and opcheck."""
    grid = ImageGrid((6, 5), (-0.03, -0.025), (0.03, 0.025))
    angles_fan = uniform_angles(5, 0, 2 * math.pi)
    return {
        "parallel": ParallelBeam(grid, uniform_angles(5), 9, 0.009),
        "fan-flat": FanBeam(grid, angles_fan, 9, 0.012, src_radius=0.1, det_radius=0.05),
        "fan-curved": FanBeam(grid, angles_fan, 9, 0.012, src_radius=0.1, det_radius=0.05,
                              detector="curved"),
    }
