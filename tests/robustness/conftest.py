"""Bad-input cases: every one runs in a workspace of existing user files (a small data set,
a config, a notes file) and must leave each of them byte-for-byte as it was."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from alara.cli import main
from alara.data.synth import generate_dataset, small_geometry

#: Options of the small data set in every workspace (fast on 2 CPUs).
SMALL = dict(patients=(2, 1, 1), slices_per_patient=2, samples_per_file=2, progress=False)


GEOMETRY = dict(image_size=16, n_angles=12)


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root`` (hidden files included)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def dataset_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("template") / "dataset"
    generate_dataset(root, geometry=small_geometry(**GEOMETRY), seed=3, **SMALL)
    return root


class Workspace:
    """The user's folder: existing files a bad input must not change, lose or add to."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dataset = root / "dataset"
        self.config = root / "config.toml"
        self.notes = root / "notes.txt"
        self.before: dict[str, str] = {}
        self._changes_allowed: set[str] = set()

    def allow_changes_under(self, rel: str) -> None:
        """Declare an output the test means to create or replace."""
        self._changes_allowed.add(rel)

    def _allowed(self, rel: str) -> bool:
        return any(rel == a or rel.startswith(a.rstrip("/") + "/") for a in self._changes_allowed)

    def assert_unchanged(self) -> None:
        after = snapshot(self.root)
        lost = [p for p in self.before if p not in after and not self._allowed(p)]
        changed = [p for p in self.before if p in after and after[p] != self.before[p]
                   and not self._allowed(p)]
        added = [p for p in after if p not in self.before and not self._allowed(p)]
        assert not lost and not changed and not added, (
            f"files lost {lost}, changed {changed}, added {added}")


@pytest.fixture
def ws(tmp_path, dataset_template, monkeypatch) -> Workspace:
    """A workspace as the current directory; checked unchanged after the test."""
    w = Workspace(tmp_path / "ws")
    w.root.mkdir()
    shutil.copytree(dataset_template, w.dataset)
    w.config.write_text('[iq_metric]\nname = "psnr"\n')
    w.notes.write_text("my notes\n")
    w.before = snapshot(w.root)
    monkeypatch.chdir(w.root)
    yield w
    w.assert_unchanged()


@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    @property
    def line(self) -> str:
        """The error: the last non-empty line of stderr."""
        lines = [l for l in self.err.splitlines() if l.strip()]
        assert lines, "no error message"
        return lines[-1]


@pytest.fixture
def cli(capsys):
    """``cli(*argv)``: run ``alara ARGV`` in-process; never a traceback."""

    def run(*argv: str) -> CliResult:
        try:
            rc = main(list(argv))
        except SystemExit as exc:  # argparse reports bad option values this way
            rc = exc.code
        out, err = capsys.readouterr()
        assert "Traceback" not in err + out, err
        return CliResult(rc, out, err)

    return run


@pytest.fixture
def write_kwargs() -> dict:
    """Keyword arguments of ``generate_dataset`` for the workspace's data set."""
    return dict(geometry=small_geometry(**GEOMETRY), **SMALL)
