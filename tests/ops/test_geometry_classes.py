"""The geometry classes without the square's symmetries (issue 23): odd and prime view
counts, short scans, detector offsets, off-centre and non-square grids, parallel and fan,
flat and curved.  The native operators against a per-view pure-torch oracle (each view
projected on its own, so no batching, orbit or run splitting of either backend is
involved), and the exact adjoint.  Scaled-down versions of ``alara bench``'s classes."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from alara.geometry import FanBeam, ImageGrid, ParallelBeam, uniform_angles
from alara.ops import backend, torch_backend
from alara.ops.raymath import GeometryParams

if backend.native_module() is None:
    pytest.skip("needs alara._C", allow_module_level=True)

from alara.ops import native  # noqa: E402

SQUARE = ImageGrid.square(48, 0.2)
OFF_CENTRE = ImageGrid((48, 48), (-0.08, -0.113), (0.12, 0.087))
NON_SQUARE = ImageGrid((48, 30), (-0.1, -0.0625), (0.1, 0.0625))
BINS = 67


def _parallel(grid, n_views, offset_bins=0.0):
    ds = 2.02 * grid.radius / BINS
    return ParallelBeam(grid, uniform_angles(n_views), BINS, ds, bin_offset=offset_bins * ds)


def _fan(grid, n_views, stop=2 * math.pi, offset_bins=0.0, detector="flat"):
    src = det = 0.3
    half = math.tan(math.asin(grid.radius / src))
    ds = 2.04 * (math.atan(half) if detector == "curved" else half) / BINS
    angles = torch.linspace(0, stop, n_views + 1, dtype=torch.float64)[:-1]
    return FanBeam(grid, angles, BINS, ds, src_radius=src, det_radius=det, detector=detector,
                   bin_offset=offset_bins * ds)


def _short_scan():
    return math.pi + 2 * math.asin(SQUARE.radius / 0.3)


CLASSES = {
    "parallel-odd-101": lambda: _parallel(SQUARE, 101),
    "parallel-prime-97": lambda: _parallel(SQUARE, 97),
    "parallel-quarter-bin-offset": lambda: _parallel(SQUARE, 100, 0.25),
    "parallel-off-centre": lambda: _parallel(OFF_CENTRE, 100),
    "parallel-non-square": lambda: _parallel(NON_SQUARE, 100),
    "fan-short-scan": lambda: _fan(SQUARE, 72, _short_scan()),
    "fan-curved-short-scan": lambda: _fan(SQUARE, 72, _short_scan(), detector="curved"),
    "fan-quarter-bin-offset": lambda: _fan(SQUARE, 98, offset_bins=0.25),
    "fan-curved-quarter-bin-offset": lambda: _fan(SQUARE, 98, offset_bins=0.25, detector="curved"),
    "fan-prime-97": lambda: _fan(SQUARE, 97),
    "fan-off-centre": lambda: _fan(OFF_CENTRE, 96),
    "fan-curved-non-square": lambda: _fan(NON_SQUARE, 96, detector="curved"),
}


@pytest.fixture(params=list(CLASSES))
def geometry(request):
    return CLASSES[request.param]()


@functools.lru_cache(maxsize=None)
def _case(name: str, batch: int):
    """Inputs and the oracle's outputs, computed once for the parametrisations."""
    g = CLASSES[name]()
    gen = torch.Generator().manual_seed(batch)
    x = torch.rand((batch, 1) + g.grid.shape, generator=gen, dtype=torch.float64)
    y = torch.rand((batch, 1) + g.sinogram_shape, generator=gen, dtype=torch.float64)
    return g, x, y, _oracle_project(x, g), _oracle_backproject(y, g)


def _oracle_project(x, g):
    p = GeometryParams.of(g)
    return torch.cat([torch_backend.project(x, p, g.angles[v:v + 1]) for v in range(g.n_views)], 2)


def _oracle_backproject(y, g):
    p = GeometryParams.of(g)
    return sum(torch_backend.backproject(y[:, :, v:v + 1].contiguous(), p, g.angles[v:v + 1])
               for v in range(g.n_views))


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("symmetry", ["auto", "force"])
@pytest.mark.parametrize("batch", [1, 9])
def test_matches_the_per_view_oracle(name, batch, symmetry, monkeypatch):
    # force: wherever the geometry has an orbit the symmetric paths take it; these have
    # none (or only partial ones), and must come out per view all the same.  Batch 9: a
    # block of 8 channels and one image more.
    monkeypatch.setenv("ALARA_SYMMETRY", symmetry)
    geometry, x, y, fp, bp = _case(name, batch)
    p = GeometryParams.of(geometry)
    assert _rel(native.project(x, p, geometry.angles), fp) < 1e-10
    assert _rel(native.backproject(y, p, geometry.angles), bp) < 1e-10
    # float32: the AVX2 paths
    assert _rel(native.project(x.float(), p, geometry.angles), fp) < 2e-5
    assert _rel(native.backproject(y.float(), p, geometry.angles), bp) < 2e-5


def test_exact_adjoint(geometry):
    p = GeometryParams.of(geometry)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((2, 1) + geometry.grid.shape, generator=gen, dtype=torch.float64)
    y = torch.rand((2, 1) + geometry.sinogram_shape, generator=gen, dtype=torch.float64)
    for dw in ([False] if p.kind == 0 else [False, True]):
        lhs = (native.project(x, p, geometry.angles, dw) * y).sum().item()
        rhs = (x * native.backproject(y, p, geometry.angles, dw)).sum().item()
        assert abs(lhs - rhs) <= 1e-10 * abs(lhs), dw


def test_the_classes_have_what_their_names_say():
    from alara.ops.checks import angular_coverage

    g = CLASSES["fan-short-scan"]()
    covered, needed = angular_coverage(g)
    assert needed - 0.1 < covered < needed + 0.1 and covered < 2 * math.pi - 1
    assert CLASSES["fan-quarter-bin-offset"]().bin_offset == pytest.approx(
        0.25 * CLASSES["fan-quarter-bin-offset"]().bin_spacing)
    assert abs(sum(OFF_CENTRE.min_pt) + sum(OFF_CENTRE.max_pt)) > 0.01
    assert NON_SQUARE.shape[0] != NON_SQUARE.shape[1]
