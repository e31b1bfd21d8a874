"""The constrained hinge of End2end-ALARA: minimise dose subject to image quality.

    L = mean_i [ D_i / D_ref  +  lambda * max(0, s_i)  +  alpha * R_i ]

with ``D_i / D_ref`` the patient's relative dose (prior included), ``s_i`` the shortfall of
its quality below the target, ``q + m - Q_i`` for a higher-is-better metric (``Q_i - q - m``
otherwise; ``m`` is a safety margin so training aims a little above ``q``), and ``R_i`` an
optional reconstruction loss (MSE or L1).  Once an image is good enough the hinge is zero
and only the dose term acts, so each patient's dose sinks until its ``Q`` sits at ``q``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Optional

import torch
from torch import nn

from alara.interfaces import IQMetric
from alara.pipeline import Scan, scan_truth

__all__ = ["ObjectiveConfig", "LossTerms", "ConstrainedHinge", "reconstruction_loss"]


@dataclass(frozen=True)
class ObjectiveConfig:
    """The ``[objective]`` section: target ``q`` in the metric's units (default: the paper's
    PSNR target on LoDoPaB-CT), hinge weight ``lambda``, margin ``m``, reconstruction weight
    ``alpha`` and loss."""

    target: float = 38.57
    weight: float = 1.0
    margin: float = 0.0
    recon_weight: float = 0.0
    recon_loss: Literal["mse", "l1"] = "mse"

    def __post_init__(self) -> None:
        for key in ("target", "weight", "margin", "recon_weight"):
            if not math.isfinite(getattr(self, key)):
                raise ValueError(f"{key} must be a finite number, got {getattr(self, key)!r}")
        if self.weight <= 0:
            raise ValueError(f"weight (lambda) must be positive, got {self.weight}: without the "
                             "hinge the loss only lowers the dose")
        if self.margin < 0 or self.recon_weight < 0:
            raise ValueError("margin and recon_weight must be >= 0")


@dataclass
class LossTerms:
    """The loss and its per-patient terms [B] (detached), for logging."""

    loss: torch.Tensor
    relative_dose: torch.Tensor
    quality: torch.Tensor
    shortfall: torch.Tensor
    reconstruction: torch.Tensor

    def summary(self) -> dict[str, float]:
        """Batch means and the share of patients meeting the target, as plain floats."""
        return {"loss": float(self.loss.detach()), "relative_dose": float(self.relative_dose.mean()),
                "quality": float(self.quality.mean()), "shortfall": float(self.shortfall.clamp(min=0).mean()),
                "met": float((self.shortfall <= 0).double().mean()),
                "reconstruction": float(self.reconstruction.mean())}


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Per-image ``mean (x_hat - x)^2`` (``"mse"``) or ``mean |x_hat - x|`` (``"l1"``), [B]."""
    diff = (x_hat - x).flatten(1)
    if kind == "mse":
        return diff.pow(2).mean(1)
    if kind == "l1":
        return diff.abs().mean(1)
    raise ValueError(f"unknown reconstruction loss {kind!r}; use 'mse' or 'l1'")


class ConstrainedHinge(nn.Module):
    """``ConstrainedHinge(metric, config)(scan, x) -> LossTerms`` (see the module docstring)."""

    def __init__(self, metric: IQMetric, config: ObjectiveConfig = ObjectiveConfig()) -> None:
        super().__init__()
        self.metric = metric
        self.config = config

    @property
    def aim(self) -> float:
        """The value training aims at: ``q + m`` (or ``q - m`` for lower-is-better)."""
        c = self.config
        return c.target + c.margin if self.metric.higher_is_better else c.target - c.margin

    def forward(self, scan: Scan, x: torch.Tensor, truth: Optional[Mapping[str, torch.Tensor]] = None) -> LossTerms:
        c = self.config
        q = self.metric(scan.x_hat, x, **scan_truth(scan, truth))
        shortfall = self.metric.shortfall(q, self.aim)
        recon = reconstruction_loss(scan.x_hat, x, c.recon_loss)
        per_patient = scan.relative_dose.to(q.dtype) + c.weight * torch.relu(shortfall)
        if c.recon_weight:
            per_patient = per_patient + c.recon_weight * recon
        return LossTerms(per_patient.mean(), scan.relative_dose.detach(), q.detach(),
                         shortfall.detach(), recon.detach())
