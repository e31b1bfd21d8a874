"""Ellipse phantoms with exact line integrals (test oracle and demo data).

An ellipse has centre ``(cx, cy)``, semi-axes ``(a, b)`` (metres), rotation ``phi``
(radians, counter-clockwise from the x axis) and an additive ``value``.  The line integral
of its indicator along a ray ``p(t) = o + t d`` (unit ``d``) is the chord length: map the
ray into the frame where the ellipse is the unit disc, ``q(t) = q0 + t v``, then the chord
is ``2 sqrt((q0.v)^2 - |v|^2 (|q0|^2 - 1)) / |v|^2`` where the root is real.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from alara.geometry import Geometry, ImageGrid
from alara.ops import raymath
from alara.ops.raymath import GeometryParams

__all__ = ["Ellipse", "shepp_logan", "rasterize", "line_integrals"]


@dataclass(frozen=True)
class Ellipse:
    value: float
    a: float
    b: float
    cx: float
    cy: float
    phi: float = 0.0


# Modified Shepp-Logan (Toft), on the unit square [-1, 1]^2: (value, a, b, cx, cy, phi deg).
_SHEPP_LOGAN = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
)


def shepp_logan(radius: float = 0.13, scale: float = 1.0) -> list[Ellipse]:
    """The modified Shepp-Logan phantom fitted in a disc of ``radius`` metres.

    Oriented like LoDoPaB's images: ``imshow(x.T)`` shows it upright, i.e. the phantom's
    horizontal axis is world ``x`` (array axis 0) and its "up" is world ``-y``.
    ``scale`` multiplies every value.
    """
    out = []
    for v, a, b, cx, cy, phi in _SHEPP_LOGAN:
        # (horizontal h, up u) -> world (x, y) = (h, -u): a reflection, so angles flip sign.
        out.append(Ellipse(v * scale, a * radius, b * radius, cx * radius, -cy * radius,
                           -math.radians(phi)))
    return out


def rasterize(ellipses: Sequence[Ellipse], grid: ImageGrid, supersample: int = 4,
              dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Pixel averages of the phantom on ``grid`` (``supersample^2`` points per pixel)."""
    (dx, dy), (x0, y0) = grid.spacing, grid.min_pt
    sub = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample
    xs = x0 + (torch.arange(grid.shape[0], dtype=torch.float64)[:, None] + sub[None]).reshape(-1) * dx
    ys = y0 + (torch.arange(grid.shape[1], dtype=torch.float64)[:, None] + sub[None]).reshape(-1) * dy
    px, py = xs[:, None], ys[None, :]
    img = torch.zeros(xs.numel(), ys.numel(), dtype=torch.float64)
    for e in ellipses:
        c, s = math.cos(e.phi), math.sin(e.phi)
        u = ((px - e.cx) * c + (py - e.cy) * s) / e.a
        v = (-(px - e.cx) * s + (py - e.cy) * c) / e.b
        img += e.value * ((u * u + v * v) <= 1).double()
    img = img.reshape(grid.shape[0], supersample, grid.shape[1], supersample).mean((1, 3))
    return img.to(dtype)


def line_integrals(ellipses: Sequence[Ellipse], geometry: Geometry,
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Exact line integrals ``[views, bins]`` of the phantom along every ray of ``geometry``."""
    p = GeometryParams.of(geometry)
    a = geometry.angles.reshape(-1, 1)
    s = geometry.bin_centres().reshape(1, -1)
    r = raymath.rays(p, torch.cos(a), torch.sin(a), s)
    out = torch.zeros(geometry.sinogram_shape, dtype=torch.float64)
    for e in ellipses:
        c, sn = math.cos(e.phi), math.sin(e.phi)
        qx = ((r.ax - e.cx) * c + (r.ay - e.cy) * sn) / e.a
        qy = (-(r.ax - e.cx) * sn + (r.ay - e.cy) * c) / e.b
        vx = (r.dx * c + r.dy * sn) / e.a
        vy = (-r.dx * sn + r.dy * c) / e.b
        vv = vx * vx + vy * vy
        qv = qx * vx + qy * vy
        disc = qv * qv - vv * (qx * qx + qy * qy - 1)
        out += e.value * 2 * torch.sqrt(disc.clamp(min=0)) / vv
    return out.to(dtype)
