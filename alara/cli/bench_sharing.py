"""``alara bench --sharing``: the operators on a machine shared with another process.

On a shared machine two numbers say whether more threads help (issue 23): the slowest
call on N threads beside the other process over the slowest on 1 thread beside it
(more threads must never cost more: target <= 1.1), and the median call on N threads
beside it over the median on N threads alone (target <= 2.2; with N threads of ours and
as many of the other process on N cores a fair scheduler gives us half, i.e. 2.0).
The three settings run in alternation, ``repeats`` times, so that a drift of the
machine's speed falls on all three alike.
"""

from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass, field
from typing import Callable

import torch

# Targets of issue 23 (docs/benchmarks.md).
WORST_RATIO_TARGET = 1.1
MEDIAN_RATIO_TARGET = 2.2
PHASES = ("quiet", "loaded", "loaded_one_thread")


@dataclass
class SharingRow:
    """One case's calls (ms) in the three settings, over all repeats."""

    geometry: str
    op: str
    batch: int
    impl: str
    quiet: list[float] = field(default_factory=list)
    loaded: list[float] = field(default_factory=list)
    loaded_one_thread: list[float] = field(default_factory=list)

    @property
    def worst_ratio(self) -> float:
        """Slowest loaded call on N threads / slowest loaded call on 1 thread."""
        return max(self.loaded) / max(self.loaded_one_thread)

    @property
    def median_ratio(self) -> float:
        """Median loaded call on N threads / median quiet call on N threads."""
        return statistics.median(self.loaded) / statistics.median(self.quiet)


def measure_sharing(run: Callable[..., list], load_context: Callable[[], contextlib.AbstractContextManager],
                    geometries: list[str], batches: list[int], ops_: list[str], dtype: torch.dtype,
                    rounds: int, impls: set[str], threads: int, repeats: int,
                    log: Callable[[str], None] = print) -> list[SharingRow]:
    """Time every case quiet on ``threads`` threads, then beside ``load_context()`` on
    ``threads`` and on 1 thread, ``repeats`` times in that order (``run``: alara.cli.bench's
    timing loop)."""
    if threads < 2:
        raise ValueError(f"--sharing compares N threads with 1; give --threads 2 or more "
                         f"(got {threads})")
    rows: dict[tuple, SharingRow] = {}
    try:
        for rep in range(repeats):
            for phase in PHASES:
                torch.set_num_threads(1 if phase == "loaded_one_thread" else threads)
                ctx = contextlib.nullcontext() if phase == "quiet" else load_context()
                log(f"  sharing: repeat {rep + 1}/{repeats}, {phase.replace('_', ' ')}")
                with ctx:
                    results = run(geometries, batches, ops_, dtype, "cpu", rounds, impls,
                                  log=lambda s: None)
                for r in results:
                    key = (r.geometry, r.op, r.batch, r.impl)
                    row = rows.setdefault(key, SharingRow(*key))
                    getattr(row, phase).extend(r.rounds_ms)
    finally:
        torch.set_num_threads(threads)
    return list(rows.values())


def format_sharing(rows: list[SharingRow], threads: int) -> str:
    """Markdown table of the medians, worst calls and the two ratios against their targets."""
    n = f"{threads} threads"
    head = (f"| geometry | op | batch | implementation | {n} alone: median / worst ms | 1 thread "
            f"loaded | {n} loaded | worst {n} loaded / worst 1 thread loaded (<= "
            f"{WORST_RATIO_TARGET}) | median {n} loaded / alone (<= {MEDIAN_RATIO_TARGET}) |")
    lines = [head, "|" + "---|" * 9]

    def cell(ms: list[float]) -> str:
        return f"{statistics.median(ms):.1f} / {max(ms):.1f}"

    def verdict(value: float, target: float) -> str:
        return f"{value:.2f} " + ("met" if value <= target else "**missed**")

    for r in rows:
        lines.append(f"| {r.geometry} | {r.op} | {r.batch} | {r.impl} | {cell(r.quiet)} | "
                     f"{cell(r.loaded_one_thread)} | {cell(r.loaded)} | "
                     f"{verdict(r.worst_ratio, WORST_RATIO_TARGET)} | "
                     f"{verdict(r.median_ratio, MEDIAN_RATIO_TARGET)} |")
    return "\n".join(lines)
