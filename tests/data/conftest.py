"""Shared fixtures for the data tests: tiny geometries and data sets (fast on 2 CPUs)."""

from __future__ import annotations

import pytest

from alara.data.synth import generate_dataset, small_geometry


@pytest.fixture(scope="session")
def tiny_geometry():
    """32 x 32 pixels, 24 views, 45 bins over LoDoPaB's field of view."""
    return small_geometry(image_size=32, n_angles=24)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory, tiny_geometry):
    """A synthetic data set: 3/1/1 patients x 3 slices, 4 samples per file."""
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, patients=(3, 1, 1), slices_per_patient=3, geometry=tiny_geometry,
                     samples_per_file=4, seed=7, progress=False)
    return root
