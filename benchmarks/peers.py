"""Peer projectors timed beside alara's: ASTRA (CPU) and scikit-image.

Each factory returns ``(forward, backward)`` callables on numpy arrays shaped like alara's
``[B, C, ...]`` tensors (looping over the batch, as a user of the peer would), or raises
``pytest.skip`` when the peer is not installed.  ASTRA's parallel angles are shifted by
``-pi/2`` so that its ``linear`` projector computes alara's (and ODL's) transform.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pytest

from alara.geometry import FanBeam, Geometry, ParallelBeam

Pair = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]


def _batched(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def run(a: np.ndarray) -> np.ndarray:
        out = np.stack([fn(s) for s in a.reshape(-1, *a.shape[-2:])])
        return out.reshape(*a.shape[:-2], *out.shape[-2:])

    return run


def astra_cpu(geometry: Geometry, projector: str) -> Pair:
    """ASTRA CPU projector ``projector`` (``line``, ``linear``, ``strip``, ``line_fanflat``)."""
    astra = pytest.importorskip("astra", reason="astra-toolbox not installed (pip install -e .[bench])")
    grid = geometry.grid
    n0, n1 = grid.shape
    # ASTRA volumes are (rows=y, cols=x); alara's axes are (x, y): transpose in and out.
    vol = astra.create_vol_geom(n1, n0, grid.min_pt[0], grid.max_pt[0], grid.min_pt[1], grid.max_pt[1])
    angles = geometry.angles.numpy()
    if isinstance(geometry, ParallelBeam):
        proj = astra.create_proj_geom("parallel", geometry.bin_spacing, geometry.n_bins,
                                      angles - math.pi / 2)
    else:
        assert isinstance(geometry, FanBeam)
        proj = astra.create_proj_geom("fanflat", geometry.bin_spacing, geometry.n_bins,
                                      angles - math.pi / 2, geometry.src_radius,
                                      geometry.det_radius)
    pid = astra.create_projector(projector, proj, vol)

    def forward(img: np.ndarray) -> np.ndarray:
        sid, sino = astra.create_sino(np.ascontiguousarray(img.T, dtype=np.float32), pid)
        astra.data2d.delete(sid)
        return sino

    def backward(sino: np.ndarray) -> np.ndarray:
        bid, img = astra.create_backprojection(np.ascontiguousarray(sino, dtype=np.float32), pid)
        astra.data2d.delete(bid)
        return img.T

    return _batched(forward), _batched(backward)


def skimage_radon(geometry: Geometry) -> Pair:
    """scikit-image's ``radon`` and unfiltered ``iradon`` (parallel beam only).

    ``radon`` picks its own detector (one bin per pixel of the padded diagonal), so the
    backward callable takes a sinogram produced by the forward one, not alara's.
    """
    transform = pytest.importorskip("skimage.transform", reason="scikit-image not installed")
    if not isinstance(geometry, ParallelBeam):
        pytest.skip("scikit-image has no fan-beam projector")
    theta = np.degrees(geometry.angles.numpy())
    size = geometry.grid.shape[0]

    def forward(img: np.ndarray) -> np.ndarray:
        return transform.radon(img, theta=theta, circle=False)

    def backward(sino: np.ndarray) -> np.ndarray:
        return transform.iradon(sino, theta=theta, filter_name=None, circle=False,
                                output_size=size)

    return _batched(forward), _batched(backward)
