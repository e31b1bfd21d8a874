"""Lung vessels and airways for synthetic patients: branching trees cut by the slice.

Each lung gets a few vascular trunks from the hilum that bifurcate towards the pleura
(child radius = parent / 2^(1/3), Murray's law); at every bifurcation a branch may leave
the slice and then shows only its oblique cross-section (a short ellipse).  Further
vessels that cross the slice appear as dots, larger near the hilum.  Airways run beside
the first generations of each trunk and cross the slice near the hilum: a soft-tissue
wall around an air lumen.  All shapes are capsules (segments with a radius) in metres,
drawn from a generator before rasterising, so they are the same on every grid; they are
rasterised with partial-volume coverage (:func:`alara.data.texture.box_coverage`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from alara.data.texture import box_coverage

__all__ = ["Capsules", "LungShape", "lung_tree", "capsule_coverage"]

_MURRAY = 2 ** (-1 / 3)
_R_MIN = 0.0004      # smallest vessel drawn (m): about LoDoPaB's pixel


@dataclass
class Capsules:
    """Segments ``p0 -> p1`` ``[n, 2]`` (metres) with radii ``[n]``."""

    p0: torch.Tensor
    p1: torch.Tensor
    radius: torch.Tensor

    @staticmethod
    def from_list(rows: list[tuple[float, float, float, float, float]]) -> "Capsules":
        t = torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)
        return Capsules(t[:, 0:2], t[:, 2:4], t[:, 4])


@dataclass(frozen=True)
class LungShape:
    """A lung as an ellipse: centre, semi-axes (m), rotation and side (+1: patient's left)."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float
    side: float

    def to_world(self, u: float, v: float) -> tuple[float, float]:
        """Unit-disc coordinates (``u`` lateral, ``v`` anterior) to metres."""
        x, y = self.side * u * self.a, v * self.b
        c, s = math.cos(self.angle), math.sin(self.angle)
        return self.cx + c * x - s * y, self.cy + s * x + c * y


class _Uniform:
    """Uniform draws from ``gen``, fetched in blocks (one torch call per 1024 draws)."""

    def __init__(self, gen: torch.Generator) -> None:
        self.gen, self.buf = gen, []

    def __call__(self, lo: float = 0.0, hi: float = 1.0) -> float:
        if not self.buf:
            self.buf = torch.rand(1024, generator=self.gen, dtype=torch.float64).tolist()[::-1]
        return lo + (hi - lo) * self.buf.pop()


def lung_tree(gen: torch.Generator, lung: LungShape, density: float = 1.0
              ) -> tuple[Capsules, Capsules, Capsules]:
    """Vessels, airway walls and airway lumens of one lung (capsules in metres)."""
    size = math.sqrt(lung.a * lung.b)          # ~ 0.03 (child) .. 0.07 m (adult)
    _u = _Uniform(gen)
    vessels: list[tuple] = []
    walls: list[tuple] = []
    lumens: list[tuple] = []

    def seg(rows: list, u0: float, v0: float, u1: float, v1: float, r: float) -> None:
        rows.append((*lung.to_world(u0, v0), *lung.to_world(u1, v1), r))

    def airway(u0: float, v0: float, u1: float, v1: float, r: float) -> None:
        wall = max(0.15 * r, 0.0004)
        seg(walls, u0, v0, u1, v1, r + wall)
        seg(lumens, u0, v0, u1, v1, r)

    # In-plane trees from the hilum (medial side: u = -1 points to the mediastinum).
    n_trunks = int(round(density * _u(2.0, 4.0)))
    for _ in range(n_trunks):
        v0 = _u(-0.4, 0.4)
        stack = [(-0.85, v0, _u(-1.0, 1.0), 0.0045 * size / 0.06 * _u(0.7, 1.0), 0.35, 0)]
        while stack and len(vessels) < 200 * density:
            u, v, ang, r, length, gen_k = stack.pop()
            du, dv = math.cos(ang), math.sin(ang)
            u1, v1 = u + length * du, v + length * dv
            if u1 * u1 + v1 * v1 > 0.95:            # reached the pleura
                scale = max(0.0, (math.sqrt(0.95) - math.hypot(u, v)) / max(length, 1e-9))
                u1, v1 = u + length * min(scale, 1.0) * du, v + length * min(scale, 1.0) * dv
                seg(vessels, u, v, u1, v1, r)
                continue
            seg(vessels, u, v, u1, v1, r)
            if gen_k < 2:  # the companion bronchus of the first generations
                off = (r * 2.2) / size
                airway(u - dv * off, v + du * off, u1 - dv * off, v1 + du * off, 0.8 * r)
            rc = r * _MURRAY
            if rc < _R_MIN:
                continue
            for sgn in (-1.0, 1.0):
                a_c = ang + sgn * _u(0.3, 0.7)
                if _u() < 0.4:  # the branch leaves the slice: an oblique cross-section
                    cu, cv = u1 + 0.03 * math.cos(a_c), v1 + 0.03 * math.sin(a_c)
                    seg(vessels, u1, v1, cu, cv, rc)
                else:
                    stack.append((u1, v1, a_c, rc, length * _u(0.65, 0.85), gen_k + 1))

    # Vessels crossing the slice: short ellipses, larger near the hilum.
    for _ in range(int(density * 50 * size / 0.06)):
        rad, ph = math.sqrt(_u()) * 0.92, _u(0, 2 * math.pi)
        u, v = rad * math.cos(ph), rad * math.sin(ph)
        near = max(0.0, 1.0 - math.hypot(u + 0.85, v) / 1.6)     # 1 at the hilum
        r = max(_R_MIN, (0.0004 + 0.0025 * near * _u() ** 1.5) * size / 0.06)
        el, ea = _u(0.0, 2.0) * r / size, _u(0, 2 * math.pi)
        seg(vessels, u, v, u + el * math.cos(ea), v + el * math.sin(ea), r)
        if near > 0.45 and _u() < 0.35:  # bronchus beside its artery
            ra = r * _u(0.7, 1.1)
            off = (r + ra + 0.0008) / size
            airway(u + off * math.cos(ea + 1.5), v + off * math.sin(ea + 1.5),
                   u + off * math.cos(ea + 1.5), v + off * math.sin(ea + 1.5), ra)
    return Capsules.from_list(vessels), Capsules.from_list(walls), Capsules.from_list(lumens)


def capsule_coverage(layers: list[Capsules], xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Partial-volume coverage ``[len(layers), len(xs), len(ys)]`` in [0, 1] of the union
    of each layer's capsules (the largest coverage of any one capsule) on the grid with
    pixel centres ``xs x ys``.

    Vectorised: capsules are cut into pieces no longer than two pixels and each piece is
    evaluated on a square stencil of pixels around it, then scattered with ``amax``; thin
    and thick pieces use separate stencils.
    """
    nx, ny = len(xs), len(ys)
    out = torch.zeros(len(layers) * nx * ny, dtype=torch.float32)
    hx = float(xs[1] - xs[0]) if nx > 1 else 1.0
    hy = float(ys[1] - ys[0]) if ny > 1 else hx
    h = max(hx, hy)
    p0 = torch.cat([c.p0 for c in layers])
    p1 = torch.cat([c.p1 for c in layers])
    r = torch.cat([c.radius for c in layers])
    layer = torch.repeat_interleave(torch.arange(len(layers)),
                                    torch.tensor([len(c.radius) for c in layers]))
    if len(r):
        n_pieces = torch.clamp(torch.ceil((p1 - p0).norm(dim=1) / (2 * h)), min=1).long()
        idx = torch.repeat_interleave(torch.arange(len(r)), n_pieces)
        k = torch.arange(len(idx)) - (torch.cumsum(n_pieces, 0) - n_pieces)[idx]
        d = p1[idx] - p0[idx]
        a = p0[idx] + (k / n_pieces[idx])[:, None] * d
        b = p0[idx] + ((k + 1) / n_pieces[idx])[:, None] * d
        rr, base = r[idx], layer[idx] * (nx * ny)
        thin = rr <= h
        for sel in (thin, ~thin):
            if sel.any():
                _scatter_pieces(out, a[sel], b[sel], rr[sel], base[sel], float(xs[0]), float(ys[0]),
                                hx, hy, h, nx, ny)
    return out.reshape(len(layers), nx, ny).double()


def _scatter_pieces(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, rr: torch.Tensor,
                    base: torch.Tensor, x0: float, y0: float, hx: float, hy: float, h: float,
                    nx: int, ny: int) -> None:
    # Work relative to the first pixel centre, in pixels' units of metres, in float32.
    a = (a - torch.tensor([x0, y0], dtype=a.dtype)).float()
    b = (b - torch.tensor([x0, y0], dtype=b.dtype)).float()
    rr = rr.float()
    centre = (a + b) / 2
    reach = float(((b - a).norm(dim=1) / 2 + rr).max()) + h
    m = int(math.ceil(reach / h))
    off = torch.arange(-m, m + 1)
    I = torch.round(centre[:, 0] / hx).long()[:, None, None] + off[None, :, None]
    J = torch.round(centre[:, 1] / hy).long()[:, None, None] + off[None, None, :]
    ab = (b - a)[:, None, None, :]
    ap = torch.stack(torch.broadcast_tensors(I * hx - a[:, 0, None, None],
                                             J * hy - a[:, 1, None, None]), dim=-1).float()
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-18)).clamp(0, 1)
    dist = (ap - t[..., None] * ab).norm(dim=-1)
    cov = box_coverage(dist, rr[:, None, None], h)
    valid = (I >= 0) & (I < nx) & (J >= 0) & (J < ny) & (cov > 0)
    flat = base[:, None, None] + I * ny + J
    out.scatter_reduce_(0, flat[valid], cov[valid], reduce="amax")
