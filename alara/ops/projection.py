"""Differentiable forward projection ``A`` and backprojection ``A^T`` (public API).

``project`` and ``backproject`` are an exact adjoint pair, ``<A x, y> = <x, A^T y>``; the
backward of each is the other, so autograd saves no intermediates and double backward
works.  ``backend`` picks the implementation (see :mod:`alara.ops.backend`).
"""

from __future__ import annotations

import torch

from alara.geometry import Geometry
from alara.ops import backend as _backend
from alara.ops import checks, torch_backend
from alara.ops.raymath import GeometryParams

__all__ = ["project", "backproject"]


def _native():
    from alara.ops import native  # imported lazily: it loads the compiled extension

    return native


def _torch_run(fn, t: torch.Tensor, geometry: Geometry, *args) -> torch.Tensor:
    p = GeometryParams.of(geometry)
    # Half-precision inputs accumulate in float32 (a ray sums hundreds of terms).
    if t.dtype in (torch.float16, torch.bfloat16):
        return fn(t.float(), p, geometry.angles, *args).to(t.dtype)
    return fn(t, p, geometry.angles, *args)


class _Project(torch.autograd.Function):
    """Pure-torch projection; its backward is the pure-torch backprojection."""

    @staticmethod
    def forward(ctx, x, geometry):  # type: ignore[override]
        ctx.geometry = geometry
        return _torch_run(torch_backend.project, x, geometry)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return _Backproject.apply(grad.contiguous(), ctx.geometry), None


class _Backproject(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, geometry):  # type: ignore[override]
        ctx.geometry = geometry
        return _torch_run(torch_backend.backproject, y, geometry)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return _Project.apply(grad.contiguous(), ctx.geometry), None


class _WeightedBackproject(torch.autograd.Function):
    """Pure-torch distance-weighted fan-beam backprojection (FBP).  Its adjoint weights
    each (view, pixel) pair, which no projection computes, so backward differentiates the
    explicit gather instead."""

    @staticmethod
    def forward(ctx, y, geometry):  # type: ignore[override]
        ctx.geometry = geometry
        return _torch_run(torch_backend.backproject, y, geometry, True)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        with torch.enable_grad():
            y = torch.zeros(grad.shape[:2] + ctx.geometry.sinogram_shape, dtype=grad.dtype,
                            device=grad.device, requires_grad=True)
            out = _torch_run(torch_backend.backproject, y, ctx.geometry, True)
            (g,) = torch.autograd.grad(out, y, grad, create_graph=torch.is_grad_enabled())
        return g, None


def project(x: torch.Tensor, geometry: Geometry, backend: str = "auto") -> torch.Tensor:
    """Forward projection (line integrals in metres) of images ``x`` ``[B, C, n0, n1]``.

    ``(A x)[b, c, v, k] = sum over Joseph planes of w * lerp(x)`` along the ray of view
    ``v`` and bin ``k``; for ``x = mu / mu_max`` this is on the scale of LoDoPaB's
    observations.  Returns ``[B, C, views, bins]``.
    """
    checks.check_geometry(geometry)
    checks.check_tensor(x, "x", geometry.grid.shape, "image shape", "n0, n1")
    if x.numel() == 0:
        return checks.empty_result(x, geometry.sinogram_shape)
    if _backend.resolve(backend, x.device) == "native":
        # the native op carries its own autograd (backward = native backprojection)
        return _native().project(x, GeometryParams.of(geometry), geometry.angles)
    return _Project.apply(x.contiguous(), geometry)


def backproject(y: torch.Tensor, geometry: Geometry, backend: str = "auto") -> torch.Tensor:
    """Backprojection ``A^T y`` of sinograms ``y`` ``[B, C, views, bins]``: the exact
    adjoint of :func:`project`.  Returns ``[B, C, n0, n1]``."""
    checks.check_geometry(geometry)
    checks.check_tensor(y, "y", geometry.sinogram_shape, "sinogram shape", "views, bins")
    if y.numel() == 0:
        return checks.empty_result(y, geometry.grid.shape)
    if _backend.resolve(backend, y.device) == "native":
        return _native().backproject(y, GeometryParams.of(geometry), geometry.angles)
    return _Backproject.apply(y.contiguous(), geometry)


def backproject_distance_weighted(y: torch.Tensor, geometry: Geometry,
                                  backend: str = "auto") -> torch.Tensor:
    """Fan-beam backprojection with FBP's ``R / (R + p.e)`` weight per view and pixel."""
    if y.numel() == 0:
        return checks.empty_result(y, geometry.grid.shape)
    if _backend.resolve(backend, y.device) == "native":
        return _native().backproject(y, GeometryParams.of(geometry), geometry.angles, True)
    return _WeightedBackproject.apply(y.contiguous(), geometry)
