"""Model observers: linear templates and the detectability index d'.

A linear observer reads a region of interest (ROI) ``g`` of an image through a template
``w`` and says "lesion present" when the response ``t = <w, g>`` is large.  Its
detectability index is the separation of the two response distributions::

    d' = (E[t | present] - E[t | absent]) / sqrt(Var t)

The templates here (AAPM TG-233's task-based image quality for CT):

* non-prewhitening (NPW): ``w = s``, the expected signal.  In white noise of variance
  ``sigma^2`` it is the ideal observer, ``d' = ||s|| / sigma``.
* non-prewhitening with an eye filter (NPWE): ``w = F^-1[E^2 S]`` with the human
  contrast-sensitivity filter ``E(rho) = rho^n exp(-c rho^2)`` (rho in cycles per degree of
  visual angle, peak at ``rho_p``, ``c = n / (2 rho_p^2)``; Burgess 1994).
* channelized Hotelling (CHO): responses of ``C`` Laguerre-Gauss channels ``v = U g``; the
  Hotelling template in channel space ``w_v = K_v^-1 U s`` (``K_v``: channel covariance),
  i.e. ``w = U^T K_v^-1 U s`` in image space.  It never beats the ideal observer,
  ``d'^2 = s^T K^-1 s`` (:func:`ideal_dprime`).

All functions are differentiable torch code; tensors are float64 here (ROIs are small).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["EyeModel", "eye_filter", "npwe_template", "laguerre_gauss", "hotelling_template",
           "inverse_std_bias", "linear_dprime", "ideal_dprime"]


@dataclass(frozen=True)
class EyeModel:
    """How the image is viewed, to put the eye filter on the image's frequencies.

    An object frequency ``f`` (cycles per mm) is seen at
    ``f * (fov_mm / display_mm) * viewing_distance_mm * tan(1 deg)`` cycles per degree.
    """

    #: Exponent ``n`` of ``E(rho) = rho^n exp(-c rho^2)``.
    exponent: float = 1.3
    #: Frequency of peak sensitivity (cycles per degree).
    peak_cpd: float = 4.0
    viewing_distance_mm: float = 500.0
    #: Width on the display of the whole field of view.
    display_mm: float = 300.0

    def cycles_per_degree(self, f_mm: torch.Tensor, fov_mm: float) -> torch.Tensor:
        """Object frequencies (cycles/mm) as seen by the reader (cycles/degree)."""
        return f_mm * (fov_mm / self.display_mm) * self.viewing_distance_mm * math.tan(math.radians(1.0))


def eye_filter(rho_cpd: torch.Tensor, exponent: float = 1.3, peak_cpd: float = 4.0) -> torch.Tensor:
    """``E(rho) = rho^n exp(-c rho^2)`` with ``c = n / (2 peak^2)``, scaled to 1 at the peak."""
    c = exponent / (2 * peak_cpd**2)
    peak = peak_cpd**exponent * math.exp(-c * peak_cpd**2)
    return rho_cpd.abs().pow(exponent) * torch.exp(-c * rho_cpd**2) / peak


def npwe_template(signal: torch.Tensor, pixel_mm: float, fov_mm: float, eye: EyeModel = EyeModel()) -> torch.Tensor:
    """NPWE template ``w = F^-1[E^2 S]`` of a square ROI ``signal`` [n, n].

    The ROI is zero-padded to twice its size before filtering so the template is the
    linear (not circular) convolution, cropped back to the ROI."""
    n0, n1 = signal.shape[-2:]
    padded = F.pad(signal, (0, n1, 0, n0))
    fy = torch.fft.fftfreq(2 * n0, d=pixel_mm, dtype=signal.dtype, device=signal.device)
    fx = torch.fft.fftfreq(2 * n1, d=pixel_mm, dtype=signal.dtype, device=signal.device)
    rho = eye.cycles_per_degree(torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2), fov_mm)
    e2 = eye_filter(rho, eye.exponent, eye.peak_cpd) ** 2
    w = torch.fft.ifft2(torch.fft.fft2(padded) * e2).real
    return w[..., :n0, :n1]


def laguerre_gauss(size: int, channels: int, width: float, centre: tuple[float, float] = (0.0, 0.0),
                   dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> torch.Tensor:
    """Laguerre-Gauss channels [C, size, size] centred ``centre`` (row, col) pixels off the
    ROI's middle pixel::

        u_j(r) = sqrt(2) / a * exp(-pi r^2 / a^2) * L_j(2 pi r^2 / a^2)

    with ``a = width`` (pixels) and ``L_j`` the Laguerre polynomials."""
    h = (size - 1) / 2
    t = torch.arange(size, dtype=dtype, device=device) - h
    r2 = (t[:, None] - centre[0]) ** 2 + (t[None, :] - centre[1]) ** 2
    x = 2 * math.pi * r2 / width**2
    gauss = math.sqrt(2) / width * torch.exp(-x / 2)
    polys = [torch.ones_like(x), 1 - x]
    for k in range(1, channels - 1):
        polys.append(((2 * k + 1 - x) * polys[k] - k * polys[k - 1]) / (k + 1))
    return torch.stack([gauss * p for p in polys[:channels]])


def hotelling_template(signal: torch.Tensor, channels: torch.Tensor, channel_outputs: torch.Tensor,
                       ridge: float = 1e-6) -> torch.Tensor:
    """CHO template in image space ``w = U^T (K_v + eps I)^-1 U s`` [n, n].

    ``channels`` U [C, n, n]; ``channel_outputs`` [K, C] are the channel responses to K
    signal-free noise samples, from which ``K_v`` is estimated; ``eps`` is ``ridge`` times
    the mean channel variance (keeps a near-singular estimate invertible)."""
    u = channels.flatten(1)
    kv = torch.cov(channel_outputs.T).reshape(u.shape[0], u.shape[0])
    eps = ridge * kv.diagonal().mean().clamp_min(torch.finfo(kv.dtype).tiny)
    kv = kv + eps * torch.eye(u.shape[0], dtype=kv.dtype, device=kv.device)
    wv = torch.linalg.solve(kv, u @ signal.flatten())
    return (u.T @ wv).reshape(signal.shape)


def inverse_std_bias(k: int) -> float:
    """``E[sigma / s]`` for the sample standard deviation ``s`` of ``k`` independent normal
    draws: ``sqrt((k-1)/2) Gamma((k-2)/2) / Gamma((k-1)/2)`` (> 1; needs k >= 3)."""
    if k < 3:
        raise ValueError(f"the spread of fewer than 3 responses has no finite inverse moment, got {k}")
    return math.sqrt((k - 1) / 2) * math.exp(math.lgamma((k - 2) / 2) - math.lgamma((k - 1) / 2))


def linear_dprime(t_signal: torch.Tensor, t_noise: torch.Tensor) -> torch.Tensor:
    """``d' = mean(t_signal) / std(t_noise) / E[sigma / s]``: the mean response to the
    signal (over the last axis when several are given) over the spread of the K
    signal-free responses ``t_noise`` [..., K]; dividing by :func:`inverse_std_bias`
    makes it unbiased for Gaussian responses (1/s overestimates 1/sigma: by 5% for K = 16)."""
    mean = t_signal.mean(-1) if t_signal.dim() else t_signal
    return mean / t_noise.std(-1, correction=1) / inverse_std_bias(t_noise.shape[-1])


def ideal_dprime(signal: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
    """The ideal (prewhitening) observer for a known signal in Gaussian noise:
    ``d' = sqrt(s^T K^-1 s)``, ``signal`` [n, n] and ``covariance`` [n*n, n*n]."""
    s = signal.flatten()
    return torch.sqrt(s @ torch.linalg.solve(covariance, s))
