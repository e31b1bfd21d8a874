"""``run_experiment``: data, training, calibration on validation, evaluation on test, report.

Stages, each written atomically into the run folder and skipped when it is already there
(so a killed experiment resumes where it stopped; the trainers resume from checkpoints):

1. data: synthetic patients generated once per parameter set (or ``data_root``);
2. ``shared_reconstructor/``: the reconstructor trained over the whole dose range (the
   warm-up alone, for the same number of steps as the learned run in total), used by
   every baseline, by the oracle, and by the learned policy's "shared" arm;
3. ``learned/``: End2end-ALARA, warm-up then joint training of policy and reconstructor;
4. ``calibration.json``: per arm, per-image thresholds on validation, the factor of the
   guarantee and the factor of matched mean Q;
5. ``results_test.csv`` and ``evaluation.json``: every arm on the test split at both
   factors, exact Poisson noise with fixed seeds;
6. ``report.md``, ``metrics.json`` and ``figures/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from alara.config import ComponentSpec
from alara.evaluate import evaluate, task_subset, write_json
from alara.experiment import calibrate as cal
from alara.experiment.spec import ExperimentSpec, data_key
from alara.geometry import LODOPAB_MU_MAX
from alara.params import make_config
from alara.pipeline import Pipeline
from alara.run_config import RunConfig, build_components, load_run_config

__all__ = ["Arm", "run_experiment", "load_experiment_config", "patient_size"]

PathLike = Union[str, Path]

#: Water's attenuation in LoDoPaB's HU recipe (1/m).
MU_WATER = 20.0


@dataclass
class Arm:
    """One policy + reconstructor combination compared in the experiment."""

    name: str
    label: str
    policy: str
    prior: str
    reconstructor: str          # "shared" or "joint"
    pipeline: Pipeline


def load_experiment_config(path: Optional[PathLike], overrides: list[str] = ()) -> tuple[RunConfig, ExperimentSpec]:
    """The run config and its ``[experiment]`` section."""
    rc = load_run_config(path, overrides)
    spec = make_config(ExperimentSpec, rc.raw.get("experiment", {}), file=rc.file, section="experiment", table="")
    return rc, spec


def _log(msg: str) -> None:
    tqdm.write(f"[alara experiment] {msg}")


def patient_size(x: torch.Tensor, geometry: Any) -> tuple[np.ndarray, np.ndarray]:
    """Water-equivalent diameter (cm) and largest normalised line integral of each image.

    ``WED = 2 sqrt(A_w / pi)``, ``A_w = sum_pixels (mu / mu_water) * pixel area`` (AAPM
    report 220), with ``mu = x * mu_max``."""
    from alara import ops

    g = geometry.grid
    px = (g.max_pt[0] - g.min_pt[0]) / g.shape[0] * (g.max_pt[1] - g.min_pt[1]) / g.shape[1]
    area = (x.double().clamp(min=0) * LODOPAB_MU_MAX / MU_WATER).flatten(1).sum(1) * px
    wed_cm = 2 * torch.sqrt(area / math.pi) * 100
    p_max = ops.project(x, geometry).flatten(1).amax(1)
    return wed_cm.numpy(), p_max.double().numpy()


# ---------------------------------------------------------------------------------- stages


def _config_hash(rc: RunConfig) -> str:
    return hashlib.sha256(json.dumps(rc.resolved(), sort_keys=True).encode()).hexdigest()[:16]


def _data(spec: ExperimentSpec, progress: bool) -> Path:
    from alara.data.metadata import read_metadata
    from alara.data.synth import DEFAULT_TEXTURE, generate_dataset, small_geometry

    if spec.data_root:
        return Path(spec.data_root)
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
                     lesion_slices=spec.lesion_slices, lesion_free=spec.lesion_free)
    return root


@dataclass
class Split:
    """One split in memory: images [N, 1, H, W], their indices and patients, and the
    per-image truth a task-based metric reads (``lesions``, ``background``, when recorded)."""

    x: torch.Tensor
    index: torch.Tensor
    pid: np.ndarray
    truth: dict[str, torch.Tensor]


def _split(root: Path, split: str, metric: Any) -> Split:
    """The split in memory, restricted to the images ``metric`` has a task in."""
    from alara.cli.common import open_split

    ds = task_subset(open_split(str(root), split), metric, split, _log)
    items = [ds[i] for i in range(len(ds))]
    truth = {k: torch.stack([it[k] for it in items]) for k in ("lesions", "background") if k in items[0]}
    return Split(torch.stack([it["ground_truth"] for it in items]), torch.tensor([it["index"] for it in items]),
                 np.array([it["patient_id"] for it in items]), truth)


def _train(run_dir: Path, rc: RunConfig, pipeline: Pipeline, objective: Any, data: Any, geometry: Any,
           train_cfg: Any, progress: bool) -> None:
    from alara.train import Trainer

    trainer = Trainer(pipeline, objective, data, geometry, dataclasses.replace(train_cfg, progress=progress),
                      run_dir, run_info={"config": rc.resolved()})
    trainer.fit(resume=True)


def _seeded_pipeline(rc: RunConfig, overrides: dict[str, ComponentSpec], seed: int) -> tuple[Pipeline, Any]:
    """``(Pipeline, ConstrainedHinge)`` of the config's components with ``overrides``,
    seeded so that every reconstructor starts from the same weights."""
    from alara.run_config import build_pipeline

    torch.manual_seed(seed)
    return build_pipeline({**rc.components, **overrides}, rc.objective)


def _stage(path: Path, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Load a finished stage's JSON (made with the same config), or compute and save it."""
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("config_hash") == key:
            _log(f"{path.name}: already done, reusing")
            return saved
        raise ValueError(f"{path} was made with another configuration; use a new --out folder "
                         "(or delete the old run)")
    out = compute()
    out["config_hash"] = key
    write_json(path, out)
    return out


def run_experiment(config: Optional[PathLike], out: PathLike, overrides: list[str] = (),
                   progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole experiment into ``out``; returns ``metrics.json``'s content."""
    from alara.cli.common import open_split, write_run_files
    from alara.experiment.report import write_report

    t_start = time.perf_counter()
    rc, spec = load_experiment_config(config, overrides)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory for the experiment")
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
    free_prior = ComponentSpec("prior", "prior_exam", {"max_shift_px": 0.0, "max_rotation_deg": 0.0}, None, "experiment")
    shared_pipe, shared_obj = _seeded_pipeline(rc, {"dose_policy": fixed, "prior": free_prior}, seed)
    shared_train = dataclasses.replace(rc.train, warmup_steps=rc.train.total_steps, steps=0)
    _log(f"training the shared reconstructor ({shared_train.total_steps} steps over relative doses "
         f"{rc.train.warmup_dose[0]:g}-{rc.train.warmup_dose[1]:g})")
    _train(out / "shared_reconstructor", rc, shared_pipe, shared_obj, train_ds, geometry, shared_train, progress)
    learned_pipe, learned_obj = _seeded_pipeline(rc, {}, seed)
    _log(f"training End2end-ALARA ({rc.components['dose_policy'].name}: {rc.train.warmup_steps} warm-up + "
         f"{rc.train.steps} joint steps)")
    _train(out / "learned", rc, learned_pipe, learned_obj, train_ds, geometry, rc.train, progress)
    timings["training"] = time.perf_counter() - t

    # ---- the arms: baselines and the oracle on the shared reconstructor; learned both ways.
    metric = shared_obj.metric
    q = rc.objective.target
    arms = _arms(rc, spec, shared_pipe, learned_pipe, seed)
    val, test = _split(root, "validation", metric), _split(root, "test", metric)
    also = _also_metrics(spec, type(metric).name)

    t = time.perf_counter()
    calib = _stage(out / "calibration.json", key,
                   lambda: _calibrate(arms, metric, q, spec, val, geometry, progress, also))
    timings["calibration"] = time.perf_counter() - t

    t = time.perf_counter()
    evaluation = _stage(out / "evaluation.json", key,
                        lambda: _evaluate(arms, calib, metric, rc, spec, test, geometry, out, progress, also))
    timings["evaluation"] = time.perf_counter() - t

    t = time.perf_counter()
    metrics = write_report(out, rc=rc, spec=spec, arms=arms, calib=calib, evaluation=evaluation,
                           x_test=test.x, idx_test=test.index, truth_test=test.truth, geometry=geometry,
                           metric=metric, data_root=root, timings=timings,
                           wall_seconds=time.perf_counter() - t_start)
    return metrics


def _also_metrics(spec: ExperimentSpec, primary: str) -> dict[str, tuple[Any, float]]:
    """``{name: (metric, target)}`` of ``[experiment] also_targets`` (default parameters)."""
    from alara.plugins import create

    if primary in spec.also_targets:
        raise ValueError(f"[experiment] also_targets names {primary!r}, the objective's own metric; its target "
                         "is [objective] target")
    return {name: (create("iq_metric", name, {}), float(q)) for name, q in spec.also_targets.items()}


def _arms(rc: RunConfig, spec: ExperimentSpec, shared: Pipeline, learned: Pipeline, seed: int) -> list[Arm]:
    arms = []
    for name in spec.baselines:
        prior = "prior_exam" if name == "fixed" else spec.baseline_prior
        params = ({"max_shift_px": 0.0, "max_rotation_deg": 0.0} if prior == "prior_exam"
                  else dict(spec.baseline_prior_params))
        c = build_components({"prior": ComponentSpec("prior", prior, params, None, "experiment"),
                              "dose_policy": ComponentSpec("dose_policy", name, {}, None, "experiment.baselines")})
        pipe = Pipeline(c["prior"], c["dose_policy"], shared.simulator, shared.reconstructor)
        arms.append(Arm(name, name, name, prior if prior != "prior_exam" else "none", "shared", pipe))
    policy = rc.components["dose_policy"].name
    prior = rc.components["prior"].name
    arms.append(Arm("learned_joint", f"End2end-ALARA ({policy}, joint reconstructor)", policy, prior, "joint", learned))
    arms.append(Arm("learned_shared", f"End2end-ALARA ({policy}, shared reconstructor)", policy, prior, "shared",
                    Pipeline(learned.prior, learned.dose_policy, shared.simulator, shared.reconstructor)))
    return arms


SHARES = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 1.0)


def _calibrate_arm(arm: Arm, metric: Any, q: float, spec: ExperimentSpec, data: Split, geometry: Any,
                   bar: Any) -> tuple[Any, dict[str, Any]]:
    """One arm's per-image thresholds and its factor at the guarantee, for one (metric, q)."""
    c = cal.per_image_thresholds(arm.pipeline, metric, q, data.x, data.index, geometry, seed=spec.seed,
                                 realisations=spec.realisations, steps=spec.calibration_steps,
                                 factor_range=spec.factor_range, progress=bar, truth=data.truth)
    try:
        factor, measured = cal.verified_factor(arm.pipeline, metric, q, c, spec.share, data.x, data.index,
                                               geometry, seed=spec.seed, realisations=spec.realisations,
                                               truth=data.truth)
    except ValueError as exc:
        raise ValueError(f"calibrating {arm.name} to {metric.name} >= {q:g}: {exc}") from None
    return c, {"factor": factor, "validation_share": measured, "validation_dose": float(c.dose_at(factor).mean())}


def _calibrate(arms: list[Arm], metric: Any, q: float, spec: ExperimentSpec, data: Split, geometry: Any,
               progress: bool, also: dict[str, tuple[Any, float]]) -> dict[str, Any]:
    x, index = data.x, data.index
    per_arm = (spec.calibration_steps + 3) * (1 + len(also))
    bar = tqdm(total=per_arm * len(arms), desc="alara experiment: calibrate", unit="pass", disable=not progress)
    result: dict[str, Any] = {"q": q, "share": spec.share, "images": int(x.shape[0]), "arms": {}}
    cals = {}
    for arm in arms:
        c, entry = _calibrate_arm(arm, metric, q, spec, data, geometry, bar)
        cals[arm.name] = c
        result["arms"][arm.name] = {
            **entry, "thresholds": [float(v) for v in c.thresholds], "scan_dose": c.scan_dose.tolist(),
            "prior_dose": c.prior_dose.tolist(), "curve": cal.guarantee_curve(c, SHARES)}
        for name, (m, q_also) in also.items():
            # A side target out of an arm's reach is a result (e.g. a reconstructor trained
            # for d' that lost PSNR), not a reason to stop the experiment.
            try:
                entry_also = _calibrate_arm(arm, m, q_also, spec, data, geometry, bar)[1]
            except ValueError as exc:
                entry_also = {"unreachable": str(exc)}
                _log(f"{exc}: reported as out of reach")
            result["arms"][arm.name].setdefault("also", {})[name] = {"q": q_also, **entry_also}
    bar.close()
    fixed = cals.get("fixed")
    if fixed is not None:
        result["oracle"] = {"dose": cal.oracle_dose(fixed, spec.share),
                            "curve": [(s, cal.oracle_dose(fixed, s)) for s in SHARES]}
        # Dose response of the shared reconstructor around the calibrated fixed dose.
        f = result["arms"]["fixed"]["factor"]
        fixed_arm = next(a for a in arms if a.name == "fixed")
        qs = {}
        for k, mult in (("low", 2 ** -0.5), ("mid", 1.0), ("high", 2 ** 0.5)):
            qk, _, _ = cal.quality_at(fixed_arm.pipeline, metric, x, index, geometry,
                                      torch.full((x.shape[0],), f * mult, dtype=torch.float64),
                                      seed=spec.seed, realisations=spec.realisations, truth=data.truth)
            qs[k] = qk
        slope = (qs["high"] - qs["low"]).numpy()   # one doubling between low and high
        result["slope"] = {"median": float(np.median(slope)), "p5": float(np.percentile(slope, 5)),
                           "p95": float(np.percentile(slope, 95)), "at_factor": f,
                           "mean_q_at_factor": float(qs["mid"].mean())}
        # Matched mean Q: every arm at the fixed policy's mean Q at its guarantee.
        target_mean = float(qs["mid"].mean())
        result["matched_mean_q"] = {"target": target_mean}
        for arm in arms:
            result["arms"][arm.name]["factor_mean_q"] = cal.match_mean_quality(
                arm.pipeline, metric, target_mean, x, index, geometry, seed=spec.seed,
                realisations=spec.realisations, steps=spec.calibration_steps, factor_range=spec.factor_range,
                truth=data.truth)
    return result


def _evaluate(arms: list[Arm], calib: dict[str, Any], metric: Any, rc: RunConfig, spec: ExperimentSpec,
              data: Split, geometry: Any, out: Path, progress: bool,
              also: dict[str, tuple[Any, float]]) -> dict[str, Any]:
    from alara.evaluate import Results, summarise

    x, index, pid = data.x, data.index, data.pid
    metric_name = type(metric).name
    wed, p_max = patient_size(x, geometry)
    rows: dict[str, list] = {}
    summary: dict[str, Any] = {}
    loader = [{"ground_truth": x[s:s + 16], "index": index[s:s + 16], "patient_id": torch.as_tensor(pid[s:s + 16]),
               **{k: v[s:s + 16] for k, v in data.truth.items()}} for s in range(0, x.shape[0], 16)]
    for arm in arms:
        for name, (m, q_also) in also.items():
            entry = calib["arms"][arm.name]["also"][name]
            if "unreachable" in entry:
                summary.setdefault(arm.name, {}).setdefault("also", {})[name] = {"unreachable": entry["unreachable"],
                                                                                 "q": q_also}
                continue
            res = evaluate(arm.pipeline, {name: m}, loader, geometry, seed=spec.seed + 1,
                           realisations=spec.realisations, dose_scale=float(entry["factor"]), progress=False)
            s = summarise(res, (name, q_also))
            s["factor"] = entry["factor"]
            summary.setdefault(arm.name, {}).setdefault("also", {})[name] = s
        for mode, key in (("guarantee", "factor"), ("mean_q", "factor_mean_q")):
            if key not in calib["arms"][arm.name]:
                continue
            factor = calib["arms"][arm.name][key]
            res = evaluate(arm.pipeline, {metric_name: metric}, loader, geometry, seed=spec.seed + 1,
                           realisations=spec.realisations, dose_scale=float(factor), progress=False)
            s = summarise(res, (metric_name, calib["q"]))
            s["factor"] = factor
            summary.setdefault(arm.name, {})[mode] = s
            if mode == "guarantee":
                n = len(res)
                for k, v in res.columns.items():
                    rows.setdefault(k, []).extend(v.tolist())
                rows.setdefault("policy", []).extend([arm.name] * n)
                rows.setdefault("wed_cm", []).extend(wed.tolist())
                rows.setdefault("p_max", []).extend(p_max.tolist())
    table = Results({k: np.asarray(v) for k, v in rows.items()}, [metric_name])
    table.write_csv(out / "results_test.csv")
    return {"arms": summary, "metric": metric_name, "test_images": int(x.shape[0]),
            "test_patients": int(len(np.unique(pid)))}
