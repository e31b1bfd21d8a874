"""Example alara plugin: Landweber iteration, ``x <- x + tau A^T (y - A x)``.

With ``0 < tau < 2 / ||A||^2`` the iteration converges to a least-squares solution; early
stopping (few ``iterations``) regularises.  ``||A||^2`` is estimated by power iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from alara import ops
from alara.geometry import Geometry
from alara.hookspecs import hookimpl
from alara.interfaces import Reconstructor
from alara.registry import Registry

__all__ = ["LandweberReconstructor", "operator_norm_sq"]


def operator_norm_sq(geometry: Geometry, iterations: int = 20, dtype: torch.dtype = torch.float64) -> float:
    """``||A||^2``, the largest eigenvalue of ``A^T A``, by power iteration."""
    gen = torch.Generator().manual_seed(0)
    v = torch.rand((1, 1, *geometry.grid.shape), generator=gen, dtype=dtype)
    norm = 0.0
    for _ in range(iterations):
        w = ops.backproject(ops.project(v, geometry), geometry)
        norm = float(w.norm())
        v = w / norm
    return norm


class LandweberReconstructor(Reconstructor):
    """Landweber iteration from zero (or from FBP), optionally clipped to [0, 1]."""

    name = "landweber"

    @dataclass(frozen=True)
    class Config:
        iterations: int = 10
        #: Step as a fraction of 2 / ||A||^2 (must be in (0, 1) to converge).
        relaxation: float = 0.9
        init: Literal["zeros", "fbp"] = "zeros"
        #: Project onto [0, 1] after every step (the range of x).
        clip: bool = True

        def __post_init__(self) -> None:
            if self.iterations < 0:
                raise ValueError(f"iterations must be >= 0, got {self.iterations}")
            if not 0 < self.relaxation < 1:
                raise ValueError(f"relaxation must be in (0, 1), got {self.relaxation}")

    def forward(self, y: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        c = self.config
        tau = 2 * c.relaxation / operator_norm_sq(geometry)
        if c.init == "fbp":
            x = ops.fbp(y, geometry, filter="hann")
        else:
            x = y.new_zeros((*y.shape[:2], *geometry.grid.shape))
        for _ in range(c.iterations):
            x = x + tau * ops.backproject(y - ops.project(x, geometry), geometry)
            if c.clip:
                x = x.clamp(0.0, 1.0)
        return x


@hookimpl
def alara_register_reconstructor(registry: Registry) -> None:
    """Register ``landweber``."""
    registry.add(LandweberReconstructor)
