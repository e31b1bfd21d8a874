"""Symmetries of the square that map a geometry onto itself, and operators that use them.

On a square grid centred on the rotation axis, the rotations by ``m pi/2`` (each
optionally after the reflection ``y -> -y``) map the grid onto itself and the rays of a
view onto the rays of another view::

    rotation by m pi/2:   (theta, s) -> (theta + m pi/2, s)
    reflection y -> -y:   (theta, s) -> (pi - theta, -s)

Joseph's discretisation is equivariant under them (square pixels), so where the view
angles and the detector are symmetric too, ``A[h(v), k_h(k); h(p)] = A[v, k; p]`` and one
view of each orbit ``{h(v)}`` stands for all of them: the other views' sinogram rows become
extra images of that view.  The fan-beam backprojection's set-up per (run of rays, plane)
then serves 8 views at once.  ``csrc/cpu/symmetry.h`` is the native kernels' transcription
(it also handles the parallel beam's half turn, which needs a kernel that fills only half
the rows).  ``ALARA_SYMMETRY=0`` switches both off.
"""

from __future__ import annotations

import bisect
import functools
import math
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from alara.ops.raymath import PARALLEL, GeometryParams

# Angles match to this (radians), grids and detectors are centred to this relative error:
# float64 angles of one intent (k 2 pi / V) differ by ~1e-15, and a position error of
# 1e-12 stays below float64 comparisons of the operators (1e-10).
ANGLE_TOL = 1e-12


@dataclass(frozen=True)
class ViewOrbits:
    """Views grouped by symmetries ``(m, reflect)`` (the first is the identity): orbit
    ``r`` has the views ``member[r, e] = h_e(rep[r])``, whose bins run reversed where
    ``reversed[r, e]``; ``rest`` are the views outside every orbit."""

    group: tuple[tuple[int, bool], ...]
    rep: torch.Tensor
    member: torch.Tensor
    reversed: torch.Tensor
    rest: torch.Tensor


# The orbits an image needs for the symmetric path to pay: it adds work per image and pixel
# (transforms, channels) and saves work per view (csrc/cpu/projection_cpu.cpp measured it).
ORBITS_PER_IMAGE = 12


def group_size(orbits: Optional["ViewOrbits"], images: int) -> int:
    """Images per call through ``orbits`` for a batch of ``images`` (0: run per view, as
    where ``orbits`` is None): as many as the orbits pay for, up to 8; from 8 images on
    the per-view passes are full anyway, so only whole groups of 8 are worth it."""
    if orbits is None:
        return 0
    g = min(8, orbits.rep.numel() // ORBITS_PER_IMAGE)
    if mode() == "force":
        return max(g, 1)
    return 0 if g < 1 or (images >= 8 and g < 8) else g


def plan(p: GeometryParams, angles: torch.Tensor, images: int) -> tuple[Optional["ViewOrbits"], int]:
    """The pure-torch operators' choice for ``images`` images (fewer than 8: from 8 on
    their passes are full anyway): the orbits and the images per call, or ``(None, 0)``
    to run per view."""
    if images >= 8 or not enabled():
        return None, 0
    orbits = view_orbits(p, angles)
    group = group_size(orbits, images)
    return (orbits, group) if group else (None, 0)


def _in_groups(t: torch.Tensor, group: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """fn over groups of ``group`` images of ``t`` [B, C, ...], concatenated back."""
    b, c = t.shape[:2]
    out = torch.cat([fn(part) for part in t.reshape(b * c, 1, *t.shape[2:]).split(group)])
    return out.reshape(b, c, *out.shape[2:])


ENV_VAR = "ALARA_SYMMETRY"
_MODES = {"0": "off", "off": "off", "false": "off", "no": "off", "": "auto", "1": "auto",
          "auto": "auto", "on": "auto", "true": "auto", "yes": "auto", "force": "force"}


def mode() -> str:
    """``off``, ``auto`` or ``force`` from ``ALARA_SYMMETRY``: ``0`` (off) runs every view
    on its own, ``force`` takes the symmetric paths wherever the geometry has the
    symmetry, also where they do not pay (tests), unset or ``1`` (auto) where they pay;
    any other value is an error."""
    raw = os.environ.get(ENV_VAR, "")
    try:
        return _MODES[raw.strip().lower()]
    except KeyError:
        raise ValueError(f"{ENV_VAR} must be 0 (off), 1 (auto, the default) or force, "
                         f"got {raw!r}") from None


def enabled() -> bool:
    """Whether the symmetric paths may run (see :func:`mode`)."""
    return mode() != "off"


def _map_angle(m: int, reflect: bool, theta: float) -> float:
    return ((math.pi - theta if reflect else theta) + m * math.pi / 2) % (2 * math.pi)


def view_orbits(p: GeometryParams, angles: torch.Tensor) -> Optional[ViewOrbits]:
    """The orbits of a fan-beam geometry's views, or None where no symmetry applies."""
    return _view_orbits(p, tuple(angles.tolist()))


@functools.lru_cache(maxsize=16)
def _view_orbits(p: GeometryParams, angles: tuple[float, ...]) -> Optional[ViewOrbits]:
    n_views = len(angles)
    if p.kind == PARALLEL or n_views < 2 or not all(math.isfinite(a) for a in angles):
        return None
    tol = 1e-12
    square = (p.n0 == p.n1 and abs(p.dx - p.dy) <= tol * p.dx
              and abs(p.x0 + 0.5 * p.n0 * p.dx) <= tol * p.dx
              and abs(p.y0 + 0.5 * p.n1 * p.dy) <= tol * p.dy)
    if not square:
        return None
    centred = abs(2 * p.s0 / p.ds + (p.n_bins - 1)) <= 1e-12 * p.n_bins  # s -> -s maps bins
    theta = [float(a) % (2 * math.pi) for a in angles]
    order = sorted(range(n_views), key=lambda v: (theta[v], v))
    keys = [theta[v] for v in order]

    def find(a: float) -> int:
        for cand in (a, a + 2 * math.pi if a < 1 else a - 2 * math.pi):
            i = bisect.bisect_left(keys, cand - ANGLE_TOL)
            if i < n_views and abs(keys[i] - cand) <= ANGLE_TOL:
                return order[i]
        return -1

    group = [(m, r) for r in ((False, True) if centred else (False,)) for m in range(4)
             if 2 * sum(find(_map_angle(m, r, t)) >= 0 for t in theta) >= n_views]
    if len(group) < 2:
        return None
    used = [False] * n_views
    reps, members, rest = [], [], []
    for v in range(n_views):
        if used[v]:
            continue
        found = [find(_map_angle(m, r, theta[v])) for m, r in group]
        ok = (found[0] == v and all(w >= 0 and not used[w] for w in found)
              and len(set(found)) == len(found))
        if not ok:
            rest.append(v)
            used[v] = True
            continue
        reps.append(v)
        members.append(found)
        for w in found:
            used[w] = True
    if not reps:
        return None
    long = dict(dtype=torch.long)
    member = torch.tensor(members, **long)
    flips = torch.tensor([r for _, r in group], dtype=torch.bool).expand_as(member)
    return ViewOrbits(tuple(group), torch.tensor(reps, **long), member, flips.clone(),
                      torch.tensor(rest, **long))


def move_pixels(img: torch.Tensor, m: int, reflect: bool) -> torch.Tensor:
    """``out[..., h(p)] = img[..., p]`` over the last two (square) dimensions, ``h`` the
    rotation by ``m pi/2`` after the reflection (axis 0 is x, axis 1 is y)."""
    out = img.flip(-1) if reflect else img
    return torch.rot90(out, m, dims=(-2, -1))


def pull_pixels(img: torch.Tensor, m: int, reflect: bool) -> torch.Tensor:
    """``out[..., p] = img[..., h(p)]``: the inverse of :func:`move_pixels`."""
    out = torch.rot90(img, -m, dims=(-2, -1))
    return out.flip(-1) if reflect else out


def project_symmetric(x: torch.Tensor, angles: torch.Tensor, orbits: ViewOrbits,
                      run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      n_bins: int, group: int = 8) -> torch.Tensor:
    """Projection ``[B, C, n0, n1] -> [B, C, V, K]`` through the orbits, ``group`` images
    at a time, from the per-view projection ``run(images, angles)``: image ``(e, b)`` is
    image ``b`` pulled back by ``h_e``, its projection at the representative views is the
    sinogram of the views ``h_e(rep)`` (bins reversed by reflections)."""
    if x.shape[0] * x.shape[1] > group:
        return _in_groups(x, group, lambda t: project_symmetric(t, angles, orbits, run, n_bins, group))
    b, c, n0, n1 = x.shape
    bc = b * c
    flat = x.reshape(bc, n0, n1)
    stacked = torch.stack([pull_pixels(flat, m, r) for m, r in orbits.group])
    sino = run(stacked.reshape(1, -1, n0, n1), angles[orbits.rep])
    sino = sino.reshape(len(orbits.group), bc, -1, n_bins)
    out = x.new_empty(bc, angles.numel(), n_bins)
    for e in range(len(orbits.group)):
        rows = sino[e]
        out[:, orbits.member[:, e]] = torch.where(orbits.reversed[:, e].view(1, -1, 1),
                                                  rows.flip(-1), rows)
    if orbits.rest.numel():
        out[:, orbits.rest] = run(x, angles[orbits.rest]).reshape(bc, -1, n_bins)
    return out.reshape(b, c, angles.numel(), n_bins)


def backproject_symmetric(y: torch.Tensor, angles: torch.Tensor, orbits: ViewOrbits,
                          run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                          n0: int, n1: int, group: int = 8) -> torch.Tensor:
    """Backprojection ``[B, C, V, K] -> [B, C, n0, n1]`` through the orbits, ``group``
    images at a time, from the per-view backprojection ``run(sinogram, angles)``: the rows
    of the views ``h_e(rep)`` (bins reversed by reflections) are image ``(e, b)`` of the
    representative views, and that image's pixel ``p`` belongs at ``h_e(p)``."""
    if y.shape[0] * y.shape[1] > group:
        return _in_groups(y, group, lambda t: backproject_symmetric(t, angles, orbits, run, n0, n1, group))
    b, c, _, n_bins = y.shape
    bc = b * c
    flat = y.reshape(bc, -1, n_bins)
    chans = []
    for e in range(len(orbits.group)):
        rows = flat[:, orbits.member[:, e]]
        chans.append(torch.where(orbits.reversed[:, e].view(1, -1, 1), rows.flip(-1), rows))
    stacked = torch.stack(chans).reshape(1, len(chans) * bc, -1, n_bins)
    img = run(stacked, angles[orbits.rep]).reshape(len(chans), bc, n0, n1)
    out = sum(move_pixels(img[e], m, r) for e, (m, r) in enumerate(orbits.group))
    if orbits.rest.numel():
        out = out + run(y[:, :, orbits.rest], angles[orbits.rest]).reshape(bc, n0, n1)
    return out.reshape(b, c, n0, n1)
