import math

import pytest
import torch

from alara.geometry import FanBeam, ImageGrid, ParallelBeam, lodopab, uniform_angles


def test_lodopab_constants():
    g = lodopab()
    assert g.grid.shape == (362, 362)
    assert g.grid.min_pt == (-0.13, -0.13) and g.grid.max_pt == (0.13, 0.13)
    assert g.sinogram_shape == (1000, 513)
    # angles: cell midpoints of [0, pi)
    assert torch.allclose(g.angles[:2], torch.tensor([0.5, 1.5], dtype=torch.float64) * math.pi / 1000)
    # detector [-rho, rho], rho = 0.13 sqrt(2) ~ 0.1838
    lo = g.bin_start - g.bin_spacing / 2
    assert lo == pytest.approx(-0.13 * math.sqrt(2), rel=1e-12)
    assert g.bin_spacing * 513 == pytest.approx(0.3677, abs=1e-4)


def test_uniform_angles_midpoints():
    a = uniform_angles(4, 0, 2 * math.pi)
    assert torch.allclose(a, torch.tensor([0.25, 0.75, 1.25, 1.75], dtype=torch.float64) * math.pi)


def test_image_grid_coordinates():
    grid = ImageGrid((4, 2), (-2.0, -1.0), (2.0, 1.0))
    x, y = grid.coordinates()
    assert x.tolist() == [-1.5, -0.5, 0.5, 1.5]
    assert y.tolist() == [-0.5, 0.5]
    assert grid.spacing == (1.0, 1.0)
    assert grid.radius == pytest.approx(math.hypot(2, 1))


def test_geometries_compare_by_value():
    assert lodopab(10, 20, 16) == lodopab(10, 20, 16)
    assert lodopab(10, 20, 16) != lodopab(11, 20, 16)
    assert hash(lodopab(10, 20, 16)) == hash(lodopab(10, 20, 16))


@pytest.mark.parametrize("kwargs, match", [
    (dict(shape=(0, 4), min_pt=(0, 0), max_pt=(1, 1)), r"shape\[0\] \(pixels\) must be >= 1"),
    (dict(shape=(4, 4), min_pt=(1, 0), max_pt=(0, 1)), "min_pt < max_pt"),
    (dict(shape=(4, 4), min_pt=(0, 0), max_pt=(float("nan"), 1)), "min_pt < max_pt"),
])
def test_bad_grid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageGrid(**kwargs)


GRID = ImageGrid.square(16, 0.2)


@pytest.mark.parametrize("make, match", [
    (lambda: ParallelBeam(GRID, uniform_angles(4), 0, 0.01), "n_bins must be >= 1"),
    (lambda: ParallelBeam(GRID, uniform_angles(4), 8, -0.01), "bin_spacing must be a positive"),
    (lambda: ParallelBeam(GRID, [], 8, 0.01), "angles must not be empty"),
    (lambda: ParallelBeam(GRID, [0.0, float("nan")], 8, 0.01), "angles must be finite"),
    (lambda: ParallelBeam(GRID, uniform_angles(4), 8, 0.01, bin_offset=1.0), "misses the image"),
    (lambda: FanBeam(GRID, uniform_angles(4), 8, 0.01, src_radius=0.1, det_radius=0.1),
     "inside the field of view"),
    (lambda: FanBeam(GRID, uniform_angles(4), 8, 0.01, src_radius=1.0, det_radius=-1),
     "det_radius must be >= 0"),
    (lambda: FanBeam(GRID, uniform_angles(4), 8, 0.01, src_radius=1.0, det_radius=1.0,
                     bin_offset=1.5), "misses the object"),
    (lambda: FanBeam(GRID, uniform_angles(4), 8, 0.01, src_radius=1.0, detector="round"),
     "'flat' or 'curved'"),
])
def test_bad_beam(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make, match", [
    (lambda: ImageGrid((64.5, 64), (0, 0), (1, 1)), r"shape\[0\] \(pixels\) must be a whole number, got 64.5"),
    (lambda: ImageGrid((64, 64.0), (0, 0), (1, 1)), r"got 64.0 \(float\); pass int\(64.0\)"),
    (lambda: uniform_angles(90.0), "number of angles must be a whole number"),
    (lambda: ParallelBeam(GRID, uniform_angles(4), 24.5, 0.01), "n_bins must be a whole number"),
    (lambda: lodopab(n_angles=10.0, n_bins=21, image_size=16), "number of angles"),
])
def test_non_integer_sizes_are_refused_not_truncated(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_integer_like_sizes_are_accepted():
    import numpy as np

    g = ImageGrid((np.int64(8), torch.tensor(6)), (0, 0), (1, 1))
    assert g.shape == (8, 6) and all(type(n) is int for n in g.shape)
    assert uniform_angles(np.int32(3)).shape == (3,)
