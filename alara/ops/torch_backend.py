"""Pure-torch projection and backprojection: the fallback and the test oracle.

Projection samples every ray at its Joseph planes with ``grid_sample`` (one fused,
vectorised gather-and-interpolate per chunk of rays): on a plane the sample lies exactly on
a pixel row, so bilinear interpolation reduces to Joseph's linear one, and zero padding is
Joseph's treatment of the grid border.  Backprojection is the exact adjoint written as
gathers, never as a scatter (scatters serialise on CPU and autograd through
``grid_sample`` is about 6x slower): per parallel view one ``grid_sample`` of a
tabulated piecewise-linear function, per run of fan rays one look-up of suffix sums per
pixel, summed over runs by a sparse matrix product.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
import torch.nn.functional as F

from alara.ops import raymath, symmetry
from alara.ops.raymath import GeometryParams

# Work-array size (elements) per chunk: large enough to amortise the Python loop, small
# enough that the work arrays stay in cache (measured best at 2^17..2^18 on 2 cores).
_CHUNK_ELEMENTS = 1 << 18
# Fan backprojection: runs per chunk (innermost axis: long enough for vectorised loops)
# and look-ups per block.
_FAN_RUN_CHUNK = 64
_FAN_BLOCK = 1 << 19
# Images per pass: the look-up table holds 48 bytes per (view, bin, image), the weighted
# variant's blocks 24 bytes per (look-up, image).
_FAN_IMAGES = 8


@functools.lru_cache(maxsize=8)
def _projection_plan(p: GeometryParams, angles: tuple[float, ...], dtype: torch.dtype,
                     device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    """Per dominance: the ray indices and their grid_sample coefficients (cached: the
    table costs as much as a small projection and depends only on the geometry)."""
    table = raymath.ray_table(p, torch.tensor(angles, dtype=torch.float64), dtype, device)
    xdom, alpha, beta, weight = (t.reshape(-1) for t in table)
    plan = []
    for dominant, n_other in ((True, p.n1), (False, p.n0)):
        idx = torch.nonzero(xdom == dominant).squeeze(1)
        # normalised coordinate (align_corners=False) of j_f = alpha + beta * plane
        scale = 2.0 / n_other
        plan.append((idx, alpha[idx] * scale + (scale / 2 - 1), beta[idx] * scale, weight[idx]))
    return plan


@torch.compiler.disable  # data-dependent ray splitting: run eagerly inside compiled code
def project(x: torch.Tensor, p: GeometryParams, angles: torch.Tensor) -> torch.Tensor:
    """Joseph forward projection ``[B, C, n0, n1] -> [B, C, views, bins]``.

    Each ray is its own ``grid_sample`` batch entry (one output row of ``n_planes``
    samples) over a stride-0 expanded image, because grid_sample parallelises over the
    batch: one entry for all rays would run on one thread.
    """
    b, c = x.shape[:2]
    bc = b * c
    # On a square centred grid one view of each orbit serves 8, as 8 images of one pass
    # (grid_sample's per-sample set-up is shared between images; from 8 images on the
    # passes are as wide anyway).
    orbits, group = symmetry.plan(p, angles, bc)
    if group:
        return symmetry.project_symmetric(x, angles, orbits, lambda t, a: _project(t, p, a),
                                          p.n_bins, group)
    return _project(x, p, angles)


def _project(x: torch.Tensor, p: GeometryParams, angles: torch.Tensor) -> torch.Tensor:
    b, c = x.shape[:2]
    bc = b * c
    n_rays = angles.numel() * p.n_bins
    out = x.new_zeros(n_rays, bc)
    img = x.reshape(1, bc, p.n0, p.n1)
    plan = _projection_plan(p, tuple(angles.tolist()), x.dtype, x.device)
    for (idx, a_n, b_n, weight), image, n_planes in zip(
        plan, (img, img.transpose(-1, -2).contiguous()), (p.n0, p.n1)
    ):
        if idx.numel() == 0:
            continue
        planes = torch.arange(n_planes, dtype=x.dtype, device=x.device)
        chunk = max(1, _CHUNK_ELEMENTS // n_planes)
        grid_buf = x.new_empty(min(chunk, idx.numel()), 1, n_planes, 2)
        grid_buf[..., 1] = (2 * planes + 1) / n_planes - 1  # the plane: an exact pixel row
        for start in range(0, idx.numel(), chunk):
            stop = min(start + chunk, idx.numel())
            r = stop - start
            grid = grid_buf[:r]
            torch.addcmul(a_n[start:stop].view(r, 1, 1), b_n[start:stop].view(r, 1, 1),
                          planes.view(1, 1, -1), out=grid[..., 0])
            samples = F.grid_sample(image.expand(r, -1, -1, -1), grid, mode="bilinear",
                                    padding_mode="zeros", align_corners=False)
            out[idx[start:stop]] = samples.sum(-1)[..., 0] * weight[start:stop, None]
    return out.T.reshape(b, c, angles.numel(), p.n_bins)


@torch.compiler.disable
def backproject(y: torch.Tensor, p: GeometryParams, angles: torch.Tensor,
                distance_weight: bool = False) -> torch.Tensor:
    """Adjoint of :func:`project`, ``[B, C, views, bins] -> [B, C, n0, n1]``.

    With ``distance_weight`` (fan beam only) each view's contribution to a pixel is also
    multiplied by ``R / (R + p.e)``, the inverse source distance ratio that fan-beam FBP
    needs on top of the adjoint's own ``1/U`` footprint factor.
    """
    if p.kind == raymath.PARALLEL:
        return _backproject_parallel(y, p, angles)
    # On a square centred grid one view of each orbit serves 8, as 8 images of a pass
    # (symmetry.plan: fewer than 8 images; from 8 on the passes are full anyway).
    bc = y.shape[0] * y.shape[1]
    orbits, group = symmetry.plan(p, angles, bc)
    if group:
        return symmetry.backproject_symmetric(
            y, angles, orbits, lambda s, a: _backproject_fan(s, p, a, distance_weight),
            p.n0, p.n1, group)
    return _backproject_fan(y, p, angles, distance_weight)


def _backproject_fan(y: torch.Tensor, p: GeometryParams, angles: torch.Tensor,
                     distance_weight: bool) -> torch.Tensor:
    """Fan-beam :func:`backproject` with one table look-up per (run of rays, pixel),
    however many rays cover the pixel.

    On plane ``i`` an x-dominant ray ``k`` crosses at ``c_k = alpha_k + beta_k i`` and
    gives pixel ``j`` the value ``v_k tri(c_k - j)``, ``v_k = w_k y_k``, ``tri(x) =
    max(0, 1 - |x|)``.  As ``tri`` is the second difference of the ramp ``R(x) =
    max(x, 0)``, the pixel gets ``Psi(j-1) - 2 Psi(j) + Psi(j+1)`` with ``Psi(t) =
    sum_k v_k R(c_k - t)``, and adding to ``Psi`` any function affine in ``t`` changes
    nothing.  Within a run of rays that keeps dominance (:func:`raymath.fan_segments`)
    the rays with ``c_k > t`` are those on one side of the ray through the point ``t``
    of the plane, so up to such an affine term ``Psi(t) = +-sum_{k >= K} v_k (alpha_k +
    beta_k i - t)``: suffix sums of the view, looked up at the bin ``K`` of that ray
    (from its slope, :func:`raymath.bin_of_slope`).  A ray wrongly counted at ``K``
    crosses at ``c_k ~ t`` and adds ``v_k R(c_k - t) ~ 0``, so rounding in ``K`` costs
    only rounding.  ``Psi`` is large (all rays past ``t``) and its second difference
    small, so the tables and sums are float64; a sparse matrix product sums the look-ups
    over runs, and the second difference is taken once at the end.  Y-dominant runs are
    the same with the axes swapped.
    """
    b, c, n_views, n_bins = y.shape
    bc = b * c
    if bc > _FAN_IMAGES:  # the float64 tables grow with the images: bound the memory
        parts = y.reshape(bc, 1, n_views, n_bins).split(_FAN_IMAGES)
        out = [_backproject_fan(part, p, angles, distance_weight) for part in parts]
        return torch.cat(out).reshape(b, c, p.n0, p.n1)
    f64 = torch.float64
    table = raymath.ray_table(p, angles, f64, y.device)
    v = y.reshape(bc, n_views, n_bins).permute(1, 2, 0).to(f64) * table.weight.unsqueeze(-1)
    terms = torch.stack([v * table.alpha.unsqueeze(-1), v * table.beta.unsqueeze(-1), v], 2)
    del v
    suffix = terms.flip(1).cumsum_(1)  # [V, K, (A, B, V), bc], bins reversed
    del terms
    # Rows: the suffix sums of every view at K = 0..bins (the last one 0), then their
    # negatives (for runs whose rays past t come first).
    lookup = suffix.new_zeros(2, n_views, n_bins + 1, 3, bc)
    lookup[0, :, :n_bins] = suffix.flip(1)
    del suffix
    lookup[1] = -lookup[0]
    lookup = lookup.view(-1, 3 * bc)
    seg = raymath.fan_segments(p, angles)
    a64 = angles.to(f64)
    src = (p.src_radius * torch.sin(a64), -p.src_radius * torch.cos(a64))  # source at -R e
    out = torch.zeros(bc, p.n0, p.n1, dtype=f64, device=y.device)
    for xdom in (True, False):
        sel = torch.nonzero(seg.xdom == xdom).squeeze(1)
        if sel.numel() == 0:
            continue
        # x-dominant runs: planes x = px_i, points y = py_t for t = -1..n1;
        # y-dominant runs: planes y = py_j, points x = px_t for t = -1..n0.
        axes = [(p.n0, p.x0, p.dx, src[0]), (p.n1, p.y0, p.dy, src[1])]
        (n_planes, lo_p, d_p, src_p), (n_t, lo_t, d_t, src_t) = axes if xdom else axes[::-1]
        planes = lo_p + (torch.arange(n_planes, dtype=f64) + 0.5) * d_p
        t = torch.arange(-1, n_t + 1, dtype=f64)
        points = lo_t + (t + 0.5) * d_t
        runs = _FanRuns(p, seg, sel, planes, points, src_p, src_t, xdom, y.dtype, y.device)
        i = torch.arange(n_planes, dtype=f64, device=y.device)
        if distance_weight:
            # R / (R + p.e) per (plane, pixel, run), p.e = -x sin + y cos
            cos, sin = torch.cos(a64)[seg.view[sel]], torch.sin(a64)[seg.view[sel]]
            ca, cb = (-sin, cos) if xdom else (cos, -sin)
            ca, cb, along = ca.to(y.device), cb.to(y.device), planes.to(y.device).reshape(-1, 1, 1)
            across = points[1:-1].to(y.device).reshape(1, -1, 1)
            columns = lookup.T.contiguous()  # [(A, B, V) x bc, rows]: one gather per sum
            h = out.new_zeros(n_planes, n_t, bc)
            for cells, r, rows in runs.blocks():
                look = columns.index_select(1, rows.reshape(-1)).view(3, bc, *rows.shape)
                sums = [s.permute(1, 2, 3, 0) for s in look]  # A, B, V: [plane, point, run, bc]
                d2 = _second_difference(*sums, i[cells])  # per run, before its weight
                pe = torch.addcmul(ca[r] * along[cells], cb[r], across)
                weight = (p.src_radius / (p.src_radius + pe)).unsqueeze(-1)
                h[cells] += (d2 * weight).sum(2)
        else:
            acc = lookup.new_zeros(n_planes, n_t + 2, 3 * bc)
            for cells, r, rows in runs.blocks():
                runs.add_rows(rows, lookup, acc[cells].view(-1, 3 * bc))
            acc = acc.unflatten(-1, (3, bc))
            h = _second_difference(acc[..., 0, :], acc[..., 1, :], acc[..., 2, :], i)
        out += h.permute(2, 0, 1) if xdom else h.permute(2, 1, 0)
    return out.to(y.dtype).reshape(b, c, p.n0, p.n1)


def _second_difference(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor,
                       plane: torch.Tensor) -> torch.Tensor:
    """``Psi(j-1) - 2 Psi(j) + Psi(j+1)`` for ``Psi(t) = A + i B - t V`` from the suffix
    sums ``A, B, V`` ``[plane, t + 1, ...]``, for the pixels ``j = 0 .. T - 3``.

    Taken per sum before combining, ``D2 A + i D2 B - j D2 V - (V(j+1) - V(j-1))``, so
    that a pixel no ray reaches (equal sums at ``j - 1, j, j + 1``) gets exactly 0.
    """
    def d2(s: torch.Tensor) -> torch.Tensor:
        return s[:, :-2] - 2 * s[:, 1:-1] + s[:, 2:]

    extra = (1,) * (a.dim() - 2)
    i = plane.reshape(-1, 1, *extra)
    j = torch.arange(a.shape[1] - 2, dtype=a.dtype, device=a.device).reshape(1, -1, *extra)
    return d2(a) + i * d2(b) - j * d2(v) - (v[:, 2:] - v[:, :-2])


class _FanRuns:
    """The look-up rows of the runs ``sel`` (one dominance) at every (plane, point)."""

    def __init__(self, p: GeometryParams, seg: raymath.FanSegments, sel: torch.Tensor,
                 planes: torch.Tensor, points: torch.Tensor, src_p: torch.Tensor,
                 src_t: torch.Tensor, xdom: bool, dtype: torch.dtype, device):
        n_views = src_p.numel()
        view = seg.view[sel]
        offset = planes.reshape(-1, 1) - src_p[view].reshape(1, -1)  # [plane, run]
        # A plane through the source: every ray crosses it there, so any offset of
        # either sign gives the same answer; keep it away from 0 for the division.
        tiny = 1e-9 * (abs(planes[-1] - planes[0]).item() + abs(planes[0]).item() + 1.0)
        offset = torch.where(offset >= 0, offset.clamp(min=tiny), offset.clamp(max=-tiny))
        # On this side of the source the rays past the point come first in the run
        # (prefix sum = total - suffix: the -suffix rows, up to an affine term).
        prefix = offset > 0 if xdom else offset < 0
        rows = view * (p.n_bins + 1) + prefix * (n_views * (p.n_bins + 1))
        cast = dict(dtype=dtype, device=device)
        # The point's slope is rise * inv (rise: point - source along the plane, per
        # (point, run); inv = 1 / offset, per (plane, run)); its clamp to the run's slope
        # range [lo, hi] is a clamp of rise to [lo, hi] / inv, taken before the product.
        inv = 1 / offset
        lo, hi = seg.slope_lo[sel] * offset, seg.slope_hi[sel] * offset
        self.rise_lo, self.rise_hi = torch.minimum(lo, hi).to(**cast), torch.maximum(lo, hi).to(**cast)
        self.rise = (points.reshape(-1, 1) - src_t[view].reshape(1, -1)).to(**cast)  # [point, run]
        # bin + 1 = (a0 + a1 slope) / (b0 + b1 slope): a1, b1 times inv per (plane, run)
        centre = (seg.first[sel] + seg.last[sel]) / 2
        coef = raymath.slope_bin_coefficients(p, seg.du[sel], seg.de[sel], centre, shift=1.0)
        self.coef = (coef[0].to(**cast), (coef[1] * inv).to(**cast), coef[2].to(**cast),
                     (coef[3] * inv).to(**cast),
                     torch.as_tensor(coef[4], dtype=torch.float64).expand(len(sel)).to(**cast))
        self.base = rows.to(device=device, dtype=torch.int32)  # + K = floor(bin) + 1
        self.p, self.dtype, self.device = p, dtype, device
        self._ones = None  # the CSR values, kept across blocks
        self.n_rows = 2 * n_views * (p.n_bins + 1)
        n_runs, n_planes, n_points = sel.numel(), len(planes), len(points)
        # Runs innermost (one CSR row per (plane, point)), many of them so the
        # elementwise loops are long; a few planes per block keep the buffers in cache.
        self.run_chunk = min(n_runs, _FAN_RUN_CHUNK)
        self.plane_block = max(1, min(n_planes, _FAN_BLOCK // (self.run_chunk * n_points)))
        self.shape = (n_planes, n_points)

    def blocks(self):
        """Per (block of planes, chunk of runs): the int32 look-up rows ``[plane, point,
        run]``, ``base + K``, ``K = floor(bin of the point's slope) + 1``.  The slope is
        clamped to the run's (widened) range, so the bin stays in ``(first - 1, last +
        1)`` and ``K`` in ``[first, last + 1]``: all or none of the run's rays for points
        beyond it.  As ``bin + 1 > 0``, truncation to int32 is the floor."""
        n_planes, n_points = self.shape
        n_runs = self.base.shape[1]
        size = self.plane_block * n_points * self.run_chunk
        rise_buf = torch.empty(size, dtype=self.dtype, device=self.device)
        bin_buf = torch.empty_like(rise_buf)
        rows = torch.empty(size, dtype=torch.int32, device=self.device)
        for r0 in range(0, n_runs, self.run_chunk):
            r = slice(r0, min(r0 + self.run_chunk, n_runs))
            width = r.stop - r.start
            rise_lo, rise_hi, base, a1, b1 = (
                a[:, r].contiguous() for a in (self.rise_lo, self.rise_hi, self.base,
                                               self.coef[1], self.coef[3]))
            rise = self.rise[:, r].contiguous().unsqueeze(0)
            a0, b0, offset = self.coef[0][r], self.coef[2][r], self.coef[4][r]
            for c0 in range(0, n_planes, self.plane_block):
                cells = slice(c0, min(c0 + self.plane_block, n_planes))
                shape = (cells.stop - cells.start, n_points, width)
                n = shape[0] * n_points * width
                clamped, bins = rise_buf[:n].view(shape), bin_buf[:n].view(shape)
                out = rows[:n].view(shape)
                torch.maximum(rise, rise_lo[cells].unsqueeze(1), out=clamped)
                torch.minimum(clamped, rise_hi[cells].unsqueeze(1), out=clamped)
                coef = (a0, a1[cells].unsqueeze(1), b0, b1[cells].unsqueeze(1), offset)
                raymath.bin_of_slope(self.p, coef, clamped, out=bins)
                out.copy_(bins).add_(base[cells].unsqueeze(1))
                yield cells, r, out

    def add_rows(self, rows: torch.Tensor, lookup: torch.Tensor, out: torch.Tensor) -> None:
        """``out += sum over runs of lookup[rows]`` per (plane, point): a CSR product."""
        n_cells = rows.shape[0] * rows.shape[1]
        crow = torch.arange(0, rows.numel() + 1, rows.shape[2], dtype=torch.int32,
                            device=self.device)
        if self._ones is None or self._ones.numel() < rows.numel():
            self._ones = lookup.new_ones(rows.numel())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            s = torch.sparse_csr_tensor(crow, rows.reshape(-1), self._ones[:rows.numel()],
                                        size=(n_cells, self.n_rows), check_invariants=False)
        torch.addmm(out, s, lookup, out=out)


def _backproject_parallel(y: torch.Tensor, p: GeometryParams, angles: torch.Tensor) -> torch.Tensor:
    """Parallel-beam specialisation of :func:`backproject` (same weights, one gather).

    In a parallel view every ray shares dominance, ``beta`` and plane weight ``w``, and
    ``alpha`` is affine in the bin, ``alpha_k = alpha_0 + a k``.  The ray through pixel
    ``(i, j)``'s centre sits at the fractional bin ``kappa = P i + Q j + R`` and bin ``k``
    gets the weight ``w max(0, 1 - |a| |k - kappa|)``, so the view contributes
    ``G(kappa) = w sum_k y_k max(0, 1 - |a| |k - kappa|)``: a piecewise-linear function
    whose kinks lie at the integers and at ``+-1/|a|`` from them, i.e. at most at three
    offsets per unit interval, placed symmetrically (:func:`_knot_offsets`).  Tabulating
    ``G`` at those offsets and warping ``kappa`` piecewise-linearly so that they fall on
    consecutive integers makes one linear interpolation (``grid_sample``) reproduce ``G``
    exactly.
    """
    b, c, n_views, n_bins = y.shape
    bc = b * c
    dtype, device = y.dtype, y.device
    xdom, alpha0, beta, weight, slope = raymath.parallel_view_params(p, angles)
    inv = 1 / slope
    half = inv.abs()  # half-width of the triangle in bins
    knots, phase = _knot_offsets(half)  # [V, 3]: 0, o, 1 - o; [V]
    pad = int(math.ceil(half.max().item())) + 1  # G vanishes beyond pad bins off the detector
    rows = _knot_table(y.reshape(bc, n_views, n_bins), knots, phase, half, weight, pad)
    length = rows.shape[-1]
    # kappa' = kappa + pad - phase = m' + f (f: its fraction) is the table's coordinate in
    # unit intervals; kappa = (j - beta i - alpha0) / a for x-dominant views, i <-> j for
    # y-dominant ones.  The warp through (0, 0), (o, 1), (1 - o, 2), (1, 3) has slopes s1,
    # s2, s1 on its three pieces, so with g = clamp(f, o, 1 - o) grid_sample's x coordinate
    # (align_corners=True) of table index u = 3 m' + warp(f) is
    #   x = to_x u - 1 = 3 to_x kappa' + (s1 - 3) to_x f + (s2 - s1) to_x g + const,
    # const = -(s2 - s1) to_x o - 1: fast elementwise passes only (a remainder, or floor
    # and subtract, cost 5x or 2x torch.frac).  kappa' is not clamped: below 0 (where frac
    # is negative) and beyond the table's end (G vanishes from pad > half bins off the
    # detector) x lies off the table, where grid_sample's zero padding continues G.
    # One view per pass: its constants are then Python scalars, and a clamp to scalar
    # bounds or an add with alpha is one fast pass (a clamp to per-view tensor bounds is
    # about 10x slower, and the pair of maxima it would need costs two passes).
    to_x = 2 / (length - 1)
    o = knots[:, 1]
    s1, s2 = 1 / o, 1 / (1 - 2 * o)
    coef_f = ((s1 - 3) * to_x).tolist()
    coef_g = ((s2 - s1) * to_x).tolist()
    lo, hi = o.tolist(), (1 - o).tolist()
    # The affine parts, per view a row and a column (float64, then rounded once).
    coef_i = torch.where(xdom, -beta * inv, inv).reshape(-1, 1, 1)
    coef_j = torch.where(xdom, inv, -beta * inv).reshape(-1, 1, 1)
    offset = (-alpha0 * inv + pad - phase).reshape(-1, 1, 1)
    const = (-(s2 - s1) * to_x * o - 1).reshape(-1, 1, 1)
    fi = torch.arange(p.n0, dtype=torch.float64).reshape(1, -1, 1)
    fj = torch.arange(p.n1, dtype=torch.float64).reshape(1, 1, -1)
    k_i, k_j = coef_i * fi, coef_j * fj + offset
    x_i, x_j = k_i * (3 * to_x), k_j * (3 * to_x) + const
    k_i, k_j, x_i, x_j = (t.to(device, dtype) for t in (k_i, k_j, x_i, x_j))
    out = y.new_zeros(bc, p.n0, p.n1)
    f = y.new_empty(p.n0, p.n1)
    x = y.new_empty(1, p.n0, p.n1)
    # With one table row (height 1, align_corners=True) grid_sample ignores the grid's y
    # coordinate, so a stride-0 copy of x serves as the whole grid.
    grid = x.unsqueeze(-1).expand(-1, -1, -1, 2)
    for v in range(n_views):
        torch.add(k_j[v], k_i[v], out=f)
        torch.add(x_j[v], x_i[v], out=x[0])
        torch.frac(f, out=f)
        x.add_(f, alpha=coef_f[v])
        x.add_(f.clamp_(lo[v], hi[v]), alpha=coef_g[v])
        out += F.grid_sample(rows[v:v + 1], grid, mode="bilinear", padding_mode="zeros",
                             align_corners=True)[0]
    return out.reshape(b, c, p.n0, p.n1)


def _knot_offsets(half: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per view the knot offsets ``[0, o, 1 - o]`` (float64, ``0 < o < 1/2``) and a
    ``phase``: the points ``m + phase + offset`` (all integers ``m``) include every kink of
    ``G``.

    The kinks lie at ``0`` and ``+-half`` (mod 1), a set symmetric about 0, so with
    ``phase = 0`` the offsets are symmetric too (the warp's outer pieces then share a
    slope).  Coincident kinks take extra points where ``G`` is linear anyway: at integer
    ``half`` the offsets ``1/3, 2/3``; at half-integer ``half`` (kinks at 0 and 1/2 only)
    ``phase = -1/4`` and ``o = 1/4``, i.e. points at ``-1/4, 0, 1/2``.
    """
    frac = half - torch.floor(half)
    o = torch.minimum(frac, 1 - frac)
    tiny = 1e-9
    o = torch.where(o < tiny, 1 / 3, o)
    mid = 0.5 - o < tiny
    o = torch.where(mid, 0.25, o)
    phase = torch.where(mid, -0.25, 0.0)
    return torch.stack([torch.zeros_like(o), o, 1 - o], dim=1), phase


def _knot_table(y: torch.Tensor, knots: torch.Tensor, phase: torch.Tensor, half: torch.Tensor,
                weight: torch.Tensor, pad: int) -> torch.Tensor:
    """``G`` at ``m + phase + knot`` for ``m = -pad .. n_bins + pad`` (interleaved), as
    grid_sample inputs ``[V, bc, 1, L]``.

    The taps ``k = m + d`` and their weights ``w max(0, 1 - |k - m - phase - knot| / half)``
    depend on ``m`` only through ``k``, so the table is ``2 pad + 1`` shifted multiply-adds
    of the padded projections, ``|d| <= pad``.
    """
    bc, n_views, n_bins = y.shape
    d = torch.arange(-pad, pad + 1, dtype=torch.float64)
    pos = phase.reshape(-1, 1, 1) + knots.reshape(n_views, 3, 1)
    w = (1 - (d - pos).abs() / half.reshape(-1, 1, 1)).clamp(min=0) * weight.reshape(-1, 1, 1)
    w = w.to(y.device, y.dtype).permute(2, 0, 1).reshape(2 * pad + 1, n_views, 1, 1, 3)
    ypad = F.pad(y.transpose(0, 1), (2 * pad, 2 * pad + 1)).unsqueeze(-1)  # [V, bc, ., 1]
    n_m = n_bins + 2 * pad + 1
    table = y.new_zeros(n_views, bc, n_m, 3)
    for s in range(2 * pad + 1):
        table.addcmul_(ypad[:, :, s:s + n_m], w[s])
    return table.reshape(n_views, bc, 1, 3 * n_m)


def _pixel_centres(p: GeometryParams, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(p.n0, dtype=torch.float64)
    j = torch.arange(p.n1, dtype=torch.float64)
    gx = (p.x0 + (i + 0.5) * p.dx).to(device, dtype).reshape(-1, 1)
    gy = (p.y0 + (j + 0.5) * p.dy).to(device, dtype).reshape(1, -1)
    return gx, gy
