"""The paper's learned policy: ResNet-18 on the prior image, ``n0 = exp(d)``.

Modes:

- ``scalar``: one ``d`` per patient, the same ``n0`` on every view (End2end-ALARA);
- ``angular``: ``log n0(theta)`` as a low-order Fourier series in ``2 theta`` (period pi,
  since opposite views see the same attenuation), so a smooth learned modulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from alara.geometry import LODOPAB_N0, Geometry
from alara.interfaces import DosePolicy, DosePolicyConfig, PriorInfo

__all__ = ["ResNet18Policy", "fourier_basis"]


def fourier_basis(angles: torch.Tensor, harmonics: int) -> torch.Tensor:
    """Rows ``1, cos(2k theta), sin(2k theta)`` for k = 1..harmonics: [1 + 2h, V]."""
    rows = [torch.ones_like(angles)]
    for k in range(1, harmonics + 1):
        rows += [torch.cos(2 * k * angles), torch.sin(2 * k * angles)]
    return torch.stack(rows)


class ResNet18Policy(DosePolicy):
    """torchvision ResNet-18 (no pretrained weights), one input channel, predicting
    ``d = log n0`` (one value, or Fourier coefficients in ``angular`` mode)."""

    name = "resnet18"

    @dataclass(frozen=True)
    class Config(DosePolicyConfig):
        mode: Literal["scalar", "angular"] = "scalar"
        #: Fourier harmonics of log n0 in ``angular`` mode.
        harmonics: int = 2
        #: n0 before training (the network starts near exp(d) = init_n0).
        init_n0: float = LODOPAB_N0
        #: The prior is resized to input_size x input_size (0 keeps its size).
        input_size: int = 128
        #: |d - log(init_n0)| is bounded smoothly by this (tanh), so exp(d) cannot overflow.
        max_log_change: float = 8.0

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.harmonics < 0:
                raise ValueError(f"harmonics must be >= 0, got {self.harmonics}")
            if not self.init_n0 > 0:
                raise ValueError(f"init_n0 must be positive, got {self.init_n0}")
            if self.input_size < 0 or 0 < self.input_size < 32:
                raise ValueError(f"input_size must be 0 or >= 32 (ResNet-18 downsamples 32x), got {self.input_size}")
            if not self.max_log_change > 0:
                raise ValueError(f"max_log_change must be positive, got {self.max_log_change}")

    def __init__(self, config: Optional[Config] = None) -> None:
        super().__init__(config)
        import torchvision  # imported here: only this policy needs it

        c = self.config
        self.n_outputs = 1 if c.mode == "scalar" else 1 + 2 * c.harmonics
        net = torchvision.models.resnet18(weights=None, num_classes=self.n_outputs)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        # Start from (almost) constant n0 = init_n0: small last layer, zero bias.
        with torch.no_grad():
            net.fc.weight.mul_(1e-2)
            net.fc.bias.zero_()
        self.net = net

    def log_n0(self, prior: PriorInfo, geometry: Geometry) -> torch.Tensor:
        """``d = log n0`` [B, V]."""
        c = self.config
        param = next(self.net.parameters())
        z = prior.network_input().to(dtype=param.dtype, device=param.device)
        if c.input_size:
            z = F.interpolate(z, size=(c.input_size, c.input_size), mode="bilinear", align_corners=False)
        out = self.net(z)
        out = c.max_log_change * torch.tanh(out / c.max_log_change)
        base = math.log(c.init_n0)
        if c.mode == "scalar":
            return (base + out).expand(-1, geometry.n_views)
        basis = fourier_basis(geometry.angles.to(device=out.device, dtype=out.dtype), c.harmonics)
        return base + out @ basis

    def propose(self, prior: PriorInfo, geometry: Geometry) -> torch.Tensor:
        return torch.exp(self.log_n0(prior, geometry))
