"""The experiment's statistics: the conformal factor of a guarantee, the patient-level
bootstrap of dose ratios, and the least-squares fit of the size-only control.

Conformal factor.  Each calibration image ``i`` needs a factor ``c_i`` on its policy's
dose to reach q.  For exchangeable calibration and test images, taking the
``ceil((n + 1) s)``-th smallest of ``n`` values as the global factor makes the expected
share of *new* images that reach q at least ``s`` (split conformal prediction; Vovk et al.
2005, Angelopoulos & Bates 2021): the plain ``ceil(n s)``-th is the in-sample quantile and
falls short out of sample by about ``s / (n + 1)``.

Bootstrap.  Patients, not images, are the unit (a patient's slices are alike): every
resample redraws the validation patients (which moves each arm's factor) and the test
patients (which moves each arm's mean dose), the same draw for every arm, and the ratio
of two arms' mean test doses is read off each resample; the 2.5th and 97.5th percentiles
are the 95% interval (percentile bootstrap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = ["conformal_rank", "conformal_factor", "PolicyDoses", "bootstrap_ratios", "fit_log_linear",
           "guarantee_dose", "guarantee_mean_dose", "best_on_validation", "oracle_dose", "spread"]


def conformal_rank(n: int, share: float) -> int:
    """``ceil((n + 1) share)``: the rank (1-based) of the conformal quantile of ``n`` values."""
    if n < 1 or not (0 < share <= 1):
        raise ValueError(f"need n >= 1 and share in (0, 1], got n={n}, share={share}")
    return int(math.ceil((n + 1) * share - 1e-9))


def conformal_factor(factors: np.ndarray, share: float) -> float:
    """The ``ceil((n + 1) share)``-th smallest of the per-image factors ``factors`` [n]:
    the global factor at which a new image reaches q with probability at least
    ``share``.  ``inf`` when the rank exceeds ``n`` or lands on an image that never reached q."""
    f = np.sort(np.asarray(factors, dtype=float))
    k = conformal_rank(len(f), share)
    return float(f[k - 1]) if k <= len(f) else math.inf


@dataclass
class PolicyDoses:
    """One arm's doses on both splits: per validation image the factor it needs
    (``val_factor``), per test image the scan dose at factor 1 and the prior's dose
    (relative to LoDoPaB's); the test dose at factor ``F`` is ``F * test_scan + test_prior``."""

    val_factor: np.ndarray
    test_scan: np.ndarray
    test_prior: np.ndarray

    def test_dose(self, factor: float) -> np.ndarray:
        """Per test image relative dose at a global factor (the prior is not scaled)."""
        return factor * self.test_scan + self.test_prior


def guarantee_dose(doses: PolicyDoses, share: float) -> float:
    """Mean test dose at the conformal factor of the validation images."""
    return float(doses.test_dose(conformal_factor(doses.val_factor, share)).mean())


def guarantee_mean_dose(thresholds: np.ndarray, level: np.ndarray, prior: np.ndarray, share: float) -> float:
    """Mean relative dose of a policy at its conformal factor on the calibration images:
    image ``i`` needs the factor ``thresholds_i / level_i`` on the policy's scan dose
    ``level_i`` (``thresholds``: the dose at which it reaches q); ``prior`` is each
    image's prior dose.  ``inf`` when the guarantee is out of reach."""
    level = np.asarray(level, dtype=float)
    f = conformal_factor(np.asarray(thresholds, dtype=float) / level, share)
    return float((f * level + np.asarray(prior, dtype=float)).mean()) if math.isfinite(f) else math.inf


def oracle_dose(thresholds: np.ndarray, share: float) -> float:
    """Mean relative dose of the per-image oracle at a guarantee: the ``share`` of images
    cheapest to image get exactly their own threshold dose, the rest none (a lower bound
    for any policy that sets one dose level per patient); ``inf`` when one of them never
    reaches q."""
    own = np.sort(np.asarray(thresholds, dtype=float))
    k = math.ceil(share * len(own) - 1e-9)
    return float(own[:k].sum() / len(own)) if np.isfinite(own[:k]).all() else math.inf


def best_on_validation(rows: Sequence[Mapping[str, float]]) -> Mapping[str, float]:
    """The candidate with the lowest ``validation_dose`` (the first of equals: grids are
    listed from the simplest setting up)."""
    if not rows:
        raise ValueError("no candidates to choose from")
    return min(rows, key=lambda r: r["validation_dose"])


def _patient_draw(pid: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """[resamples, n] counts of how often each image enters a resample of the patients
    (a patient drawn twice counts its images twice)."""
    patients, inverse = np.unique(pid, return_inverse=True)
    draws = rng.integers(0, len(patients), size=(resamples, len(patients)))
    per_patient = np.zeros((resamples, len(patients)), dtype=np.int64)
    np.add.at(per_patient, (np.arange(resamples)[:, None], draws), 1)
    return per_patient[:, inverse]


def _weighted_conformal(factors: np.ndarray, weights: np.ndarray, share: float) -> np.ndarray:
    """The conformal factor of each resample, ``weights`` [R, n] image multiplicities."""
    order = np.argsort(factors)
    f, w = factors[order], weights[:, order]
    cum = np.cumsum(w, axis=1)
    n = cum[:, -1]
    k = np.ceil((n + 1) * share - 1e-9)
    pos = np.minimum((cum < k[:, None]).sum(axis=1), len(f) - 1)
    out = f[pos].astype(float)
    out[k > n] = math.inf
    return out


def bootstrap_ratios(arms: Mapping[str, PolicyDoses], head: str, val_pid: np.ndarray, test_pid: np.ndarray,
                     share: float, *, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, dict[str, float]]:
    """For every arm ``a``, the ratio ``mean test dose of head / mean test dose of a`` at
    the guarantee and its patient-bootstrap interval: ``{a: {"ratio", "low", "high",
    "finite"}}`` (``finite``: the share of resamples where both factors were reachable)."""
    rng = np.random.default_rng(seed)
    wv = _patient_draw(np.asarray(val_pid), rng, resamples)
    wt = _patient_draw(np.asarray(test_pid), rng, resamples)
    nt = wt.sum(axis=1)
    means = {}
    for name, d in arms.items():
        f = _weighted_conformal(np.asarray(d.val_factor, dtype=float), wv, share)
        scan = (wt * d.test_scan).sum(axis=1) / nt
        prior = (wt * d.test_prior).sum(axis=1) / nt
        means[name] = f * scan + prior
    out = {}
    alpha = (1 - level) / 2
    for name, d in arms.items():
        with np.errstate(invalid="ignore", divide="ignore"):   # unreachable resamples: inf / inf
            r = means[head] / means[name]
        ok = np.isfinite(r)
        point = guarantee_dose(arms[head], share) / guarantee_dose(d, share)
        lo, hi = (np.quantile(r[ok], [alpha, 1 - alpha]) if ok.any() else (math.nan, math.nan))
        out[name] = {"ratio": float(point), "low": float(lo), "high": float(hi), "finite": float(ok.mean())}
    return out


def fit_log_linear(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares ``log y = a + b x`` over the finite, positive ``y``: ``(a, b)``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (y > 0)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        raise ValueError(f"a log-linear fit needs at least two points of different x, got {int(ok.sum())}")
    b, a = np.polyfit(x[ok], np.log(y[ok]), 1)
    return float(a), float(b)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation, min and max of a few numbers (one per seed)."""
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}
