"""Operators: empty batches give the same answer on every backend, non-integer sizes are
refused instead of truncated, angular coverage too short for FBP warns."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

from alara import ops
from alara.geometry import FanBeam, ImageGrid, ParallelBeam, lodopab, uniform_angles
from alara.ops.checks import CoverageWarning
from alara.testing import small_geometries

BACKENDS = ["torch"] + (["native"] if ops.native_available() else [])
KINDS = ("parallel", "fan-flat", "fan-curved")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("empty", [(0, 1), (2, 0)], ids=["no-images", "no-channels"])
def test_empty_batches_are_the_same_on_every_backend(kind, empty):
    g = small_geometries()[kind]
    results = {}
    for backend in BACKENDS:
        x = torch.zeros(empty + g.grid.shape, dtype=torch.float64, requires_grad=True)
        y = ops.project(x, g, backend=backend)
        y.sum().backward()
        sino = torch.zeros(empty + g.sinogram_shape, dtype=torch.float64)
        results[backend] = (tuple(y.shape), y.dtype, tuple(x.grad.shape),
                            tuple(ops.backproject(sino, g, backend=backend).shape),
                            tuple(ops.fbp(sino, g, backend=backend).shape))
    expected = (empty + g.sinogram_shape, torch.float64, empty + g.grid.shape,
                empty + g.grid.shape, empty + g.grid.shape)
    assert all(r == expected for r in results.values()), results


@pytest.mark.parametrize("make, message", [
    (lambda: ImageGrid((64.5, 64.5), (-0.1, -0.1), (0.1, 0.1)), r"ImageGrid.shape\[0\] \(pixels\) must be a whole number, got 64.5 \(float\)"),
    (lambda: uniform_angles(90.0), r"number of angles must be a whole number, got 90.0 \(float\); pass int\(90.0\) if 90 is meant"),
    (lambda: lodopab(n_angles=100, n_bins=51.5, image_size=32), r"n_bins must be a whole number, got 51.5"),
    (lambda: ParallelBeam(ImageGrid.square(8, 0.2), uniform_angles(4), True, 0.03), r"n_bins must be a whole number, got True \(bool\)"),
])
def test_non_integer_sizes_are_refused_not_truncated(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_non_finite_images_are_refused():
    g = small_geometries()["parallel"]
    x = torch.zeros((1, 1) + g.grid.shape)
    x[0, 0, 3, 3] = math.inf
    with pytest.raises(ValueError, match="x contains NaN or infinite values"):
        ops.project(x, g)


def _with_angles(kind, n, stop):
    return dataclasses.replace(small_geometries()[kind], angles=uniform_angles(n, 0, stop))


@pytest.mark.parametrize("kind, stop, message", [
    ("parallel", 0.6 * math.pi, r"parallel-beam views cover about 1.885 rad, less than the pi rad "
                                r"\(half circle\) FBP needs: expect limited-angle artefacts"),
    ("fan-flat", math.pi, r"fan-beam views cover about 3.142 rad, less than the pi \+ fan angle "
                          r"= 3.944 rad that complete data need"),
    ("fan-curved", 4.5, r"alara's fan-beam FBP assumes a full circle \(2 pi\).*Parker weights"),
])
def test_short_angular_coverage_warns(kind, stop, message):
    g = _with_angles(kind, 60, stop)
    with pytest.warns(CoverageWarning, match=message):
        ops.fbp(torch.zeros((1, 1) + g.sinogram_shape), g)


@pytest.mark.parametrize("kind, n, stop", [
    ("parallel", 60, math.pi), ("parallel", 30, 2 * math.pi), ("parallel", 3, math.pi),
    ("fan-flat", 60, 2 * math.pi), ("fan-curved", 7, 2 * math.pi),
])
def test_complete_coverage_does_not_warn(kind, n, stop):
    g = _with_angles(kind, n, stop)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)
        ops.fbp(torch.zeros((1, 1) + g.sinogram_shape), g)
