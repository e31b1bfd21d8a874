"""Pure-torch projection and backprojection: the fallback and the test oracle.

Projection samples every ray at its Joseph planes with ``grid_sample`` (one fused,
vectorised gather-and-interpolate per chunk of rays): on a plane the sample lies exactly on
a pixel row, so bilinear interpolation reduces to Joseph's linear one, and zero padding is
Joseph's treatment of the grid border.  Backprojection is the exact adjoint written as an
explicit gather over the few bins that touch each pixel (see ``raymath``), never as a
scatter: scatters serialise on CPU and autograd through ``grid_sample`` is about 6x slower.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from alara.ops import raymath
from alara.ops.raymath import GeometryParams

# Work-array size (elements) per chunk: large enough to amortise the Python loop, small
# enough that the work arrays stay in cache (measured best at 2^17..2^18 on 2 cores).
_CHUNK_ELEMENTS = 1 << 18


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
    b, c, n_views, n_bins = y.shape
    bc = b * c
    dtype, device = y.dtype, y.device
    table = raymath.ray_table(p, angles, dtype, device)
    xdom = table.xdom.reshape(-1)
    alpha, beta, weight = (t.reshape(-1) for t in table[1:])
    ys = y.reshape(bc, n_views * n_bins)
    gx, gy = _pixel_centres(p, dtype, device)  # [n0, 1], [1, n1]
    fi = torch.arange(p.n0, dtype=dtype, device=device).reshape(-1, 1)
    fj = torch.arange(p.n1, dtype=dtype, device=device).reshape(1, -1)
    a64 = angles.to(torch.float64)
    cos_all, sin_all = torch.cos(a64).to(device, dtype), torch.sin(a64).to(device, dtype)
    out = y.new_zeros(bc, p.n0, p.n1)
    chunk = max(1, _CHUNK_ELEMENTS // (p.n0 * p.n1))
    for v0 in range(0, n_views, chunk):
        views = torch.arange(v0, min(v0 + chunk, n_views), device=device)
        cos = cos_all[views].reshape(-1, 1, 1)
        sin = sin_all[views].reshape(-1, 1, 1)
        k_lo, k_hi = raymath.diamond_bin_range(p, cos, sin, gx, gy)
        k_first = torch.ceil(k_lo).clamp_(min=0)
        k_last = torch.floor(k_hi).clamp_(max=n_bins - 1)
        n_taps = int((k_last - k_first).max().item()) + 1 if k_last.numel() else 0
        row = (views * n_bins).reshape(-1, 1, 1)
        acc = y.new_zeros(bc, views.numel(), p.n0, p.n1)
        for t in range(max(n_taps, 0)):
            k = k_first + t
            valid = k <= k_last
            ray = (row + k.clamp(max=n_bins - 1).long()).reshape(-1)
            dom = xdom[ray].reshape(k.shape)
            err = (alpha[ray].reshape(k.shape)
                   + beta[ray].reshape(k.shape) * torch.where(dom, fi, fj)
                   - torch.where(dom, fj, fi))
            w = (1 - err.abs()).clamp_(min=0) * weight[ray].reshape(k.shape) * valid
            acc += w * ys[:, ray].reshape(bc, *k.shape)
        if distance_weight:
            acc *= p.src_radius / (p.src_radius + (-gx * sin + gy * cos))
        out += acc.sum(1)
    return out.reshape(b, c, p.n0, p.n1)


def _backproject_parallel(y: torch.Tensor, p: GeometryParams, angles: torch.Tensor) -> torch.Tensor:
    """Parallel-beam specialisation of :func:`backproject` (same weights, one gather).

    In a parallel view every ray shares dominance, ``beta`` and plane weight ``w``, and
    ``alpha`` is affine in the bin, ``alpha_k = alpha_0 + a k``.  The ray through pixel
    ``(i, j)``'s centre sits at the fractional bin ``kappa = P i + Q j + R`` and bin ``k``
    gets the weight ``w max(0, 1 - |a| |k - kappa|)``, so the view contributes
    ``G(kappa) = w sum_k y_k max(0, 1 - |a| |k - kappa|)``: a piecewise-linear function
    whose kinks lie at the integers and at ``+-1/|a|`` from them, i.e. at most at the
    offsets ``{0, o1, o2}`` of every unit interval.  Tabulating ``G`` at those three
    offsets and warping ``kappa`` piecewise-linearly so that they fall on consecutive
    integers makes one linear interpolation (``grid_sample``) reproduce ``G`` exactly.
    """
    b, c, n_views, n_bins = y.shape
    bc = b * c
    dtype, device = y.dtype, y.device
    xdom, alpha0, beta, weight, slope = raymath.parallel_view_params(p, angles)
    inv = 1 / slope
    # kappa = (j - beta i - alpha0) / a for x-dominant views, i <-> j for y-dominant ones.
    coef_i = torch.where(xdom, -beta * inv, inv)
    coef_j = torch.where(xdom, inv, -beta * inv)
    offset = -alpha0 * inv
    half = inv.abs()  # half-width of the triangle in bins
    knots = _knot_offsets(half)  # [V, 3]: 0, o1, o2
    pad = int(math.ceil(half.max().item())) + 1  # G vanishes beyond pad bins off the detector
    table = _knot_table(y.reshape(bc, n_views, n_bins), knots, half, weight, pad)  # [bc, V, L]
    length = table.shape[-1]
    # Warp slopes on the three pieces [0, o1), [o1, o2), [o2, 1) of every unit interval.
    o1, o2 = knots[:, 1], knots[:, 2]
    s1, s2, s3 = 1 / o1, 1 / (o2 - o1), 1 / (1 - o2)
    # grid_sample's x coordinate (align_corners=True) of table index u is u * 2/(L-1) - 1;
    # fold that scale into the warp slopes so u is never formed on its own.
    to_x = 2 / (length - 1)
    per_view = [t.to(device, dtype).reshape(-1, 1, 1) for t in
                (coef_i, coef_j, offset, o1, o2, s1 * to_x, (s2 - s1) * to_x, (s3 - s2) * to_x)]
    fi = torch.arange(p.n0, dtype=dtype, device=device).reshape(1, -1, 1)
    fj = torch.arange(p.n1, dtype=dtype, device=device).reshape(1, 1, -1)
    # One table row per view as its own batch entry of height 1: then the grid's y
    # coordinate is irrelevant (always row 0) and is written once, not per chunk.
    rows = table.permute(1, 0, 2).reshape(n_views, bc, 1, length).contiguous()
    out = y.new_zeros(bc, p.n0, p.n1)
    chunk = max(1, _CHUNK_ELEMENTS // (p.n0 * p.n1))
    grid_buf = y.new_zeros(chunk, p.n0, p.n1, 2)
    for v0 in range(0, n_views, chunk):
        v1 = min(v0 + chunk, n_views)
        ci, cj, off, k1, k2, a1, a2, a3 = (t[v0:v1] for t in per_view)
        kappa = torch.add(cj * fj + off, ci * fi).clamp_(-pad, n_bins + pad - 1)
        m = torch.floor(kappa)
        f = kappa.sub_(m)
        # x = to_x (3 (m + pad) + warp(f)) - 1, warp piecewise linear through
        # (0, 0), (o1, 1), (o2, 2), (1, 3): a sum of ramps
        r1 = torch.sub(f, k1).clamp_(min=0)
        r2 = torch.sub(f, k2).clamp_(min=0)
        x = f.mul_(a1).addcmul_(r1, a2).addcmul_(r2, a3).add_(m, alpha=3 * to_x)
        grid = grid_buf[: v1 - v0]
        torch.add(x, 3 * pad * to_x - 1, out=grid[..., 0])
        samples = F.grid_sample(rows[v0:v1], grid, mode="bilinear", padding_mode="zeros",
                                align_corners=True)
        out += samples.sum(0)
    return out.reshape(b, c, p.n0, p.n1)


def _knot_offsets(half: torch.Tensor) -> torch.Tensor:
    """Sorted kink offsets ``[0, o1, o2]`` in ``[0, 1)`` of ``G`` for each view (float64).

    Coincident kinks (integer or half-integer ``half``) are replaced by extra points where
    ``G`` is linear anyway, which keeps every warp piece non-empty.
    """
    frac = half - torch.floor(half)
    o1 = torch.minimum(frac, 1 - frac)
    o2 = torch.maximum(frac, 1 - frac)
    tiny = 1e-9
    o1, o2 = torch.where(o1 < tiny, 1 / 3, o1), torch.where(o1 < tiny, 2 / 3, o2)
    o2 = torch.where(o2 - o1 < tiny, (o1 + 1) / 2, o2)
    return torch.stack([torch.zeros_like(o1), o1, o2], dim=1)


def _knot_table(y: torch.Tensor, knots: torch.Tensor, half: torch.Tensor, weight: torch.Tensor,
                pad: int) -> torch.Tensor:
    """``G`` at ``m + knot`` for ``m = -pad .. n_bins + pad`` (interleaved), ``[bc, V, L]``."""
    bc, n_views, n_bins = y.shape
    m = torch.arange(-pad, n_bins + pad + 1, dtype=torch.float64)
    pos = (m.reshape(1, -1, 1) + knots.reshape(n_views, 1, 3)).reshape(n_views, -1)  # [V, L]
    length = pos.shape[1]
    table = torch.zeros(bc, n_views, length, dtype=y.dtype, device=y.device)
    a = (1 / half).reshape(-1, 1)
    first = torch.ceil(pos - half.reshape(-1, 1))
    n_taps = int(math.ceil(2 * half.max().item())) + 1
    ypad = torch.nn.functional.pad(y, (pad + n_taps, pad + n_taps + 2))
    rows = (torch.arange(n_views) * ypad.shape[-1]).reshape(-1, 1)
    flat = ypad.reshape(bc, -1)
    for t in range(n_taps):
        k = first + t
        w = (1 - a * (k - pos).abs()).clamp(min=0) * weight.reshape(-1, 1)
        idx = (k.long() + pad + n_taps + rows).reshape(-1).to(y.device)
        table += w.to(y.device, y.dtype) * flat[:, idx].reshape(bc, n_views, length)
    return table


def _pixel_centres(p: GeometryParams, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(p.n0, dtype=torch.float64)
    j = torch.arange(p.n1, dtype=torch.float64)
    gx = (p.x0 + (i + 0.5) * p.dx).to(device, dtype).reshape(-1, 1)
    gy = (p.y0 + (j + 0.5) * p.dy).to(device, dtype).reshape(1, -1)
    return gx, gy
