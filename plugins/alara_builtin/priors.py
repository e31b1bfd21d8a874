"""Prior information for dose policies: what is known of a patient before the scan.

- ``prescan`` (default): a low-dose acquisition on the scan geometry, reconstructed with
  FBP; its dose counts in the patient's total.
- ``scouts``: projections at 0 and 90 degrees (the AP and lateral scout views a scanner
  plans tube-current modulation from); their dose counts too.
- ``prior_exam``: an earlier image of the same patient (free: already acquired).  Given
  explicitly, or emulated from the true image by a random misregistration.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from alara import ops
from alara.geometry import LODOPAB_N0, Geometry
from alara.interfaces import Prior, PriorInfo, Simulator

from alara_builtin import checks
from alara_builtin.reconstructors import FBPParams

__all__ = ["PreScanPrior", "ScoutPrior", "PriorExamPrior", "with_angles"]


def with_angles(geometry: Geometry, angles: torch.Tensor) -> Geometry:
    """The same scanner with other view angles."""
    return dataclasses.replace(geometry, angles=angles)


def _check_image(x: torch.Tensor, geometry: Geometry) -> None:
    if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != tuple(geometry.grid.shape):
        raise ValueError(f"x must be [B, 1, H, W] with (H, W) = {geometry.grid.shape}, got {tuple(x.shape)}")


class PreScanPrior(Prior):
    """Low-dose pre-scan on every ``view_step``-th view, reconstructed with FBP."""

    name = "prescan"

    @dataclass(frozen=True)
    class Config(FBPParams):
        #: Dose of the pre-scan relative to a full LoDoPaB scan (4096 photons, all views).
        relative_dose: float = 0.05
        #: Use every n-th view of the scan geometry (fewer views, more photons each).
        view_step: int = 1
        #: Clip the FBP image to [0, 1] (the x range).
        clip: bool = True

        def __post_init__(self) -> None:
            super().__post_init__()
            checks.positive(self, "relative_dose", hint="1.0 is a full LoDoPaB scan's dose")
            checks.whole(self, "view_step", 1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, geometry: Geometry, simulator: Optional[Simulator] = None,
                generator: Optional[torch.Generator] = None) -> PriorInfo:
        _check_image(x, geometry)
        c = self.config
        g = with_angles(geometry, geometry.angles[:: c.view_step])
        # Spread the dose over the pre-scan's views: n0 * V_pre = rel * 4096 * V.
        n0_value = c.relative_dose * LODOPAB_N0 * geometry.n_views / g.n_views
        n0 = torch.full((x.shape[0], g.n_views), n0_value, dtype=x.dtype, device=x.device)
        y = self.acquire(ops.project(x, g), n0, simulator, generator)
        z = c.fbp(y, g)
        if c.clip:
            z = z.clamp(0.0, 1.0)
        return PriorInfo(image=z, dose=n0.sum(dim=-1))


class ScoutPrior(Prior):
    """Two noisy scout projections (default at 0 and 90 degrees)."""

    name = "scouts"

    @dataclass(frozen=True)
    class Config:
        #: Photons per bin of each scout view.
        n0: float = LODOPAB_N0
        #: Scout angles in degrees; two orthogonal views.
        angles_deg: tuple[float, float] = (0.0, 90.0)
        #: Simulate Poisson noise on the scouts (False: noiseless line integrals).
        noise: bool = True

        def __post_init__(self) -> None:
            checks.positive(self, "n0", hint="photons per bin of each scout view")
            if len(self.angles_deg) != 2 or not all(
                    isinstance(a, (int, float)) and math.isfinite(a) for a in self.angles_deg):
                raise ValueError(f"angles_deg must be two finite angles in degrees, got "
                                 f"{self.angles_deg!r}")
            a, b = self.angles_deg
            if abs(((b - a) % 180.0) - 90.0) > 1e-6:
                raise ValueError(f"angles_deg must be two orthogonal views, got {self.angles_deg}")

    @torch.no_grad()
    def forward(self, x: torch.Tensor, geometry: Geometry, simulator: Optional[Simulator] = None,
                generator: Optional[torch.Generator] = None) -> PriorInfo:
        _check_image(x, geometry)
        c = self.config
        angles = torch.tensor([math.radians(a) for a in c.angles_deg], dtype=torch.float64)
        g = with_angles(geometry, angles)
        p = ops.project(x, g)[:, 0]  # [B, 2, K]
        n0 = torch.full((x.shape[0], 2), c.n0, dtype=x.dtype, device=x.device)
        if c.noise:
            p = self.acquire(p, n0, simulator, generator)
        return PriorInfo(scouts=p, scout_angles=angles, dose=n0.sum(dim=-1))


class PriorExamPrior(Prior):
    """A prior exam image: passed as ``exam``, or emulated from ``x`` by a random shift of
    up to ``max_shift_px`` pixels and rotation of up to ``max_rotation_deg`` (the patient is
    never positioned the same way twice), plus optional Gaussian noise."""

    name = "prior_exam"

    @dataclass(frozen=True)
    class Config:
        max_shift_px: float = 2.0
        max_rotation_deg: float = 3.0
        noise_std: float = 0.0

        def __post_init__(self) -> None:
            checks.non_negative(self, "max_shift_px", "max_rotation_deg", "noise_std")

    @torch.no_grad()
    def forward(self, x: torch.Tensor, geometry: Geometry, simulator: Optional[Simulator] = None,
                generator: Optional[torch.Generator] = None,
                exam: Optional[torch.Tensor] = None) -> PriorInfo:
        _check_image(x, geometry)
        if exam is not None:
            _check_image(exam, geometry)
            return PriorInfo(image=exam)
        c = self.config
        b, _, h, w = x.shape

        def uniform(scale: float) -> torch.Tensor:
            r = torch.rand(b, generator=generator, dtype=torch.float64) * 2 - 1
            return (r * scale).to(x)

        phi = uniform(math.radians(c.max_rotation_deg))
        tx, ty = uniform(2 * c.max_shift_px / w), uniform(2 * c.max_shift_px / h)
        cos, sin = torch.cos(phi), torch.sin(phi)
        theta = torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        z = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if c.noise_std > 0:
            z = z + c.noise_std * torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        return PriorInfo(image=z)
