"""Every file goes through one atomic writer (alara.atomic): a full disk is one line naming
the path and what was left intact, never a partial file, never a crash (HDF5 included)."""

from __future__ import annotations

import errno

import pytest

from alara import atomic

SYNTH = ("data", "synth", "out", "-q", "--image-size", "16", "--n-angles", "12",
         "--train", "1", "--validation", "0", "--test", "0", "--slices", "1")


def full_disk(monkeypatch, after: int = 0) -> None:
    """Every write through the atomic writer fails with ENOSPC after ``after`` bytes."""
    def write_all(fd, data):
        import os
        os.write(fd, data[:after])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_write_all", write_all)


def test_full_disk_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    path.write_text("old\n")
    full_disk(monkeypatch, after=2)
    with pytest.raises(atomic.WriteError) as info:
        atomic.write_text(path, "new content\n")
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (f"{path}: cannot write (No space left on device (free some space or "
                               "write elsewhere)); the previous config.json is intact and no partial "
                               "file was left")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_atomic_writer_fsyncs_file_and_directory(tmp_path, monkeypatch):
    synced = []
    real = atomic.os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    atomic.write_text(tmp_path / "a.txt", "x")
    assert len(synced) == 2  # the file, then its directory


def test_full_disk_while_writing_hdf5_is_one_line(ws, cli, monkeypatch):
    """alara data synth on a full disk: no segfault, one line naming the file."""
    full_disk(monkeypatch, after=100)
    r = cli(*SYNTH)
    assert r.rc == 1
    assert r.line.startswith("alara data synth: error: out/")
    assert "ground_truth_train_000.hdf5: cannot write (No space left on device" in r.line
    assert "was not created and no partial file was left" in r.line
    assert not [p for p in (ws.root / "out").rglob("*") if p.is_file()]


def test_checkpoint_on_a_full_disk_names_it_and_keeps_the_older_ones(tmp_path, monkeypatch):
    import torch

    from alara.train.checkpoint import list_checkpoints, load_latest, save_checkpoint

    save_checkpoint(tmp_path, 1, {"w": torch.zeros(3)})
    full_disk(monkeypatch, after=10)
    with pytest.raises(atomic.WriteError, match=r"step_0000002.pt: cannot write \(No space left"):
        save_checkpoint(tmp_path, 2, {"w": torch.ones(3)})
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert load_latest(tmp_path)["step"] == 1
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


def test_progress_in_a_log_is_plain_lines(ws, cli, monkeypatch):
    """stderr is not a terminal (here: captured): no bar frames, a plain line at the end."""
    monkeypatch.setenv("ALARA_PROGRESS_EVERY", "0")
    args = [a for a in SYNTH if a != "-q"]
    r = cli(*args)
    assert r.rc == 0
    ws.allow_changes_under("out")
    assert "\r" not in r.err
    assert "alara data synth: 1/1 slice (100%)" in r.err


def test_commands_write_through_the_shared_writer_not_the_data_package():
    """train, evaluate, the experiment and the CLI import the writer from alara.atomic."""
    from pathlib import Path

    root = Path(atomic.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "data" not in p.relative_to(root).parts[:1] and "alara.data.writer import" in p.read_text()]
    assert not offenders
