"""A run's lifecycle in the library: open a split of a data set, write a run folder's
record of its configuration and environment, train a run from its config.  The commands (``alara.cli``) and the
experiment (``alara.experiment``) both call these; nothing here imports ``alara.cli``."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Optional

__all__ = ["environment", "open_split", "write_run_files", "default_run_dir", "train_run"]


def environment() -> dict[str, Any]:
    """Versions, backends and threads of this process (recorded in every run folder)."""
    from alara.info import collect

    env: dict[str, Any] = dict(collect())
    env.update(platform=platform.platform(), argv=sys.argv, cpu_count=os.cpu_count())
    return env


def write_run_files(run_dir: Path, resolved: dict[str, Any]) -> None:
    """``config.json`` (the resolved configuration) and ``environment.json``, atomically."""
    from alara.evaluate import write_json

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", resolved)
    write_json(run_dir / "environment.json", environment())


def open_split(root: str, split: str, geometry_expected: Optional[Any] = None) -> Any:
    """The ``LoDoPaBDataset`` of one split, ground truth only; with ``geometry_expected``
    the data set's recorded geometry must match it."""
    from alara.data import LoDoPaBDataset
    from alara.data.layout import DataError
    from alara.data.metadata import geometry_to_dict

    path = Path(root)
    if not path.exists():
        raise DataError(f"{root}: data directory not found; write one with `alara data synth {root}` "
                        "or set data.root to a LoDoPaB-CT download")
    if not path.is_dir():
        raise DataError(f"{root}: is a file, expected a data directory (LoDoPaB layout)")
    ds = LoDoPaBDataset(path, split, observations=False)
    if geometry_expected is not None:
        got = ds.geometry
        if got is None or json.dumps(geometry_to_dict(got)) != json.dumps(geometry_to_dict(geometry_expected)):
            g = ds.image_shape
            raise DataError(f"{root}: its geometry ({g[0]}x{g[1]} pixels) differs from the run's; "
                            "evaluate on data written with the same geometry (alara data synth "
                            "--size/--views, or import-dicom with the run's geometry)")
    return ds


def default_run_dir(config: str) -> Path:
    """``runs/<config file stem>``."""
    return Path("runs") / Path(config).stem


def _write_guard(run_dir: Path, pipeline: Any, root: str, train: Any, geometry: Any, seed: int) -> None:
    """The learned policy's input guard (alara.guard), calibrated on the validation split
    when the data has one; ``alara evaluate`` falls back to a safe dose outside it."""
    from alara.guard import write_run_guard

    try:
        validation = open_split(root, "validation", geometry)
    except (FileNotFoundError, ValueError):
        validation = None
    guard = write_run_guard(run_dir, pipeline.to("cpu"), train, validation, geometry, seed)
    if guard is not None:
        print(f"[alara train] input guard: allowed distance {guard.threshold:.2f} sd outside the training range "
              f"({guard.fitted_on['threshold']})", file=sys.stderr)


def train_run(config: str, out: Optional[str] = None, resume: bool = False, overrides: list[str] = ()) -> dict:
    """Train the run of a config file into ``out`` (default :func:`default_run_dir`): build
    everything from the config, write the run files, train (or resume), return the last
    logs.  ``alara train`` calls this; torchrun ranks each call it."""
    from alara.run_config import build_pipeline, load_run_config
    from alara.train import Trainer, distributed
    from alara.train.checkpoint import list_checkpoints

    rc = load_run_config(config, overrides)
    run_dir = Path(out) if out else default_run_dir(config)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {run_dir} is a file; give a directory for the run")
    if list_checkpoints(run_dir) and not resume:
        raise ValueError(f"{run_dir} already holds a run with checkpoints; pass --resume to continue it "
                         "or --out NEW_DIR to start another")
    distributed.init_from_env()
    try:
        data = open_split(rc.data.root, "train")
        geometry = data.geometry
        import torch

        from alara.evaluate import task_subset

        torch.manual_seed(rc.train.seed)    # the same initial weights on every run (and rank)
        pipeline, objective = build_pipeline(rc.components, rc.objective)
        data = task_subset(data, objective.metric, "train", lambda msg: print(f"[alara train] {msg}", file=sys.stderr))
        resolved = rc.resolved()
        rank, _ = distributed.rank_and_world()
        if rank == 0:
            write_run_files(run_dir, resolved)
        trainer = Trainer(pipeline, objective, data, geometry, rc.train, run_dir, run_info={"config": resolved})
        logs = trainer.fit(resume=resume)
        if rank == 0:
            _write_guard(run_dir, pipeline, rc.data.root, data, geometry, rc.train.seed)
        return logs
    finally:
        distributed.shutdown()
