"""The LoDoPaB-CT noise model as a simulator (``poisson``): :mod:`alara.noise` with its
parameters from the config.

Exact Poisson (detached) in eval mode; reparameterised, ``lambda + sqrt(lambda +
sigma_e^2) eps``, and differentiable in ``n0`` in training mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from alara.geometry import LODOPAB_MU_MAX
from alara.interfaces import Simulator
from alara.noise import MIN_COUNT, check_noise_params, postlog_noise

__all__ = ["PoissonSimulator"]


class PoissonSimulator(Simulator):
    """LoDoPaB's Poisson noise: exact (and detached: not differentiable) in eval mode,
    reparameterised and differentiable in ``n0`` in training mode."""

    name = "poisson"
    row_generators = True

    @dataclass(frozen=True)
    class Config:
        #: Normalisation of the images (1/m); LoDoPaB's value.
        mu_max: float = LODOPAB_MU_MAX
        #: Counts below this (zero counts in LoDoPaB) are replaced by it before the log.
        min_count: float = MIN_COUNT
        #: Standard deviation of additive Gaussian electronic noise, in counts.
        electronic_std: float = 0.0
        #: Exact sampler: "inverse_cdf" (one uniform per bin: draws at different doses
        #: share random numbers, as per-image calibration needs) or "poisson" (faster).
        sampler: Literal["inverse_cdf", "poisson"] = "inverse_cdf"

        def __post_init__(self) -> None:
            check_noise_params(self.mu_max, self.min_count, self.electronic_std)

    @property
    def mu_max(self) -> float:
        return self.config.mu_max

    def simulate(self, sinogram: torch.Tensor, n0: torch.Tensor, *, differentiable: bool,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        c = self.config
        return postlog_noise(sinogram, n0, mu_max=c.mu_max, min_count=c.min_count,
                             electronic_std=c.electronic_std, differentiable=differentiable,
                             generator=generator, sampler=c.sampler)
