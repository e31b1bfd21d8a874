"""Warm start of a dose policy by regression on per-image threshold doses.

The constrained hinge asks each image's quality to reach q at the lowest dose, so its
optimum is every image at its own threshold dose ``t_i`` (the smallest scan dose at which
``Q_i >= q``).  Where those thresholds are known for the training images (the experiment
measures them on the training split for the size-only control), the policy can start
there instead of at one constant dose: ``fit_policy`` regresses the policy's log mean
``n0`` on ``log t_i`` from the prior the policy will see, with a fresh prior noise draw
and a random symmetry of the square (rotations by 90 degrees, flips: the same patient
seen from another start angle) at every step, then the hinge fine-tunes policy and
reconstructor together::

    L_fit = mean_i huber_beta( log mean_v n0_i(prior_i) - log(t_i * n0_ref) )
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from alara.progress import tqdm

from alara.geometry import LODOPAB_N0, Geometry
from alara.interfaces import DosePolicy, Prior, Simulator

__all__ = ["PolicyFitConfig", "fit_policy", "dihedral"]


@dataclass(frozen=True)
class PolicyFitConfig:
    """Steps, batch, learning rate and Huber width (in log dose) of the regression."""

    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    huber_beta: float = 0.1
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"policy fit: {key} must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "huber_beta"):
            v = getattr(self, key)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"policy fit: {key} must be a positive number, got {v!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"policy fit: weight_decay must be >= 0, got {self.weight_decay!r}")


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th (0..7) symmetry of the square applied to images [B, 1, H, W]: a
    rotation by ``k % 4`` quarter turns, mirrored when ``k >= 4``."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral index must be in 0..7, got {k}")
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def fit_policy(policy: DosePolicy, prior: Prior, simulator: Optional[Simulator], x: torch.Tensor,
               thresholds: torch.Tensor, geometry: Geometry, config: PolicyFitConfig = PolicyFitConfig(),
               progress: bool = False) -> dict[str, float]:
    """Fit ``policy`` (in place) so that its mean ``n0`` for image ``i`` approaches
    ``thresholds[i] * LODOPAB_N0`` (relative scan doses, see the module).  Images whose
    threshold is not finite and positive (out of reach) are left out.  Returns the first
    and last 20 steps' mean loss and the images used."""
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"fit_policy needs images [N, 1, H, W], got {tuple(x.shape)}")
    t = torch.as_tensor(thresholds, dtype=torch.float64).flatten()
    if t.numel() != x.shape[0]:
        raise ValueError(f"fit_policy: {t.numel()} thresholds for {x.shape[0]} images; give one per image")
    keep = torch.isfinite(t) & (t > 0)
    if int(keep.sum()) < 2:
        raise ValueError(f"fit_policy: only {int(keep.sum())} images have a finite threshold dose; the regression "
                         "needs at least 2 (lower the target or raise the dose limits)")
    x, target = x[keep], torch.log(t[keep] * LODOPAB_N0)
    c = config
    params = [p for p in policy.parameters()]
    if not params:
        raise ValueError(f"fit_policy: the dose policy {type(policy).__name__} has no parameters to fit")
    gen = torch.Generator().manual_seed(c.seed)
    opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, c.steps, eta_min=c.lr * 0.05)
    was_training = policy.training
    policy.train()
    prior.eval()
    for p in params:
        p.requires_grad_(True)
    losses = []
    n = x.shape[0]
    bs = min(c.batch_size, n)
    bar = tqdm(range(c.steps), desc="alara: policy fit", unit="step", disable=not progress, leave=False)
    for _ in bar:
        idx = torch.randperm(n, generator=gen)[:bs]
        xb = x[idx]
        if c.augment:
            xb = dihedral(xb, int(torch.randint(0, 8, (), generator=gen)))
        with torch.no_grad():
            info = prior(xb, geometry, simulator=simulator, generator=gen)
        n0 = policy(info, geometry)
        pred = torch.log(n0.double().mean(dim=-1))
        loss = F.smooth_l1_loss(pred, target[idx], beta=c.huber_beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"policy fit: the loss is {losses[-1]} at step {len(losses)}; lower the "
                                     "fit's learning rate")
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    policy.train(was_training)
    k = min(20, len(losses))
    return {"loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k, "images": int(keep.sum()),
            "steps": c.steps}
