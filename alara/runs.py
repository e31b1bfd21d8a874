"""A run's lifecycle in the library: open a split of a data set, write a run folder's
record of its configuration and environment.  The commands (``alara.cli``) and the
experiment (``alara.experiment``) both call these; nothing here imports ``alara.cli``."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Optional

__all__ = ["environment", "open_split", "write_run_files"]


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
