"""Logging callbacks of the trainer: a JSONL + CSV metrics log and TensorBoard events.

Callbacks see ``on_start(step)``, ``on_log(step, logs)`` and ``on_end(step)``; the trainer
calls them on rank 0 only.  On resume the metrics log drops the lines of steps after the
checkpoint (they are trained again), so the log never holds a step twice.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Protocol, Union

__all__ = ["Callback", "MetricsLog", "TensorBoardLog", "read_metrics"]

PathLike = Union[str, Path]


class Callback(Protocol):
    """What the trainer calls (every method optional in practice: define the three)."""

    def on_start(self, step: int) -> None: ...
    def on_log(self, step: int, logs: dict[str, Any]) -> None: ...
    def on_end(self, step: int) -> None: ...


def read_metrics(path: PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a torn last line from a kill is ignored)."""
    out = []
    path = Path(path)
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class MetricsLog:
    """``metrics.jsonl`` (one JSON record per logged step) and ``metrics.csv`` (the same,
    rewritten atomically at the end with every key seen as a column)."""

    def __init__(self, run_dir: PathLike) -> None:
        self.jsonl = Path(run_dir) / "metrics.jsonl"
        self.csv = Path(run_dir) / "metrics.csv"

    def on_start(self, step: int) -> None:
        kept = [r for r in read_metrics(self.jsonl) if int(r.get("step", -1)) <= step]
        self._rewrite(kept)

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        from alara.atomic import atomic_file

        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.jsonl) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))

    def on_log(self, step: int, logs: dict[str, Any]) -> None:
        # Appended, not rewritten: a torn last line (kill, full disk) is skipped on reading.
        try:
            with self.jsonl.open("a") as fh:
                fh.write(json.dumps({"step": step, **logs}) + "\n")
                fh.flush()
        except OSError as exc:
            from alara.atomic import WriteError

            raise WriteError(exc.errno, f"{self.jsonl}: cannot append the metrics of step {step} "
                                        f"({exc.strerror or exc}); the lines already logged and the "
                                        f"checkpoints are intact") from exc

    def on_end(self, step: int) -> None:
        from alara.atomic import atomic_file

        records = read_metrics(self.jsonl)
        keys: list[str] = []
        for r in records:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)
        with atomic_file(self.csv) as tmp:
            tmp.write_text(buf.getvalue())


class TensorBoardLog:
    """TensorBoard event files under ``RUN/tensorboard`` (skipped, with one warning, when
    the ``tensorboard`` package is missing)."""

    def __init__(self, run_dir: PathLike) -> None:
        self.dir = Path(run_dir) / "tensorboard"
        self.writer: Optional[Any] = None

    def on_start(self, step: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard is a dependency, but may be removed
            warnings.warn(f"TensorBoard logging is off ({exc}); pip install tensorboard", stacklevel=2)
            return
        # purge_step drops events after the resumed step, as the metrics log does.
        self.writer = SummaryWriter(os.fspath(self.dir), purge_step=step + 1 if step else None)

    def on_log(self, step: int, logs: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in logs.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)

    def on_end(self, step: int) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
