"""Tiny problems the trainer tests share: a 24 x 24 geometry, blob patients, a small
learned policy defined here (the trainer takes any built modules)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from alara.geometry import lodopab
from alara.interfaces import DosePolicy, DosePolicyConfig


class TinyPolicy(DosePolicy):
    """A scalar learned policy small enough for CI: ``log n0 = log(init_n0) + a + b f``
    with ``f`` the prior image's mean attenuation (scaled to order one)."""

    name = "tiny_test_policy"

    @dataclass(frozen=True)
    class Config(DosePolicyConfig):
        init_n0: float = 256.0

    def __init__(self, config=None):
        super().__init__(config)
        self.net = nn.Linear(1, 1)
        nn.init.zeros_(self.net.weight)
        nn.init.zeros_(self.net.bias)

    def propose(self, prior, geometry):
        f = 20 * prior.image.flatten(1).mean(1, keepdim=True) - 1.0
        return torch.exp(math.log(self.config.init_n0) + self.net(f)).expand(-1, geometry.n_views)


@pytest.fixture
def tiny_geometry():
    return lodopab(n_angles=24, n_bins=33, image_size=24)


def blob(geometry, sigma: float, amplitude: float) -> torch.Tensor:
    """A centred Gaussian 'patient' [1, H, W]: wider and denser means more attenuation."""
    xs, ys = geometry.grid.coordinates(dtype=torch.float32)
    X, Y = torch.meshgrid(xs, ys, indexing="ij")
    return (amplitude * torch.exp(-(X ** 2 + Y ** 2) / (2 * sigma ** 2)))[None]
