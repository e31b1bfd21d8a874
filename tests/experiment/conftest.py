"""Running a CI-sized experiment config end to end, as the tests here need it."""

from __future__ import annotations

from pathlib import Path

from alara.cli import main


def run_experiment_cli(config: Path, folder: Path) -> tuple[Path, list[str]]:
    """``alara experiment CONFIG`` into ``folder/run`` with its data cache in
    ``folder/cache``; returns the run folder and the arguments (to run it again)."""
    out = folder / "run"
    args = ["experiment", str(config), "--out", str(out), "-q", "--set", f"experiment.data_cache=\"{folder / 'cache'}\""]
    assert main(args) == 0
    return out, args
