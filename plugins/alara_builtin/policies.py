"""Hand-designed dose policies: ``fixed`` (one n0 on every view), ``tcm`` (angular
tube-current modulation by the square-root-of-attenuation rule at one mean n0 for every
patient) and ``size`` (one n0 per patient from its water-equivalent diameter alone: the
size-only control of the experiment); with the helpers they share with ``aec``."""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch
import torch.nn.functional as F

from alara import ops
from alara.geometry import LODOPAB_MU_MAX, LODOPAB_N0, Geometry
from alara.interfaces import DosePolicy, DosePolicyConfig, PriorInfo
from alara.size import MU_WATER, water_equivalent_diameter

from alara_builtin import checks

__all__ = ["FixedPolicy", "TCMPolicy", "SizePolicy", "angular_modulation", "max_line_integrals",
           "water_equivalent_diameter", "MU_WATER"]


#: Bins a scout profile is averaged over before its maximum is taken (photon noise on a
#: cheap scout would otherwise make the maximum, and every dose planned from it, too high).
SCOUT_SMOOTHING_BINS = 5


def _dtype(prior: PriorInfo) -> torch.dtype:
    ref = prior.image if prior.image is not None else prior.scouts
    return ref.dtype


class FixedPolicy(DosePolicy):
    """The same ``n0`` on every view and patient (LoDoPaB: 4096)."""

    name = "fixed"

    @dataclass(frozen=True)
    class Config(DosePolicyConfig):
        #: Photons per detector bin and view (ignored when ``budget`` is set).
        n0: float = LODOPAB_N0

        def __post_init__(self) -> None:
            super().__post_init__()
            checks.positive(self, "n0", hint="photons per bin and view; LoDoPaB: 4096")

    def propose(self, prior: PriorInfo, geometry: Geometry) -> torch.Tensor:
        """``n0`` [B, V] filled with ``config.n0``."""
        ref = prior.dose
        return torch.full((prior.batch_size, geometry.n_views), self.config.n0, dtype=_dtype(prior),
                          device=ref.device)


def max_line_integrals(prior: PriorInfo, geometry: Geometry) -> torch.Tensor:
    """Largest normalised line integral of each view, ``p_max`` [B, V], from the prior.

    From a prior image: its projection on ``geometry``, maximised over bins.  From two
    orthogonal scouts (each profile averaged over ``SCOUT_SMOOTHING_BINS`` bins first, so
    photon noise does not inflate the maximum): the elliptical patient model, exact for a
    uniform ellipse,
    ``1 / p(theta)^2 = cos^2(theta - theta_a) / p_a^2 + sin^2(theta - theta_a) / p_b^2``.
    """
    if prior.image is not None:
        return ops.project(prior.image, geometry)[:, 0].amax(dim=-1)
    scouts, angles = prior.scouts, prior.scout_angles
    if scouts.shape[1] != 2:
        raise ValueError(f"tcm from scouts needs exactly 2 orthogonal scout views, got {scouts.shape[1]}")
    # The maximum of a noisy profile is biased upwards; average neighbouring bins first.
    k = min(SCOUT_SMOOTHING_BINS, scouts.shape[-1])
    smooth = F.avg_pool1d(scouts, k, stride=1, padding=k // 2, count_include_pad=False) if k > 1 else scouts
    p = smooth.amax(dim=-1).clamp(min=1e-6)  # [B, 2]
    theta = geometry.angles.to(device=p.device, dtype=p.dtype) - float(angles[0])
    c2, s2 = torch.cos(theta) ** 2, torch.sin(theta) ** 2
    return torch.rsqrt(c2 / p[:, :1] ** 2 + s2 / p[:, 1:] ** 2)


class TCMPolicy(DosePolicy):
    """Tube-current modulation: ``n0(view) ∝ exp(strength * mu_max * p_max(view))``.

    ``strength = 1/2`` is the square-root-of-attenuation rule (the detected counts
    ``n0 exp(-mu_max p_max)`` then vary as the square root of the attenuation); 0 turns
    modulation off.  The mean ``n0`` over views is ``n0_mean``, or set by ``budget``.
    """

    name = "tcm"

    @dataclass(frozen=True)
    class Config(DosePolicyConfig):
        #: Mean photons per bin over the views (ignored when ``budget`` is set).
        n0_mean: float = LODOPAB_N0
        #: Exponent of the attenuation (1/2: square-root rule).
        strength: float = 0.5
        mu_max: float = LODOPAB_MU_MAX

        def __post_init__(self) -> None:
            super().__post_init__()
            checks.positive(self, "n0_mean", hint="photons per bin and view; LoDoPaB: 4096")
            checks.non_negative(self, "strength", hint="0: no modulation, 0.5: square-root rule")
            checks.positive(self, "mu_max", hint="attenuation scale in 1/m; LoDoPaB: 81.35858")

    def propose(self, prior: PriorInfo, geometry: Geometry) -> torch.Tensor:
        """``n0`` [B, V] with mean ``n0_mean``, modulated by the prior's ``p_max``."""
        c = self.config
        return c.n0_mean * angular_modulation(max_line_integrals(prior, geometry), c.strength, c.mu_max)


def angular_modulation(p_max: torch.Tensor, strength: float, mu_max: float) -> torch.Tensor:
    """Weights [B, V] with mean 1 over the views, ``∝ exp(strength * mu_max * p_max)``."""
    # Normalise in log space: exp of a large attenuation would overflow.
    return p_max.shape[-1] * torch.softmax(strength * mu_max * p_max, dim=-1)


class SizePolicy(DosePolicy):
    """One ``n0`` per patient from its size alone: ``n0 = n0_ref * exp(a + b * WED_cm)``
    on every view, with the water-equivalent diameter (cm) from the prior (the scouts).

    The experiment's size-only control: ``a`` and ``b`` are fitted on the training split's
    per-image threshold doses, so it shows what a dose policy gains from patient size
    alone, the first thing a learned policy must beat."""

    name = "size"

    @dataclass(frozen=True)
    class Config(DosePolicyConfig):
        #: log of the relative dose at WED = 0 (the intercept ``a``).
        intercept: float = 0.0
        #: Rise of the log dose per cm of water-equivalent diameter (``b``).
        slope_per_cm: float = 0.15
        n0_ref: float = LODOPAB_N0
        mu_max: float = LODOPAB_MU_MAX

        def __post_init__(self) -> None:
            super().__post_init__()
            for key in ("intercept", "slope_per_cm"):
                v = getattr(self, key)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"SizePolicy.Config: {key} must be a finite number, got {v!r}")
            checks.positive(self, "n0_ref", hint="photons per bin and view; LoDoPaB: 4096")
            checks.positive(self, "mu_max", hint="attenuation scale in 1/m; LoDoPaB: 81.35858")

    def propose(self, prior: PriorInfo, geometry: Geometry) -> torch.Tensor:
        """``n0`` [B, V]: the same on every view, ``n0_ref exp(a + b WED_cm)``."""
        c = self.config
        wed_cm = 100.0 * water_equivalent_diameter(prior, geometry, c.mu_max)
        # Bounded exponent: a fit extrapolated to an absurd size must not overflow.
        n0 = c.n0_ref * torch.exp((c.intercept + c.slope_per_cm * wed_cm).clamp(max=50.0))
        return n0.to(_dtype(prior)).unsqueeze(-1).expand(-1, geometry.n_views).contiguous()
