"""The float32 batch-1 kernels at both vector widths (csrc/cpu/simd_avx512.h): the 16-lane
AVX-512 rows and fan-beam lanes, and the 8-lane AVX2 ones (``ALARA_SIMD=avx2``), against
the per-view pure-torch oracle on the geometry classes without the square's symmetries
(tests/ops/test_geometry_classes.py), on grids whose rows are no multiple of 16 or 8 (the
masked last block), with view counts no multiple of 8, and at the small batches that run
image by image through the batch-1 kernels."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alara.ops import backend
from alara.ops.raymath import GeometryParams

if backend.native_module() is None:
    pytest.skip("needs alara._C", allow_module_level=True)

from alara.ops import native  # noqa: E402

from .test_geometry_classes import (  # noqa: E402
    CLASSES, _case, _oracle_backproject, _oracle_project, _rel)


def _has_avx512() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return all(f in flags for f in ("avx512f", "avx512vl", "avx512bw", "avx512dq"))


WIDTHS = ["avx2", pytest.param("auto", marks=pytest.mark.skipif(
    not _has_avx512(), reason="the CPU has no AVX-512 (auto is AVX2 there)"))]


@pytest.mark.parametrize("simd", WIDTHS)
@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", list(CLASSES))
def test_batch_one_kernels_match_the_oracle(name, batch, simd, monkeypatch):
    """Fan beams: 2 to 4 images run together through the AVX-512 lanes that share each
    pixel's taps between channels (so do the 2 channels of the prime view count's orbits
    of 2 views, at batch 1), 5 as groups of 4 and 1 (AVX2: a padded block of 8 channels);
    parallel beams: up to 5
    images one at a time through the batch-1 rows.  The 48-pixel rows are 3 blocks of 16,
    the non-square grid's 30-pixel rows a block of 16 and a masked one."""
    monkeypatch.setenv("ALARA_SIMD", simd)
    g, x, y, fp, bp = _case(name, batch)  # (cached across the parametrisations)
    p = GeometryParams.of(g)
    assert _rel(native.project(x.float(), p, g.angles), fp) < 2e-5
    assert _rel(native.backproject(y.float(), p, g.angles), bp) < 2e-5
    # float64 takes neither SIMD path: exact
    assert _rel(native.backproject(y, p, g.angles), bp) < 1e-10


@pytest.mark.parametrize("batch", [10, 19])
@pytest.mark.parametrize("name", ["fan-short-scan", "fan-prime-97", "fan-curved-quarter-bin-offset"])
def test_fan_batches_past_whole_blocks_match_the_oracle(name, batch):
    """From 16 channels the fan BP runs whole blocks of 8 channels (the AVX2 channel
    blocks), and on AVX-512 the channels past them in groups of at most 4 through the lanes
    (csrc/cpu/batching.h, batch_groups' lanes_group): 10 images of the short scan are groups
    4, 4, 2; 19 are 16 and 3; the prime view count's orbits of 2 views make 20 channels
    (16, 4) and 38 (32, 4, 2)."""
    g, x, y, fp, bp = _case(name, batch)
    out = native.backproject(y.float(), GeometryParams.of(g), g.angles)
    assert _rel(out, bp) < 2e-5
    for i in (0, batch - 1):  # the first image and the last group's
        assert _rel(out[i:i + 1], bp[i:i + 1]) < 2e-5


@pytest.mark.skipif(not _has_avx512(), reason="the CPU has no AVX-512")
@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("shape", [(37, 53), (53, 21)])
@pytest.mark.parametrize("n_views", [13, 61])
def test_widths_agree_on_odd_sizes(name, shape, n_views, monkeypatch):
    """The two widths on grids of odd sizes (the masked last block of 16, and rows shorter
    than a block; rays over planes no multiple of 16) and odd view counts, float32 at
    batch 1: the same sums to rounding."""
    from alara.geometry import FanBeam, ImageGrid, ParallelBeam

    g0 = CLASSES[name]()
    lo, hi = g0.grid.min_pt, g0.grid.max_pt
    grid = ImageGrid(shape, lo, hi)
    if isinstance(g0, ParallelBeam):
        g = ParallelBeam(grid, g0.angles[:n_views], g0.n_bins, g0.bin_spacing,
                         bin_offset=g0.bin_offset)
    else:
        g = FanBeam(grid, g0.angles[:n_views], g0.n_bins, g0.bin_spacing, src_radius=g0.src_radius,
                    det_radius=g0.det_radius, detector=g0.detector, bin_offset=g0.bin_offset)
    p = GeometryParams.of(g)
    gen = torch.Generator().manual_seed(n_views)
    x = torch.rand((1, 1) + g.grid.shape, generator=gen)
    y = torch.rand((1, 1) + g.sinogram_shape, generator=gen)
    fp, bp = _oracle_project(x.double(), g), _oracle_backproject(y.double(), g)
    out = {}
    for simd in ("avx2", "auto"):
        monkeypatch.setenv("ALARA_SIMD", simd)
        out[simd] = native.project(x, p, g.angles), native.backproject(y, p, g.angles)
        assert _rel(out[simd][0], fp) < 2e-5, simd
        assert _rel(out[simd][1], bp) < 2e-5, simd
    for a, b in zip(out["auto"], out["avx2"]):
        assert _rel(a, b) < 2e-5


def test_simd_setting_is_checked(monkeypatch):
    monkeypatch.setenv("ALARA_SIMD", "sse9")
    g = CLASSES["parallel-off-centre"]()
    y = torch.rand((1, 1) + g.sinogram_shape)
    if not _has_avx512():
        pytest.skip("the setting is read only where AVX-512 is there to choose")
    with pytest.raises(RuntimeError, match="ALARA_SIMD"):
        native.backproject(y, GeometryParams.of(g), g.angles)


@pytest.mark.skipif(not _has_avx512(), reason="the CPU has no AVX-512")
def test_fan_segments_beyond_the_split_tables_range():
    """The AVX-512 fan BP builds its per-plane positions from each ray's line split into
    32-bit integer and float parts, where every ray of a segment stays within +-2^30 units
    (2^-S pixel) on every plane, and from the double lines elsewhere.  On a long, thin grid
    (400 x 9 pixels: S = 23 for the x-dominant family) many x-dominant lines pass hundreds
    of pixels off the grid's 9 rows at some plane, beyond that range, and others do not:
    one call takes both tables, and must match the oracle."""
    from alara.geometry import FanBeam, ImageGrid
    from alara.ops import raymath

    grid = ImageGrid((400, 9), (-0.2, -0.0045), (0.2, 0.0045))
    src = 0.3
    half = math.tan(math.asin(grid.radius / src))
    angles = torch.linspace(0, 2 * math.pi, 25, dtype=torch.float64)[:-1]
    g = FanBeam(grid, angles, 67, 2.04 * half / 67, src_radius=src, det_radius=src)
    p = GeometryParams.of(g)
    rays = raymath.ray_table(p, g.angles, torch.float64)
    ends = torch.stack([rays.alpha, rays.alpha + rays.beta * (p.n0 - 1)]).abs().amax(0) * 2.0 ** 23
    fits = ends <= 2.0 ** 30
    assert bool((rays.xdom & fits).any()) and bool((rays.xdom & ~fits).any())  # both tables run
    gen = torch.Generator().manual_seed(5)
    y = torch.rand((1, 1) + g.sinogram_shape, generator=gen, dtype=torch.float64)
    bp = _oracle_backproject(y, g)
    assert _rel(native.backproject(y.float(), p, g.angles), bp) < 2e-5


@pytest.mark.skipif(not _has_avx512(), reason="the CPU has no AVX-512")
def test_fan_lane_map_on_a_long_detector():
    """The AVX-512 lane map divides by a reciprocal estimate (relative error 2^-14) and adds
    that error, a |r| 2^-13 bins, to its margin; on a detector with many bins per unit of
    r that would take more than 0.1 bin, so there it refines the estimate by a Newton step
    instead.  6000 bins over a 384 x 384 grid (about 11 rays per pixel, still the lanes'
    path) need it: without the step pixels miss rays (relative error 5e-5 here, against
    3e-7 with it)."""
    from alara.geometry import FanBeam, ImageGrid

    grid = ImageGrid.square(384, 0.2)
    src, bins = 0.3, 6000
    half = math.tan(math.asin(grid.radius / src))
    ds = 2.04 * half / bins
    assert (2 * src / ds) * half * 2.0 ** -13 > 0.1  # a |r| 2^-13 at the fan's edge
    g = FanBeam(grid, torch.linspace(0.1, 6.0, 9, dtype=torch.float64), bins, ds,
                src_radius=src, det_radius=src)
    p = GeometryParams.of(g)
    gen = torch.Generator().manual_seed(3)
    y = torch.rand((1, 1) + g.sinogram_shape, generator=gen, dtype=torch.float64)
    assert _rel(native.backproject(y.float(), p, g.angles), _oracle_backproject(y, g)) < 2e-5


def test_fan_ray_tables_follow_every_field_of_the_geometry():
    """The fan BP keeps its per-ray tables (csrc/cpu/fan_rays.h) for the next calls with
    the same geometry, at most four geometries.  Geometries that differ in one field only
    (one angle, the source distance, the detector offset or spacing, the detector's shape,
    the grid's placement), called in turn and round again past the cache's size, in float32
    (split lines) and float64 (none), must each match the oracle: a key that missed a field
    would hand one geometry another's tables."""
    from alara.geometry import FanBeam, ImageGrid

    grid = ImageGrid.square(32, 0.05)
    # (views without the square's symmetries: every call takes the per-view kernel with
    # all its views, rather than the symmetric path's subsets)
    angles = torch.linspace(0.1, 6.0, 23, dtype=torch.float64)
    moved = angles.clone()
    moved[7] += 0.01

    def fan(angles=angles, src=0.1, offset=0.0, ds=1.6e-3, detector="flat", grid=grid):
        return FanBeam(grid, angles, 40, ds, src_radius=src, det_radius=src, detector=detector,
                       bin_offset=offset)

    variants = [fan(), fan(angles=moved), fan(src=0.11), fan(offset=4e-4), fan(ds=1.7e-3),
                fan(detector="curved", ds=1.6e-2),
                fan(grid=ImageGrid((32, 32), (-0.024, -0.025), (0.026, 0.025)))]
    gen = torch.Generator().manual_seed(11)
    y = torch.rand((1, 1) + variants[0].sinogram_shape, generator=gen, dtype=torch.float64)
    expected = [_oracle_backproject(y, g) for g in variants]
    assert all(_rel(bp, expected[0]) > 1e-3 for bp in expected[1:])  # each field matters

    def check(i: int) -> None:
        p = GeometryParams.of(variants[i])
        assert _rel(native.backproject(y.float(), p, variants[i].angles), expected[i]) < 2e-5
        assert _rel(native.backproject(y, p, variants[i].angles), expected[i]) < 1e-10

    # each variant right after the first geometry, whose tables are then in the cache;
    # then all in turn, round past the cache's size
    for i in range(1, len(variants)):
        check(0)
        check(i)
    for i in list(range(len(variants))) * 2:
        check(i)


def _flat_fan(grid, angles, src, rays_per_pixel, offset):
    """A flat-detector fan whose detector covers the grid, with `rays_per_pixel` rays per
    pixel width at the grid's centre and the detector shifted by `offset` bins."""
    from alara.geometry import FanBeam

    half = math.tan(math.asin(min(grid.radius / src, 0.95)))
    ds = 2 * grid.spacing[0] / rays_per_pixel  # (at the detector, twice the source's distance)
    n_bins = max(8, math.ceil(2.04 * half * 2 * src / ds))
    return FanBeam(grid, angles, n_bins, ds, src_radius=src, det_radius=src, bin_offset=offset * ds)


@pytest.mark.skipif(not _has_avx512(), reason="the CPU has no AVX-512")
@settings(max_examples=25, deadline=None)
@given(src=st.floats(0.16, 0.6), rays_per_pixel=st.floats(0.4, 4.0), start=st.floats(0.0, 6.3),
       span=st.floats(0.5, 6.3), offset=st.floats(-0.5, 0.5), seed=st.integers(0, 2**31 - 1))
def test_flat_fan_taps_from_the_end_spacings(src, rays_per_pixel, start, span, offset, seed):
    """On a flat detector the AVX-512 fan BP takes a plane's tap count from the spacings at
    the two ends of its ray range (csrc/cpu/kernels.h, fan_plane_tables: the crossings are
    a projective function of the bin, so the spacing is monotone along the range) instead
    of scanning them all.  Across source distances and ray densities that put planes on
    both sides of every tap-count threshold, no pixel may miss a ray: each pixel of the
    float32 result within 1e-4 of the largest, against the float64 oracle."""
    from alara.geometry import ImageGrid

    grid = ImageGrid((40, 33), (-0.1, -0.08), (0.1, 0.085))
    g = _flat_fan(grid, start + torch.linspace(0, span, 17, dtype=torch.float64), src, rays_per_pixel, offset)
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand((1, 1) + g.sinogram_shape, generator=gen, dtype=torch.float64)
    bp = _oracle_backproject(y, g)
    out = native.backproject(y.float(), GeometryParams.of(g), g.angles).double()
    assert float((out - bp).abs().max() / bp.abs().max()) < 1e-4


@pytest.mark.skipif(not _has_avx512(), reason="the CPU has no AVX-512")
@settings(max_examples=40, deadline=None)
@given(src=st.floats(0.16, 0.6), rays_per_pixel=st.floats(0.6, 3.0), start=st.floats(0.0, 6.3),
       offset=st.floats(-0.5, 0.5), seed=st.integers(0, 2**31 - 1))
def test_flat_fan_short_starts_keep_every_ray(src, rays_per_pixel, start, offset, seed):
    """Where a flat detector's plane has room for it, the AVX-512 fan BP's lanes start at
    the lane map's first ray as it is, which may be one ray short, instead of stepping past
    it (csrc/cpu/kernels.h, fan_short_start_fits).  A ray missed at the far end of a pixel's
    taps weighs little (it lies within the map's margin of j + 1), so this checks one view
    at a time, where a single ray's share is visible: every pixel within 1e-5 of the
    largest, against the float64 oracle, over densities that put planes on both sides of
    every tap count; one channel and the 2 .. 4 channel lanes."""
    from alara.geometry import ImageGrid

    grid = ImageGrid((44, 37), (-0.1, -0.09), (0.1, 0.078))
    gen = torch.Generator().manual_seed(seed)
    for a, channels in ((start, 1), (start + 1.1, 1), (start + 2.3, 3)):
        g = _flat_fan(grid, torch.tensor([a], dtype=torch.float64), src, rays_per_pixel, offset)
        y = torch.rand((1, channels) + g.sinogram_shape, generator=gen, dtype=torch.float64)
        bp = _oracle_backproject(y, g)
        out = native.backproject(y.float(), GeometryParams.of(g), g.angles).double()
        assert float((out - bp).abs().max() / bp.abs().max()) < 1e-5, a
