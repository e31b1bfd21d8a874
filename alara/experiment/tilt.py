"""A trained dose policy with a size tilt: ``n0 = policy(prior) * exp(tilt * (WED_cm - ref))``.

The experiment's variant of End2end-ALARA whose one extra parameter, the tilt (per cm of
the patient's water-equivalent diameter, read from the policy's own prior), is chosen on
the validation split like AEC's strength: measured on the default run, the learned
policy's log dose follows what the per-image oracle needs beyond patient size (its
residual correlates with the oracle's), but rises more slowly with size than the oracle's
does.  The tilt corrects that slope and nothing else; a tilt of 0 is the policy itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alara.geometry import Geometry
from alara.interfaces import DosePolicy, DosePolicyConfig, PriorInfo
from alara.size import water_equivalent_diameter

__all__ = ["SizeTiltedPolicy"]


class SizeTiltedPolicy(DosePolicy):
    """``base``'s ``n0`` times ``exp(tilt_per_cm * (WED_cm - wed_ref_cm))`` (see module)."""

    name = "size_tilted"

    @dataclass(frozen=True)
    class Config(DosePolicyConfig):
        tilt_per_cm: float = 0.0
        wed_ref_cm: float = 20.0

    def __init__(self, base: DosePolicy, config: "SizeTiltedPolicy.Config") -> None:
        super().__init__(config)
        if not isinstance(base, DosePolicy):
            raise TypeError(f"SizeTiltedPolicy wraps a DosePolicy, got {type(base).__name__}")
        self.base = base

    def propose(self, prior: PriorInfo, geometry: Geometry) -> torch.Tensor:
        """The base policy's ``n0`` [B, V], tilted by the patient's size."""
        n0 = self.base(prior, geometry)
        wed_cm = 100.0 * water_equivalent_diameter(prior, geometry).to(n0)
        return n0 * torch.exp(self.config.tilt_per_cm * (wed_cm - self.config.wed_ref_cm)).unsqueeze(-1)
