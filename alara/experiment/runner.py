"""``run_experiment``: data, training, baselines tuned and every arm calibrated on
validation, each arm scored once on test, report.

Stages, each written atomically into the run folder and skipped when it is already there
with the same configuration (so a killed experiment resumes where it stopped; the
trainers resume from their checkpoints):

1. data: synthetic patients generated once per parameter set (or ``data_root``);
2. ``shared_reconstructor/``: the reconstructor trained over the whole dose range (the
   warm-up alone, for as many steps as the learned run in total), used by every baseline,
   by the oracle, and by the learned policy's "shared" arm;
3. ``learned/``: End2end-ALARA, warm-up then joint training of policy and reconstructor;
4. ``calibration.json`` (:class:`CalibrationRecord`): dose responses on validation (one per
   reconstructor and view profile, see :mod:`alara.experiment.response`); the baselines'
   free parameters tuned on them (AEC strength and scout budget, TCM's scout budget, the
   size-only control's scout budget; its line is fitted on the training split); every arm's
   conformal factor, measured validation share and matched-mean-Q factor;
5. ``evaluation.json`` (:class:`EvaluationRecord`), ``results_test.csv``,
   ``examples.npz``: every arm scored once on test at its factor, the per-image oracle on
   test, the patient bootstrap of every dose ratio;
6. ``report.md``, ``metrics.json`` and ``figures/``.

With ``seeds = N`` the whole experiment runs once per training seed into ``seed-K/``
folders, and the top-level report adds each seed's ratios and their spread.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

import numpy as np
import torch
from alara.progress import tqdm

from alara.config import ComponentSpec
from alara.evaluate import PRIOR_STREAM, evaluate, summarise, task_subset, write_json, Results
from alara.experiment import stats
from alara.experiment.records import (ArmCalibration, ArmEvaluation, ArmSpec, CalibrationRecord, EvaluationRecord,
                                      TargetCalibration, finite_or_none, none_to_inf)
from alara.experiment.response import Response, flat_shape, measure_response
from alara.experiment.spec import ExperimentSpec, data_key
from alara.geometry import LODOPAB_N0
from alara.params import make_config
from alara.interfaces import PriorInfo
from alara.pipeline import Pipeline, noise_generator
from alara.run_config import RunConfig, build_components, load_run_config

__all__ = ["Arm", "run_experiment", "load_experiment_config", "patient_size"]

PathLike = Union[str, Path]
R = TypeVar("R")

#: Shares at which the guarantee curve (mean dose against share) is drawn.
SHARES = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975)

HEADLINE_ARM = "learned_joint"


@dataclass
class Arm:
    """One policy + reconstructor combination compared in the experiment."""

    spec: ArmSpec
    pipeline: Pipeline

    @property
    def name(self) -> str:
        return self.spec.name


def load_experiment_config(path: Optional[PathLike], overrides: list[str] = ()) -> tuple[RunConfig, ExperimentSpec]:
    """The run config and its ``[experiment]`` section."""
    rc = load_run_config(path, overrides)
    spec = make_config(ExperimentSpec, rc.raw.get("experiment", {}), file=rc.file, section="experiment", table="")
    return rc, spec


def _log(msg: str) -> None:
    tqdm.write(f"[alara experiment] {msg}")


def patient_size(x: torch.Tensor, geometry: Any) -> np.ndarray:
    """Water-equivalent diameter (cm) of each image [N] from the true image (AAPM report
    220; :func:`alara.size.water_equivalent_diameter`)."""
    from alara.interfaces import PriorInfo
    from alara.size import water_equivalent_diameter

    return (100 * water_equivalent_diameter(PriorInfo(image=x.double()), geometry)).numpy()


# ---------------------------------------------------------------------------------- stages


def _config_hash(rc: RunConfig) -> str:
    return hashlib.sha256(json.dumps(rc.resolved(), sort_keys=True).encode()).hexdigest()[:16]


def _data(spec: ExperimentSpec, progress: bool) -> Path:
    from alara.data.layout import DataError
    from alara.data.metadata import read_metadata
    from alara.data.synth import DEFAULT_TEXTURE, generate_dataset, small_geometry

    root = spec.data_root or (os.environ.get(spec.data_root_env, "") if spec.data_root_env else "")
    if spec.data_root_env and not root:
        raise DataError(f"this experiment runs on real data: fetch LoDoPaB-CT with `alara data fetch lodopab DIR`, "
                        f"then `export {spec.data_root_env}=DIR` or pass --set experiment.data_root=DIR")
    if root:
        if not Path(root).is_dir():
            raise DataError(f"{root}: data directory not found; fetch LoDoPaB-CT with `alara data fetch lodopab "
                            f"{root}` (or write synthetic data there with `alara data synth {root}`)")
        return Path(root)
    texture = DEFAULT_TEXTURE if spec.texture else None
    # The key holds the texture's parameters: new defaults must not reuse old patients.
    root = Path(spec.data_cache) / data_key(spec, dataclasses.asdict(texture) if texture else {})
    if root.exists() and read_metadata(root) is not None:
        _log(f"data: reusing {root}")
        return root
    _log(f"data: writing synthetic patients to {root}")
    generate_dataset(root, patients=spec.patients, slices_per_patient=spec.slices,
                     geometry=small_geometry(spec.image_size, spec.views), seed=spec.data_seed,
                     observations=False, overwrite=True, progress=progress, texture=texture,
                     lesion_slices=spec.lesion_slices, lesion_free=spec.lesion_free,
                     train_sizes=spec.train_sizes)
    return root


@dataclass
class Split:
    """One split in memory: images [N, 1, H, W], their indices and patients, the per-image
    truth a task-based metric reads (``lesions``, ``background``, when recorded), and the
    seed of its noise streams (validation and test never share draws)."""

    name: str
    x: torch.Tensor
    index: torch.Tensor
    pid: np.ndarray
    truth: dict[str, torch.Tensor]
    seed: int

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _split(root: Path, split: str, metric: Any, seed: int) -> Split:
    """The split in memory, restricted to the images ``metric`` has a task in."""
    from alara.runs import open_split

    ds = task_subset(open_split(str(root), split), metric, split, _log)
    items = [ds[i] for i in range(len(ds))]
    truth = {k: torch.stack([it[k] for it in items]) for k in ("lesions", "background") if k in items[0]}
    return Split(split, torch.stack([it["ground_truth"] for it in items]), torch.tensor([it["index"] for it in items]),
                 np.array([it["patient_id"] for it in items]), truth, seed)


def _train(run_dir: Path, rc: RunConfig, pipeline: Pipeline, objective: Any, data: Any, geometry: Any,
           train_cfg: Any, progress: bool) -> int:
    """Train (or resume) ``pipeline`` in ``run_dir``; returns the step it ended at."""
    from alara.train import Trainer

    t = time.perf_counter()
    trainer = Trainer(pipeline, objective, data, geometry, dataclasses.replace(train_cfg, progress=progress),
                      run_dir, run_info={"config": rc.resolved()})
    start = trainer.step if trainer.resume() else 0
    trainer.fit(resume=False)
    if trainer.step > start:
        _add_wall_seconds(run_dir, "training", time.perf_counter() - t)
    return int(trainer.step)


WALL_FILE = "wall_seconds.json"


def _add_wall_seconds(run_dir: Path, what: str, seconds: float) -> None:
    """Add ``seconds`` to ``what`` in the run folder's time record (resumed runs add up)."""
    done = _wall_seconds(run_dir)
    done[what] = done.get(what, 0.0) + seconds
    write_json(run_dir / WALL_FILE, done)


def _wall_seconds(run_dir: Path) -> dict[str, float]:
    """The run folder's time record: seconds of training and of the policy's warm start
    (measured where they ran; summed over resumes)."""
    path = run_dir / WALL_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _guard(run_dir: Path, models: Models, train: Split, val: Split, geometry: Any) -> Any:
    """End2end-ALARA's input guard: the range of its training inputs' features, the
    distance allowed beyond it calibrated on validation (alara.guard); saved in
    ``run_dir`` and reloaded."""
    from alara.guard import GUARD_FILE, InputGuard, fit_guard, policy_features

    path = run_dir / GUARD_FILE
    if path.exists():
        return InputGuard.load(path)
    pipe = Pipeline(models.learned.prior, models.learned.dose_policy, models.shared.simulator,
                    models.learned.reconstructor)
    train_f, val_f = (policy_features(pipe, sp.x, sp.index, geometry, sp.seed) for sp in (train, val))
    guard = fit_guard(train_f, val_f,
                      fitted_on={"range": "training split", "threshold": "validation split (largest distance)"})
    guard.save(path)
    _log(f"input guard: training range of {', '.join(guard.features)}; allowed distance {guard.threshold:.2f} sd")
    return guard


FIT_FILE = "policy_fit.pt"
REFIT_FILE = "policy_refit.pt"


def _frozen(policy: Any) -> Any:
    """A copy of ``policy`` in eval mode with no gradients: an arm that stays as it is."""
    frozen = copy.deepcopy(policy).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def _fit_once(run_dir: Path, file: str, what: str, pipe: Pipeline, simulator: Any, train: Split,
              thresholds: Callable[[], np.ndarray], spec: ExperimentSpec, rc: RunConfig, geometry: Any,
              progress: bool, after_step: Optional[int] = None) -> None:
    """Fit ``pipe``'s policy in place to the training split's per-image threshold doses
    (:mod:`alara.train.policy_fit`), once: the weights are saved as ``run_dir/file`` with
    the training step they followed (``after_step``; None before any training) and
    reloaded while that step is still the run's."""
    from alara.atomic import atomic_file
    from alara.train.policy_fit import PolicyFitConfig, fit_policy

    policy = pipe.dose_policy
    path = run_dir / file
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        state, step = (saved["policy"], saved.get("after_step")) if "policy" in saved else (saved, None)
        if step == after_step:
            policy.load_state_dict(state)
            _log(f"{path}: the policy's {what} is done, reusing")
            return
        _log(f"{path}: fitted after training step {step}, the run is now at {after_step}: fitting again")
    t = time.perf_counter()
    thr = thresholds()
    _log(f"{what}: fitting the policy to {int(np.isfinite(thr).sum())} training images' threshold doses "
         f"({spec.policy_fit_steps} steps)")
    info = fit_policy(policy, pipe.prior, simulator, train.x, torch.as_tensor(thr), geometry,
                      PolicyFitConfig(steps=spec.policy_fit_steps, batch_size=spec.policy_fit_batch,
                                      seed=rc.train.seed), progress)
    _log(f"{what}: Huber loss {info['loss_first']:.3f} -> {info['loss_last']:.3f}")
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        torch.save({"policy": policy.state_dict(), "after_step": after_step}, tmp)
    _add_wall_seconds(run_dir, file.removesuffix(".pt"), time.perf_counter() - t)


def _warm_start(run_dir: Path, spec: ExperimentSpec, rc: RunConfig, shared: Pipeline, pipe: Pipeline, train: Split,
                resp_train: Responses, metric: Any, q: float, geometry: Any, progress: bool) -> Any:
    """Fit End2end-ALARA's policy to the training split's threshold doses with the shared
    reconstructor before its hinge training.  Returns a frozen copy of the fitted policy
    (the ablation's regression-only row)."""
    flat = flat_shape(len(train), geometry.n_views)
    _fit_once(run_dir, FIT_FILE, "warm start", pipe, shared.simulator, train,
              lambda: resp_train.get(metric, q, "shared", shared, flat, "flat").thresholds,
              spec, rc, geometry, progress)
    return _frozen(pipe.dose_policy)


def _refit(run_dir: Path, spec: ExperimentSpec, rc: RunConfig, shared: Pipeline, pipe: Pipeline, train: Split,
           resp_train: Responses, metric: Any, q: float, geometry: Any, progress: bool, step: int) -> Any:
    """The ablation row ``refit``: a copy of End2end-ALARA's trained policy refitted to the
    training split's threshold doses measured with its own joint reconstructor (saved in
    ``run_dir`` with the training step it followed).  Returns the refitted copy, frozen;
    End2end-ALARA's own policy is left as the hinge trained it."""
    refit = Pipeline(pipe.prior, copy.deepcopy(pipe.dose_policy), pipe.simulator, pipe.reconstructor)
    flat = flat_shape(len(train), geometry.n_views)
    _fit_once(run_dir, REFIT_FILE, "refit", refit, shared.simulator, train,
              lambda: resp_train.get(metric, q, "joint", pipe, flat, "flat").thresholds,
              spec, rc, geometry, progress, after_step=step)
    return _frozen(refit.dose_policy)


def _seeded_pipeline(rc: RunConfig, overrides: dict[str, ComponentSpec], seed: int) -> tuple[Pipeline, Any]:
    """``(Pipeline, ConstrainedHinge)`` of the config's components with ``overrides``,
    seeded so that every reconstructor starts from the same weights."""
    from alara.run_config import build_pipeline

    torch.manual_seed(seed)
    return build_pipeline({**rc.components, **overrides}, rc.objective)


def _stage(path: Path, key: str, compute: Callable[[], R], load: Callable[[dict], R]) -> R:
    """Load a finished stage's record (made with the same config), or compute and save it."""
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("config_hash") == key:
            _log(f"{path.name}: already done, reusing")
            return load(saved)
        raise ValueError(f"{path} was made with another configuration; use a new --out folder "
                         "(or delete the old run)")
    record = compute()
    record.config_hash = key
    write_json(path, record.to_json())
    return record


# ------------------------------------------------------------------------------- planning


@dataclass
class Plan:
    """What a policy plans for every image of a split at dose factor 1: ``n0`` [N, V]
    (float64), the prior it planned from (already acquired: reusable by another policy of
    the same prior), the prior's relative dose [N] and the patient's water-equivalent
    diameter (cm) as that prior shows it [N]."""

    n0: torch.Tensor
    prior: PriorInfo
    prior_dose: np.ndarray
    wed_cm: np.ndarray

    @property
    def level(self) -> np.ndarray:
        """Scan dose relative to LoDoPaB's [N] (the prior's excluded)."""
        return (self.n0.mean(dim=-1) / LODOPAB_N0).numpy()

    @property
    def shape(self) -> torch.Tensor:
        """View profile [N, V] with mean 1."""
        return self.n0 / self.n0.mean(dim=-1, keepdim=True)


@torch.no_grad()
def _plan(pipeline: Pipeline, split: Split, geometry: Any, prior: Optional[PriorInfo] = None) -> Plan:
    """The :class:`Plan` of ``pipeline``'s policy for ``split``, with the prior drawn on its
    own stream (the same draw :func:`alara.evaluate.measure` makes), or ``prior`` reused."""
    from alara.size import water_equivalent_diameter

    pipeline.eval()
    if prior is None:
        parts = []
        for s in range(0, len(split), 64):
            gens = [noise_generator(split.seed, PRIOR_STREAM, int(i)) for i in split.index[s:s + 64]]
            parts.append(pipeline.plan(split.x[s:s + 64], geometry, gens)[0])
        prior = PriorInfo.cat(parts)
    n0 = torch.cat([pipeline.dose_policy(p, geometry) for p in prior.batches(64)]).double()
    return Plan(n0, prior, (prior.dose.double() / (LODOPAB_N0 * geometry.n_views)).numpy(),
                (100 * water_equivalent_diameter(prior, geometry)).numpy())


class Responses:
    """Dose responses of one split, one per (metric, reconstructor, view profile): a flat
    profile is shared by every arm that spends one dose on every view."""

    def __init__(self, split: Split, geometry: Any, spec: ExperimentSpec, progress: bool, *, seed_offset: int = 0,
                 realisations: Optional[int] = None) -> None:
        """``seed_offset`` and ``realisations`` (default ``spec.realisations``) select
        another noise stream and draw count than the split's own (the calibrated oracle's)."""
        self.split, self.geometry, self.spec, self.progress = split, geometry, spec, progress
        self.seed = split.seed + seed_offset
        self.realisations = spec.realisations if realisations is None else realisations
        self._cache: list[tuple[tuple[str, str], torch.Tensor, Response]] = []
        self.summary: dict[str, Any] = {}

    def get(self, metric: Any, q: float, recon: str, pipeline: Pipeline, shape: torch.Tensor,
            label: str) -> Response:
        key = (f"{metric.name}>={q:g}", recon)
        for k, s, r in self._cache:
            if k == key and s.shape == shape.shape and torch.allclose(s, shape, rtol=1e-6, atol=0):
                return r
        sp = self.spec
        bar = tqdm(desc=f"alara experiment: {self.split.name} response ({label})", unit="pass",
                   disable=not self.progress, leave=False)
        r = measure_response(pipeline, metric, q, self.split.x, self.split.index, self.geometry, shape,
                             seed=self.seed, realisations=self.realisations, start=sp.dose_search,
                             limits=sp.dose_limits, step=sp.search_step, refine=sp.refine,
                             truth=self.split.truth, progress=bar)
        bar.close()
        self._cache.append((key, shape.clone(), r))
        self.summary[f"{label} ({key[0]}, {recon} reconstructor)"] = {
            "images": len(self.split), "passes": r.passes, "clamped_low": r.clamped_low,
            "clamped_high": r.clamped_high}
        return r


# -------------------------------------------------------------------------------- arms


TILTED = "learned_tilted"
#: The baseline "aec_joint": AEC tuned on validation with End2end-ALARA's joint
#: reconstructor, so that the comparison separates the policy from the reconstructor.
AEC_JOINT = "aec_joint"
#: The baseline "aec_adapted": the tuned AEC with a reconstructor of its own, the shared one
#: fine-tuned on the hinge at AEC's operating point for as many steps as End2end-ALARA's
#: joint phase (in ``aec_adapted/``): what End2end-ALARA's joint training gives its
#: reconstructor, given to the baseline too.
AEC_ADAPTED = "aec_adapted"
#: The ablation row "refit": End2end-ALARA's policy refitted after its joint training.
REFIT = "learned_refit"
#: With [experiment] policy_refit: End2end-ALARA's policy as the hinge left it, before the refit.
HINGE_ONLY = "learned_hinge"
#: The regression warm start alone (no hinge), with the shared reconstructor.
FIT_ONLY = "learned_fit"
#: Ablation rows: each a training of End2end-ALARA from another start, in ``learned_<row>/``
#: with its own joint reconstructor (arm ``learned_<row>``): the paper's plain start, and
#: the regression warm start.
ABLATION_STARTS = {"paper": "none", "warm_start": "regression"}
ABLATION_LABELS = {"paper": "the paper's plain hinge from a constant start",
                   "warm_start": "regression warm start + hinge",
                   "refit": "End2end-ALARA refitted to its joint reconstructor's threshold doses"}


@dataclass
class Models:
    """The trained models arms are built from: the shared reconstructor's pipeline,
    End2end-ALARA's, and where trained, the ablation rows' (by row name) and the policy as
    the regression warm start left it."""

    shared: Pipeline
    learned: Pipeline
    ablation: dict[str, Pipeline] = dataclasses.field(default_factory=dict)
    fit_policy: Optional[Any] = None
    #: The ablation row "refit": End2end-ALARA's policy refitted after its training.
    refit_policy: Optional[Any] = None
    #: With [experiment] policy_refit: End2end-ALARA's policy before the refit.
    hinge_policy: Optional[Any] = None
    #: The reconstructor of the baseline aec_adapted (and its tuned AEC arm), when trained.
    aec_adapted: Optional[tuple[Pipeline, ArmSpec]] = None
    #: End2end-ALARA's input guard (alara.guard), when [experiment] guard is on.
    guard: Optional[Any] = None

    def learned_policy(self) -> Any:
        """End2end-ALARA's policy, guarded when there is a guard."""
        if self.guard is None:
            return self.learned.dose_policy
        from alara.guard import GuardedPolicy

        return GuardedPolicy(self.learned.dose_policy, self.guard)


def _pipeline_of(arm: ArmSpec, models: Models) -> Pipeline:
    shared, learned = models.shared, models.learned
    if arm.name == TILTED:
        from alara.experiment.tilt import SizeTiltedPolicy

        policy = SizeTiltedPolicy(learned.dose_policy, SizeTiltedPolicy.Config(tilt_per_cm=arm.tuned["tilt_per_cm"]))
        return Pipeline(learned.prior, policy, shared.simulator, learned.reconstructor)
    if arm.name == FIT_ONLY:
        if models.fit_policy is None:
            raise ValueError(f"arm {FIT_ONLY} needs a run with the regression warm start (policy_init or "
                             "ablation = [\"warm_start\"])")
        return Pipeline(learned.prior, models.fit_policy, shared.simulator, shared.reconstructor)
    if arm.name == HINGE_ONLY:
        if models.hinge_policy is None:
            raise ValueError(f"arm {HINGE_ONLY} needs a run with [experiment] policy_refit = true")
        return Pipeline(learned.prior, models.hinge_policy, shared.simulator, learned.reconstructor)
    if arm.name == REFIT:
        if models.refit_policy is None:
            raise ValueError(f"arm {REFIT} needs the ablation row \"refit\" ([experiment] ablation = [\"refit\"])")
        return Pipeline(learned.prior, models.refit_policy, shared.simulator, learned.reconstructor)
    row = arm.name[len("learned_"):]
    if row in ABLATION_STARTS:
        if row not in models.ablation:
            raise ValueError(f"arm {arm.name} needs the ablation run {arm.name}/ ([experiment] ablation = [\"{row}\"])")
        p = models.ablation[row]
        return Pipeline(p.prior, p.dose_policy, shared.simulator, p.reconstructor)
    if arm.name.startswith("learned"):
        recon = learned.reconstructor if arm.reconstructor == "joint" else shared.reconstructor
        return Pipeline(learned.prior, models.learned_policy(), shared.simulator, recon)
    c = build_components({"prior": ComponentSpec("prior", arm.prior, arm.prior_params, None, "experiment"),
                          "dose_policy": ComponentSpec("dose_policy", arm.policy, arm.policy_params, None,
                                                       "experiment.baselines")})
    if arm.reconstructor == AEC_ADAPTED:
        if models.aec_adapted is None:
            raise ValueError(f"arm {arm.name} needs the reconstructor of the baseline {AEC_ADAPTED} "
                             f"([experiment] baselines = [..., \"aec\", \"{AEC_ADAPTED}\"])")
        recon = models.aec_adapted[0].reconstructor
    else:
        recon = learned.reconstructor if arm.reconstructor == "joint" else shared.reconstructor
    return Pipeline(c["prior"], c["dose_policy"], shared.simulator, recon)


FREE_PRIOR = ("prior_exam", {"max_shift_px": 0.0, "max_rotation_deg": 0.0})


def _scouts(spec: ExperimentSpec, n0: float) -> tuple[str, dict[str, Any]]:
    return spec.baseline_prior, {**dict(spec.baseline_prior_params), "n0": float(n0)}


def _scout_plans(spec: ExperimentSpec, metric: Any, q: float, models: Models, val: Split, geometry: Any,
                 resp_val: Responses) -> dict[float, tuple[Plan, Response]]:
    """Per scout budget: the scouts' plan of the validation split (TCM's: its profile is
    the one TCM and AEC share at every strength) and its response (shared reconstructor)."""
    out = {}
    for b in spec.scout_n0:
        prior, params = _scouts(spec, b)
        tcm = _plan(_pipeline_of(ArmSpec("tcm", "", "tcm", {}, prior, params, "shared"), models), val, geometry)
        out[b] = (tcm, resp_val.get(metric, q, "shared", models.shared, tcm.shape, f"scouts {b:g}"))
    return out


def _tune_baselines(spec: ExperimentSpec, metric: Any, q: float, models: Models, val: Split, train: Optional[Split], geometry: Any, resp_val: Responses,
                    resp_train: Optional[Responses]) -> tuple[list[ArmSpec], dict[str, Any]]:
    """The baselines at their best on validation: AEC's strength and scout budget, TCM's
    and the size control's scout budget (its line fitted on the training split's per-image
    threshold doses); other registered baselines at their defaults.  Returns the arms and
    the tuning tables."""
    share = spec.share
    shared = models.shared
    flat_val = resp_val.get(metric, q, "shared", shared, flat_shape(len(val), geometry.n_views), "flat")
    tuning: dict[str, Any] = {}
    arms = []
    scout_plans = _scout_plans(spec, metric, q, models, val, geometry, resp_val)
    for name in spec.baselines:
        if name == "fixed":
            arms.append(ArmSpec("fixed", "fixed dose (one n0 for every patient and view)", "fixed", {},
                                FREE_PRIOR[0], dict(FREE_PRIOR[1]), "shared"))
        elif name == "tcm":
            rows = []
            for b, (plan, resp) in scout_plans.items():
                rows.append({"scout_n0": b, "validation_dose": stats.guarantee_mean_dose(
                    resp.thresholds, plan.level, plan.prior_dose, share)})
            best = stats.best_on_validation(rows)
            tuning["tcm"] = {"grid": rows, "chosen": {"scout_n0": best["scout_n0"]}, "split": "validation"}
            prior, params = _scouts(spec, best["scout_n0"])
            arms.append(ArmSpec("tcm", "TCM (square-root angular modulation, one mean dose for all)", "tcm", {},
                                prior, params, "shared", {"scout_n0": best["scout_n0"]}))
        elif name in ("aec", AEC_JOINT):
            recon = "shared" if name == "aec" else "joint"
            plans = scout_plans
            if recon == "joint":
                # The same scouts and profiles, scored with End2end-ALARA's reconstructor.
                plans = {b: (plan, resp_val.get(metric, q, "joint", models.learned, plan.shape, f"scouts {b:g}"))
                         for b, (plan, _) in scout_plans.items()}
            arm, tuning[name] = _tune_aec(spec, name, recon, plans, models, val, geometry)
            arms.append(arm)
        elif name == AEC_ADAPTED:
            if models.aec_adapted is None:
                raise ValueError(f"the baseline {AEC_ADAPTED} needs its reconstructor trained first")
            aec = models.aec_adapted[1]
            tuning[name] = {"chosen": dict(aec.tuned), "split": "validation",
                            "note": "AEC's own tuning (shared reconstructor), made before its reconstructor was "
                                    "fine-tuned at the operating point it gave"}
            arms.append(dataclasses.replace(
                aec, name=AEC_ADAPTED, reconstructor=AEC_ADAPTED,
                label=aec.label[:-1] + f"; its own reconstructor, fine-tuned at its operating point)"))
        elif name == "size":
            flat_train = resp_train.get(metric, q, "shared", shared, flat_shape(len(train), geometry.n_views),
                                        "flat")
            rows = []
            for b in spec.scout_n0:
                prior, params = _scouts(spec, b)
                probe = ArmSpec("size", "", "size", {"intercept": 0.0, "slope_per_cm": 0.0}, prior, params, "shared")
                wed_train = _plan(_pipeline_of(probe, models), train, geometry).wed_cm
                try:
                    a, slope = stats.fit_log_linear(wed_train, flat_train.thresholds)
                except ValueError as exc:
                    reached = int(np.isfinite(flat_train.thresholds).sum())
                    raise ValueError(f"the size-only control fits its line to the training images' threshold doses, "
                                     f"but {reached} of {len(train)} reach {metric.name} >= {q:g} within relative "
                                     f"doses up to {spec.dose_limits[1]:g} ({exc}): lower [objective] target, raise "
                                     "[experiment] dose_limits, or leave \"size\" out of [experiment] baselines") from None
                fitted = ArmSpec("size", "", "size", {"intercept": a, "slope_per_cm": slope}, prior, params, "shared")
                plan = _plan(_pipeline_of(fitted, models), val, geometry, prior=scout_plans[b][0].prior)
                rows.append({"scout_n0": b, "intercept": a, "slope_per_cm": slope, "validation_dose":
                             stats.guarantee_mean_dose(flat_val.thresholds, plan.level, plan.prior_dose, share)})
            best = stats.best_on_validation(rows)
            chosen = {"scout_n0": best["scout_n0"], "intercept": best["intercept"],
                      "slope_per_cm": best["slope_per_cm"]}
            tuning["size"] = {"grid": rows, "chosen": chosen,
                              "split": "training (line: log threshold dose on scout WED), validation (scout budget)"}
            prior, params = _scouts(spec, best["scout_n0"])
            arms.append(ArmSpec("size", f"size-only control (log dose linear in the scout's WED, "
                                        f"{best['slope_per_cm']:.3f}/cm)", "size",
                                {"intercept": best["intercept"], "slope_per_cm": best["slope_per_cm"]},
                                prior, params, "shared", chosen))
        else:
            prior, params = _scouts(spec, spec.scout_n0[0])
            arms.append(ArmSpec(name, f"{name} (registered defaults, untuned)", name, {}, prior, params, "shared"))
    return arms, tuning


def _tune_aec(spec: ExperimentSpec, name: str, recon: str, scout_plans: dict[float, tuple[Plan, Response]],
              models: Models, val: Split, geometry: Any) -> tuple[ArmSpec, dict[str, Any]]:
    """AEC at its best on validation with reconstructor ``recon``: the strength and scout
    budget whose conformal factor gives the lowest mean validation dose (``scout_plans``:
    per budget the scouts' plan and the response of its profile with that reconstructor)."""
    rows = []
    for b, (scouts, resp) in scout_plans.items():
        prior, params = _scouts(spec, b)
        for s in spec.aec_strengths:
            a = ArmSpec(name, "", "aec", {"strength": float(s)}, prior, params, recon)
            # The same scouts: only the policy's formula changes with the strength.
            plan = _plan(_pipeline_of(a, models), val, geometry, prior=scouts.prior)
            rows.append({"scout_n0": b, "strength": float(s), "validation_dose":
                         stats.guarantee_mean_dose(resp.thresholds, plan.level, plan.prior_dose, spec.share)})
    best = stats.best_on_validation(rows)
    chosen = {"strength": best["strength"], "scout_n0": best["scout_n0"]}
    prior, params = _scouts(spec, best["scout_n0"])
    whose = "" if recon == "shared" else "; End2end-ALARA's joint reconstructor"
    arm = ArmSpec(name, f"AEC tuned (WED size adaptation, strength {best['strength']:g}, scouts {best['scout_n0']:g} "
                        f"photons/bin; square-root angular modulation{whose})",
                  "aec", {"strength": best["strength"]}, prior, params, recon, chosen)
    return arm, {"grid": rows, "chosen": chosen, "split": "validation"}


def _adapted_aec(run_dir: Path, rc: RunConfig, spec: ExperimentSpec, metric: Any, q: float, models: Models,
                 val: Split, geometry: Any, resp_val: Responses, train_ds: Any, progress: bool) -> tuple[Pipeline, ArmSpec]:
    """The baseline aec_adapted's reconstructor and arm: AEC tuned on validation (with the
    shared reconstructor, as the baseline ``aec``), its conformal factor there, then the
    shared reconstructor fine-tuned on the hinge with AEC's doses at that factor, for the
    joint phase's steps (:func:`_joint_phase`).  Trained in ``run_dir`` (resumable)."""
    aec, _ = _tune_aec(spec, "aec", "shared", _scout_plans(spec, metric, q, models, val, geometry, resp_val),
                       models, val, geometry)
    plan = _plan(_pipeline_of(aec, models), val, geometry)
    resp = resp_val.get(metric, q, "shared", models.shared, plan.shape, "aec")
    factor = stats.conformal_factor(resp.thresholds / plan.level, spec.share)
    if not math.isfinite(factor):
        raise ValueError(f"{AEC_ADAPTED}: the tuned AEC does not reach {metric.name} >= {q:g} on validation within "
                         "the dose limits; leave it out of [experiment] baselines")
    overrides = {"prior": ComponentSpec("prior", aec.prior, aec.prior_params, None, "experiment"),
                 "dose_policy": ComponentSpec("dose_policy", "aec", {**aec.policy_params, "n0_ref": LODOPAB_N0 * factor},
                                              None, "experiment.baselines")}
    pipe, objective = _seeded_pipeline(rc, overrides, rc.train.seed)
    pipe.reconstructor.load_state_dict(models.shared.reconstructor.state_dict())
    _log(f"training {AEC_ADAPTED}'s reconstructor: the shared one fine-tuned {rc.train.steps} steps at the tuned AEC's "
         f"operating point (strength {aec.tuned['strength']:g}, factor {factor:.3g})")
    _train(run_dir, rc, pipe, objective, train_ds, geometry, _joint_phase(rc), progress)
    return pipe, aec


def _joint_phase(rc: RunConfig) -> Any:
    """The training of a joint phase that starts from the shared reconstructor (trained
    alone over the whole dose range, as a warm-up is): ``train.steps`` steps, no warm-up,
    the reconstructor's learning rate starting where a run with its own warm-up would have
    it when its joint phase began (its cosine at step ``warmup_steps`` of ``total_steps``)."""
    from alara.train.loop import PhaseSchedule

    t = rc.train
    lr_then = PhaseSchedule(0, t.total_steps, t.schedule, t.lr_floor)(t.warmup_steps)
    return dataclasses.replace(t, warmup_steps=0, lr=t.lr * lr_then)


def _tune_tilt(spec: ExperimentSpec, metric: Any, q: float, joint: ArmSpec, models: Models, val: Split, geometry: Any, resp_val: Responses) -> tuple[ArmSpec, dict[str, Any]]:
    """End2end-ALARA with a size tilt (alara.experiment.tilt) chosen on validation: the
    tilt whose conformal factor gives the lowest mean validation dose."""
    from alara.experiment.tilt import SizeTiltedPolicy

    pipe = _pipeline_of(joint, models)
    plan = _plan(pipe, val, geometry)
    resp = resp_val.get(metric, q, "joint", pipe, plan.shape, joint.name)
    rows = []
    for tilt in spec.learned_tilts:
        tilted = plan.level * np.exp(tilt * (plan.wed_cm - SizeTiltedPolicy.Config().wed_ref_cm))
        rows.append({"tilt_per_cm": float(tilt), "validation_dose":
                     stats.guarantee_mean_dose(resp.thresholds, tilted, plan.prior_dose, spec.share)})
    best = stats.best_on_validation(rows)
    chosen = {"tilt_per_cm": best["tilt_per_cm"]}
    arm = ArmSpec(TILTED, f"End2end-ALARA + size tilt {best['tilt_per_cm']:g}/cm (joint reconstructor)", joint.policy,
                  joint.policy_params, joint.prior, joint.prior_params, "joint", chosen)
    return arm, {"grid": rows, "chosen": chosen, "split": "validation"}


def _learned_arms(rc: RunConfig, spec: ExperimentSpec, models: Models) -> list[ArmSpec]:
    """End2end-ALARA with its joint and the shared reconstructor, then the ablation rows
    that were trained: the regression warm start alone and the paper's plain hinge."""
    policy = rc.components["dose_policy"]
    prior = rc.components["prior"]
    start = ABLATION_LABELS["warm_start"] if spec.policy_init == "regression" else "hinge from a constant start"
    if models.hinge_policy is not None:
        start += ", refitted to its reconstructor's threshold doses"
    out = []
    for recon in ("joint", "shared"):
        out.append(ArmSpec(f"learned_{recon}", f"End2end-ALARA ({policy.name}, {start}, {recon} reconstructor)",
                           policy.name, dict(policy.params), prior.name, dict(prior.params), recon))
    if models.hinge_policy is not None:
        out.append(ArmSpec(HINGE_ONLY, f"End2end-ALARA without the refit: the hinge's own policy ({policy.name}, "
                                       "joint reconstructor)",
                           policy.name, dict(policy.params), prior.name, dict(prior.params), "joint"))
    if models.refit_policy is not None:
        out.append(ArmSpec(REFIT, f"{ABLATION_LABELS['refit']} ({policy.name}, joint reconstructor)",
                           policy.name, dict(policy.params), prior.name, dict(prior.params), "joint"))
    if models.fit_policy is not None:
        out.append(ArmSpec(FIT_ONLY, f"regression warm start alone, no hinge ({policy.name}, shared reconstructor)",
                           policy.name, dict(policy.params), prior.name, dict(prior.params), "shared"))
    for row in models.ablation:
        # Its own reconstructor (named by the row): responses are cached per reconstructor name.
        out.append(ArmSpec(f"learned_{row}", f"{ABLATION_LABELS[row]} ({policy.name}, its own joint reconstructor)",
                           policy.name, dict(policy.params), prior.name, dict(prior.params), row))
    return out


# ---------------------------------------------------------------------------- calibration


def _measured_share(arm: Arm, metric: Any, q: float, split: Split, geometry: Any, plan: Plan, factor: float,
                    realisations: int) -> float:
    """The share of ``split``'s images reaching q with the arm's plan at ``factor``,
    scanned (not read off the response)."""
    from alara.experiment.response import quality_at_doses

    qv = quality_at_doses(arm.pipeline, metric, split.x, split.index, geometry, plan.shape,
                          torch.as_tensor(factor * plan.level), seed=split.seed, realisations=realisations,
                          truth=split.truth)
    return float(np.mean(qv >= q if metric.higher_is_better else qv <= q))


def _target(arm: Arm, metric: Any, q: float, resp: Responses, split: Split, geometry: Any, share: float,
            plan: Plan) -> TargetCalibration:
    """The arm calibrated to ``metric >= q`` on ``split`` (its conformal factor)."""
    r = resp.get(metric, q, arm.spec.reconstructor, arm.pipeline, plan.shape, arm.name)
    factors = r.thresholds / plan.level
    name = getattr(metric, "name", type(metric).__name__)
    if share >= 1:
        raise ValueError("a guarantee of share = 1 (every new image) cannot be calibrated out of sample from finitely "
                         "many validation images; set [experiment] share below 1 (e.g. 0.95)")
    if stats.conformal_rank(len(factors), share) > len(factors):
        raise ValueError(f"the guarantee {share:g} needs at least {math.ceil(share / (1 - share) - 1e-9)} validation "
                         f"images for its conformal rank ceil((n + 1) * {share:g}) to exist; the validation split has "
                         f"{len(factors)}: add validation patients or lower [experiment] share")
    f = stats.conformal_factor(factors, share)
    if not math.isfinite(f):
        reached = int(np.isfinite(factors).sum())
        return TargetCalibration(name, q, None, None, None, finite_or_none(factors),
                                 f"only {reached} of {len(factors)} validation images reach {name} >= {q:g} within "
                                 f"relative doses up to {resp.spec.dose_limits[1]:g}, fewer than the conformal "
                                 f"rank of the share {share} needs")
    measured = _measured_share(arm, metric, q, split, geometry, plan, f, resp.spec.realisations)
    return TargetCalibration(name, q, f, measured, float((f * plan.level + plan.prior_dose).mean()),
                             finite_or_none(factors))


def _calibrate(arms: list[Arm], tuning: dict[str, Any], metric: Any, q: float, spec: ExperimentSpec, val: Split,
               geometry: Any, resp: Responses, also: dict[str, tuple[Any, float]]) -> CalibrationRecord:
    share = spec.share
    out: dict[str, ArmCalibration] = {}
    plans: dict[str, Plan] = {}
    for arm in tqdm(arms, desc="alara experiment: calibrate", unit="arm", disable=not resp.progress):
        plan = plans[arm.name] = _plan(arm.pipeline, val, geometry)
        primary = _target(arm, metric, q, resp, val, geometry, share, plan)
        if primary.factor is None:
            raise ValueError(f"calibrating {arm.name} to {primary.metric} >= {q:g}: {primary.unreachable}: q is "
                             "out of reach (lower [objective] target, or raise [experiment] dose_limits)")
        thresholds = none_to_inf(primary.image_factors) * plan.level
        curve = [(s, stats.guarantee_mean_dose(thresholds, plan.level, plan.prior_dose, s)) for s in SHARES]
        entry = ArmCalibration(arm.spec, primary, plan.level.tolist(), plan.prior_dose.tolist(),
                               [(s, d) for s, d in curve if math.isfinite(d)])
        for name, (m, q_also) in also.items():
            # A side target out of an arm's reach is a result (e.g. a reconstructor trained
            # for d' that lost PSNR), not a reason to stop the experiment.
            t = _target(arm, m, q_also, resp, val, geometry, share, plan)
            if t.unreachable:
                _log(f"{arm.name}: {t.unreachable}: reported as out of reach")
            entry.also[name] = t
        out[arm.name] = entry
    slope, target_mean = {}, None
    if "fixed" in out:
        fixed = next(a for a in arms if a.name == "fixed")
        r = resp.get(metric, q, "shared", fixed.pipeline, plans["fixed"].shape, "fixed")
        f = out["fixed"].primary.factor
        lo, mid, hi = (r.quality_at(f * m * plans["fixed"].level) for m in (2 ** -0.5, 1.0, 2 ** 0.5))
        d = hi - lo
        slope = {"median": float(np.median(d)), "p5": float(np.percentile(d, 5)), "p95": float(np.percentile(d, 95)),
                 "at_factor": f, "mean_q_at_factor": float(mid.mean())}
        target_mean = float(mid.mean())
        for arm in arms:
            plan = plans[arm.name]
            ra = resp.get(metric, q, arm.spec.reconstructor, arm.pipeline, plan.shape, arm.name)
            out[arm.name].factor_mean_q = _match_mean(ra, plan.level, target_mean, metric.higher_is_better)
    return CalibrationRecord(getattr(metric, "name", ""), q, share, len(val), int(len(np.unique(val.pid))),
                             val.pid.tolist(), out, tuning, slope, target_mean, resp.summary)


def _match_mean(r: Response, level: np.ndarray, target: float, hib: bool) -> Optional[float]:
    """The global factor at which the mean interpolated Q equals ``target`` (bisection in
    log factor over the doses the response measured)."""
    lo = math.log(min(d[0] for d in r.doses) / level.max())
    hi = math.log(max(d[-1] for d in r.doses) / level.min())

    def better(lf: float) -> bool:
        m = float(r.quality_at(math.exp(lf) * level).mean())
        return m >= target if hib else m <= target

    if not better(hi):
        return None
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if better(mid) else (mid, hi)
    return math.exp(hi)


# ----------------------------------------------------------------------------- evaluation


#: Added to a split's noise seed for the calibrated oracle's thresholds: a stream that
#: neither calibration nor evaluation scores (validation and test use seed and seed + 1,
#: the training split seed + 2).
ORACLE_SEED_OFFSET = 7919


def _calibrated_oracle(recon: str, pipe: Pipeline, metric: Any, q: float, spec: ExperimentSpec, resp_val: Responses,
                       test: Split, geometry: Any, test_thresholds: np.ndarray) -> dict[str, Any]:
    """The calibrated per-image oracle of ``pipe``'s reconstructor: it knows each image's
    threshold dose averaged over ``oracle_realisations`` noise draws of a stream nobody
    scores (the patient's anatomy, not the coming scan's noise), sets one dose factor on
    validation as every policy does (conformal rank of the factors the images' own
    thresholds need), and is scored on the test split's own draws.  A tight bound for any
    policy that picks a dose per patient before the scan; the plain oracle also knows the
    draw and drops the hardest images."""
    realisations = spec.oracle_realisations
    val = resp_val.split

    def known(split: Split) -> np.ndarray:
        resp = Responses(split, geometry, spec, resp_val.progress, seed_offset=ORACLE_SEED_OFFSET,
                         realisations=realisations)
        return resp.get(metric, q, recon, pipe, flat_shape(len(split), geometry.n_views), "calibrated oracle").thresholds

    # The draws every arm was calibrated on (already measured where an arm used them).
    scored_val = resp_val.get(metric, q, recon, pipe, flat_shape(len(val), geometry.n_views), "flat").thresholds
    factor = stats.conformal_factor(scored_val / known(val), spec.share)
    known_test = known(test)
    if not (math.isfinite(factor) and np.isfinite(known_test).all()):
        return {"realisations": realisations, "dose": None, "unreachable": "an image's threshold is on a search limit"}
    from alara.experiment.response import quality_at_doses

    dose = factor * known_test
    qv = quality_at_doses(pipe, metric, test.x, test.index, geometry, flat_shape(len(test), geometry.n_views),
                          torch.as_tensor(dose), seed=test.seed, realisations=spec.realisations, truth=test.truth)
    met = qv >= q if metric.higher_is_better else qv <= q
    finite = np.isfinite(test_thresholds)
    return {"realisations": realisations, "factor": float(factor), "dose": float(dose.mean()),
            "share_met": float(np.mean(met)),
            # How much of an image's threshold is its noise draw (log sd, test split).
            "threshold_noise_sd": float(np.std(np.log(test_thresholds[finite] / known_test[finite])))}


def _evaluate(arms: list[Arm], calib: CalibrationRecord, metric: Any, spec: ExperimentSpec, test: Split,
              geometry: Any, out: Path, resp: Responses, also: dict[str, tuple[Any, float]],
              recons: dict[str, Pipeline], resp_val: Responses) -> EvaluationRecord:
    """Every arm scored once on test at its calibrated factor; the oracle; the bootstrap."""
    x, index, pid = test.x, test.index, test.pid
    name = calib.metric
    wed = patient_size(x, geometry)
    loader = [{"ground_truth": x[s:s + 32], "index": index[s:s + 32], "patient_id": torch.as_tensor(pid[s:s + 32]),
               **{k: v[s:s + 32] for k, v in test.truth.items()}} for s in range(0, len(test), 32)]
    pick = np.linspace(0, len(test) - 1, min(spec.examples, len(test))).round().astype(int)
    results: dict[str, ArmEvaluation] = {}
    rows: dict[str, list] = {}
    examples: dict[str, np.ndarray] = {"truth": x[pick, 0].numpy()}
    doses: dict[str, stats.PolicyDoses] = {}
    for arm in tqdm(arms, desc="alara experiment: test", unit="arm", disable=not resp.progress):
        c = calib.arms[arm.name]
        plan = _plan(arm.pipeline, test, geometry)
        f = c.primary.factor
        res = evaluate(arm.pipeline, {name: metric}, loader, geometry, seed=test.seed,
                       realisations=spec.realisations, dose_scale=float(f), progress=False)
        s = summarise(res, (name, calib.q))
        ev = ArmEvaluation(float(f), s, res.columns[name].tolist(), res.columns["relative_dose"].tolist(),
                           plan.level.tolist(), plan.prior_dose.tolist(), (f * plan.n0[: min(3, len(test))]).tolist())
        for other, (m, q_also) in also.items():
            t = c.also[other]
            if t.factor is None:
                ev.also[other] = {"q": q_also, "unreachable": t.unreachable}
                continue
            r2 = evaluate(arm.pipeline, {other: m}, loader, geometry, seed=test.seed,
                          realisations=spec.realisations, dose_scale=float(t.factor), progress=False)
            ev.also[other] = {**summarise(r2, (other, q_also)), "factor": t.factor}
        from alara.guard import GuardedPolicy

        if isinstance(arm.pipeline.dose_policy, GuardedPolicy):
            # The plan's prior is the draw the evaluation scanned from: no second acquisition.
            dist = arm.pipeline.dose_policy.distance(plan.prior, geometry)
            ev.ood_distance = dist.tolist()
            ev.fallback = (dist > arm.pipeline.dose_policy.guard.threshold).tolist()
        results[arm.name] = ev
        doses[arm.name] = stats.PolicyDoses(none_to_inf(c.primary.image_factors), plan.level, plan.prior_dose)
        for k, v in res.columns.items():
            rows.setdefault(k, []).extend(np.asarray(v).tolist())
        rows.setdefault("policy", []).extend([arm.name] * len(res))
        rows.setdefault("wed_cm", []).extend(wed.tolist())
        examples[arm.name] = _example_images(arm, test, geometry, f, pick)
    table = Results({k: np.asarray(v) for k, v in rows.items()}, [name])
    table.write_csv(out / "results_test.csv")
    _write_npz(out / "examples.npz", examples)
    # The per-image oracle on the same split: each image at its own smallest fixed dose.
    oracle = {}
    for recon, pipe in recons.items():
        r = resp.get(metric, calib.q, recon, pipe, flat_shape(len(test), geometry.n_views), "oracle (flat)")
        curve = [(s, stats.oracle_dose(r.thresholds, s)) for s in SHARES]
        oracle[recon] = {"dose": stats.oracle_dose(r.thresholds, calib.share),
                         "dose_all_images": float(r.thresholds.mean()),
                         "clamped": r.clamped_low + r.clamped_high, "clamped_low": r.clamped_low,
                         "clamped_high": r.clamped_high, "thresholds": finite_or_none(r.thresholds),
                         "curve": [(s, d) for s, d in curve if math.isfinite(d)]}
        if spec.oracle_realisations:
            oracle[recon]["calibrated"] = _calibrated_oracle(recon, pipe, metric, calib.q, spec, resp_val, test,
                                                             geometry, r.thresholds)
    boot, variants = {}, {}
    if HEADLINE_ARM in doses:
        boot = stats.bootstrap_ratios(doses, HEADLINE_ARM, np.asarray(calib.patient_ids), pid, calib.share,
                                      resamples=spec.bootstrap, seed=spec.seed)
    # Every other learned arm is a row of the ablation table, with its own intervals.
    for v in doses:
        if v.startswith("learned") and v != HEADLINE_ARM:
            variants[v] = stats.bootstrap_ratios(doses, v, np.asarray(calib.patient_ids), pid, calib.share,
                                                 resamples=spec.bootstrap, seed=spec.seed)
    matched = {a: (float(np.mean(calib.arms[a].factor_mean_q * np.asarray(d.test_scan) + d.test_prior))
                   if calib.arms[a].factor_mean_q is not None else None) for a, d in doses.items()}
    return EvaluationRecord(name, calib.q, len(test), int(len(np.unique(pid))), index.tolist(), pid.tolist(),
                            wed.tolist(), results, oracle, boot, matched, pick.tolist(), bootstrap_variants=variants)


@torch.no_grad()
def _example_images(arm: Arm, split: Split, geometry: Any, factor: float, pick: np.ndarray) -> np.ndarray:
    """Reconstructions [k, H, W] of the picked test images at the arm's factor (noise
    realisation 0, the same draw :func:`evaluate` scored)."""
    arm.pipeline.eval()
    idx = torch.as_tensor(pick)
    gens = [noise_generator(split.seed, 0, int(i)) for i in split.index[idx]]
    pgens = [noise_generator(split.seed, PRIOR_STREAM, int(i)) for i in split.index[idx]]
    scan = arm.pipeline(split.x[idx], geometry, generator=gens, prior_generator=pgens, dose_scale=factor)
    return scan.x_hat[:, 0].float().numpy()


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from alara.atomic import atomic_file

    with atomic_file(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


# ------------------------------------------------------------------------------- the run


def _also_metrics(spec: ExperimentSpec, primary: str) -> dict[str, tuple[Any, float]]:
    """``{name: (metric, target)}`` of ``[experiment] also_targets`` (default parameters)."""
    from alara.plugins import create

    if primary in spec.also_targets:
        raise ValueError(f"[experiment] also_targets names {primary!r}, the objective's own metric; its target "
                         "is [objective] target")
    return {name: (create("iq_metric", name, {}), float(q)) for name, q in spec.also_targets.items()}


def run_experiment(config: Optional[PathLike], out: PathLike, overrides: list[str] = (),
                   progress: bool = True, seeds: Optional[int] = None) -> dict[str, Any]:
    """Run (or resume) the whole experiment into ``out``; returns ``metrics.json``'s
    content.  ``seeds`` (default ``[experiment] seeds``): training seeds, each a full run."""
    from alara.experiment.report import write_seeds_report

    t_start = time.perf_counter()
    rc, spec = load_experiment_config(config, overrides)
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {seeds}")
        spec = dataclasses.replace(spec, seeds=seeds)
        rc.raw.setdefault("experiment", {})["seeds"] = seeds
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory for the experiment")
    if spec.seeds == 1:
        return _run_one(rc, spec, out, progress, t_start)
    runs = []
    for k in range(spec.seeds):
        rc_k = dataclasses.replace(rc, train=dataclasses.replace(rc.train, seed=rc.train.seed + k))
        _log(f"seed {k + 1} of {spec.seeds} (train.seed = {rc_k.train.seed})")
        runs.append(_run_one(rc_k, spec, out / f"seed-{k}", progress, time.perf_counter()))
    return write_seeds_report(out, runs, rc=rc, spec=spec, wall_seconds=time.perf_counter() - t_start)


def _run_one(rc: RunConfig, spec: ExperimentSpec, out: Path, progress: bool, t_start: float) -> dict[str, Any]:
    from alara.experiment.report import write_report
    from alara.runs import open_split, write_run_files

    key = _config_hash(rc)
    write_run_files(out, rc.resolved())
    timings: dict[str, float] = {}

    t = time.perf_counter()
    root = _data(spec, progress)
    train_ds = open_split(str(root), "train")
    geometry = train_ds.geometry
    metric = build_components({"iq_metric": rc.components["iq_metric"]})["iq_metric"]
    train_ds = task_subset(train_ds, metric, "train", _log)
    timings["data"] = time.perf_counter() - t

    # ---- training: the shared reconstructor and End2end-ALARA, same number of steps.
    t = time.perf_counter()
    seed = rc.train.seed
    fixed = ComponentSpec("dose_policy", "fixed", {}, None, "experiment")
    free_prior = ComponentSpec("prior", FREE_PRIOR[0], dict(FREE_PRIOR[1]), None, "experiment")
    shared_pipe, shared_obj = _seeded_pipeline(rc, {"dose_policy": fixed, "prior": free_prior}, seed)
    shared_train = dataclasses.replace(rc.train, warmup_steps=rc.train.total_steps, steps=0)
    _log(f"training the shared reconstructor ({shared_train.total_steps} steps over relative doses "
         f"{rc.train.warmup_dose[0]:g}-{rc.train.warmup_dose[1]:g})")
    _train(out / "shared_reconstructor", rc, shared_pipe, shared_obj, train_ds, geometry, shared_train, progress)
    metric = shared_obj.metric
    q = rc.objective.target
    # The training split's per-image threshold doses (shared reconstructor, one dose on
    # every view): the size-only control's line and the policy's warm start read them.
    needs_train = "size" in spec.baselines or spec.guard or "refit" in spec.ablation or "regression" in (
        spec.policy_init, *(ABLATION_STARTS.get(r) for r in spec.ablation))
    train = _split(root, "train", metric, spec.seed + 2) if needs_train else None
    resp_train = Responses(train, geometry, spec, progress) if train is not None else None
    learned_pipe, learned_obj = _seeded_pipeline(rc, {}, seed)
    models = Models(shared_pipe, learned_pipe)
    runs = [("learned", spec.policy_init, learned_pipe, learned_obj)]
    for row in spec.ablation:
        if row not in ABLATION_STARTS:  # not a training of its own (the refit)
            if spec.policy_refit:
                _log(f"ablation row {row!r} is the default itself (policy_refit = true): skipped")
            continue
        if ABLATION_STARTS[row] == spec.policy_init:
            _log(f"ablation row {row!r} is the default's own start (policy_init = {spec.policy_init!r}): skipped")
            continue
        pipe, obj = _seeded_pipeline(rc, {}, seed)
        models.ablation[row] = pipe
        runs.append((f"learned_{row}", ABLATION_STARTS[row], pipe, obj))
    for folder, start, pipe, obj in runs:
        if start == "regression":
            models.fit_policy = _warm_start(out / folder, spec, rc, models.shared, pipe, train, resp_train, metric, q,
                                            geometry, progress)
        what = "End2end-ALARA" if folder == "learned" else f"the ablation row {folder}"
        if spec.joint_from_shared:
            _log(f"training {what} ({rc.components['dose_policy'].name}, start: {start}; {rc.train.steps} joint steps "
                 f"from the shared reconstructor)")
            pipe.reconstructor.load_state_dict(shared_pipe.reconstructor.state_dict())
        else:
            _log(f"training {what} ({rc.components['dose_policy'].name}, start: {start}; {rc.train.warmup_steps} "
                 f"warm-up + {rc.train.steps} joint steps)")
        step = _train(out / folder, rc, pipe, obj, train_ds, geometry,
                      _joint_phase(rc) if spec.joint_from_shared else rc.train, progress)
        if folder == "learned" and (spec.policy_refit or "refit" in spec.ablation):
            refit = _refit(out / folder, spec, rc, models.shared, pipe, train, resp_train, metric, q, geometry,
                           progress, step)
            if spec.policy_refit:  # End2end-ALARA is the refitted policy; the hinge's own is a row
                models.hinge_policy = _frozen(pipe.dose_policy)
                pipe.dose_policy.load_state_dict(refit.state_dict())
            else:
                models.refit_policy = refit
    timings["training"] = time.perf_counter() - t
    # Noise streams: validation and test never share a draw (spec.seed, spec.seed + 1).
    val = _split(root, "validation", metric, spec.seed)
    test = _split(root, "test", metric, spec.seed + 1)
    if spec.guard:
        models.guard = _guard(out / "learned", models, train, val, geometry)
    also = _also_metrics(spec, type(metric).name)
    resp_val = Responses(val, geometry, spec, progress)
    if AEC_ADAPTED in spec.baselines:
        t = time.perf_counter()
        models.aec_adapted = _adapted_aec(out / AEC_ADAPTED, rc, spec, metric, q, models, val, geometry, resp_val,
                                          train_ds, progress)
        timings["training"] += time.perf_counter() - t

    t = time.perf_counter()

    def calibrate() -> CalibrationRecord:
        specs, tuning = _tune_baselines(spec, metric, q, models, val, train, geometry, resp_val, resp_train)
        learned_specs = _learned_arms(rc, spec, models)
        if spec.learned_tilts:
            tilted, tuning["learned_tilted"] = _tune_tilt(spec, metric, q, learned_specs[0], models, val, geometry,
                                                          resp_val)
            learned_specs.append(tilted)
        arms = [Arm(a, _pipeline_of(a, models)) for a in specs + learned_specs]
        record = _calibrate(arms, tuning, metric, q, spec, val, geometry, resp_val, also)
        if resp_train is not None:
            record.responses.update({f"training split: {k}": v for k, v in resp_train.summary.items()})
        return record

    calib = _stage(out / "calibration.json", key, calibrate, CalibrationRecord.from_json)
    arms = [Arm(c.arm, _pipeline_of(c.arm, models)) for c in calib.arms.values()]
    timings["calibration"] = time.perf_counter() - t

    t = time.perf_counter()
    recons = {"shared": shared_pipe}
    if any(a.spec.reconstructor == "joint" for a in arms):
        recons["joint"] = learned_pipe
    if models.aec_adapted is not None:
        recons[AEC_ADAPTED] = models.aec_adapted[0]
    for row, pipe in models.ablation.items():
        if any(a.spec.reconstructor == row for a in arms):
            recons[row] = pipe
    evaluation = _stage(out / "evaluation.json", key,
                        lambda: _evaluate(arms, calib, metric, spec, test, geometry, out,
                                          Responses(test, geometry, spec, progress), also, recons, resp_val),
                        EvaluationRecord.from_json)
    timings["evaluation"] = time.perf_counter() - t
    timings["training_runs"] = {d: _wall_seconds(out / d) for d in ("shared_reconstructor", "learned", AEC_ADAPTED,
                                                                    *(f"learned_{r}" for r in models.ablation))
                                if (out / d).is_dir()}

    t = time.perf_counter()
    metrics = write_report(out, rc=rc, spec=spec, calib=calib, evaluation=evaluation, geometry=geometry,
                           data_root=root, timings=timings, wall_seconds=time.perf_counter() - t_start)
    return metrics
