"""Data sets: bad options never cost the old data set; killed writes are cleaned up; two
writers are refused; what the checker rejects is never written; checksums catch changes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import pytest

from alara.data import DataError, check_dataset, generate_dataset, import_dicom
from alara.data.writer import LOCK_FILE, STAGING_PREFIX, OutputDir


@pytest.mark.parametrize("bad, message", [
    (dict(n0=float("inf")), r"n0 \(--n0\) must be a positive finite number of photons per bin, got inf; LoDoPaB uses 4096"),
    (dict(n0=float("nan")), r"n0 \(--n0\) must be a positive finite number"),
    (dict(samples_per_file=2.5), r"samples_per_file \(--samples-per-file\) must be a whole number >= 1, got 2.5"),
    (dict(upsample=0), r"upsample \(--upsample\) must be >= 1, got 0"),
    (dict(patients=(1.5, 1, 1)), r"patients must be three whole numbers >= 0 .*--train"),
    (dict(slices_per_patient=0), r"slices_per_patient \(--slices\) must be a whole number >= 1"),
])
def test_overwrite_with_bad_options_keeps_the_old_set(ws, write_kwargs, bad, message):
    kw = {**write_kwargs, **bad}
    with pytest.raises(ValueError, match=message):
        generate_dataset(ws.dataset, overwrite=True, **kw)
    assert check_dataset(ws.dataset) == []


def test_import_dicom_with_bad_options_keeps_the_old_set(ws):
    with pytest.raises(ValueError, match=r"n0 \(--n0\) must be a positive finite number"):
        import_dicom([ws.notes], ws.dataset, n0=-1.0, overwrite=True, progress=False)
    with pytest.raises(ValueError, match=r"unknown split 'dev'; expected one of train"):
        import_dicom([ws.notes], ws.dataset, split="dev", overwrite=True, progress=False)


def test_empty_output_path_is_refused(ws, write_kwargs):
    with pytest.raises(ValueError, match="output directory is empty; give the directory"):
        generate_dataset("", **write_kwargs)


def test_a_set_its_checker_rejects_is_never_written(ws, write_kwargs, monkeypatch):
    import alara.data.synth as synth

    # Finite (the writer accepts them) but far outside what post-log data can be.
    monkeypatch.setattr(synth, "simulate_observation",
                        lambda x, g, *a, **k: synth.torch.full((1, 1) + g.sinogram_shape, 5.0))
    with pytest.raises(DataError, match=r"(?s)fails its own check, so it was not written "
                                        r"\(.*dataset is unchanged\).*dataset/observation_train_000"
                                        r".hdf5: values in \[5, 5\]"):
        generate_dataset(ws.dataset, overwrite=True, **write_kwargs)
    assert check_dataset(ws.dataset) == []


def test_leftovers_of_a_killed_write_are_removed_by_the_next(ws, write_kwargs):
    ws.allow_changes_under("dataset")
    tmp = ws.dataset / ".ground_truth_train_000.hdf5.x1y2z3.tmp"
    tmp.write_bytes(b"half a file")
    staging = ws.dataset / f"{STAGING_PREFIX}abc"
    staging.mkdir()
    (staging / "ground_truth_train_000.hdf5").write_bytes(b"half a data set")
    mine = ws.dataset / ".my-own-notes.tmp"  # not alara's: left alone
    mine.write_text("keep")
    problems = "\n".join(check_dataset(ws.dataset))
    assert "leftover temporary file of an interrupted write" in problems
    assert "leftover staging folder of an interrupted write" in problems
    generate_dataset(ws.dataset, overwrite=True, seed=9, **write_kwargs)
    assert not tmp.exists() and not staging.exists() and mine.read_text() == "keep"
    mine.unlink()
    assert check_dataset(ws.dataset) == []


KILLED_WRITER = textwrap.dedent("""
    import sys
    import alara.data.synth as synth
    from alara.data.synth import generate_dataset, small_geometry

    real = synth.simulate_observation
    calls = [0]

    def slow(*args, **kwargs):  # lets the parent kill us midway through the write
        calls[0] += 1
        if calls[0] == 3:
            print("writing", flush=True)
            import time
            time.sleep(60)
        return real(*args, **kwargs)

    synth.simulate_observation = slow
    generate_dataset(sys.argv[1], patients=(2, 1, 1), slices_per_patient=2, samples_per_file=1,
                     geometry=small_geometry(image_size=16, n_angles=12), overwrite=True,
                     progress=False, seed=11)
""")


def _start(script: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"child failed: {proc.stderr.read()}")
    return proc


def test_sigkill_midway_keeps_the_old_set_and_releases_the_lock(ws, write_kwargs):
    ws.allow_changes_under("dataset")
    before = {p.name: p.read_bytes() for p in ws.dataset.iterdir() if p.is_file()}
    proc = _start(KILLED_WRITER, str(ws.dataset))
    assert (ws.dataset / LOCK_FILE).exists()
    with pytest.raises(ValueError, match=rf"dataset is being written by another alara process "
                                         rf"\(pid {proc.pid} holds .*{LOCK_FILE}\); wait for it"):
        generate_dataset(ws.dataset, overwrite=True, **write_kwargs)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close(), proc.stderr.close()
    # The old set is intact (only the killed writer's staging folder and lock file remain).
    after = {p.name: p.read_bytes() for p in ws.dataset.iterdir() if p.is_file()
             and p.name != LOCK_FILE}
    assert after == before
    assert list(ws.dataset.glob(f"{STAGING_PREFIX}*"))
    # The kernel released the lock with the process: the next write goes ahead and cleans up.
    generate_dataset(ws.dataset, overwrite=True, seed=4, **write_kwargs)
    assert not list(ws.dataset.glob(f"{STAGING_PREFIX}*"))
    assert not (ws.dataset / LOCK_FILE).exists()
    assert check_dataset(ws.dataset) == []


def test_second_writer_in_the_same_process_is_refused(ws, write_kwargs):
    with OutputDir(ws.dataset, overwrite=True):
        with pytest.raises(ValueError, match="is being written by another alara process"):
            generate_dataset(ws.dataset, overwrite=True, **write_kwargs)
    # released on exit (also on an error inside the block)
    with pytest.raises(RuntimeError):
        with OutputDir(ws.dataset, overwrite=True):
            raise RuntimeError("boom")
    with OutputDir(ws.dataset, overwrite=True) as out:
        assert out.path.parent == ws.dataset and out.path.name.startswith(STAGING_PREFIX)
    assert not (ws.dataset / LOCK_FILE).exists()


def test_checksum_mismatch_is_reported_by_data_check(ws, cli, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ws.dataset, copy)
    path = copy / "ground_truth_validation_000.hdf5"
    with h5py.File(path, "r+") as f:  # a plausible value: only the checksum can tell
        f["data"][0, 3, 3] = 0.5
    r = cli("data", "check", "-q", str(copy))
    assert r.rc == 1
    assert f"{path}: SHA-256" in r.out and "recorded when it was written" in r.out
    assert "restore it or recreate the data set" in r.out
    assert "1 problem(s)" in r.out


def test_old_data_set_without_checksums_passes_with_a_note(ws, cli, tmp_path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(ws.dataset, copy)
    meta = copy / "alara_dataset.json"
    d = json.loads(meta.read_text())
    del d["checksums"]
    d["format_version"] = 1
    meta.write_text(json.dumps(d))
    r = cli("data", "check", "-q", str(copy))
    assert r.rc == 0 and "OK" in r.out
    assert "note:" in r.err and "records no checksums" in r.err and "rewrite the data set" in r.err


def test_metadata_with_a_non_finite_n0_is_invalid(ws, tmp_path):
    import shutil

    copy = tmp_path / "nan"
    shutil.copytree(ws.dataset, copy)
    meta = copy / "alara_dataset.json"
    meta.write_text(meta.read_text().replace('"n0": 4096.0', '"n0": NaN'))
    problems = check_dataset(copy)
    assert len(problems) == 1
    assert "invalid alara metadata: n0 must be a positive finite number of photons" in problems[0]
