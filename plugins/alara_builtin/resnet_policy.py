"""The paper's learned policy: ResNet-18 on the prior image, ``n0 = exp(d)``.

Modes:

- ``scalar``: one ``d`` per patient, the same ``n0`` on every view (End2end-ALARA);
- ``angular``: ``log n0(theta)`` as a low-order Fourier series in ``2 theta`` (period pi,
  since opposite views see the same attenuation), so a smooth learned modulation.

Normalisation layers (``norm``):

- ``batch`` (default): torchvision's ResNet-18 with BatchNorm, as in the paper.  In training
  mode BatchNorm normalises over the batch, so train on several patients per batch; a batch
  that leaves one value per channel at the last stage (one patient with a prior of at most
  32 x 32 pixels after resizing) cannot be normalised and is refused with a clear error.
  In eval mode the running statistics are used and any batch size works.
- ``group``: GroupNorm (32 groups) in place of BatchNorm: each patient's dose is
  independent of the rest of the batch, and training works with a batch of one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from alara.geometry import LODOPAB_N0, Geometry
from alara.interfaces import DosePolicy, DosePolicyConfig, PriorInfo

from alara_builtin import checks

__all__ = ["ResNet18Policy", "fourier_basis"]

#: GroupNorm groups for ``norm = "group"`` (divides every ResNet-18 width, 64 to 512).
_GROUPS = 32


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
        #: Normalisation layers: "batch" (torchvision's BatchNorm, the paper) or "group"
        #: (GroupNorm, 32 groups: independent of the batch, trains with batch size 1).
        norm: Literal["batch", "group"] = "batch"

        def __post_init__(self) -> None:
            super().__post_init__()
            checks.whole(self, "harmonics", 0)
            checks.positive(self, "init_n0", hint="photons per bin and view; LoDoPaB: 4096")
            checks.whole(self, "input_size", 0)
            if 0 < self.input_size < 32:
                raise ValueError(f"input_size must be 0 or >= 32 (ResNet-18 downsamples 32x), got {self.input_size}")
            checks.positive(self, "max_log_change")
            if self.norm not in ("batch", "group"):
                raise ValueError(f"norm must be 'batch' or 'group', got {self.norm!r}")

    def __init__(self, config: Optional[Config] = None) -> None:
        super().__init__(config)
        import torchvision  # imported here: only this policy needs it

        c = self.config
        self.n_outputs = 1 if c.mode == "scalar" else 1 + 2 * c.harmonics
        norm_layer = functools.partial(nn.GroupNorm, _GROUPS) if c.norm == "group" else None
        net = torchvision.models.resnet18(weights=None, num_classes=self.n_outputs, norm_layer=norm_layer)
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
        self._check_batch_norm(z)
        out = self.net(z)
        out = c.max_log_change * torch.tanh(out / c.max_log_change)
        base = math.log(c.init_n0)
        if c.mode == "scalar":
            return (base + out).expand(-1, geometry.n_views)
        basis = fourier_basis(geometry.angles.to(device=out.device, dtype=out.dtype), c.harmonics)
        return base + out @ basis

    def _check_batch_norm(self, z: torch.Tensor) -> None:
        """Refuse, with the remedies, a training batch BatchNorm cannot normalise."""
        if not self.training or self.config.norm != "batch":
            return
        # ResNet-18 halves the size five times (rounding up): the last stage is ceil(n / 32).
        values = z.shape[0] * math.ceil(z.shape[-2] / 32) * math.ceil(z.shape[-1] / 32)
        if values == 1:
            raise ValueError(
                f"resnet18 policy (norm='batch') cannot train on a batch of {z.shape[0]} prior of "
                f"{z.shape[-2]}x{z.shape[-1]} pixels: BatchNorm would see one value per channel at "
                "the last stage.  Train on 2 or more patients per batch, set input_size >= 64, use "
                "norm = \"group\" (batch-independent), or call policy.eval() for inference"
            )

    def propose(self, prior: PriorInfo, geometry: Geometry) -> torch.Tensor:
        """``n0 = exp(d)`` [B, V]."""
        return torch.exp(self.log_n0(prior, geometry))
