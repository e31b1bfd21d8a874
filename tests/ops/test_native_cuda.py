"""Native CUDA operators: the checks of test_native.py on the GPU, plus CUDA vs CPU.

Marked ``cuda``; skipped without a GPU or without the CUDA kernels in alara._C.
"""

from __future__ import annotations


import pytest
import torch

from alara import ops
from alara.geometry import lodopab
from alara.ops import backend, torch_backend
from alara.ops.raymath import GeometryParams
from alara.testing import small_geometries, tiny_geometries

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

if torch.cuda.is_available() and not backend.native_available(torch.device("cuda")):
    pytest.skip("alara._C was built without CUDA kernels", allow_module_level=True)

CUDA = torch.device("cuda")


GEOMETRIES = small_geometries()


def _rel(a, b) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(params=list(GEOMETRIES))
def geometry(request):
    return GEOMETRIES[request.param]


def _native():
    from alara.ops import native

    return native


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("batch", [(1, 1), (2, 3)])
def test_cuda_matches_torch_and_cpu(geometry, dtype, tol, batch):
    native = _native()
    p, angles = GeometryParams.of(geometry), geometry.angles
    x = torch.rand(*batch, *geometry.grid.shape, dtype=dtype)
    y = torch.rand(*batch, *geometry.sinogram_shape, dtype=dtype)
    fp = native.project(x.to(CUDA), p, angles)
    bp = native.backproject(y.to(CUDA), p, angles)
    assert fp.device.type == "cuda" and fp.dtype == dtype
    assert _rel(fp, torch_backend.project(x.double(), p, angles)) < tol
    assert _rel(bp, torch_backend.backproject(y.double(), p, angles)) < tol
    assert _rel(fp, native.project(x, p, angles)) < tol
    assert _rel(bp, native.backproject(y, p, angles)) < tol
    if p.kind != 0:
        bpw = native.backproject(y.to(CUDA), p, angles, distance_weight=True)
        ref = torch_backend.backproject(y.double(), p, angles, distance_weight=True)
        assert _rel(bpw, ref) < tol


def test_cuda_adjoint(geometry):
    native = _native()
    p = GeometryParams.of(geometry)
    x = torch.rand(2, 3, *geometry.grid.shape, dtype=torch.float64, device=CUDA)
    y = torch.rand(2, 3, *geometry.sinogram_shape, dtype=torch.float64, device=CUDA)
    for distance_weight in ([False] if p.kind == 0 else [False, True]):  # fan beam only
        lhs = (native.project(x, p, geometry.angles, distance_weight) * y).sum().item()
        rhs = (x * native.backproject(y, p, geometry.angles, distance_weight)).sum().item()
        assert abs(lhs - rhs) <= 1e-12 * abs(lhs), distance_weight


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_accumulates_in_float(dtype):
    native = _native()
    g = GEOMETRIES["parallel"]
    p = GeometryParams.of(g)
    x = torch.rand(2, 1, *g.grid.shape, device=CUDA).to(dtype)
    out = native.project(x, p, g.angles)
    assert out.dtype == dtype
    assert _rel(out.float(), native.project(x.float(), p, g.angles)) < 1e-2
    y = torch.rand(2, 1, *g.sinogram_shape, device=CUDA).to(dtype)
    bp = native.backproject(y, p, g.angles)
    assert bp.dtype == dtype
    assert _rel(bp.float(), native.backproject(y.float(), p, g.angles)) < 1e-2


def test_cuda_lodopab_matches_cpu():
    native = _native()
    g = lodopab()
    p = GeometryParams.of(g)
    x = torch.rand(2, 1, 362, 362)
    assert _rel(native.project(x.to(CUDA), p, g.angles), native.project(x, p, g.angles)) < 1e-5
    y = torch.rand(2, 1, 1000, 513)
    assert _rel(native.backproject(y.to(CUDA), p, g.angles),
                native.backproject(y, p, g.angles)) < 1e-5


def test_cuda_auto_picks_native():
    assert backend.resolve("auto", CUDA) == "native"


def test_cuda_runs_on_current_stream():
    native = _native()
    g = GEOMETRIES["parallel"]
    p = GeometryParams.of(g)
    x = torch.rand(1, 1, *g.grid.shape, device=CUDA)
    ref = native.project(x, p, g.angles)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        out = native.project(x, p, g.angles)
    s.synchronize()
    assert torch.equal(out, ref)


TINY = tiny_geometries()


@pytest.mark.parametrize("kind", list(TINY))
def test_cuda_gradcheck_and_opcheck(kind):
    native = _native()
    g = TINY[kind]
    p = GeometryParams.of(g)
    x = torch.rand(1, 2, *g.grid.shape, dtype=torch.float64, device=CUDA, requires_grad=True)
    y = torch.rand(1, 2, *g.sinogram_shape, dtype=torch.float64, device=CUDA,
                   requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: native.project(t, p, g.angles), (x,))
    assert torch.autograd.gradgradcheck(lambda t: native.backproject(t, p, g.angles), (y,))
    angles = g.angles.to(CUDA)
    geo = (p.x0, p.y0, p.dx, p.dy, p.s0, p.ds, p.src_radius, p.src_det, False)
    torch.library.opcheck(torch.ops.alara.project.default, (x, angles, p.kind, p.n_bins, *geo))
    torch.library.opcheck(torch.ops.alara.backproject.default,
                          (y, angles, p.kind, p.n0, p.n1, *geo))


def test_cuda_torch_compile_fullgraph():
    native = _native()
    g = TINY["fan-flat"]
    p = GeometryParams.of(g)
    fn = torch.compile(lambda t: native.backproject(native.project(t, p, g.angles), p, g.angles),
                       fullgraph=True)
    x = torch.rand(2, 1, *g.grid.shape, device=CUDA)
    ref = native.backproject(native.project(x, p, g.angles), p, g.angles)
    assert torch.allclose(fn(x), ref, rtol=1e-5, atol=1e-6)


def test_cuda_public_api(geometry):
    x = torch.rand(2, 1, *geometry.grid.shape, dtype=torch.float64, device=CUDA)
    a = ops.project(x, geometry, backend="native")
    b = ops.project(x.cpu(), geometry, backend="torch")
    assert _rel(a, b) < 1e-10
