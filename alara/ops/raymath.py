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
from each x-dominant ray.  In a fan view the rays of a run of bins that keeps dominance
cross every plane in bin order (:func:`fan_segments`), which is what the pure-torch
fan backprojection builds on.

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


class FanSegments(NamedTuple):
    """Runs of consecutive bins of one view whose rays share dominance and the sign of
    the dominant direction component (see :func:`fan_segments`)."""

    view: torch.Tensor  # long [S]
    first: torch.Tensor  # long [S]: first bin of the run
    last: torch.Tensor  # long [S]: last bin of the run
    xdom: torch.Tensor  # bool [S]
    slope_lo: torch.Tensor  # float64 [S]: slope range of the run's rays, widened a little
    slope_hi: torch.Tensor  # at each end (see _RUN_MARGIN_BINS)
    du: torch.Tensor  # float64 [S, 2]: d.u = du[0] + du[1] * slope along the run's rays
    de: torch.Tensor  # float64 [S, 2]: d.e = de[0] + de[1] * slope


# A run's slope range is widened by the rays this far outside its end bins, so that a
# point beyond the run gets a fractional bin strictly outside [first, last]: far above
# float32 rounding of the bin (~1e-4 at 1000 bins), and at most 1e-3 rad of turn, so the
# widened rays stay clear of the detector-parallel and plane-parallel directions.
_RUN_MARGIN_BINS = 0.01
_RUN_MARGIN_RAD = 1e-3


def fan_segments(p: GeometryParams, angles: torch.Tensor) -> FanSegments:
    """Split every fan view into runs of rays that cross each Joseph plane in order.

    The *slope* of a ray is ``d_y / d_x`` for x-dominant rays and ``d_x / d_y`` for
    y-dominant ones.  Along the detector a fan's ray directions turn monotonically
    (clockwise as the bin grows), so within a run that keeps dominance and the sign of
    the dominant component the slope is monotone in the bin: decreasing for x-dominant
    runs, increasing for y-dominant ones.  A ray's direction is ``d ~ (1, slope)``
    (``(slope, 1)``) up to sign; ``du``/``de`` give its components along the detector axis
    ``u`` and the central ray ``e`` with the run's sign, from which :func:`bin_of_slope`
    recovers the fractional bin of any direction within the run.
    """
    a = angles.to(torch.float64).reshape(-1, 1)
    cos, sin = torch.cos(a), torch.sin(a)
    n_views, n_bins = a.shape[0], p.n_bins
    s = p.s0 + p.ds * torch.arange(n_bins, dtype=torch.float64).reshape(1, -1)
    r = rays(p, cos, sin, s)
    xdom = joseph(p, r).xdom
    positive = torch.where(xdom, r.dx, r.dy) > 0
    key = xdom.to(torch.int8) * 2 + positive.to(torch.int8)
    starts = torch.ones(n_views, n_bins, dtype=torch.bool)
    starts[:, 1:] = key[:, 1:] != key[:, :-1]
    view, first = torch.nonzero(starts, as_tuple=True)
    ends = torch.ones(n_views, n_bins, dtype=torch.bool)
    ends[:, :-1] = starts[:, 1:]
    last = torch.nonzero(ends, as_tuple=True)[1]
    seg_xdom = xdom[view, first]
    sign = torch.where(positive[view, first], 1.0, -1.0)
    c, sn = cos[view, 0], sin[view, 0]
    # u = (cos, sin), e = (-sin, cos); d = sign * (1, slope) or sign * (slope, 1)
    du = torch.where(seg_xdom.unsqueeze(1), torch.stack([c, sn], 1), torch.stack([sn, c], 1))
    de = torch.where(seg_xdom.unsqueeze(1), torch.stack([-sn, c], 1), torch.stack([c, -sn], 1))
    du, de = du * sign.unsqueeze(1), de * sign.unsqueeze(1)
    margin = min(_RUN_MARGIN_BINS, _RUN_MARGIN_RAD * p.src_det / p.ds)  # turn <= margin ds / D
    ends_s = p.s0 + p.ds * torch.stack([first - margin, last + margin], 1)
    er = rays(p, c.unsqueeze(1), sn.unsqueeze(1), ends_s)
    x1 = seg_xdom.unsqueeze(1)
    slope = torch.where(x1, er.dy, er.dx) / torch.where(x1, er.dx, er.dy)
    return FanSegments(view, first, last, seg_xdom, slope.min(1).values, slope.max(1).values,
                       du, de)


def slope_bin_coefficients(p: GeometryParams, du: torch.Tensor, de: torch.Tensor,
                           centre: torch.Tensor, shift: float = 0.0) -> tuple:
    """Per-run coefficients of :func:`bin_of_slope` from ``du``/``de`` ``[S, 2]``, for
    the fractional bin plus ``shift``; ``centre`` ``[S]`` is a bin within each run.

    Flat detector: ``(s - s0) / ds = (D d.u - s0 d.e) / (ds d.e)``, one quotient of two
    affine functions of the slope (``shift`` folds into the numerator).  Curved:
    ``(D g - s0) / ds`` with the fan angle ``g = g_c + atan2(d.u_c, d.e_c)`` measured
    from the run's centre ray ``g_c`` (axes ``e_c``, ``u_c``), so that a detector arc
    wider than 180 degrees never puts a run across the branch cut of ``atan2``.
    """
    if p.kind == FAN_FLAT:
        num = p.src_det * du + (shift * p.ds - p.s0) * de
        return num[:, 0], num[:, 1], p.ds * de[:, 0], p.ds * de[:, 1], 0.0
    g_c = ((p.s0 + p.ds * centre.to(du.dtype)) / p.src_det).unsqueeze(1)
    cos, sin = torch.cos(g_c), torch.sin(g_c)
    du_c, de_c = cos * du - sin * de, cos * de + sin * du
    offset = (g_c[:, 0] * p.src_det - p.s0) / p.ds + shift
    return du_c[:, 0], du_c[:, 1], de_c[:, 0], de_c[:, 1], offset


def bin_of_slope(p: GeometryParams, coef: tuple, slope: torch.Tensor,
                 out: torch.Tensor) -> torch.Tensor:
    """Fractional bin ``(s - s0) / ds`` (plus the coefficients' shift) of the fan ray
    whose direction has slope ``slope`` (coefficients from :func:`slope_bin_coefficients`,
    broadcastable; ``slope`` may be given in any unit that the slope coefficients ``a1``,
    ``b1`` absorb), written to ``out``; ``slope`` is overwritten."""
    a0, a1, b0, b1, offset = coef
    torch.addcmul(a0, a1, slope, out=out)
    torch.addcmul(b0, b1, slope, out=slope)
    if p.kind == FAN_FLAT:
        return out.div_(slope)
    return torch.atan2(out, slope, out=out).mul_(p.src_det / p.ds).add_(offset)
