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
    #: An environment variable that names the data directory when ``data_root`` is empty
    #: (e.g. "ALARA_LODOPAB": configs for real data carry no machine's path); set but
    #: unset in the environment: an error that says how to get the data.
    data_root_env: str = ""
    data_cache: str = "data/experiments"
    image_size: int = 64
    views: int = 90
    #: Patients in (train, validation, test); each gives ``slices`` images to its split.
    patients: tuple[int, int, int] = (32, 8, 16)
    slices: int = 4
    texture: bool = True
    data_seed: int = 0
    #: Body sizes of the synthetic training patients: "stratified" spreads them evenly
    #: over the whole size range (so validation and test patients fall inside what the
    #: policy was trained on), "population" draws them like validation's and test's.
    train_sizes: str = "stratified"
    #: Synthetic slices through the patients' lesions (a detection task in every image),
    #: and the lesion-free ground truth beside them (the exact signal for detectability).
    lesion_slices: bool = False
    lesion_free: bool = False
    #: Hand-designed policies compared with the learned one (registered names): ``fixed``,
    #: ``tcm``, ``aec`` and ``size`` are tuned on validation (see the runner); any other
    #: registered policy runs at its defaults.  ``aec_adapted`` is the tuned AEC with a
    #: reconstructor of its own, the shared one fine-tuned at AEC's operating point for as
    #: many steps as End2end-ALARA's joint phase; ``aec_joint`` is AEC tuned with
    #: End2end-ALARA's own joint reconstructor.  Both tell the policy's gain from the
    #: reconstructor's.
    baselines: tuple[str, ...] = ("fixed", "tcm", "aec", "size", "aec_adapted", "aec_joint")
    #: The prior of the modulating baselines (tcm, aec, size): the scouts scanners plan from.
    #: ``fixed`` uses none (a free prior exam it ignores).
    baseline_prior: str = "scouts"
    #: Its other parameters (its photon budget is ``scout_n0``).
    baseline_prior_params: dict[str, Any] = field(default_factory=dict)
    #: Scout budgets searched on validation (photons per bin of each scout view; their
    #: dose counts): TCM, AEC and the size control each use the one that serves them best.
    scout_n0: tuple[float, ...] = (64.0, 256.0, 1024.0)
    #: End2end-ALARA's joint phase (and every ablation row's, and the baseline
    #: aec_adapted's) starts from the shared reconstructor, which is trained alone over the
    #: whole dose range as a warm-up is, for ``train.steps`` steps: the learned policy and
    #: the adapted AEC get the same reconstructor start and the same joint steps.  false:
    #: End2end-ALARA trains its own warm-up (``train.warmup_steps``) first, as before.
    joint_from_shared: bool = True
    #: After its joint training, End2end-ALARA's policy is refitted to the training split's
    #: threshold doses measured with its own joint reconstructor (the ablation row "refit"
    #: made the default: it needed less dose than the hinge's own policy on validation in
    #: each of 3 training seeds, docs/experiment.md); the policy as the hinge left it stays
    #: an arm, ``learned_hinge``.
    policy_refit: bool = True
    #: How End2end-ALARA's policy starts: "none" at one constant dose, as the paper does;
    #: "regression" fits it to the training split's per-image threshold doses
    #: (alara.train.policy_fit) before the hinge.  On the default run's validation split
    #: the paper's start needed less dose (docs/experiment.md), so it is the default.
    policy_init: str = "none"
    #: Steps and batch size of that regression (cosine learning rate from 1e-3).
    policy_fit_steps: int = 300
    policy_fit_batch: int = 16
    #: Ablation rows trained beside the default End2end-ALARA, each a row of the report's
    #: ablation table: "paper" (the paper's plain hinge from a constant start, trained in
    #: learned_paper/) and "warm_start" (the regression warm start, then the hinge, in
    #: learned_warm_start/); the row equal to policy_init's start is the default itself.
    #: "refit" trains nothing new: End2end-ALARA's policy, after its joint training, refitted
    #: (from its trained weights, ``policy_fit_steps`` steps) to the training split's
    #: threshold doses measured with its own joint reconstructor, scored with that
    #: reconstructor (arm learned_refit, weights in learned/policy_refit.pt).
    ablation: tuple[str, ...] = ("paper", "warm_start", "refit")
    #: End2end-ALARA guards its inputs (alara.guard): beyond its training inputs' range
    #: (the distance calibrated on validation) it falls back to a safe dose and says so.
    guard: bool = True
    #: Size tilts (per cm of WED) searched on validation for the variant of End2end-ALARA
    #: ``learned_tilted`` (alara.experiment.tilt); empty: no such arm.
    learned_tilts: tuple[float, ...] = tuple(round(0.025 * k, 3) for k in range(-2, 9))
    #: AEC strengths searched on validation (0: constant dose, 1: constant noise).
    #: (Above 1: more than constant noise, i.e. large patients get more than their noise
    #: share; the grid reaches 2 so that the best strength is not on its edge.)
    aec_strengths: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(41))
    #: The guarantee: share of images that must reach Q >= q (out of sample: each arm's
    #: factor is the conformal quantile of its validation images' factors).
    share: float = 0.95
    #: Further targets every policy is calibrated to besides the objective's, by metric
    #: name (default parameters), e.g. { psnr = 29.5 }: the report puts the doses side by side.
    also_targets: dict[str, float] = field(default_factory=dict)
    #: Noise realisations per image in calibration and evaluation (Q is averaged).
    realisations: int = 2
    #: Noise draws behind the calibrated oracle's per-image thresholds (on a noise stream
    #: the evaluation never scores): it knows each image's noise-averaged threshold dose
    #: in advance, not the scan's draw, and its one dose factor is set on validation like
    #: every policy's.  0: no calibrated oracle (the plain per-image oracle stays).
    oracle_realisations: int = 4
    #: Dose-response search (relative scan dose): the starting ladder, its step (a factor),
    #: the limits it may extend to, and refinement passes (see alara.experiment.response).
    dose_search: tuple[float, float] = (0.004, 0.25)
    search_step: float = 2.0
    dose_limits: tuple[float, float] = (1e-5, 1e3)
    refine: int = 1
    #: Q must rise at least this much per doubling of dose around the calibrated fixed
    #: dose (metric units, e.g. dB); below it the comparison measures nothing: warn.
    min_slope: float = 1.0
    #: Patient-bootstrap resamples for the intervals of the dose ratios.
    bootstrap: int = 2000
    #: Training seeds: the whole experiment is run once per seed (train.seed, +1, ...).
    seeds: int = 1
    #: Test images shown side by side in the report.
    examples: int = 4
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.policy_init not in ("regression", "none"):
            raise ValueError(f"policy_init must be 'regression' or 'none', got {self.policy_init!r}")
        for key in ("policy_fit_steps", "policy_fit_batch"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        unknown = [a for a in self.ablation if a not in ("paper", "warm_start", "refit")]
        if unknown:
            raise ValueError(f"ablation lists unknown rows {unknown}; known: [\"paper\", \"warm_start\", \"refit\"]")
        if self.train_sizes not in ("stratified", "population"):
            raise ValueError(f"train_sizes must be 'stratified' or 'population', got {self.train_sizes!r}")
        if any(n < 1 for n in self.patients) or len(self.patients) != 3:
            raise ValueError(f"patients must be three counts >= 1 (train, validation, test), got {self.patients}")
        if self.oracle_realisations < 0:
            raise ValueError(f"oracle_realisations must be >= 0 (0: no calibrated oracle), got {self.oracle_realisations}")
        for key in ("image_size", "views", "slices", "realisations", "examples", "bootstrap", "seeds"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not (math.isfinite(self.share) and 0 < self.share <= 1):
            raise ValueError(f"share must be in (0, 1], got {self.share}")
        lo, hi = self.dose_search
        a, b = self.dose_limits
        if not (math.isfinite(a) and math.isfinite(b) and 0 < a <= lo < hi <= b):
            raise ValueError(f"need 0 < dose_limits[0] <= dose_search[0] < dose_search[1] <= dose_limits[1], got "
                             f"dose_search = {self.dose_search}, dose_limits = {self.dose_limits}")
        if not (math.isfinite(self.search_step) and self.search_step > 1):
            raise ValueError(f"search_step must be a factor > 1 (2.0: doubling), got {self.search_step}")
        if self.refine < 0:
            raise ValueError(f"refine must be >= 0, got {self.refine}")
        if not self.scout_n0 or any(not (math.isfinite(v) and v > 0) for v in self.scout_n0):
            raise ValueError(f"scout_n0 must list positive photon counts per bin, got {self.scout_n0}")
        if not self.aec_strengths or any(not (0 <= v <= 2) for v in self.aec_strengths):
            raise ValueError(f"aec_strengths must list strengths in [0, 2], got {self.aec_strengths}")
        if any(not math.isfinite(v) for v in self.learned_tilts):
            raise ValueError(f"learned_tilts must list finite tilts per cm of WED, got {self.learned_tilts}")
        if "n0" in self.baseline_prior_params:
            raise ValueError("baseline_prior_params.n0 is chosen on validation from scout_n0 now; give the "
                             "budgets to search as [experiment] scout_n0 = [...] (one value: no search)")
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
    if spec.train_sizes != "population":
        fields["train_sizes"] = spec.train_sizes
    fields.update(extra)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    return f"synth-{spec.image_size}px-{spec.views}v-{digest}"


def spec_dict(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec as plain JSON values."""
    from alara.params import params_of

    return params_of(spec)
