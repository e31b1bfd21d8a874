"""Benchmark plumbing: collect mean times per group and print ratios to the reference peer.

Every timed case records ``(group, name) -> mean seconds``; at the end of the session a
table shows each case's ratio to the group's reference (``astra-line`` where present), so
the comparison is between runs in the same process on the same (noisy) machine.
"""

from __future__ import annotations

import os
import sys

import pytest

# Benchmark modules share helpers (peers.py) that live beside them, not in the package.
sys.path.insert(0, os.path.dirname(__file__))

_RESULTS: dict[str, dict[str, float]] = {}
_NOTES: list[tuple[str, str]] = []
REFERENCE = "astra-line"


@pytest.fixture
def note():
    """``note(title, text)``: a section printed at the end of the session (a table a
    benchmark makes itself).  (A fixture: a module importing this file by name would get
    a second copy of it, whose notes the summary never sees.)"""

    def add(title: str, text: str) -> None:
        _NOTES.append((title, text))

    return add


def record(group: str, name: str, benchmark) -> None:
    """Store the mean of a finished pytest-benchmark run."""
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        _RESULTS.setdefault(group, {})[name] = stats.stats.mean


@pytest.fixture
def timed(benchmark, request):
    """``timed(group, name, fn, *args, rounds=3)``: benchmark ``fn(*args)`` and record it."""

    def run(group: str, name: str, fn, *args, rounds: int = 3):
        benchmark.group = group
        result = benchmark.pedantic(fn, args=args, rounds=rounds, iterations=1, warmup_rounds=1)
        record(group, name, benchmark)
        return result

    return run


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    for title, text in _NOTES:
        tr.section(title)
        for line in text.splitlines():
            tr.write_line(line)
    if not _RESULTS:
        return
    tr.section("alara: ratios to the reference in each group (lower is faster)")
    for group in sorted(_RESULTS):
        times = _RESULTS[group]
        ref = times.get(REFERENCE)
        for name, t in sorted(times.items(), key=lambda kv: kv[1]):
            ratio = f"{t / ref:7.3f}x {REFERENCE}" if ref else "   (no reference)"
            tr.write_line(f"{group:<28} {name:<22} {t * 1e3:10.1f} ms  {ratio}")
