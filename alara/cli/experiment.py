"""``alara experiment [CONFIG]``: the main job (data, training, calibration, report)."""

from __future__ import annotations

import argparse
from pathlib import Path

#: The default experiment: synthetic patients, a few minutes on 2 CPU cores.
DEFAULT_CONFIG = "configs/experiment.toml"


def _default_config() -> str:
    path = Path(DEFAULT_CONFIG)
    if not path.is_file():
        raise FileNotFoundError(f"{DEFAULT_CONFIG} not found: run from the repository root or pass a config")
    return str(path)


def _run(args: argparse.Namespace) -> int:
    from alara.experiment.report import headline_lines
    from alara.experiment.runner import run_experiment
    from alara.runs import run_lock

    config = args.config or _default_config()
    out = args.out or str(Path("results") / Path(config).stem)
    # The lock first (a second experiment into OUT is refused with the holder's pid); the
    # run writes its record only after checking it against what OUT already holds.
    with run_lock(Path(out)):
        metrics = run_experiment(config, out, args.overrides, progress=not args.quiet, seeds=args.seeds)
    print("\n".join(line.replace("**", "") for line in headline_lines(metrics)))
    print(f"wrote {out}/report.md, metrics.json, results_test.csv and figures/ in {metrics['wall_seconds']:.0f} s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from alara.cli.common import add_set_argument

    p = sub.add_parser("experiment", help="the main job: End2end-ALARA vs fixed, TCM and AEC",
                       description="Generate (or reuse) synthetic patients, train the shared reconstructor "
                                   "and End2end-ALARA, calibrate every policy on the validation split to the "
                                   "same guarantee (a share of images reaching Q >= q), evaluate on the test "
                                   "split and write report.md, metrics.json and figures.  Rerunning with the "
                                   "same --out resumes: finished stages are reused.")
    p.add_argument("config", nargs="?", help=f"experiment TOML (default {DEFAULT_CONFIG})")
    p.add_argument("--out", help="run folder (default results/<config name>)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="train with N seeds (train.seed, +1, ...), each a full run in OUT/seed-K, and report each "
                        "seed's ratios and their spread (default: [experiment] seeds, 1)")
    add_set_argument(p)
    p.set_defaults(func=_run)
