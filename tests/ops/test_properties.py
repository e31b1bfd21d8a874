"""Properties of the operators over random geometries (hypothesis): parallel beam and fan
beam with flat and curved detectors, non-square off-centre grids, any number of views over
any angular range (exact 45 degree ties included), detectors with offsets.

- adjointness: <A x, y> = <x, A^T y> on every backend;
- linearity of A and A^T;
- non-negativity: x >= 0 gives A x >= 0, y >= 0 gives A^T y >= 0;
- the native kernels agree with the pure-torch oracle (projection, backprojection and the
  fan-beam distance-weighted backprojection).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from alara import ops
from alara.geometry import FanBeam, ImageGrid, ParallelBeam
from alara.ops.projection import backproject_distance_weighted

BACKENDS = ["torch"] + (["native"] if ops.native_available() else [])
SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def geometries(draw, kinds=("parallel", "flat", "curved"), min_src: float = 1.6):
    """A random valid geometry in which some ray crosses the image (where none does, an
    exact zero meets the rounding of the operators' intermediate sums); fan-beam
    sources at ``min_src`` to 4 times the grid's radius from the axis (down to just
    outside the grid in :func:`test_fan_adjoint_for_close_sources`)."""
    n0, n1 = draw(st.integers(2, 14)), draw(st.integers(2, 14))
    wx, wy = draw(st.floats(0.02, 0.1)), draw(st.floats(0.02, 0.1))
    cx, cy = draw(st.floats(-0.3, 0.3)) * wx, draw(st.floats(-0.3, 0.3)) * wy
    grid = ImageGrid((n0, n1), (cx - wx, cy - wy), (cx + wx, cy + wy))
    r = grid.radius
    views = draw(st.integers(1, 10))
    start = draw(st.floats(0, 2 * math.pi))
    span = draw(st.floats(0.05, 2 * math.pi))
    angles = start + (torch.arange(views, dtype=torch.float64) + 0.5) * span / views
    if draw(st.booleans()):
        angles[0] = math.pi / 4  # exact tie between the two Joseph directions
    bins = draw(st.integers(1, 40))
    coverage = draw(st.floats(0.3, 2.0))  # detector width relative to the object's shadow
    kind = draw(st.sampled_from(kinds))
    if kind == "parallel":
        spacing = coverage * 2 * r / bins
        offset = draw(st.floats(-0.4, 0.4)) * r
        g = ParallelBeam(grid, angles, bins, spacing, offset)
    else:
        src = r * draw(st.floats(min_src, 4.0))
        det = r * draw(st.floats(0.0, 3.0))
        half_fan = math.asin(r / src)
        d = src + det
        width = 2 * d * (math.tan(half_fan) if kind == "flat" else half_fan) * coverage
        spacing = width / bins
        offset = draw(st.floats(-0.3, 0.3)) * width / 2
        g = FanBeam(grid, angles, bins, spacing, offset, src_radius=src, det_radius=det,
                    detector=kind)
    # (parallel beams too: a detector offset can put every ray outside the grid; found by
    # test_native_agrees_with_torch, 1e-18 of rounding in the torch backprojection against
    # the native exact zero)
    assume(bool(ops.project(torch.ones((1, 1) + grid.shape), g, backend="torch").any()))
    return g


def _rand(shape, seed, low=0.0):
    g = torch.Generator().manual_seed(seed)
    return low + torch.rand(shape, generator=g, dtype=torch.float64)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-10) -> bool:
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-300)
    return (a - b).abs().max().item() <= rtol * scale


def _adjoint_gap(g, backend: str, seed: int) -> float:
    """``|<A x, y> - <x, A^T y>|`` relative to ``<|A x|, |y|>`` (float64, signed data)."""
    x = _rand((2, 1) + g.grid.shape, seed, -0.5)
    y = _rand((2, 1) + g.sinogram_shape, seed + 1, -0.5)
    lhs = (ops.project(x, g, backend=backend) * y).sum().item()
    rhs = (x * ops.backproject(y, g, backend=backend)).sum().item()
    scale = (ops.project(x.abs(), g, backend=backend) * y.abs()).sum().item()
    return abs(lhs - rhs) / max(scale, 1e-300)


@SETTINGS
@given(g=geometries(), seed=st.integers(0, 2**31 - 1), backend=st.sampled_from(BACKENDS))
def test_adjoint(g, seed, backend):
    assert _adjoint_gap(g, backend, seed) <= 1e-10


@SETTINGS
@given(g=geometries(), seed=st.integers(0, 2**31 - 1), backend=st.sampled_from(BACKENDS),
       a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_linear(g, seed, backend, a, b):
    x1, x2 = _rand((1, 1) + g.grid.shape, seed), _rand((1, 1) + g.grid.shape, seed + 1)
    y1, y2 = _rand((1, 1) + g.sinogram_shape, seed + 2), _rand((1, 1) + g.sinogram_shape, seed + 3)
    A = lambda x: ops.project(x, g, backend=backend)  # noqa: E731
    At = lambda y: ops.backproject(y, g, backend=backend)  # noqa: E731
    assert _close(A(a * x1 + b * x2), a * A(x1) + b * A(x2))
    assert _close(At(a * y1 + b * y2), a * At(y1) + b * At(y2))


@SETTINGS
@given(g=geometries(), seed=st.integers(0, 2**31 - 1), backend=st.sampled_from(BACKENDS))
def test_non_negative_in_non_negative_out(g, seed, backend):
    x = _rand((1, 2) + g.grid.shape, seed)
    x[0, 1] = 0.0  # an all-zero image projects to exactly zero
    p = ops.project(x, g, backend=backend)
    assert bool((p >= 0).all()) and bool((p[0, 1] == 0).all())
    y = _rand((1, 2) + g.sinogram_shape, seed + 1)
    y[0, 1] = 0.0
    bp = ops.backproject(y, g, backend=backend)
    # The torch fan backprojection takes differences of suffix sums: a pixel at the very
    # edge of a ray's footprint (weight ~ 0) may come out at -(rounding), never below.
    assert bool((bp >= -1e-14 * bp.abs().max()).all()) and bool((bp[0, 1] == 0).all())


@pytest.mark.skipif("native" not in BACKENDS, reason="alara._C is not built")
@SETTINGS
@given(g=geometries(), seed=st.integers(0, 2**31 - 1))
def test_native_agrees_with_torch(g, seed):
    x = _rand((2, 2) + g.grid.shape, seed)
    y = _rand((2, 2) + g.sinogram_shape, seed + 1)
    assert _close(ops.project(x, g, backend="native"), ops.project(x, g, backend="torch"))
    assert _close(ops.backproject(y, g, backend="native"), ops.backproject(y, g, backend="torch"))
    if isinstance(g, FanBeam):
        assert _close(backproject_distance_weighted(y, g, backend="native"),
                      backproject_distance_weighted(y, g, backend="torch"))


@SETTINGS
@given(g=geometries(kinds=("flat", "curved"), min_src=1.001), seed=st.integers(0, 2**31 - 1),
       backend=st.sampled_from(BACKENDS))
def test_fan_adjoint_for_close_sources(g, seed, backend):
    """Wide fans (sources just outside the grid): the Joseph samples one pixel past the
    border can lie beside or behind the source, one bin can span a wide angle, and a
    curved detector can wrap past 180 degrees."""
    assert _adjoint_gap(g, backend, seed) <= 1e-10


@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_torch_backprojection_is_adjoint_for_close_sources(detector):
    """The case that exposed the old per-pixel bin range (a pixel's footprint spanning the
    line through the source parallel to the detector): source at 1.2 grid radii."""
    grid = ImageGrid((2, 2), (-0.0625, -0.0234375), (0.0625, 0.0234375))
    for angle in torch.linspace(0, 2 * math.pi, 13)[:-1].tolist():
        g = FanBeam(grid, torch.tensor([angle], dtype=torch.float64), 2, 0.11125,
                    src_radius=1.2 * grid.radius, det_radius=0.0, detector=detector)
        assert _adjoint_gap(g, "torch", 0) <= 1e-10, angle
