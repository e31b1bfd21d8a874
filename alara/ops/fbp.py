"""Filtered backprojection for parallel and fan beam (flat and curved detectors).

The ramp filter is the band-limited ramp sampled in space (Kak & Slaney, eq. 3.61:
``h[0] = 1/(4 ds^2)``, ``h[n odd] = -1/(pi n ds)^2``, zero otherwise), applied by FFT on
a zero-padded detector (at least twice the detector length, so the circular convolution
does not wrap around), multiplied by a window of the normalised frequency
``nu = f / (frequency_scaling * f_nyquist)`` and cut off at ``nu > 1``.  Backprojection
is :func:`alara.ops.backproject`, the exact adjoint of the projector, so FBP is
differentiable and uses the native kernels when built.

Scaling: the adjoint gives a pixel ``(dx dy / ds)`` times the interpolated filtered value
per view, so parallel FBP is ``(pi / V) (ds / (dx dy)) A^T q``.  Fan beam uses the
weighted formulas of Kak & Slaney (sec. 3.4) on a detector rescaled to the isocentre.
"""

from __future__ import annotations

import math

import torch

from alara.geometry import FanBeam, Geometry, ParallelBeam
from alara.ops import checks
from alara.ops.projection import backproject, backproject_distance_weighted

__all__ = ["FILTERS", "fbp", "filter_sinogram", "ramp_response"]

FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")


def _window(name: str, nu: torch.Tensor) -> torch.Tensor:
    if name == "ram-lak":
        return torch.ones_like(nu)
    if name == "shepp-logan":
        return torch.sinc(nu / 2)  # torch.sinc is sin(pi x) / (pi x)
    if name == "cosine":
        return torch.cos(math.pi * nu / 2)
    if name == "hamming":
        return 0.54 + 0.46 * torch.cos(math.pi * nu)
    if name == "hann":
        return 0.5 + 0.5 * torch.cos(math.pi * nu)
    raise ValueError(f"filter must be one of {FILTERS}, got {name!r}")


def ramp_response(n_bins: int, spacing: float, filter: str = "ram-lak",
                  frequency_scaling: float = 1.0, curved: bool = False,
                  dtype: torch.dtype = torch.float64, device=None) -> tuple[torch.Tensor, int]:
    """Frequency response (for ``torch.fft.rfft`` of length ``n_fft``) and ``n_fft``.

    The response includes the sampling factor ``spacing``, so ``irfft(rfft(p) * H)``
    approximates the continuous convolution ``(p * h)(s)``.  ``curved`` uses the
    equiangular kernel ``(g / sin g)^2 h(g)`` with ``spacing`` in radians.
    """
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
    if not (0 < frequency_scaling <= 1):
        raise ValueError(f"frequency_scaling must be in (0, 1], got {frequency_scaling}")
    n_fft = 1 << max(6, math.ceil(math.log2(2 * n_bins)))
    n = torch.arange(n_fft, dtype=torch.float64)
    n = torch.where(n <= n_fft // 2, n, n - n_fft)  # circular index -N/2..N/2-1
    h = torch.zeros(n_fft, dtype=torch.float64)
    h[0] = 1 / (4 * spacing**2)
    odd = (n.abs() % 2) == 1
    h[odd] = -1 / (math.pi * n[odd] * spacing) ** 2
    if curved:
        g = n * spacing
        ratio = torch.where(n == 0, torch.ones_like(g), g / torch.sin(g))
        h = h * ratio**2
    response = spacing * torch.fft.rfft(h).real
    nu = torch.arange(response.numel(), dtype=torch.float64) / (n_fft // 2) / frequency_scaling
    response = torch.where(nu <= 1, response * _window(filter, nu.clamp(max=1)), 0.0)
    return response.to(device=device, dtype=dtype), n_fft


def filter_sinogram(y: torch.Tensor, response: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Convolve each detector row of ``y`` ``[..., bins]`` with the filter ``response``."""
    spec = torch.fft.rfft(y, n=n_fft, dim=-1)
    return torch.fft.irfft(spec * response, n=n_fft, dim=-1)[..., : y.shape[-1]]


def fbp(y: torch.Tensor, geometry: Geometry, filter: str = "ram-lak",
        frequency_scaling: float = 1.0, backend: str = "auto") -> torch.Tensor:
    """Filtered backprojection of sinograms ``y`` ``[B, C, views, bins]``.

    Parallel beam assumes angles covering a half circle, fan beam a full circle, each
    uniformly; shorter coverage gives a :class:`alara.ops.checks.CoverageWarning`.  DIVal's LoDoPaB reference FBP is ``filter="hann", frequency_scaling=0.641``.
    """
    checks.check_geometry(geometry)
    checks.check_tensor(y, "y", geometry.sinogram_shape, "sinogram shape", "views, bins")
    checks.check_coverage(geometry)
    if y.numel() == 0:
        return checks.empty_result(y, geometry.grid.shape)
    work = y if y.dtype in (torch.float32, torch.float64) else y.float()
    grid = geometry.grid
    dx, dy = grid.spacing
    if isinstance(geometry, ParallelBeam):
        ds = geometry.bin_spacing
        h, n_fft = ramp_response(geometry.n_bins, ds, filter, frequency_scaling,
                                 dtype=work.dtype, device=work.device)
        q = filter_sinogram(work, h, n_fft)
        out = backproject(q.contiguous(), geometry, backend) * (math.pi / geometry.n_views * ds / (dx * dy))
        return out.to(y.dtype)
    assert isinstance(geometry, FanBeam)
    return _fbp_fan(work, geometry, filter, frequency_scaling, backend).to(y.dtype)


def _fbp_fan(y: torch.Tensor, g: FanBeam, filter: str, frequency_scaling: float,
             backend: str) -> torch.Tensor:
    (dx, dy), r, d = g.grid.spacing, g.src_radius, g.src_det_distance
    s = g.bin_centres(dtype=torch.float64)
    if g.detector == "flat":
        # Rescale to a virtual detector through the isocentre: s' = s R / D.
        ds = g.bin_spacing * r / d
        cos_gamma = d / torch.sqrt(d * d + s * s)
        pre, post = cos_gamma, cos_gamma
        h, n_fft = ramp_response(g.n_bins, ds, filter, frequency_scaling)
    else:
        ds = g.bin_spacing / d  # angular spacing (radians)
        cos_gamma = torch.cos(s / d)
        pre, post = r * cos_gamma, cos_gamma / r
        h, n_fft = ramp_response(g.n_bins, ds, filter, frequency_scaling, curved=True)
    pre, post, h = (t.to(y.device, y.dtype) for t in (pre, post, h))
    q = filter_sinogram(y * pre, h, n_fft) * post
    scale = (math.pi / g.n_views) * ds / (dx * dy)  # (dbeta / 2) with dbeta = 2 pi / V
    return backproject_distance_weighted(q.contiguous(), g, backend) * scale
