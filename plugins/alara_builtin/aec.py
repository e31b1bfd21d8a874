"""``aec``: clinical automatic exposure control, planned from the scouts.

Vendors' AEC sets each patient's mean tube current from the scout's attenuation and
modulates it over the rotation.  The patient's size is its water-equivalent diameter from
the scouts (``size = "wed"``, AAPM report 220: the scout's line integrals summed over every
bin, robust to photon noise; see ``water_equivalent_diameter``); ``p_max(theta)`` is the
elliptical patient model's largest line integral per view (see ``max_line_integrals``)::

    n0_mean  = n0_ref * exp(strength * mu_water * (WED - wed_ref))      (size = "wed")
    n0_mean  = n0_ref * exp(strength * mu_max * (p_bar - p_ref))        (size = "p_max")
    n0(view) = n0_mean * V * softmax(modulation * mu_max * p_max)(view)

``strength`` runs from constant dose (0: every patient gets ``n0_ref``) to constant noise
(1: the counts behind the centre of a water cylinder of the patient's WED, ``n0
exp(-mu_water WED)``, or behind the most attenuating path, are the same for every
patient); ``modulation = 1/2`` is the square-root rule of ``tcm``.  ``p_bar`` is the mean of
``p_max`` over the views: a maximum over noisy bins, kept for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from alara.geometry import LODOPAB_MU_MAX, LODOPAB_N0, Geometry
from alara.interfaces import DosePolicy, DosePolicyConfig, PriorInfo

from alara_builtin import checks
from alara_builtin.policies import MU_WATER, angular_modulation, max_line_integrals, water_equivalent_diameter

__all__ = ["AECPolicy"]


class AECPolicy(DosePolicy):
    """Patient-size adaptation of the mean ``n0`` times angular modulation (see module)."""

    name = "aec"

    @dataclass(frozen=True)
    class Config(DosePolicyConfig):
        #: Mean photons per bin of a reference patient (ignored when ``budget`` is set).
        n0_ref: float = LODOPAB_N0
        #: Normalised line integral of the reference patient's thickest path (about 20 cm
        #: of water: 0.2 m * 20 / 81.36 = 0.049).
        p_ref: float = 0.049
        #: Size estimate: "wed" (water-equivalent diameter) or "p_max" (mean largest line
        #: integral; biased by photon noise on cheap scouts).
        size: Literal["wed", "p_max"] = "wed"
        #: Water-equivalent diameter (m) of the reference patient.
        wed_ref: float = 0.2
        #: 0: constant dose, 1: constant noise; vendors' settings lie in between (up to 2:
        #: large patients get more than constant noise asks).
        strength: float = 0.5
        #: Angular modulation exponent (1/2: square-root rule; 0: none).
        modulation: float = 0.5
        mu_max: float = LODOPAB_MU_MAX

        def __post_init__(self) -> None:
            super().__post_init__()
            checks.positive(self, "n0_ref", hint="photons per bin and view; LoDoPaB: 4096")
            checks.positive(self, "p_ref", hint="normalised line integral of the reference patient")
            checks.positive(self, "wed_ref", hint="water-equivalent diameter of the reference patient in m")
            if self.size not in ("wed", "p_max"):
                raise ValueError(f"AECPolicy.Config: size must be 'wed' or 'p_max', got {self.size!r}")
            checks.non_negative(self, "modulation", hint="0: none, 0.5: square-root rule")
            checks.positive(self, "mu_max", hint="attenuation scale in 1/m; LoDoPaB: 81.35858")
            if not (math.isfinite(self.strength) and 0 <= self.strength <= 2):
                raise ValueError(f"AECPolicy.Config: strength must be in [0, 2] (0: constant dose, 1: "
                                 f"constant noise, 2: twice the noise compensation), got {self.strength!r}")

    def propose(self, prior: PriorInfo, geometry: Geometry) -> torch.Tensor:
        """``n0`` [B, V] from the scouts (or a prior image) by the module's formula."""
        c = self.config
        p_max = max_line_integrals(prior, geometry)
        if c.size == "wed":
            wed = water_equivalent_diameter(prior, geometry, c.mu_max).to(p_max).unsqueeze(-1)
            n0_mean = c.n0_ref * torch.exp(c.strength * MU_WATER * (wed - c.wed_ref))
        else:
            p_bar = p_max.mean(dim=-1, keepdim=True)
            n0_mean = c.n0_ref * torch.exp(c.strength * c.mu_max * (p_bar - c.p_ref))
        return n0_mean * angular_modulation(p_max, c.modulation, c.mu_max)
