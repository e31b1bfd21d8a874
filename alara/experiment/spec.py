"""The ``[experiment]`` section: data, policies and the guarantee of the comparison.

The rest of the experiment's config is a run config (components, ``[objective]``,
``[train]``, ``[eval]``): the learned policy and the reconstructor come from the component
sections, q from ``[objective] target``, training from ``[train]``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ExperimentSpec", "data_key"]


@dataclass(frozen=True)
class ExperimentSpec:
    """Every field is a key of ``[experiment]``."""

    #: A LoDoPaB-layout directory to use (e.g. LoDoPaB-CT); empty: generate synthetic
    #: patients under ``data_cache``, reused while their parameters stay the same.
    data_root: str = ""
    data_cache: str = "data/experiments"
    image_size: int = 64
    views: int = 90
    #: Patients in (train, validation, test); each gives ``slices`` images to its split.
    patients: tuple[int, int, int] = (32, 8, 16)
    slices: int = 4
    texture: bool = True
    data_seed: int = 0
    #: Synthetic slices through the patients' lesions (a detection task in every image),
    #: and the lesion-free ground truth beside them (the exact signal for detectability).
    lesion_slices: bool = False
    lesion_free: bool = False
    #: Hand-designed policies compared with the learned one (registered names).
    baselines: tuple[str, ...] = ("fixed", "tcm", "aec")
    #: The prior of the modulating baselines (tcm, aec): the scouts scanners plan from.
    #: ``fixed`` uses none (a free prior exam it ignores).
    baseline_prior: str = "scouts"
    #: Its parameters, e.g. { n0 = 256.0 } photons per bin of each scout view: a scout
    #: costs a few percent of a scan, so at low scan doses it must be cheap too.
    baseline_prior_params: dict[str, Any] = field(default_factory=dict)
    #: The guarantee: share of images that must reach Q >= q.
    share: float = 0.95
    #: Further targets every policy is calibrated to besides the objective's, by metric
    #: name (default parameters), e.g. { psnr = 29.5 }: the report puts the doses side by side.
    also_targets: dict[str, float] = field(default_factory=dict)
    #: Noise realisations per image in calibration and evaluation (Q is averaged).
    realisations: int = 2
    #: Bisection steps (in log dose) and the range of dose factors searched.
    calibration_steps: int = 11
    factor_range: tuple[float, float] = (1.0 / 256.0, 256.0)
    #: Q must rise at least this much per doubling of dose around the calibrated fixed
    #: dose (metric units, e.g. dB); below it the comparison measures nothing: warn.
    min_slope: float = 1.0
    #: Test images shown side by side in the report.
    examples: int = 4
    seed: int = 1234

    def __post_init__(self) -> None:
        if any(n < 1 for n in self.patients) or len(self.patients) != 3:
            raise ValueError(f"patients must be three counts >= 1 (train, validation, test), got {self.patients}")
        for key in ("image_size", "views", "slices", "realisations", "calibration_steps", "examples"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not (math.isfinite(self.share) and 0 < self.share <= 1):
            raise ValueError(f"share must be in (0, 1], got {self.share}")
        lo, hi = self.factor_range
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < 1 < hi):
            raise ValueError(f"factor_range must be (low, high) with 0 < low < 1 < high, got {self.factor_range}")
        if not self.baselines:
            raise ValueError("baselines must name at least one policy (e.g. [\"fixed\"])")
        if not math.isfinite(self.min_slope):
            raise ValueError(f"min_slope must be finite, got {self.min_slope}")
        for name, q in self.also_targets.items():
            if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q):
                raise ValueError(f"also_targets.{name} must be a finite number (the target of that metric), "
                                 f"got {q!r}")


def data_key(spec: ExperimentSpec, extra: dict[str, Any] = {}) -> str:  # noqa: B006 (read only)
    """A short hash of the synthetic data's parameters (and ``extra`` ones, e.g. the
    texture's): the cache folder's name."""
    fields = {k: v for k, v in asdict(spec).items()
              if k in ("image_size", "views", "patients", "slices", "texture", "data_seed")}
    # Added later: only in the key when set, so existing caches keep their names.
    fields.update({k: True for k in ("lesion_slices", "lesion_free") if getattr(spec, k)})
    fields.update(extra)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    return f"synth-{spec.image_size}px-{spec.views}v-{digest}"


def spec_dict(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec as plain JSON values."""
    from alara.params import params_of

    return params_of(spec)
