"""Peer projectors for the pytest-benchmark suites: the adapters of ``alara bench``
(:mod:`alara.cli.bench`, checked against alara in tests/ops/test_peers.py), skipped when
the peer is not installed."""

from __future__ import annotations

import pytest

from alara.cli import bench
from alara.geometry import Geometry, ParallelBeam


def astra_cpu(geometry: Geometry, projector: str) -> bench.Pair:
    """ASTRA CPU projector ``projector`` (``line``, ``linear``, ``strip``, ``line_fanflat``)."""
    pytest.importorskip("astra", reason="astra-toolbox not installed (pip install -e .[bench])")
    return bench.astra_pair(geometry, projector)


def skimage_radon(geometry: Geometry) -> bench.Pair:
    """scikit-image's ``radon`` / unfiltered ``iradon`` (parallel beam only)."""
    pytest.importorskip("skimage.transform", reason="scikit-image not installed")
    if not isinstance(geometry, ParallelBeam):
        pytest.skip("scikit-image has no fan-beam projector")
    return bench.skimage_pair(geometry)
