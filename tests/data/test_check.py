import shutil

import h5py
import numpy as np
import pytest

from alara.cli import main
from alara.data.check import check_dataset
from alara.data.lodopab import data_filename


@pytest.fixture
def copy(synth_dir, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(synth_dir, dst)
    return dst


def test_synthetic_set_passes(synth_dir):
    assert check_dataset(synth_dir) == []


def test_out_of_range_and_nan_values_are_listed(copy):
    gt = copy / data_filename("ground_truth", "train", 0)
    obs = copy / data_filename("observation", "test", 0)
    with h5py.File(gt, "r+") as f:
        f["data"][2, 5, 5] = 1.5
    with h5py.File(obs, "r+") as f:
        f["data"][1, 0, 0] = np.nan
        f["data"][0, 0, 0] = 3.0
    problems = check_dataset(copy)
    # three value problems, and both edited files no longer match their checksums
    assert len(problems) == 5, problems
    text = "\n".join(problems)
    assert f"{gt}: values in [" in text and "1.5], expected within [0, 1]" in text
    assert f"{obs}: NaN or inf in 1 sample(s): 1" in text
    assert f"{obs}: values in" in text
    assert f"{gt}: SHA-256" in text and f"{obs}: SHA-256" in text
    # The header-only check does not read values.
    assert check_dataset(copy, scan_values=False) == []
    assert check_dataset(copy, ["validation"]) == []


def test_structure_problems(copy):
    (copy / data_filename("observation", "train", 2)).unlink()
    (copy / ".ground_truth_train_000.hdf5.abc.tmp").write_bytes(b"")
    (copy / "ground_truth_train_03.hdf5").write_bytes(b"")
    problems = check_dataset(copy)
    text = "\n".join(problems)
    assert "observation train: 1 of 3 files missing" in text
    assert "leftover temporary file" in text
    assert "name outside the LoDoPaB layout" in text
    assert check_dataset(copy / "missing") == [f"{copy / 'missing'}: not a directory"]
    assert "unknown split" in check_dataset(copy, ["dev"])[0]


def test_cli_check_exit_codes(copy, capsys):
    assert main(["data", "check", "-q", str(copy)]) == 0
    assert "OK" in capsys.readouterr().out
    path = copy / data_filename("ground_truth", "validation", 0)
    path.write_bytes(path.read_bytes()[:100])  # truncated download
    assert main(["data", "check", "-q", str(copy)]) == 1
    out = capsys.readouterr().out
    # unreadable, and its bytes no longer match the checksum recorded at write time
    assert "2 problem(s)" in out and str(path) in out and "truncated or corrupt" in out
    assert f"{path}: SHA-256" in out


def test_metadata_problems(copy):
    import json

    meta = copy / "alara_dataset.json"
    d = json.loads(meta.read_text())
    d["sinogram_shape"] = [7, 7]
    meta.write_text(json.dumps(d))
    text = "\n".join(check_dataset(copy, scan_values=False))
    assert "differs from sinogram_shape (7, 7)" in text
    assert "sample shape (24, 45) but the metadata says (7, 7)" in text
    meta.write_text("{not json")
    assert "invalid alara metadata" in check_dataset(copy)[0]
