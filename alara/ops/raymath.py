"""Ray and pixel math of alara's discretisation, in torch (mirrors ``csrc/raymath.h``).

The projector is Joseph's method, which is what ASTRA's ``linear`` projector and ODL's
LoDoPaB ray transform compute.  A ray ``a + t d`` (unit ``d``) is *x-dominant* when it
crosses more pixel columns than rows, ``|d_x| / dx >= |d_y| / dy``.  An x-dominant ray
visits every plane ``x = px_i`` and interpolates linearly between the two pixels of that
plane nearest to its crossing, at fractional index

    j_f(i) = alpha + beta * i,
    beta   = (dx / dy) * d_y / d_x,
    alpha  = (a_y + (px_0 - a_x) * d_y / d_x - y_min) / dy - 1/2,

with pixels outside the grid counting as zero; the sum is weighted by ``w = dx / |d_x|``,
the length of the ray between two planes.  A y-dominant ray is the same with the axes
swapped.  The adjoint gives pixel ``(i, j)`` the weight ``w * max(0, 1 - |j_f(i) - j|)``
from each x-dominant ray, so backprojection only needs the few rays whose crossing of
the pixel's "diamond" (the segments ``{px_i} x (py_j -/+ dy)`` and ``(px_i -/+ dx) x {py_j}``)
exists: the detector bins between the projections of the diamond's four vertices.

Every function here takes tensors and broadcasts; ``GeometryParams`` carries the scalars
that the native ops take as primitive arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from alara.geometry import FanBeam, Geometry, ParallelBeam

PARALLEL, FAN_FLAT, FAN_CURVED = 0, 1, 2


@dataclass(frozen=True)
class GeometryParams:
    """The scalars of a geometry, as the native kernels receive them."""

    kind: int
    n0: int
    n1: int
    x0: float
    y0: float
    dx: float
    dy: float
    n_bins: int
    s0: float
    ds: float
    src_radius: float
    src_det: float

    @classmethod
    def of(cls, g: Geometry) -> "GeometryParams":
        grid = g.grid
        (dx, dy), (x0, y0) = grid.spacing, grid.min_pt
        if isinstance(g, ParallelBeam):
            kind, rs, sd = PARALLEL, 0.0, 0.0
        elif isinstance(g, FanBeam):
            kind = FAN_CURVED if g.detector == "curved" else FAN_FLAT
            rs, sd = g.src_radius, g.src_det_distance
        else:  # pragma: no cover - guarded by validation
            raise TypeError(f"unsupported geometry {type(g).__name__}")
        return cls(kind, grid.shape[0], grid.shape[1], x0, y0, dx, dy, g.n_bins,
                   g.bin_start, g.bin_spacing, rs, sd)


class Rays(NamedTuple):
    ax: torch.Tensor
    ay: torch.Tensor
    dx: torch.Tensor
    dy: torch.Tensor


class JosephParams(NamedTuple):
    xdom: torch.Tensor  # bool: steps over axis-0 planes
    alpha: torch.Tensor
    beta: torch.Tensor
    weight: torch.Tensor


def rays(p: GeometryParams, cos: torch.Tensor, sin: torch.Tensor, s: torch.Tensor) -> Rays:
    """Origin and unit direction of the ray of detector coordinate ``s`` at view (cos, sin)."""
    ex, ey = -sin, cos  # ray direction at the centre of the detector
    ux, uy = cos, sin  # detector axis
    if p.kind == PARALLEL:
        zero = torch.zeros_like(s)
        return Rays(s * ux, s * uy, ex + zero, ey + zero)
    ax, ay = -p.src_radius * ex, -p.src_radius * ey
    if p.kind == FAN_FLAT:
        vx, vy = p.src_det * ex + s * ux, p.src_det * ey + s * uy
        norm = torch.sqrt(vx * vx + vy * vy)
        vx, vy = vx / norm, vy / norm
    else:
        g = s / p.src_det
        cg, sg = torch.cos(g), torch.sin(g)
        vx, vy = cg * ex + sg * ux, cg * ey + sg * uy
    zero = torch.zeros_like(vx)
    return Rays(ax + zero, ay + zero, vx, vy)


def joseph(p: GeometryParams, r: Rays) -> JosephParams:
    """Joseph parameters (dominance, alpha, beta, plane weight) of each ray."""
    xdom = r.dx.abs() * p.dy >= r.dy.abs() * p.dx
    one = torch.ones_like(r.dx)
    # Denominators of the non-chosen branch may vanish; substitute 1 so no inf/NaN leaks.
    dxs = torch.where(xdom, r.dx, one)
    dys = torch.where(xdom, one, r.dy)
    tx = r.dy / dxs  # slope dy/dx of an x-dominant ray
    ty = r.dx / dys
    px0, py0 = p.x0 + 0.5 * p.dx, p.y0 + 0.5 * p.dy
    alpha_x = (r.ay + (px0 - r.ax) * tx - p.y0) / p.dy - 0.5
    alpha_y = (r.ax + (py0 - r.ay) * ty - p.x0) / p.dx - 0.5
    alpha = torch.where(xdom, alpha_x, alpha_y)
    beta = torch.where(xdom, (p.dx / p.dy) * tx, (p.dy / p.dx) * ty)
    weight = torch.where(xdom, p.dx / dxs.abs(), p.dy / dys.abs())
    return JosephParams(xdom, alpha, beta, weight)


def detector_coordinate(p: GeometryParams, cos: torch.Tensor, sin: torch.Tensor,
                        px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Detector coordinate ``s`` of the ray through the point ``(px, py)``."""
    along_u = px * cos + py * sin
    if p.kind == PARALLEL:
        return along_u
    along_e = p.src_radius + (-px * sin + py * cos)  # distance from the source along e
    if p.kind == FAN_FLAT:
        return p.src_det * along_u / along_e
    return p.src_det * torch.atan2(along_u, along_e)


def ray_table(p: GeometryParams, angles: torch.Tensor, dtype: torch.dtype,
              device: torch.device | None = None) -> JosephParams:
    """Joseph parameters of every (view, bin) ray, computed in float64, shape [V, K]."""
    a = angles.to(torch.float64).reshape(-1, 1)
    s = p.s0 + p.ds * torch.arange(p.n_bins, dtype=torch.float64).reshape(1, -1)
    jp = joseph(p, rays(p, torch.cos(a), torch.sin(a), s))
    return JosephParams(jp.xdom.to(device), jp.alpha.to(device, dtype),
                        jp.beta.to(device, dtype), jp.weight.to(device, dtype))


def parallel_view_params(p: GeometryParams, angles: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-view ``(xdom, alpha_0, beta, weight, slope)`` of a parallel geometry (float64).

    In a parallel view all rays share direction, so ``alpha`` is affine in the bin:
    ``alpha_k = alpha_0 + slope * k`` (slope from the rays at ``s0`` and ``s0 + ds``).
    """
    a = angles.to(torch.float64).reshape(-1, 1)
    s = torch.tensor([[p.s0, p.s0 + p.ds]], dtype=torch.float64)
    jp = joseph(p, rays(p, torch.cos(a), torch.sin(a), s))
    slope = jp.alpha[:, 1] - jp.alpha[:, 0]
    return jp.xdom[:, 0], jp.alpha[:, 0], jp.beta[:, 0], jp.weight[:, 0], slope


def diamond_bin_range(p: GeometryParams, cos: torch.Tensor, sin: torch.Tensor,
                      px: torch.Tensor, py: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fractional bin range ``[k_lo, k_hi]`` of the rays that can touch pixel ``(px, py)``."""
    coords = [
        detector_coordinate(p, cos, sin, px + ox, py + oy)
        for ox, oy in ((p.dx, 0.0), (-p.dx, 0.0), (0.0, p.dy), (0.0, -p.dy))
    ]
    lo = torch.minimum(torch.minimum(coords[0], coords[1]), torch.minimum(coords[2], coords[3]))
    hi = torch.maximum(torch.maximum(coords[0], coords[1]), torch.maximum(coords[2], coords[3]))
    return (lo - p.s0) / p.ds, (hi - p.s0) / p.ds
