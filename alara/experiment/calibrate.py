"""Calibration at the same guarantee: each policy's global dose factor.

For every image ``i`` the bisection (in log dose, all images at once) finds the smallest
factor ``c_i`` on the policy's doses at which ``Q_i >= q``.  With common random numbers
(the noise of image ``i`` is seeded by ``i``) ``Q_i`` rises with ``c``, so the share of
images reaching ``q`` at factor ``c`` is the share with ``c_i <= c``: the factor that
guarantees a share ``s`` is the ``s``-quantile of the ``c_i``, and the whole curve of
guarantee against dose comes from one bisection.  The per-image oracle is the same search
on the fixed policy: image ``i`` at its own smallest fixed dose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from alara.evaluate import measure
from alara.geometry import Geometry
from alara.interfaces import IQMetric
from alara.pipeline import Pipeline

__all__ = ["Calibration", "quality_at", "per_image_thresholds", "factor_for_share", "verified_factor",
           "match_mean_quality", "oracle_dose", "guarantee_curve"]


@torch.no_grad()
def quality_at(pipeline: Pipeline, metric: IQMetric, x: torch.Tensor, index: torch.Tensor,
               geometry: Geometry, factor: torch.Tensor, *, seed: int, realisations: int,
               batch_size: int = 32, truth: Optional[Mapping[str, torch.Tensor]] = None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Q, relative dose, scan dose)`` [N] of images ``x`` [N, 1, H, W] at per-image dose
    factors ``factor`` [N] (Q averaged over ``realisations`` seeded noise draws; the scan
    dose leaves out the prior's); ``truth``: per-image tensors [N, ...] a task-based
    metric reads."""
    qs, doses, scans = [], [], []
    for s in range(0, x.shape[0], batch_size):
        sl = slice(s, s + batch_size)
        out = measure(pipeline, {"q": metric}, x[sl], geometry, index[sl], seed=seed,
                      realisations=realisations, dose_scale=factor[sl].to(x.dtype),
                      truth={k: v[sl] for k, v in (truth or {}).items()})
        qs.append(out["q"].mean(1))
        doses.append(out["relative_dose"].mean(1))
        scans.append(out["scan_dose"].mean(1))
    return torch.cat(qs), torch.cat(doses), torch.cat(scans)


@dataclass
class Calibration:
    """Per-image thresholds of one policy on the calibration images."""

    #: smallest factor reaching q per image (``inf``: not reached in the searched range).
    thresholds: np.ndarray
    #: relative dose per image at factor 1, without / with the prior's dose.
    scan_dose: np.ndarray
    prior_dose: np.ndarray

    def dose_at(self, factor: float) -> np.ndarray:
        """Relative dose per image at a global factor (the prior's dose is not scaled)."""
        return factor * self.scan_dose + self.prior_dose


def per_image_thresholds(pipeline: Pipeline, metric: IQMetric, target: float, x: torch.Tensor,
                         index: torch.Tensor, geometry: Geometry, *, seed: int, realisations: int,
                         steps: int = 11, factor_range: tuple[float, float] = (1 / 256, 256),
                         progress: Optional[object] = None,
                         truth: Optional[Mapping[str, torch.Tensor]] = None) -> Calibration:
    """Bisection in log factor, all images at once (``steps`` + 2 passes over ``x``)."""
    n = x.shape[0]
    lo = torch.full((n,), math.log(factor_range[0]), dtype=torch.float64)
    hi = torch.full((n,), math.log(factor_range[1]), dtype=torch.float64)

    def meets(log_f: torch.Tensor) -> torch.Tensor:
        q, _, _ = quality_at(pipeline, metric, x, index, geometry, torch.exp(log_f), seed=seed,
                             realisations=realisations, truth=truth)
        if progress is not None:
            progress.update(1)
        return metric.meets(q, target)

    ok_hi = meets(hi)
    ok_lo = meets(lo)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = meets(mid)
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    thresholds = torch.exp(hi)
    thresholds[ok_lo] = factor_range[0]
    thresholds[~ok_hi] = float("inf")
    _, dose, scan = quality_at(pipeline, metric, x, index, geometry, torch.ones(n, dtype=torch.float64),
                               seed=seed, realisations=1, truth=truth)
    return Calibration(thresholds.numpy(), scan.numpy(), (dose - scan).numpy())


def factor_for_share(cal: Calibration, share: float) -> float:
    """The smallest global factor at which at least ``share`` of the images reach q."""
    k = math.ceil(share * len(cal.thresholds) - 1e-9)
    f = float(np.sort(cal.thresholds)[max(k, 1) - 1])
    if not math.isfinite(f):
        reached = int(np.isfinite(cal.thresholds).sum())
        raise ValueError(f"only {reached} of {len(cal.thresholds)} calibration images reach q within the "
                         f"searched doses, fewer than the share {share}: q is out of reach (lower "
                         "[objective] target, or widen [experiment] factor_range)")
    return f


def verified_factor(pipeline: Pipeline, metric: IQMetric, target: float, cal_: Calibration, share: float,
                    x: torch.Tensor, index: torch.Tensor, geometry: Geometry, *, seed: int, realisations: int,
                    step: float = 1.02, max_steps: int = 25,
                    truth: Optional[Mapping[str, torch.Tensor]] = None) -> tuple[float, float]:
    """The quantile factor of :func:`factor_for_share`, raised by ``step`` until the share
    measured at it reaches ``share`` (discrete photon counts make Q jitter slightly with
    dose, so a threshold found at one factor may miss at a nearby one); returns
    ``(factor, measured share)``."""
    f = factor_for_share(cal_, share)
    n = x.shape[0]
    for _ in range(max_steps):
        q, _, _ = quality_at(pipeline, metric, x, index, geometry, torch.full((n,), f, dtype=torch.float64),
                             seed=seed, realisations=realisations, truth=truth)
        measured = float(metric.meets(q, target).double().mean())
        if measured >= share - 1e-9:
            return f, measured
        f *= step
    raise ValueError(f"the share {share} is not reached even at {f:.3g}x the calibrated dose; raise "
                     "[experiment] realisations or the number of calibration images")


def guarantee_curve(cal: Calibration, shares: Sequence[float]) -> list[tuple[float, float]]:
    """``(share, mean relative dose)`` at the calibrated factor of each share (skipping
    shares out of reach)."""
    out = []
    for s in shares:
        try:
            f = factor_for_share(cal, s)
        except ValueError:
            continue
        out.append((float(s), float(cal.dose_at(f).mean())))
    return out


def oracle_dose(fixed: Calibration, share: float) -> float:
    """Mean relative dose of the per-image oracle at a guarantee: the ``share`` of images
    cheapest to image get exactly their own smallest fixed dose reaching q, the rest none
    (a lower bound for any policy that sets one dose level per patient)."""
    own = np.sort(fixed.thresholds * fixed.scan_dose + fixed.prior_dose)
    k = math.ceil(share * len(own) - 1e-9)
    if not np.isfinite(own[:k]).all():
        return float("nan")
    return float(own[:k].sum() / len(own))


def match_mean_quality(pipeline: Pipeline, metric: IQMetric, mean_target: float, x: torch.Tensor,
                       index: torch.Tensor, geometry: Geometry, *, seed: int, realisations: int,
                       steps: int = 11, factor_range: tuple[float, float] = (1 / 256, 256),
                       truth: Optional[Mapping[str, torch.Tensor]] = None) -> float:
    """The global factor at which the mean Q over the images equals ``mean_target``."""
    lo, hi = math.log(factor_range[0]), math.log(factor_range[1])
    n = x.shape[0]
    for _ in range(steps + 2):
        mid = (lo + hi) / 2
        q, _, _ = quality_at(pipeline, metric, x, index, geometry,
                             torch.full((n,), math.exp(mid), dtype=torch.float64), seed=seed,
                             realisations=realisations, truth=truth)
        better = bool(metric.meets(q.mean().unsqueeze(0), mean_target)[0])
        lo, hi = (lo, mid) if better else (mid, hi)
    return math.exp(hi)
