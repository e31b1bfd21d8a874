"""Input validation for the operators: clear errors that name the argument and the fix."""

from __future__ import annotations

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
    # detach: isfinite decomposes into abs(), which would save the input for autograd
    # (skipped while torch.compile traces: a data-dependent branch would break the graph)
    if (check_finite and not torch.compiler.is_compiling()
            and not bool(torch.isfinite(t.detach()).all())):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t
