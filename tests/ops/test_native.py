"""Native operators (alara._C) on CPU: agreement with the pure-torch oracle, adjointness,
gradients, torch.library.opcheck and torch.compile."""

from __future__ import annotations

import math
import os

import pytest
import torch

from alara import ops
from alara.geometry import lodopab
from alara.ops import backend, torch_backend
from alara.ops.raymath import GeometryParams
from alara.testing import small_geometries, tiny_geometries

if backend.native_module() is None:
    # A missing extension is an error (CI must not silently test the pure-torch fallback
    # as "auto"), unless the install was pure Python on purpose.
    if os.environ.get("ALARA_NO_EXTENSION", "").strip() in ("1", "true", "yes"):
        pytest.skip("ALARA_NO_EXTENSION is set: alara._C is not built", allow_module_level=True)
    pytest.fail("alara._C is not built, so backend='auto' falls back to pure torch; build it "
                "with `pip install --no-build-isolation -e .` (or set ALARA_NO_EXTENSION=1 for "
                "a pure-Python install)", pytrace=False)

from alara.ops import native  # noqa: E402  (needs alara._C)

DEVICE = torch.device("cpu")


GEOMETRIES = small_geometries()
FAN = [k for k in GEOMETRIES if k.startswith("fan")]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.fixture(params=list(GEOMETRIES))
def geometry(request):
    return GEOMETRIES[request.param]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("batch", [(1, 1), (2, 3), (3, 4)])  # 12 channels: block of 8 + 4
def test_matches_torch_backend(geometry, dtype, tol, batch):
    p, angles = GeometryParams.of(geometry), geometry.angles
    x = torch.rand(*batch, *geometry.grid.shape, dtype=dtype, device=DEVICE)
    y = torch.rand(*batch, *geometry.sinogram_shape, dtype=dtype, device=DEVICE)
    fp = native.project(x, p, angles)
    bp = native.backproject(y, p, angles)
    assert fp.shape == (*batch, *geometry.sinogram_shape) and fp.dtype == dtype
    assert bp.shape == (*batch, *geometry.grid.shape) and bp.dtype == dtype
    # the float64 oracle: the float32 oracle itself is only good to ~1e-5 (grid_sample
    # coordinates in float32), the native kernels compute positions in float64
    assert _rel(fp, torch_backend.project(x.cpu().double(), p, angles)) < tol
    assert _rel(bp, torch_backend.backproject(y.cpu().double(), p, angles)) < tol


@pytest.mark.parametrize("kind", FAN)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_distance_weighted_backprojection_matches_torch(kind, dtype, tol):
    g = GEOMETRIES[kind]
    p = GeometryParams.of(g)
    y = torch.rand(2, 1, *g.sinogram_shape, dtype=dtype, device=DEVICE)
    ref = torch_backend.backproject(y.cpu().double(), p, g.angles, distance_weight=True)
    assert _rel(native.backproject(y, p, g.angles, distance_weight=True), ref) < tol


def test_distance_weight_is_rejected_for_parallel_beams():
    g = GEOMETRIES["parallel"]
    with pytest.raises(RuntimeError, match="fan-beam weight"):
        native.backproject(torch.rand(1, 1, *g.sinogram_shape, device=DEVICE),
                           GeometryParams.of(g), g.angles, distance_weight=True)


def test_adjoint(geometry):
    """<A x, y> = <x, A^T y> to float64 rounding, also for the distance-weighted pair
    (fan beam only: parallel beams reject it, see above)."""
    p = GeometryParams.of(geometry)
    x = torch.rand(2, 3, *geometry.grid.shape, dtype=torch.float64, device=DEVICE)
    y = torch.rand(2, 3, *geometry.sinogram_shape, dtype=torch.float64, device=DEVICE)
    for distance_weight in ([False] if p.kind == 0 else [False, True]):
        lhs = (native.project(x, p, geometry.angles, distance_weight) * y).sum().item()
        rhs = (x * native.backproject(y, p, geometry.angles, distance_weight)).sum().item()
        assert abs(lhs - rhs) <= 1e-12 * abs(lhs), distance_weight


def test_adjoint_float32(geometry):
    p = GeometryParams.of(geometry)
    x = torch.rand(1, 1, *geometry.grid.shape, device=DEVICE)
    y = torch.rand(1, 1, *geometry.sinogram_shape, device=DEVICE)
    lhs = (native.project(x, p, geometry.angles).double() * y.double()).sum().item()
    rhs = (x.double() * native.backproject(y, p, geometry.angles).double()).sum().item()
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)


def test_public_api_native_equals_torch(geometry):
    x = torch.rand(2, 1, *geometry.grid.shape, dtype=torch.float64, device=DEVICE)
    a = ops.project(x, geometry, backend="native")
    b = ops.project(x.cpu(), geometry, backend="torch")
    assert _rel(a, b) < 1e-10


def test_auto_picks_native():
    """CI runs this with the extension built: `auto` must not fall back to pure torch."""
    assert backend.native_available(DEVICE)
    assert backend.resolve("auto", DEVICE) == "native"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    g = GEOMETRIES["parallel"]
    p = GeometryParams.of(g)
    x = torch.rand(2, 1, *g.grid.shape, device=DEVICE)
    out = native.project(x.to(dtype), p, g.angles)
    assert out.dtype == dtype
    ref = native.project(x.to(dtype).float(), p, g.angles)
    assert _rel(out.float(), ref) < 1e-2
    y = torch.rand(2, 1, *g.sinogram_shape, device=DEVICE)
    bp = native.backproject(y.to(dtype), p, g.angles)
    assert bp.dtype == dtype
    assert _rel(bp.float(), native.backproject(y.to(dtype).float(), p, g.angles)) < 1e-2


def test_empty_batch():
    g = GEOMETRIES["parallel"]
    p = GeometryParams.of(g)
    assert native.project(torch.rand(0, 1, *g.grid.shape, device=DEVICE), p,
                          g.angles).shape == (0, 1, *g.sinogram_shape)
    assert native.backproject(torch.rand(0, 2, *g.sinogram_shape, device=DEVICE), p,
                              g.angles).shape == (0, 2, *g.grid.shape)


def test_lodopab_geometry_matches_torch():
    """Full-size LoDoPaB parallel beam (1000 x 513 rays over 362^2 pixels), float32."""
    g = lodopab()
    p = GeometryParams.of(g)
    x = torch.rand(1, 1, 362, 362, device=DEVICE)
    ref = torch_backend.project(x.cpu().double(), p, g.angles)
    assert _rel(native.project(x, p, g.angles), ref) < 1e-5
    y = torch.rand(1, 1, 1000, 513, device=DEVICE)
    ref = torch_backend.backproject(y.cpu().double(), p, g.angles)
    assert _rel(native.backproject(y, p, g.angles), ref) < 1e-5


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_fan_backprojection_when_coarse_bins_skip_a_family(dtype, tol):
    """Pixels 8x flatter than wide and 3 bins 21 degrees apart: all three rays are
    x-dominant, but the middle one points the other way along x (the sampled rays skip the
    y-dominant wedge), so their positions on a plane fold back (found by
    tests/ops/test_properties.py: the BP dropped the middle ray)."""
    from alara.geometry import FanBeam, ImageGrid

    g = FanBeam(ImageGrid((8, 2), (-0.03125, -0.0625), (0.03125, 0.0625)),
                torch.tensor([3.0], dtype=torch.float64), 3, 0.05379143536399191,
                src_radius=0.13975424859373686, det_radius=0.0)
    p = GeometryParams.of(g)
    y = torch.rand(2, 1, *g.sinogram_shape, dtype=torch.float64)
    ref = torch_backend.backproject(y, p, g.angles)
    assert _rel(native.backproject(y.to(dtype), p, g.angles), ref) < tol


@pytest.mark.parametrize("name", ["fan", "fan-curved"])
def test_full_size_fan_backprojection_float32_matches_float64(name):
    """The benchmark fan beams (362^2 pixels, 1000 x 513 rays): the float32 lanes (one
    channel, and 9 channels channels-last) against the float64 two-pointer path, an
    independent implementation of the same sum."""
    from alara.cli.bench import bench_geometry

    g = bench_geometry(name)
    p = GeometryParams.of(g)
    y = torch.rand(9, 1, *g.sinogram_shape, dtype=torch.float64)
    ref = native.backproject(y, p, g.angles)
    assert _rel(native.backproject(y[:1].float(), p, g.angles), ref[:1]) < 1e-5
    assert _rel(native.backproject(y.float(), p, g.angles), ref) < 1e-5


# ------------------------------------------------------------------ autograd and dispatcher

TINY = tiny_geometries()


def _op_args(g, t, op: str, distance_weight: bool = False):
    p = GeometryParams.of(g)
    angles = g.angles.to(t.device)
    geo = (p.x0, p.y0, p.dx, p.dy, p.s0, p.ds, p.src_radius, p.src_det, distance_weight)
    if op == "project":
        return (t, angles, p.kind, p.n_bins, *geo)
    return (t, angles, p.kind, p.n0, p.n1, *geo)


@pytest.mark.parametrize("kind", list(TINY))
def test_gradcheck_and_gradgradcheck(kind):
    g = TINY[kind]
    p = GeometryParams.of(g)
    x = torch.rand(1, 2, *g.grid.shape, dtype=torch.float64, device=DEVICE, requires_grad=True)
    y = torch.rand(1, 2, *g.sinogram_shape, dtype=torch.float64, device=DEVICE,
                   requires_grad=True)
    fp = lambda t: native.project(t, p, g.angles)  # noqa: E731
    bp = lambda t: native.backproject(t, p, g.angles)  # noqa: E731
    assert torch.autograd.gradcheck(fp, (x,))
    assert torch.autograd.gradcheck(bp, (y,))
    assert torch.autograd.gradgradcheck(fp, (x,))
    assert torch.autograd.gradgradcheck(bp, (y,))
    if p.kind != 0:
        fpw = lambda t: native.project(t, p, g.angles, True)  # noqa: E731
        bpw = lambda t: native.backproject(t, p, g.angles, True)  # noqa: E731
        assert torch.autograd.gradcheck(fpw, (x,))
        assert torch.autograd.gradcheck(bpw, (y,))


@pytest.mark.parametrize("kind, distance_weight",
                         [(k, False) for k in TINY] + [(k, True) for k in TINY if k != "parallel"])
def test_opcheck(kind, distance_weight):
    g = TINY[kind]
    x = torch.rand(2, 1, *g.grid.shape, dtype=torch.float64, device=DEVICE, requires_grad=True)
    y = torch.rand(2, 1, *g.sinogram_shape, dtype=torch.float64, device=DEVICE,
                   requires_grad=True)
    torch.library.opcheck(torch.ops.alara.project.default, _op_args(g, x, "project", distance_weight))
    torch.library.opcheck(torch.ops.alara.backproject.default,
                          _op_args(g, y, "backproject", distance_weight))
    torch.library.opcheck(torch.ops.alara.project.default, _op_args(g, x.detach().float(), "project"))


def test_autograd_saves_no_intermediates():
    g = GEOMETRIES["parallel"]
    p = GeometryParams.of(g)
    x = torch.rand(1, 1, *g.grid.shape, device=DEVICE, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = native.project(x, p, g.angles)
    assert all(t.numel() == g.n_views and t.dtype == torch.float64 for t in saved), \
        [tuple(t.shape) for t in saved]  # only the angles input
    out.sum().backward()


def test_torch_compile_fullgraph():
    g = GEOMETRIES["fan-flat"]

    def normal_op(x):
        return ops.backproject(ops.project(x, g, backend="native"), g, backend="native")

    p = GeometryParams.of(g)

    def raw(x, angles):
        y = torch.ops.alara.project(x, angles, p.kind, p.n_bins, p.x0, p.y0, p.dx, p.dy,
                                    p.s0, p.ds, p.src_radius, p.src_det, False)
        return torch.ops.alara.backproject(y * 2, angles, p.kind, p.n0, p.n1, p.x0, p.y0,
                                           p.dx, p.dy, p.s0, p.ds, p.src_radius, p.src_det,
                                           False)

    x = torch.rand(2, 1, *g.grid.shape, device=DEVICE, requires_grad=True)
    angles = g.angles.to(DEVICE)
    compiled = torch.compile(raw, fullgraph=True, backend="aot_eager")
    out = compiled(x, angles)
    ref = raw(x, angles)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    grad = x.grad.clone()
    x.grad = None
    ref.sum().backward()
    assert torch.allclose(grad, x.grad, rtol=1e-5, atol=1e-6)
    # the whole public API path compiles too (the default inductor backend)
    c2 = torch.compile(lambda t: native.backproject(native.project(t, p, g.angles), p, g.angles),
                       fullgraph=True)
    assert torch.allclose(c2(x.detach()), ref.detach() / 2, rtol=1e-5, atol=1e-6)
    assert normal_op(x.detach()).shape == x.shape


@pytest.mark.parametrize("detector", ["flat", "curved"])
@pytest.mark.parametrize("n_bins, src_radius", [(15, 0.25), (161, 0.25), (161, 0.9), (400, 0.3)])
def test_fan_backprojection_ray_densities(detector, n_bins, src_radius):
    """The fan BP's per-plane gathers at sparse (15 bins) and dense (400 bins, several rays
    per pixel) ray spacings, with a wide fan (source near the grid: views whose rays
    switch between x- and y-dominant planes) and a narrow one, in float32 (the AVX2
    rows) and float64, against the float64 pure-torch oracle."""
    from alara.geometry import FanBeam, ImageGrid, uniform_angles

    grid = ImageGrid((37, 29), (-0.11, -0.09), (0.13, 0.08))
    width = 2.2 * grid.radius * (src_radius + 0.2) / (src_radius - grid.radius)
    if detector == "curved":
        width = 2.2 * math.asin(grid.radius / src_radius) * (src_radius + 0.2)
    g = FanBeam(grid, uniform_angles(23, 0.05, 2 * math.pi), n_bins, width / n_bins,
                src_radius=src_radius, det_radius=0.2, detector=detector)
    p = GeometryParams.of(g)
    y = torch.rand(1, 1, *g.sinogram_shape, dtype=torch.float64)
    ref = torch_backend.backproject(y, p, g.angles)
    assert _rel(native.backproject(y, p, g.angles), ref) < 1e-10
    assert _rel(native.backproject(y.float(), p, g.angles), ref) < 1e-5
    y9 = torch.rand(9, 1, *g.sinogram_shape, dtype=torch.float64)  # 8 + 1 channels
    assert _rel(native.backproject(y9.float(), p, g.angles),
                torch_backend.backproject(y9, p, g.angles)) < 1e-5
