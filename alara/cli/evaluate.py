"""``alara evaluate RUN``: per-image results of a trained run on a data split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional


def evaluate_run(run: str, data: Optional[str] = None, split: Optional[str] = None,
                 out: Optional[str] = None, overrides: list[str] = (), progress: bool = True) -> dict[str, Any]:
    """Rebuild the run's pipeline from its newest checkpoint, evaluate it, write
    ``results.csv`` and ``summary.json``; returns the summary."""
    from alara.cli.common import open_split
    from alara.config import build_component, ComponentSpec
    from alara.evaluate import EvalConfig, evaluate, summarise, task_subset, write_json
    from alara.params import ConfigError, make_config
    from alara.run_config import apply_overrides, rebuild_from_checkpoint
    from alara.train.checkpoint import CheckpointError, load_latest

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run}: run folder not found (alara train writes one)")
    state = load_latest(run_dir)
    if state is None:
        raise CheckpointError(f"{run}: no checkpoint in {run_dir / 'checkpoints'}; train first")
    pipeline, objective, geometry = rebuild_from_checkpoint(state, state["path"])
    saved = state.get("run", {}).get("config", {})
    doc = apply_overrides({"eval": dict(saved.get("eval", {}))}, overrides)
    for section in doc:
        if section != "eval":
            raise ConfigError(f"alara evaluate only takes --set eval.KEY=VALUE, got section [{section}]")
    ec = make_config(EvalConfig, doc["eval"], section="eval", table="")
    split = split or ec.split
    root = data or saved.get("data", {}).get("root")
    if not root:
        raise ValueError("the run records no data directory; pass --data DIR")
    dataset = open_split(root, split, geometry)
    out_dir = Path(out) if out else run_dir / f"eval_{split}"
    _check_out(out_dir)  # before the evaluation: a refusal costs nothing and writes nothing
    metrics = {type(objective.metric).name: objective.metric}
    for name in ec.metrics:
        if name not in metrics:
            metrics[name] = build_component(ComponentSpec("iq_metric", name, {}, None, "eval.metrics"))
    dataset = task_subset(dataset, objective.metric, split,
                          lambda msg: print(f"[alara evaluate] {msg}", file=sys.stderr))
    guard = _guard_pipeline(run_dir, pipeline)
    results = evaluate(pipeline, metrics, dataset, geometry, seed=ec.seed, realisations=ec.realisations,
                       batch_size=ec.batch_size, progress=progress)
    summary = summarise(results, (type(objective.metric).name, objective.config.target))
    if guard is not None:
        summary["guard"] = _guard_columns(results, guard, pipeline, dataset, geometry, ec.seed, objective)
    summary.update(run=str(run_dir), checkpoint=state["path"], step=int(state["step"]), data=str(root),
                   split=split, realisations=ec.realisations, seed=ec.seed)
    from alara.runs import run_lock

    with run_lock(out_dir):     # a second evaluation into the same folder is refused
        results.write_csv(out_dir / "results.csv")
        write_json(out_dir / "summary.json", summary)
    summary["out"] = str(out_dir)
    return summary


def _guard_pipeline(run_dir: Path, pipeline: Any) -> Optional[Any]:
    """Guard the run's policy with its ``guard.json`` (written by ``alara train``): outside
    its training inputs' range it falls back to a safe dose (alara.guard)."""
    from alara.guard import GUARD_FILE, GuardedPolicy, InputGuard

    path = run_dir / GUARD_FILE
    if not path.exists():
        return None
    guard = InputGuard.load(path)
    pipeline.dose_policy = GuardedPolicy(pipeline.dose_policy, guard)
    return guard


def _guard_columns(results: Any, guard: Any, pipeline: Any, dataset: Any, geometry: Any, seed: int,
                   objective: Any) -> dict[str, Any]:
    """Per image: the input's distance outside the training range and whether the policy
    fell back (added to the results); the summary of both."""
    import numpy as np
    import torch

    from alara.guard import dataset_features

    dist = guard.distance(dataset_features(pipeline, dataset, geometry, seed)).numpy()
    if len(dist) != len(results):
        raise RuntimeError(f"guard: {len(dist)} distances for {len(results)} results")
    fb = dist > guard.threshold
    results.columns["ood_distance"] = dist
    results.columns["fallback"] = fb.astype(np.int64)
    name = type(objective.metric).name
    q = np.asarray(results.columns[name])
    met = objective.metric.shortfall(torch.as_tensor(q), objective.config.target).numpy() <= 0
    return {"threshold": guard.threshold, "fallback_images": int(fb.sum()), "images": int(len(fb)),
            "max_distance": float(dist.max()) if len(dist) else 0.0,
            "fallback_share_met": float(met[fb].mean()) if fb.any() else None}


#: What an evaluation writes into its folder (and may replace).
EVAL_FILES = ("results.csv", "summary.json")


def _check_out(out_dir: Path) -> None:
    """Refuse an output folder that holds anything but an earlier evaluation's files."""
    from alara.atomic import RUN_LOCK_FILE
    from alara.runs import RunFolderError

    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderError(f"--out {out_dir} is a file; give a folder for results.csv and summary.json")
    other = sorted(p.name for p in out_dir.iterdir() if p.name not in EVAL_FILES + (RUN_LOCK_FILE,)) \
        if out_dir.is_dir() else []
    if other:
        raise RunFolderError(f"--out {out_dir} holds other files ({', '.join(other[:3])}"
                             f"{', ...' if len(other) > 3 else ''}); give a new or empty folder")


def _run(args: argparse.Namespace) -> int:
    s = evaluate_run(args.run, args.data, args.split, args.out, args.overrides)
    t = s["target"]
    name = t["metric"]
    m = s["metrics"][name]
    print(f"{s['images']} images of {s['patients']} patients ({s['split']}): relative dose mean "
          f"{s['relative_dose']['mean']:.3f} (median {s['relative_dose']['median']:.3f}); {name} mean "
          f"{m['mean']:.3f}, p5 {m['p5']:.3f}, min {m['min']:.3f}; {100 * t['share_met']:.1f}% reach "
          f"q = {t['q']:g}")
    g = s.get("guard")
    if g:
        print(f"input guard: {g['fallback_images']} of {g['images']} images lie outside the training inputs' range "
              f"(distance > {g['threshold']:.2f} sd) and got the safe fallback dose"
              + (f"; {100 * g['fallback_share_met']:.0f}% of them reach q" if g["fallback_share_met"] is not None
                 else ""))
    print(f"wrote {s['out']}/results.csv and summary.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from alara.cli.common import add_set_argument

    p = sub.add_parser("evaluate", help="evaluate a trained run: per-image CSV and JSON summary",
                       description="Rebuild a run's pipeline from its newest checkpoint (by the "
                                   "registered component names it records) and evaluate it with exact "
                                   "Poisson noise: results.csv (patient id, relative dose, every metric "
                                   "per image) and summary.json.")
    p.add_argument("run", help="run folder written by `alara train`")
    p.add_argument("--data", help="LoDoPaB-layout data directory with the run's geometry (default: the "
                                  "run's data.root), e.g. CT slices imported with `alara data import-dicom`")
    p.add_argument("--split", choices=("train", "validation", "test"), help="split (default eval.split: test)")
    p.add_argument("--out", help="output folder (default RUN/eval_<split>)")
    add_set_argument(p)
    p.set_defaults(func=_run)
