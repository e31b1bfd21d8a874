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


def _angles(geometry: Geometry) -> torch.Tensor:
    return geometry.angles  # float64, CPU; the kernels derive cos/sin in float64


def _run_project(x: torch.Tensor, geometry: Geometry, backend: str) -> torch.Tensor:
    p = GeometryParams.of(geometry)
    if _backend.resolve(backend, x.device) == "native":
        from alara.ops import native

        return native.project(x, p, _angles(geometry))
    return _with_float_compute(torch_backend.project, x, p, _angles(geometry))


def _run_backproject(y: torch.Tensor, geometry: Geometry, backend: str,
                     distance_weight: bool = False) -> torch.Tensor:
    p = GeometryParams.of(geometry)
    if _backend.resolve(backend, y.device) == "native":
        from alara.ops import native

        return native.backproject(y, p, _angles(geometry), distance_weight)
    return _with_float_compute(torch_backend.backproject, y, p, _angles(geometry),
                               distance_weight)


def _with_float_compute(fn, t: torch.Tensor, *args) -> torch.Tensor:
    # Half-precision inputs accumulate in float32 (grid_sample sums thousands of terms).
    if t.dtype in (torch.float16, torch.bfloat16):
        return fn(t.float(), *args).to(t.dtype)
    return fn(t, *args)


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, geometry, backend):  # type: ignore[override]
        ctx.geometry, ctx.backend = geometry, backend
        return _run_project(x, geometry, backend)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return _Backproject.apply(grad.contiguous(), ctx.geometry, ctx.backend), None, None


class _Backproject(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, geometry, backend):  # type: ignore[override]
        ctx.geometry, ctx.backend = geometry, backend
        return _run_backproject(y, geometry, backend)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return _Project.apply(grad.contiguous(), ctx.geometry, ctx.backend), None, None


def project(x: torch.Tensor, geometry: Geometry, backend: str = "auto") -> torch.Tensor:
    """Forward projection (line integrals in metres) of images ``x`` ``[B, C, n0, n1]``.

    ``(A x)[b, c, v, k] = sum over Joseph planes of w * lerp(x)`` along the ray of view
    ``v`` and bin ``k``; for ``x = mu / mu_max`` this is on the scale of LoDoPaB's
    observations.  Returns ``[B, C, views, bins]``.
    """
    checks.check_geometry(geometry)
    checks.check_tensor(x, "x", geometry.grid.shape, "image shape (n0, n1)")
    return _Project.apply(x.contiguous(), geometry, backend)


def backproject(y: torch.Tensor, geometry: Geometry, backend: str = "auto") -> torch.Tensor:
    """Backprojection ``A^T y`` of sinograms ``y`` ``[B, C, views, bins]``: the exact
    adjoint of :func:`project`.  Returns ``[B, C, n0, n1]``."""
    checks.check_geometry(geometry)
    checks.check_tensor(y, "y", geometry.sinogram_shape, "sinogram shape (views, bins)")
    return _Backproject.apply(y.contiguous(), geometry, backend)


class _WeightedBackproject(torch.autograd.Function):
    """Distance-weighted fan-beam backprojection (FBP only); its adjoint is not needed for
    FBP's own gradient except through this class, which is linear in ``y``."""

    @staticmethod
    def forward(ctx, y, geometry, backend):  # type: ignore[override]
        ctx.geometry, ctx.backend = geometry, backend
        return _run_backproject(y, geometry, backend, distance_weight=True)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        # Adjoint of (A^T D): D A, where D weights each (view, pixel) pair; apply it by
        # weighting the image per view is not separable, so fall back to autograd on the
        # explicit formula: differentiate through the torch implementation.
        with torch.enable_grad():
            y = torch.zeros(grad.shape[:2] + ctx.geometry.sinogram_shape, dtype=grad.dtype,
                            device=grad.device, requires_grad=True)
            out = _run_backproject(y, ctx.geometry, "torch", distance_weight=True)
            (g,) = torch.autograd.grad(out, y, grad, create_graph=torch.is_grad_enabled())
        return g, None, None


def backproject_distance_weighted(y: torch.Tensor, geometry: Geometry,
                                  backend: str = "auto") -> torch.Tensor:
    """Fan-beam backprojection with the ``R / (R + p.e)`` weight of FBP (internal)."""
    return _WeightedBackproject.apply(y.contiguous(), geometry, backend)
