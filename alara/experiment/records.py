"""Typed records the experiment's stages hand each other, each with a JSON round trip
(``to_json`` / ``from_json``) so a finished stage is reloaded, not recomputed, on resume.

``CalibrationRecord`` (validation split: what was tuned, each arm's factor) ->
``EvaluationRecord`` (test split: each arm at its factor, the oracle, the bootstrap) ->
the report, which only formats them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

__all__ = ["ArmSpec", "TargetCalibration", "ArmCalibration", "CalibrationRecord", "ArmEvaluation",
           "EvaluationRecord", "finite_or_none", "none_to_inf"]


def finite_or_none(values: Any) -> list:
    """A list of floats for JSON, ``inf``/``nan`` as ``None``."""
    return [float(v) if math.isfinite(float(v)) else None for v in np.asarray(values, dtype=float).ravel()]


def none_to_inf(values: Any) -> np.ndarray:
    """The inverse of :func:`finite_or_none` for factors (``None`` -> ``inf``)."""
    return np.array([math.inf if v is None else float(v) for v in values], dtype=float)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


class _Record:
    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (non-finite floats as ``None``)."""
        return _plain(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Any:
        """The inverse of :meth:`to_json` (records with nested records override it)."""
        return cls(**d)


@dataclass
class ArmSpec(_Record):
    """What an arm is: its name, label, policy and parameters, prior (and its parameters)
    and which reconstructor it uses (``shared`` or ``joint``)."""

    name: str
    label: str
    policy: str
    policy_params: dict[str, Any]
    prior: str
    prior_params: dict[str, Any]
    reconstructor: str
    #: What the validation split chose for it (empty: nothing tuned).
    tuned: dict[str, Any] = field(default_factory=dict)


@dataclass
class TargetCalibration(_Record):
    """One arm calibrated to one (metric, q) on validation."""

    metric: str
    q: float
    #: The conformal factor (``None`` when out of reach, with the reason in ``unreachable``).
    factor: Optional[float]
    validation_share: Optional[float]
    validation_dose: Optional[float]
    #: Per validation image: the factor it needs (``None``: not reached within the limits).
    image_factors: list
    unreachable: str = ""


@dataclass
class ArmCalibration(_Record):
    arm: ArmSpec
    primary: TargetCalibration
    #: Per validation image: scan dose at factor 1 and the prior's dose (relative).
    scan_dose: list
    prior_dose: list
    #: ``(share, mean validation dose)`` at the conformal factor of each share.
    curve: list
    #: The factor at which the arm's mean Q on validation equals the fixed policy's at its
    #: guarantee (``None`` when out of reach).
    factor_mean_q: Optional[float] = None
    also: dict[str, TargetCalibration] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ArmCalibration":
        return cls(arm=ArmSpec(**d["arm"]), primary=TargetCalibration.from_json(d["primary"]),
                   scan_dose=d["scan_dose"], prior_dose=d["prior_dose"], curve=[tuple(c) for c in d["curve"]],
                   factor_mean_q=d.get("factor_mean_q"),
                   also={k: TargetCalibration.from_json(v) for k, v in d.get("also", {}).items()})


@dataclass
class CalibrationRecord(_Record):
    """The validation stage: tuning tables, every arm's factors, the dose response."""

    metric: str
    q: float
    share: float
    images: int
    patients: int
    patient_ids: list
    arms: dict[str, ArmCalibration]
    #: Baseline tuning on validation: ``aec`` / ``tcm`` / ``size`` tables and choices.
    tuning: dict[str, Any]
    #: Q's rise per doubling of dose at the calibrated fixed dose (median, p5, p95).
    slope: dict[str, Any]
    matched_mean_q_target: Optional[float]
    #: Per response curve: images, passes, clamped counts.
    responses: dict[str, Any]
    config_hash: str = ""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "CalibrationRecord":
        return cls(**{**d, "arms": {k: ArmCalibration.from_json(v) for k, v in d["arms"].items()}})


@dataclass
class ArmEvaluation(_Record):
    """One arm on the test split at its calibrated factor (per image and summarised)."""

    factor: float
    #: ``alara.evaluate.summarise`` of the arm's test results.
    summary: dict[str, Any]
    #: Per test image: the metric, the relative dose, the scan dose at factor 1, the
    #: prior's dose and the view profile's n0 of the first few images.
    quality: list
    dose: list
    scan_dose: list
    prior_dose: list
    n0_examples: list
    also: dict[str, Any] = field(default_factory=dict)
    #: Guarded policies (alara.guard): per test image, the distance of its input outside
    #: the training range and whether the policy fell back to its safe dose.
    ood_distance: list = field(default_factory=list)
    fallback: list = field(default_factory=list)


@dataclass
class EvaluationRecord(_Record):
    """The test stage: every arm scored once at its factor, the oracle, the bootstrap."""

    metric: str
    q: float
    images: int
    patients: int
    index: list
    patient_ids: list
    wed_cm: list
    arms: dict[str, ArmEvaluation]
    #: Per reconstructor (shared, joint): the per-image oracle on test (dose at the
    #: guarantee, its thresholds, how many sit on a search limit).
    oracle: dict[str, Any]
    #: Per arm: ratio of the headline arm's mean test dose to this arm's, with its 95%
    #: patient-bootstrap interval.
    bootstrap: dict[str, Any]
    #: Mean test dose of each arm at its matched-mean-Q factor.
    matched_mean_q_dose: dict[str, Optional[float]]
    #: The example images' indices (positions in the test split) in ``examples.npz``.
    examples: list
    config_hash: str = ""
    #: Per variant of End2end-ALARA (e.g. ``learned_tilted``): its bootstrap against every arm.
    bootstrap_variants: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "EvaluationRecord":
        return cls(**{**d, "arms": {k: ArmEvaluation.from_json(v) for k, v in d["arms"].items()}})
