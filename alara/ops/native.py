"""The native operators ``torch.ops.alara.project`` / ``torch.ops.alara.backproject``.

The ops are declared in C++ (``csrc/ops.cpp``, TORCH_LIBRARY) with primitive arguments
and implemented per device (``csrc/cpu``, ``csrc/cuda``).  This module registers, from
Python, what the dispatcher needs beyond the kernels:

- fake (meta) kernels, so ``torch.compile`` can trace the ops without running them;
- autograd: the backward of ``project`` is ``backproject`` with the same arguments and
  vice versa (the pair is an exact adjoint, also with ``distance_weight``), so autograd
  saves no intermediate tensor (only the small ``angles`` input) and double backward
  works.

``project(x, p, angles)`` / ``backproject(y, p, angles, distance_weight)`` are the
entry points that :mod:`alara.ops.projection` calls for ``backend="native"``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from alara.ops.raymath import GeometryParams

from alara import _C  # noqa: F401  (loads the library: registers torch.ops.alara.*)

__all__ = ["project", "backproject", "build_info", "cuda_built", "cuda_arch_list"]

_project = torch.ops.alara.project.default
_backproject = torch.ops.alara.backproject.default


def build_info() -> dict[str, str]:
    """What ``alara._C`` was compiled with, from the op ``torch.ops.alara.build_info``:
    ``{"cuda": "0" | "1", "arch": "sm_80,sm_90+PTX"}``."""
    return dict(kv.split("=", 1) for kv in torch.ops.alara.build_info().split(";"))


def cuda_built() -> bool:
    """Whether the CUDA kernels were compiled."""
    return build_info()["cuda"] == "1"


def cuda_arch_list() -> list[str]:
    """The CUDA architectures the kernels were compiled for (empty without CUDA)."""
    return [a for a in build_info()["arch"].split(",") if a]


# Angles copied to a GPU, per (source tensor, device): a copy from (pageable) host
# memory synchronises the host with the device, which every operator call of a training
# step would otherwise pay.  An entry is used only while its source is the same tensor
# object, unmodified (its version counter); it holds the source, so its id is not reused.
_DEVICE_ANGLES: "OrderedDict[tuple[int, torch.device], tuple[torch.Tensor, int, torch.Tensor]]" = OrderedDict()
_DEVICE_ANGLES_MAX = 32


def _angles_on(angles: torch.Tensor, device: torch.device) -> torch.Tensor:
    if angles.device == device or device.type == "cpu":
        return angles.to(device=device, dtype=torch.float64)
    key = (id(angles), device)
    hit = _DEVICE_ANGLES.get(key)
    if hit is not None and hit[0] is angles and hit[1] == angles._version:
        _DEVICE_ANGLES.move_to_end(key)
        return hit[2]
    out = angles.to(device=device, dtype=torch.float64)
    _DEVICE_ANGLES[key] = (angles, angles._version, out)
    while len(_DEVICE_ANGLES) > _DEVICE_ANGLES_MAX:
        _DEVICE_ANGLES.popitem(last=False)
    return out


def project(x: torch.Tensor, p: GeometryParams, angles: torch.Tensor,
            distance_weight: bool = False) -> torch.Tensor:
    """``[B, C, n0, n1] -> [B, C, views, bins]`` (``distance_weight``: the adjoint of the
    distance-weighted backprojection of fan-beam FBP)."""
    return torch.ops.alara.project(
        x.contiguous(), _angles_on(angles, x.device), p.kind, p.n_bins, p.x0, p.y0, p.dx,
        p.dy, p.s0, p.ds, p.src_radius, p.src_det, distance_weight)


def backproject(y: torch.Tensor, p: GeometryParams, angles: torch.Tensor,
                distance_weight: bool = False) -> torch.Tensor:
    """``[B, C, views, bins] -> [B, C, n0, n1]``, the exact adjoint of :func:`project`."""
    return torch.ops.alara.backproject(
        y.contiguous(), _angles_on(angles, y.device), p.kind, p.n0, p.n1, p.x0, p.y0, p.dx,
        p.dy, p.s0, p.ds, p.src_radius, p.src_det, distance_weight)


# --------------------------------------------------------------------------- fake kernels


@torch.library.register_fake("alara::project")
def _project_fake(image, angles, kind, n_bins, x0, y0, dx, dy, s0, ds, src_radius, src_det,
                  distance_weight=False):
    torch._check(image.dim() == 4, lambda: "alara.project: image must be [B, C, n0, n1]")
    torch._check(angles.dim() == 1, lambda: "alara.project: angles must be 1-D")
    torch._check(angles.dtype == torch.float64, lambda: "alara.project: angles must be float64")
    return image.new_empty((image.shape[0], image.shape[1], angles.shape[0], n_bins))


@torch.library.register_fake("alara::backproject")
def _backproject_fake(sino, angles, kind, n0, n1, x0, y0, dx, dy, s0, ds, src_radius,
                      src_det, distance_weight=False):
    torch._check(sino.dim() == 4, lambda: "alara.backproject: sinogram must be [B, C, V, K]")
    torch._check(angles.dim() == 1, lambda: "alara.backproject: angles must be 1-D")
    torch._check(sino.shape[2] == angles.shape[0],
                 lambda: "alara.backproject: sinogram views and angles differ")
    return sino.new_empty((sino.shape[0], sino.shape[1], n0, n1))


# --------------------------------------------------------------------------- autograd
# Only the geometry scalars and the angles (an input, [V] float64) are kept for backward.


def _project_setup(ctx, inputs, output):
    image, angles, kind, n_bins, *geo, distance_weight = inputs
    ctx.save_for_backward(angles)
    ctx.args = (kind, image.shape[-2], image.shape[-1], *geo)
    ctx.distance_weight = distance_weight


def _project_backward(ctx, grad):
    (angles,) = ctx.saved_tensors
    g = None
    if ctx.needs_input_grad[0]:
        g = torch.ops.alara.backproject(grad.contiguous(), angles, *ctx.args, ctx.distance_weight)
    return (g, None, None, None, None, None, None, None, None, None, None, None, None)


def _backproject_setup(ctx, inputs, output):
    sino, angles, kind, n0, n1, *geo, distance_weight = inputs
    ctx.save_for_backward(angles)
    ctx.args = (kind, sino.shape[-1], *geo)
    ctx.distance_weight = distance_weight


def _backproject_backward(ctx, grad):
    (angles,) = ctx.saved_tensors
    g = None
    if ctx.needs_input_grad[0]:
        g = torch.ops.alara.project(grad.contiguous(), angles, *ctx.args, ctx.distance_weight)
    return (g, None, None, None, None, None, None, None, None, None, None, None, None, None)


torch.library.register_autograd("alara::project", _project_backward, setup_context=_project_setup)
torch.library.register_autograd("alara::backproject", _backproject_backward,
                                setup_context=_backproject_setup)
