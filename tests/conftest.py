"""Shared fixtures: small geometries of every kind, seeded randomness."""

from __future__ import annotations

import pytest
import torch

from alara.testing import small_geometries


# One geometry per kind; operator tests also sweep the special cases of small_geometries().
KINDS = ("parallel", "fan-flat", "fan-curved")


@pytest.fixture(params=KINDS)
def geometry(request):
    return small_geometries()[request.param]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
