"""The native CPU kernels' symmetric path (csrc/cpu/symmetry.h): on a square grid centred on
the axis, views related by a symmetry of the square share one view's set-up (fan-beam
projection and backprojection; parallel-beam backprojection, where the half turn also
splits the image between a view and its reversed bins), and the result must be the
per-view operator to rounding.

The geometries below are built to have the symmetries (and to break some of them: a
detector offset removes the reflections, a start angle off the mirror axes removes them
too, extra views stay outside every orbit, views on a mirror axis have smaller orbits, an
exact 45 degree ray tests the family rule), and every one is checked against the
pure-torch oracle and against the same kernels with the symmetric path switched off
(``ALARA_SYMMETRY=0``).
"""

from __future__ import annotations

import contextlib
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from alara import ops
from alara.geometry import FanBeam, ImageGrid, ParallelBeam, lodopab, uniform_angles
from alara.ops.projection import backproject_distance_weighted

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="alara._C is not built")


@pytest.fixture(autouse=True)
def _force_symmetry(monkeypatch):
    """These geometries are small: the symmetric paths would not pay and would not run."""
    monkeypatch.setenv("ALARA_SYMMETRY", "force")

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fan(n: int, angles: torch.Tensor, bins: int, detector: str = "flat", offset: float = 0.0,
         width: float = 0.1, src: float = 2.0, det: float = 1.5) -> FanBeam:
    grid = ImageGrid.square(n, width)
    r = grid.radius
    half = math.asin(r / (src * r))
    d = (src + det) * r
    span = 2.2 * d * (math.tan(half) if detector == "flat" else half)
    return FanBeam(grid, angles, bins, span / bins, offset * span, src_radius=src * r,
                   det_radius=det * r, detector=detector)


@st.composite
def symmetric_fans(draw):
    n = draw(st.integers(2, 16))
    fold = draw(st.sampled_from([4, 8]))
    views = fold * draw(st.integers(1, 5))
    start = draw(st.sampled_from([0.0, "mid", draw(st.floats(0, 2 * math.pi))]))
    if start == "mid":  # ODL's cell midpoints: no view on a mirror axis
        angles = uniform_angles(views, 0.0, 2 * math.pi)
    else:  # from `start`: at 0 some views lie on mirror axes (smaller orbits)
        angles = start + torch.arange(views, dtype=torch.float64) * (2 * math.pi / views)
    extra = draw(st.lists(st.floats(0, 2 * math.pi), max_size=3))
    if draw(st.booleans()):
        extra.append(math.pi / 4)  # the central ray at exactly 45 degrees
    angles = torch.cat([angles, torch.tensor(extra, dtype=torch.float64)])
    offset = draw(st.sampled_from([0.0, 0.0, draw(st.floats(-0.2, 0.2))]))
    return _fan(n, angles, draw(st.integers(1, 41)), draw(st.sampled_from(["flat", "curved"])),
                offset, src=draw(st.floats(1.3, 4.0)), det=draw(st.floats(0.0, 3.0)))


@st.composite
def symmetric_parallels(draw):
    """Square grids (odd and even sizes: the half turn's middle row) and views over pi
    (or 2 pi: every line twice) with the symmetries or parts of them."""
    n = draw(st.integers(2, 17))
    views = draw(st.sampled_from([2, 4])) * draw(st.integers(1, 8))
    span = draw(st.sampled_from([math.pi, math.pi, 2 * math.pi]))
    start = draw(st.sampled_from([0.0, "mid", draw(st.floats(0, math.pi))]))
    if start == "mid":
        angles = uniform_angles(views, 0.0, span)
    else:
        angles = start + torch.arange(views, dtype=torch.float64) * (span / views)
    extra = draw(st.lists(st.floats(0, 2 * math.pi), max_size=2))
    angles = torch.cat([angles, torch.tensor(extra, dtype=torch.float64)])
    grid = ImageGrid.square(n, draw(st.floats(0.02, 0.2)))
    bins = draw(st.integers(1, 41))
    spacing = draw(st.floats(0.3, 2.0)) * 2 * grid.radius / bins
    offset = draw(st.sampled_from([0.0, 0.0, draw(st.floats(-0.2, 0.2)) * grid.radius]))
    return ParallelBeam(grid, angles, bins, spacing, offset)


@contextlib.contextmanager
def per_view():
    """The symmetric paths switched off (both backends read ALARA_SYMMETRY per call)."""
    old = os.environ.get("ALARA_SYMMETRY")
    os.environ["ALARA_SYMMETRY"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["ALARA_SYMMETRY"]
        else:
            os.environ["ALARA_SYMMETRY"] = old


def _rand(shape, seed, dtype=torch.float64):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) - 0.3


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-300)).item()


def _native_pair(g, seed):
    """Signed random data and their native projection and backprojection."""
    x = _rand((2, 1) + g.grid.shape, seed)
    y = _rand((2, 1) + g.sinogram_shape, seed + 1)
    return x, y, ops.project(x, g, backend="native"), ops.backproject(y, g, backend="native")


def _assert_adjoint(x, y, fp, bp):
    lhs, rhs = (fp * y).sum().item(), (x * bp).sum().item()
    assert abs(lhs - rhs) <= 1e-12 * ((fp.abs() * y.abs()).sum().item() + 1e-300)


@given(g=symmetric_fans(), seed=st.integers(0, 2**16))
@SETTINGS
def test_symmetric_path_agrees_with_torch_and_is_adjoint(g, seed):
    x, y, fp, bp = _native_pair(g, seed)
    fp_torch, bp_torch = ops.project(x, g, backend="torch"), ops.backproject(y, g, backend="torch")
    dw = backproject_distance_weighted(y, g, backend="native")
    dw_torch = backproject_distance_weighted(y, g, backend="torch")
    with per_view():  # the oracle: pure torch, one view at a time
        fp_oracle = ops.project(x, g, backend="torch")
        oracle = ops.backproject(y, g, backend="torch")
        dw_oracle = backproject_distance_weighted(y, g, backend="torch")
    for got in (fp, fp_torch):
        assert _rel(got, fp_oracle) < 1e-10
    for got in (bp, bp_torch):
        assert _rel(got, oracle) < 1e-10
    for got in (dw, dw_torch):
        assert _rel(got, dw_oracle) < 1e-10
    _assert_adjoint(x, y, fp, bp)


@given(g=symmetric_parallels(), seed=st.integers(0, 2**16))
@SETTINGS
def test_parallel_symmetric_backprojection_agrees_with_torch_and_is_adjoint(g, seed):
    x, y, fp, bp = _native_pair(g, seed)
    with per_view():
        assert _rel(bp, ops.backproject(y, g, backend="torch")) < 1e-10
    _assert_adjoint(x, y, fp, bp)


@pytest.mark.parametrize("size", [64, 63])  # the half turn splits odd sizes at a middle row
@pytest.mark.parametrize("batch", [1, 3, 9])
def test_parallel_float32_equals_the_per_view_kernel(monkeypatch, size, batch):
    g = lodopab(120, 91, size)
    y = _rand((batch, 1) + g.sinogram_shape, 4, torch.float32)
    bp = ops.backproject(y, g, backend="native")
    monkeypatch.setenv("ALARA_SYMMETRY", "0")
    assert _rel(bp, ops.backproject(y, g, backend="native")) < 2e-6
    assert _rel(bp, ops.backproject(y.double(), g, backend="torch")) < 1e-5


CASES = {
    "midpoints-8": uniform_angles(96, 0.0, 2 * math.pi),
    "from-zero": torch.arange(96, dtype=torch.float64) * (2 * math.pi / 96),
    "rotations-only": 0.1 + torch.arange(48, dtype=torch.float64) * (2 * math.pi / 48),
    "plus-extra": torch.cat([uniform_angles(64, 0.0, 2 * math.pi),
                             torch.tensor([0.3, 1.1, math.pi / 4], dtype=torch.float64)]),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("detector", ["flat", "curved"])
@pytest.mark.parametrize("batch", [1, 3, 9])  # 9: a full block of 8 images and one more
def test_float32_equals_the_per_view_kernels(monkeypatch, case, detector, batch):
    g = _fan(48, CASES[case], 67, detector)
    x = _rand((batch, 1) + g.grid.shape, 1, torch.float32)
    y = _rand((batch, 1) + g.sinogram_shape, 2, torch.float32)
    fp, bp = ops.project(x, g, backend="native"), ops.backproject(y, g, backend="native")
    monkeypatch.setenv("ALARA_SYMMETRY", "0")
    assert _rel(fp, ops.project(x, g, backend="native")) < 2e-6
    assert _rel(bp, ops.backproject(y, g, backend="native")) < 2e-6
    assert _rel(fp, ops.project(x.double(), g, backend="torch")) < 1e-5
    assert _rel(bp, ops.backproject(y.double(), g, backend="torch")) < 1e-5


def test_detector_offset_keeps_rotations_only(monkeypatch):
    """An off-centre detector has no mirror symmetry: rotations alone must still be exact."""
    g = _fan(32, uniform_angles(64, 0.0, 2 * math.pi), 45, offset=0.05)
    y = _rand((1, 1) + g.sinogram_shape, 3)
    bp = ops.backproject(y, g, backend="native")
    assert _rel(bp, ops.backproject(y, g, backend="torch")) < 1e-10
    monkeypatch.setenv("ALARA_SYMMETRY", "0")
    assert _rel(bp, ops.backproject(y, g, backend="native")) < 1e-12


@pytest.mark.parametrize("detector", ["flat", "curved"])
@pytest.mark.parametrize("shift", [1, -2])
def test_exact_45_degree_rays_inside_orbits(monkeypatch, detector, shift):
    """A detector shifted by whole bins keeps a bin on the central ray but loses the
    mirrors, so the views at pi/4 + m pi/2 form one orbit whose central rays are exactly
    diagonal: the family rule breaks their ties by rounding, differently from view to view,
    and the symmetric path must still give the per-view operator (on square pixels both
    families weigh a diagonal ray alike)."""
    g = FanBeam(ImageGrid.square(9, 0.1), math.pi / 4 + torch.arange(8, dtype=torch.float64) * math.pi / 4,
                21, 0.025, shift * 0.025, src_radius=0.2, det_radius=0.1, detector=detector)
    x, y = _rand((1, 1) + g.grid.shape, 5), _rand((1, 1) + g.sinogram_shape, 6)
    fp, bp = ops.project(x, g, backend="native"), ops.backproject(y, g, backend="native")
    monkeypatch.setenv("ALARA_SYMMETRY", "0")
    assert _rel(fp, ops.project(x, g, backend="native")) < 1e-12
    assert _rel(bp, ops.backproject(y, g, backend="native")) < 1e-12


def test_repeated_views(monkeypatch):
    """A view given twice is projected (and backprojected) twice, once in an orbit and once
    on the per-view path."""
    base = uniform_angles(16, 0.0, 2 * math.pi)
    g = _fan(12, torch.cat([base, base[3:5]]), 25)
    x, y = _rand((1, 1) + g.grid.shape, 7), _rand((1, 1) + g.sinogram_shape, 8)
    fp, bp = ops.project(x, g, backend="native"), ops.backproject(y, g, backend="native")
    assert _rel(fp[..., 16:, :], fp[..., 3:5, :]) < 1e-12
    assert _rel(bp, ops.backproject(y, g, backend="torch")) < 1e-10
    monkeypatch.setenv("ALARA_SYMMETRY", "0")
    assert _rel(bp, ops.backproject(y, g, backend="native")) < 1e-12


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("detector", ["flat", "curved"])
@pytest.mark.parametrize("weighted", [False, True])
def test_pure_torch_operators_equal_per_view(monkeypatch, case, detector, weighted):
    """alara/ops/symmetry.py: the pure-torch fan projection and backprojection through the
    orbits."""
    g = _fan(24, CASES[case], 37, detector)
    x, y = _rand((2, 1) + g.grid.shape, 10), _rand((2, 1) + g.sinogram_shape, 9)
    bp = (backproject_distance_weighted if weighted else ops.backproject)(y, g, backend="torch")
    fp = ops.project(x, g, backend="torch")
    monkeypatch.setenv("ALARA_SYMMETRY", "0")
    ref = (backproject_distance_weighted if weighted else ops.backproject)(y, g, backend="torch")
    assert _rel(bp, ref) < 1e-12
    assert _rel(fp, ops.project(x, g, backend="torch")) < 1e-12


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_gradients_through_the_orbits(backend):
    """The symmetric paths stay differentiable (gradcheck in float64)."""
    g = _fan(4, uniform_angles(8, 0.0, 2 * math.pi), 5)
    x = _rand((1, 1) + g.grid.shape, 11).requires_grad_()
    y = _rand((1, 1) + g.sinogram_shape, 12).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ops.project(t, g, backend=backend), (x,))
    assert torch.autograd.gradcheck(lambda t: ops.backproject(t, g, backend=backend), (y,))


def test_non_finite_angles_stay_off_the_symmetric_path(monkeypatch):
    """The registered op called directly (past Geometry's validation) with a NaN or inf
    angle: no orbit search over them (a NaN breaks sorting), the per-view result."""
    from alara.ops import native
    from alara.ops.raymath import GeometryParams
    g = _fan(12, uniform_angles(16, 0.0, 2 * math.pi), 25)
    p = GeometryParams.of(g)
    y = _rand((1, 1) + g.sinogram_shape, 13)
    for bad in (math.nan, math.inf):
        angles = g.angles.clone()
        angles[5] = bad
        got = native.backproject(y, p, angles)
        monkeypatch.setenv("ALARA_SYMMETRY", "0")
        ref = native.backproject(y, p, angles)
        monkeypatch.setenv("ALARA_SYMMETRY", "force")
        assert torch.allclose(got, ref, equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_unknown_switch_value_is_a_clear_error(monkeypatch, backend):
    """ALARA_SYMMETRY=off works; a value that is none of the documented ones (a typo that
    would silently keep the path on) is an error naming the choices."""
    g = _fan(8, uniform_angles(16, 0.0, 2 * math.pi), 13)
    y = _rand((1, 1) + g.sinogram_shape, 14)
    monkeypatch.setenv("ALARA_SYMMETRY", "off")
    ops.backproject(y, g, backend=backend)
    monkeypatch.setenv("ALARA_SYMMETRY", "of")
    with pytest.raises((RuntimeError, ValueError), match="ALARA_SYMMETRY must be 0 .off., 1 .auto"):
        ops.backproject(y, g, backend=backend)
