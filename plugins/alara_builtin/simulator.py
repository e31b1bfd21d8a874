"""The LoDoPaB-CT noise model as a simulator (``poisson``).

Mean counts ``lambda = n0 exp(-mu_max A x)``; counts ``~ Poisson(lambda)`` (+ optional
Gaussian electronic noise); counts below ``min_count`` (LoDoPaB: zero) become
``min_count = 0.1``; ``y = -ln(counts / n0) / mu_max``.

In training mode the sample is reparameterised, ``lambda + sqrt(lambda + sigma_e^2) eps``
with ``eps ~ N(0, 1)``, so ``y`` is differentiable in ``n0`` (the Gaussian approximation of
the Poisson law, accurate at the counts CT works with).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from alara.geometry import LODOPAB_MU_MAX
from alara.interfaces import Simulator

__all__ = ["PoissonSimulator", "broadcast_n0", "postlog_noise"]


def broadcast_n0(n0: torch.Tensor, sinogram: torch.Tensor) -> torch.Tensor:
    """``n0`` [B, V] reshaped to broadcast against ``sinogram`` [B, C, V, K] or [B, V, K]."""
    if n0.dim() != 2:
        raise ValueError(f"n0 must have shape [B, views], got {tuple(n0.shape)}")
    if sinogram.dim() not in (3, 4):
        raise ValueError(f"sinogram must be [B, C, views, bins] or [B, views, bins], got {tuple(sinogram.shape)}")
    b, v = sinogram.shape[0], sinogram.shape[-2]
    if tuple(n0.shape) != (b, v):
        raise ValueError(f"n0 has shape {tuple(n0.shape)} but the sinogram {tuple(sinogram.shape)} "
                         f"needs [B, views] = [{b}, {v}]")
    n0 = n0.to(sinogram.dtype)
    return n0[:, None, :, None] if sinogram.dim() == 4 else n0[:, :, None]


def postlog_noise(
    sinogram: torch.Tensor,
    n0: torch.Tensor,
    *,
    mu_max: float = LODOPAB_MU_MAX,
    min_count: float = 0.1,
    electronic_std: float = 0.0,
    differentiable: bool = False,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Noisy post-log sinogram ``y`` for normalised line integrals ``sinogram`` and photons
    per bin ``n0`` [B, V] (see the module docstring for the model)."""
    n0b = broadcast_n0(n0, sinogram)
    if bool((n0b <= 0).any()):
        raise ValueError("n0 must be positive on every view")
    lam = n0b * torch.exp(-mu_max * sinogram)

    def normal() -> torch.Tensor:
        return torch.randn(lam.shape, generator=generator, dtype=lam.dtype, device=lam.device)

    if differentiable:
        counts = lam + torch.sqrt(lam + electronic_std**2) * normal()
    else:
        with torch.no_grad():
            counts = torch.poisson(lam.detach(), generator=generator)
            if electronic_std > 0:
                counts = counts + electronic_std * normal()
        n0b = n0b.detach()
    # clamp, not where: keeps a (zero) gradient path and maps 0 -> min_count as LoDoPaB.
    counts = counts.clamp(min=min_count)
    return -torch.log(counts / n0b) / mu_max


class PoissonSimulator(Simulator):
    """LoDoPaB's Poisson noise: exact (and detached: not differentiable) in eval mode,
    reparameterised and differentiable in ``n0`` in training mode."""

    name = "poisson"

    @dataclass(frozen=True)
    class Config:
        #: Normalisation of the images (1/m); LoDoPaB's value.
        mu_max: float = LODOPAB_MU_MAX
        #: Counts below this (zero counts in LoDoPaB) are replaced by it before the log.
        min_count: float = 0.1
        #: Standard deviation of additive Gaussian electronic noise, in counts.
        electronic_std: float = 0.0

        def __post_init__(self) -> None:
            if not self.mu_max > 0:
                raise ValueError(f"mu_max must be positive, got {self.mu_max}")
            if not self.min_count > 0:
                raise ValueError(f"min_count must be positive (it is logged), got {self.min_count}")
            if not self.electronic_std >= 0:
                raise ValueError(f"electronic_std must be >= 0, got {self.electronic_std}")

    def forward(self, sinogram: torch.Tensor, n0: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        c = self.config
        return postlog_noise(sinogram, n0, mu_max=c.mu_max, min_count=c.min_count,
                             electronic_std=c.electronic_std, differentiable=self.training,
                             generator=generator)
