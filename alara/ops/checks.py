"""Input validation for the operators: clear errors that name the argument and the fix."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

from alara.geometry import FanBeam, Geometry, ParallelBeam

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_geometry(geometry: object, name: str = "geometry") -> Geometry:
    if not isinstance(geometry, (ParallelBeam, FanBeam)):
        raise TypeError(
            f"{name} must be an alara.geometry.ParallelBeam or FanBeam, "
            f"got {type(geometry).__name__}"
        )
    return geometry


def check_tensor(t: object, name: str, trailing: tuple[int, int], what: str, dims: str,
                 check_finite: bool = True) -> torch.Tensor:
    """Check a ``[B, C, *trailing]`` floating-point tensor; ``what`` names the trailing
    shape (e.g. "image shape") and ``dims`` its axes (e.g. "n0, n1")."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(
            f"{name} must have 4 dimensions [batch, channels, {dims}], got shape "
            f"{tuple(t.shape)}; add missing dimensions with {name}[None, None] or "
            f"{name}.unsqueeze(1)"
        )
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point tensor (float32 or float64), got {t.dtype}; "
            f"convert it with {name}.float()"
        )
    if tuple(t.shape[-2:]) != tuple(trailing):
        raise ValueError(
            f"{name} has {what} {tuple(t.shape[-2:])} but the geometry expects "
            f"{tuple(trailing)} ({dims})"
        )
    # (skipped while torch.compile traces: a data-dependent branch would break the graph)
    if check_finite and not torch.compiler.is_compiling():
        check_finite_values(t, name)
    return t


def check_finite_values(t: torch.Tensor, name: str) -> None:
    """Raise ``ValueError("<name> contains NaN or infinite values")`` where ``t`` has any.

    On CPU the check is one reduction: a sum is finite only if every term is (a NaN or
    an infinity propagates through it), so a finite sum clears the tensor; only a sum that
    is not finite (bad values, or finite values that overflow) runs the exact elementwise
    test.  The sum runs in NumPy, on the calling thread: a torch reduction opens a parallel
    region, and beside another process's busy threads its join waits for a descheduled
    thread of ours (issue 23: 0.014 ms quiet, 6.9 ms median on 2 threads beside the
    benchmark's torch load, for a 720 x 513 sinogram; NumPy's sum of it takes ~0.1 ms).

    On CUDA reading the answer back would synchronise the host with the device on every
    operator call, stalling a training step; there the check is queued with
    ``torch._assert_async`` and fails at a later synchronisation as a device-side assert
    (which ends the CUDA context, as any device-side assert does), with the same message.
    """
    t = t.detach()  # isfinite decomposes into abs(), which would save t for autograd
    message = f"{name} contains NaN or infinite values"
    if t.device.type == "cuda":
        torch._assert_async(torch.isfinite(t).all(), message)
        return
    if t.device.type == "cpu":
        if t.dtype in (torch.float32, torch.float64, torch.float16):
            with np.errstate(all="ignore"):  # (inf - inf, overflow: the exact test follows)
                if np.isfinite(t.numpy().sum()):
                    return
        elif bool(torch.isfinite(t.sum())):  # (bfloat16: NumPy has no such type)
            return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(message)


class CoverageWarning(UserWarning):
    """The views do not cover the angles filtered backprojection needs."""


def angular_coverage(geometry: Geometry) -> tuple[float, float]:
    """``(covered, needed)`` angular range in radians for FBP of ``geometry``.

    Each view stands for a cell of the typical (median) spacing, so a uniform scan over
    exactly the needed range covers it; the largest gap between views (modulo pi for
    parallel beam, 2 pi for fan beam, whose FBP here assumes a full circle), less one
    cell, is what is missing.
    Needed: pi for parallel beam, pi + the fan angle of the image for fan beam (the
    short-scan minimum).
    """
    if isinstance(geometry, FanBeam):
        period = 2 * math.pi
        needed = math.pi + 2 * math.asin(min(1.0, geometry.grid.radius / geometry.src_radius))
    else:
        period = needed = math.pi
    n = geometry.n_views
    if n < 2:
        return 0.0, needed
    a = torch.remainder(geometry.angles.double(), period).sort().values
    gaps = torch.diff(torch.cat([a, a[:1] + period]))
    gaps = gaps[gaps > 1e-9 * period]  # views repeated modulo the period add nothing
    if gaps.numel() < 2:
        return 0.0, needed
    covered = period - float(gaps.max()) + float(gaps.median())
    return min(covered, period), needed


@functools.lru_cache(maxsize=64)
def _coverage_message(geometry: Geometry) -> str:
    covered, needed = angular_coverage(geometry)
    # Sparse views with one gap of up to 1.5 cells are not a coverage problem.
    tol = 0.5 * needed / max(geometry.n_views, 1)
    if isinstance(geometry, FanBeam):
        if covered < needed - tol:
            return (f"fan-beam views cover about {covered:.3f} rad, less than the "
                    f"pi + fan angle = {needed:.3f} rad that complete data need: FBP will "
                    f"show limited-angle artefacts; spread the views over a full circle")
        if covered < 2 * math.pi - 0.5 * 2 * math.pi / max(geometry.n_views, 1):
            return (f"fan-beam views cover about {covered:.3f} rad: alara's fan-beam FBP "
                    f"assumes a full circle (2 pi) of uniformly spaced views; a short scan "
                    f"needs Parker weights, which it does not apply: expect shading errors")
        return ""
    if covered < needed - tol:
        return (f"parallel-beam views cover about {covered:.3f} rad, less than the pi rad "
                f"(half circle) FBP needs: expect limited-angle artefacts; spread the views "
                f"over [0, pi)")
    return ""


def check_coverage(geometry: Geometry, stacklevel: int = 3) -> None:
    """Warn (:class:`CoverageWarning`) when the views are too short in angle for FBP."""
    if torch.compiler.is_compiling():
        return
    message = _coverage_message(geometry)
    if message:
        warnings.warn(message, CoverageWarning, stacklevel=stacklevel)


def empty_result(t: torch.Tensor, trailing: tuple[int, int]) -> torch.Tensor:
    """The result of an operator on an empty batch ``t`` (a zero batch or channel size):
    an empty ``[B, C, *trailing]`` tensor of ``t``'s dtype, still attached to autograd, so
    every backend gives the same answer without running a kernel."""
    out = t.new_zeros(tuple(t.shape[:2]) + tuple(trailing))
    return out + t.sum() * 0 if t.requires_grad else out
