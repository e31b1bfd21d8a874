"""``alara train CONFIG``: train a dose policy and a reconstructor (see alara.train)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alara.cli.common import add_set_argument, open_split, write_run_files


def default_run_dir(config: str) -> Path:
    """``runs/<config file stem>``."""
    return Path("runs") / Path(config).stem


def train(config: str, out: str | None = None, resume: bool = False, overrides: list[str] = ()) -> dict:
    """Build everything from the config, train, and return the last logs."""
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
        return trainer.fit(resume=resume)
    finally:
        distributed.shutdown()


def _run(args: argparse.Namespace) -> int:
    logs = train(args.config, args.out, args.resume, args.overrides)
    run = args.out or default_run_dir(args.config)
    if logs:
        print(f"trained {run}: loss {logs['loss']:.4g}, relative dose "
              f"{logs['relative_dose']:.3g}, quality {logs['quality']:.3f}")
    print(f"run folder: {run} (checkpoints, metrics.jsonl, tensorboard/); evaluate with `alara evaluate {run}`")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a dose policy and reconstructor from a TOML config",
                       description="Warm up the reconstructor over a range of doses, then train the "
                                   "dose policy and the reconstructor jointly on the constrained hinge "
                                   "(dose + lambda * max(0, q - Q)).  Data come from [data] root (ground "
                                   "truth; noise is simulated on the fly).  Multi-GPU / multi-node: "
                                   "torchrun --nproc_per_node=N -m alara train CONFIG.")
    p.add_argument("config", help="TOML config (components, [data], [objective], [train], [eval])")
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's newest valid checkpoint")
    add_set_argument(p)
    p.set_defaults(func=_run)
