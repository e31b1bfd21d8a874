"""Checkpoints: everything needed to resume a run exactly, or to rebuild its pipeline.

Each checkpoint is one file, ``checkpoints/step_NNNNNNN.pt``, written by
:func:`alara.atomic.write_bytes` (temporary name in the same directory, fsync, rename),
so a kill at any moment leaves either the old set of checkpoints or the old set plus one
complete new file.  Loading tries the newest first and falls back, with a warning naming
both, to the previous valid one when a file is corrupt or truncated.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import torch

from alara.atomic import write_bytes

__all__ = ["CHECKPOINT_DIR", "CheckpointError", "CheckpointWarning", "checkpoint_path",
           "list_checkpoints", "save_checkpoint", "load_checkpoint", "load_latest",
           "clean_temporary"]

#: Sub-directory of a run folder that holds the checkpoints.
CHECKPOINT_DIR = "checkpoints"
_NAME_RE = re.compile(r"^step_(\d{7,})\.pt$")
#: Bumped when the payload layout changes incompatibly.
FORMAT = 1

PathLike = Union[str, Path]


class CheckpointError(ValueError):
    """No usable checkpoint (none written yet, or every one is damaged)."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of an older one."""


def checkpoint_path(run_dir: PathLike, step: int) -> Path:
    """``RUN/checkpoints/step_0000100.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{int(step):07d}.pt"


def list_checkpoints(run_dir: PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint file of a run, oldest first."""
    d = Path(run_dir) / CHECKPOINT_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME_RE.match(p.name))]
    return sorted(found)


def clean_temporary(run_dir: PathLike) -> list[Path]:
    """Delete leftover temporary files of a write that was killed; returns them."""
    d = Path(run_dir) / CHECKPOINT_DIR
    gone = []
    if d.is_dir():
        for p in d.glob(".step_*.tmp"):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def save_checkpoint(run_dir: PathLike, step: int, payload: dict[str, Any], keep: int = 3) -> Path:
    """Write ``payload`` (with ``step`` and the format number added) atomically as the
    checkpoint of ``step``, then delete all but the newest ``keep`` checkpoints."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialise to memory first: a failure while pickling never touches the disk.
    buf = io.BytesIO()
    torch.save({**payload, "step": int(step), "format": FORMAT}, buf)
    write_bytes(path, buf.getbuffer())
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read one checkpoint; a damaged or foreign file is a :class:`CheckpointError`."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # truncated zip, unpickling garbage...: all mean "damaged"
        raise CheckpointError(f"{path}: damaged checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or "step" not in payload or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an alara checkpoint of format {FORMAT}")
    return payload


def load_latest(run_dir: PathLike, map_location: Any = "cpu") -> Optional[dict[str, Any]]:
    """The newest valid checkpoint of a run (``None`` if the run has none); damaged newer
    files are skipped with a :class:`CheckpointWarning` naming the file used instead."""
    found = list_checkpoints(run_dir)
    damaged: list[str] = []
    for _, path in reversed(found):
        try:
            payload = load_checkpoint(path, map_location)
        except CheckpointError as exc:
            damaged.append(str(exc))
            continue
        if damaged:
            warnings.warn(f"skipped damaged checkpoint(s) ({'; '.join(damaged)}); resuming from "
                          f"{path}", CheckpointWarning, stacklevel=2)
        payload["path"] = str(path)
        return payload
    if damaged:
        raise CheckpointError(f"{run_dir}: every checkpoint is damaged: {'; '.join(damaged)}")
    return None
