"""A learned dose policy that knows where it was trained, and falls back outside.

A policy learned on one population meets patients unlike any it saw: a much larger or
smaller body, another anatomy, real data after synthetic training.  For a dose this must
be safe.  :class:`InputGuard` describes each input by a few features of its prior, read
the same way for any policy (patient size and body make-up, and the dose the policy
proposes), and measures how far the input lies outside the training inputs' range::

    distance = max_k max(0, lo_k - f_k, f_k - hi_k) / sd_k

(0 inside the range, else the excess in training standard deviations of the feature
that is furthest out).  The allowed distance is calibrated on validation: the largest
validation distance, at least ``min_threshold``.  Beyond it :class:`GuardedPolicy` gives
the fallback dose instead,

    n0_fallback = max(n0_policy, n0_env * exp(slope * (WED - wed_ref))),

the constant-noise envelope of the policy (``n0_env`` is the smallest constant that puts
the envelope above the policy's own dose on every training input; the slope is
``strength * mu_water`` per cm, ``strength = 1.25`` by default: a little more than
constant noise, since the quality a threshold dose buys falls faster than the counts
behind the centre).  A small patient so keeps at least what the policy gave it, a large
one gets the envelope extrapolated with its size: the fallback never lowers a dose.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from alara.geometry import Geometry
from alara.interfaces import DosePolicy, DosePolicyConfig, PriorInfo
from alara.size import MU_WATER, water_equivalent_diameter

__all__ = ["FEATURES", "prior_features", "InputGuard", "GuardedPolicy", "fit_guard", "GUARD_FILE"]

PathLike = Union[str, Path]

#: Features of a prior the guard reads (see :func:`prior_features`).
FEATURES = ("wed_cm", "body_area_cm2", "mean_density", "log_n0")
#: The guard's file in a run folder.
GUARD_FILE = "guard.json"
#: Pixels above this fraction of water's attenuation count as body.
_BODY = 0.2


def prior_features(prior: PriorInfo, n0: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Features [B, 4] of each input: water-equivalent diameter (cm), body area (cm^2,
    pixels above a fifth of water's attenuation; from scouts: the width of the profile
    above that line times its mean height), mean density of the body relative to water,
    and the policy's log mean ``n0``."""
    from alara.geometry import LODOPAB_MU_MAX

    wed = 100.0 * water_equivalent_diameter(prior, geometry).double()
    if prior.image is not None:
        mu = prior.image.double().flatten(1) * LODOPAB_MU_MAX            # 1/m
        dx, dy = geometry.grid.spacing
        body = mu > _BODY * MU_WATER
        area = body.sum(1).double() * (dx * 100.0) * (dy * 100.0)         # cm^2
        density = (mu * body).sum(1) / body.sum(1).clamp(min=1) / MU_WATER
    else:
        # Scouts: projections through the body; the width where the path is thicker than
        # a centimetre of water, and the mean density along those paths.
        p = prior.scouts.double() * LODOPAB_MU_MAX                         # line integral * mu_max, [B, S, K]
        bins = float(geometry.bin_spacing) * 100.0
        inside = p > 0.01 * MU_WATER
        width = inside.sum(-1).double().mean(-1) * bins                    # cm
        area = math.pi / 4 * width ** 2
        density = (wed ** 2 / width.clamp(min=1e-6) ** 2).clamp(max=10.0)
    log_n0 = torch.log(n0.double().mean(dim=-1).cpu())
    return torch.stack([wed.cpu(), area.cpu(), density.cpu(), log_n0], dim=1)


@dataclass
class InputGuard:
    """The training inputs' feature range, the distance allowed beyond it, and the
    fallback's envelope (see the module docstring)."""

    low: list[float]
    high: list[float]
    scale: list[float]
    threshold: float
    envelope_n0: float
    wed_ref_cm: float = 20.0
    slope_per_cm: float = 1.25 * MU_WATER / 100.0
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    #: Where the range and the threshold came from (for the record).
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.features)
        for key in ("low", "high", "scale"):
            v = getattr(self, key)
            if len(v) != k or not all(math.isfinite(float(a)) for a in v):
                raise ValueError(f"{key} must list {k} finite numbers (one per feature {self.features}), got {v!r}")
        if any(float(a) <= 0 for a in self.scale) or any(lo > hi for lo, hi in zip(self.low, self.high)):
            raise ValueError("scale must be positive and low <= high for every feature")
        for key in ("threshold", "envelope_n0", "slope_per_cm", "wed_ref_cm"):
            if not math.isfinite(float(getattr(self, key))):
                raise ValueError(f"{key} must be finite, got {getattr(self, key)!r}")
        if self.threshold < 0 or self.envelope_n0 <= 0:
            raise ValueError(f"threshold must be >= 0 and envelope_n0 > 0, got {self.threshold!r} and "
                             f"{self.envelope_n0!r}")

    def distance(self, f: torch.Tensor) -> torch.Tensor:
        """Distance [B] of feature rows ``f`` [B, 4] outside the training range."""
        if f.dim() != 2 or f.shape[1] != len(self.low):
            raise ValueError(f"guard features must be [B, {len(self.low)}], got {tuple(f.shape)}")
        lo, hi, sd = (torch.tensor(v, dtype=torch.float64) for v in (self.low, self.high, self.scale))
        f = f.double()
        excess = torch.maximum(lo - f, f - hi).clamp(min=0) / sd
        return excess.max(dim=1).values

    def outside(self, f: torch.Tensor) -> torch.Tensor:
        """True [B] where the input lies beyond the calibrated distance."""
        return self.distance(f) > self.threshold

    def fallback_n0(self, n0: torch.Tensor, wed_cm: torch.Tensor) -> torch.Tensor:
        """The fallback ``n0`` [B, V]: the policy's, raised to the envelope."""
        env = self.envelope_n0 * torch.exp(self.slope_per_cm * (wed_cm.to(n0) - self.wed_ref_cm))
        return torch.maximum(n0, env.unsqueeze(-1).expand_as(n0))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "InputGuard":
        return cls(**d)

    def save(self, path: PathLike) -> Path:
        from alara.evaluate import write_json

        return write_json(path, self.to_json())

    @classmethod
    def load(cls, path: PathLike) -> "InputGuard":
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: not a valid input guard ({exc}); delete it and write a new one with "
                             "`alara train CONFIG --out RUN --resume` (a finished run only refits the guard)") from None


def fit_guard(train_features: torch.Tensor, val_features: Optional[torch.Tensor], *,
              min_threshold: float = 0.5, strength: float = 1.25, wed_ref_cm: float = 20.0,
              fitted_on: Optional[dict[str, Any]] = None) -> InputGuard:
    """The guard of a policy whose training inputs have features ``train_features``
    [N, 4], calibrated on ``val_features`` (the training features when ``None``)."""
    f = train_features.double()
    if f.dim() != 2 or f.shape[1] != len(FEATURES) or f.shape[0] < 2:
        raise ValueError(f"fit_guard needs features [N >= 2, {len(FEATURES)}], got {tuple(f.shape)}")
    if not bool(torch.isfinite(f).all()):
        raise ValueError("fit_guard: a training input has a non-finite feature (a NaN prior?)")
    if not (math.isfinite(strength) and strength >= 1):
        raise ValueError(f"fit_guard: strength must be >= 1 (1: constant noise), got {strength!r}")
    scale = f.std(dim=0).clamp(min=1e-6)
    slope = strength * MU_WATER / 100.0
    # The smallest envelope constant at or above the policy's dose on every training input.
    envelope = float(torch.exp(f[:, 3] - slope * (f[:, 0] - wed_ref_cm)).max())
    guard = InputGuard(f.min(0).values.tolist(), f.max(0).values.tolist(), scale.tolist(), 0.0, envelope,
                       wed_ref_cm, slope, fitted_on=dict(fitted_on or {}))
    v = (val_features if val_features is not None else f).double()
    guard.threshold = max(min_threshold, float(guard.distance(v).max()))
    return guard


class GuardedPolicy(DosePolicy):
    """``base``'s dose inside the guard's range, the fallback outside (see module).  After
    each call, ``last_distance`` and ``last_fallback`` [B] say what happened."""

    name = "guarded"

    @dataclass(frozen=True)
    class Config(DosePolicyConfig):
        pass

    def __init__(self, base: DosePolicy, guard: InputGuard) -> None:
        super().__init__(self.Config())
        if not isinstance(base, DosePolicy):
            raise TypeError(f"GuardedPolicy wraps a DosePolicy, got {type(base).__name__}")
        self.base = base
        self.guard = guard
        self.last_distance: Optional[torch.Tensor] = None
        self.last_fallback: Optional[torch.Tensor] = None

    def distance(self, prior: PriorInfo, geometry: Geometry) -> torch.Tensor:
        """Distance [B] of each input outside the training range (the base policy's view)."""
        with torch.no_grad():
            return self.guard.distance(prior_features(prior, self.base(prior, geometry), geometry))

    def propose(self, prior: PriorInfo, geometry: Geometry) -> torch.Tensor:
        """The base policy's ``n0`` [B, V], or the fallback where the input is outside."""
        n0 = self.base(prior, geometry)
        f = prior_features(prior, n0.detach(), geometry)
        d = self.guard.distance(f)
        out = d > self.guard.threshold
        self.last_distance, self.last_fallback = d, out
        if not bool(out.any()):
            return n0
        fb = self.guard.fallback_n0(n0.detach(), f[:, 0])
        return torch.where(out.to(n0.device).unsqueeze(-1), fb.to(n0), n0)


def policy_features(pipeline: Any, x: torch.Tensor, index: Sequence[int], geometry: Geometry, seed: int,
                    batch: int = 64) -> torch.Tensor:
    """Features [N, 4] of images ``x`` as ``pipeline``'s prior and policy see them, with
    the prior's noise on its own stream (the draw :func:`alara.evaluate.measure` makes)."""
    from alara.evaluate import PRIOR_STREAM
    from alara.pipeline import noise_generator

    pipeline.eval()
    rows = []
    with torch.no_grad():
        for s in range(0, x.shape[0], batch):
            gens = [noise_generator(seed, PRIOR_STREAM, int(i)) for i in index[s:s + batch]]
            prior, n0 = pipeline.plan(x[s:s + batch], geometry, gens)
            base = pipeline.dose_policy.base if isinstance(pipeline.dose_policy, GuardedPolicy) else None
            if base is not None:
                n0 = base(prior, geometry)
            rows.append(prior_features(prior, n0, geometry))
    return torch.cat(rows)


def dataset_features(pipeline: Any, dataset: Any, geometry: Geometry, seed: int, limit: Optional[int] = None,
                     batch: int = 64) -> torch.Tensor:
    """Features [N, 4] of a data set's images (the first ``limit``, spread evenly over it,
    when given), each prior drawn on the stream :func:`alara.evaluate.evaluate` uses."""
    n = len(dataset)
    picks = list(range(n)) if limit is None or limit >= n else np.linspace(0, n - 1, limit).round().astype(int).tolist()
    rows = []
    for s in range(0, len(picks), batch):
        items = [dataset[i] for i in picks[s:s + batch]]
        x = torch.stack([it["ground_truth"] for it in items])
        index = [int(it.get("index", i)) for it, i in zip(items, picks[s:s + batch])]
        rows.append(policy_features(pipeline, x, index, geometry, seed, batch))
    return torch.cat(rows)


def write_run_guard(run_dir: PathLike, pipeline: Any, train: Any, validation: Optional[Any], geometry: Geometry,
                    seed: int, limit: int = 512) -> Optional[InputGuard]:
    """Fit and save the guard of a trained run's learned policy (``GUARD_FILE``): the
    range over (up to ``limit``) training images, the allowed distance over validation
    images when the data has a validation split.  Policies without parameters get none."""
    if not any(True for _ in pipeline.dose_policy.parameters()):
        return None
    train_f = dataset_features(pipeline, train, geometry, seed, limit)
    val_f = dataset_features(pipeline, validation, geometry, seed + 1, limit) if validation is not None else None
    guard = fit_guard(train_f, val_f, fitted_on={
        "range": f"training split ({train_f.shape[0]} images)",
        "threshold": f"validation split ({val_f.shape[0]} images)" if val_f is not None else
        "training split (the data has no validation split)"})
    guard.save(Path(run_dir) / GUARD_FILE)
    return guard
