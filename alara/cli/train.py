"""``alara train CONFIG``: train a dose policy and a reconstructor (see alara.train)."""

from __future__ import annotations

import argparse

from alara.cli.common import add_set_argument
from alara.runs import RESUME_OPT_IN, default_run_dir, train_run


def _run(args: argparse.Namespace) -> int:
    logs = train_run(args.config, args.out, args.resume, args.overrides, overwrite=args.overwrite,
                     allow_changes=args.allow_change)
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
                   help="continue from the run folder's newest valid checkpoint (the whole configuration and "
                        "the data geometry must be those the run recorded)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run files (config, logs, checkpoints) of an existing run folder")
    p.add_argument("--allow-change", action="append", default=[], metavar="KEY", choices=RESUME_OPT_IN,
                   help=f"with --resume: accept a new value of KEY ({', '.join(RESUME_OPT_IN)}); the change and "
                        "the step where it happened are recorded in changes.json; repeatable")
    add_set_argument(p)
    p.set_defaults(func=_run)
