import pickle

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from alara.data import layout as layout_mod
from alara.data.check import check_dataset
from alara.data.layout import DataError
from alara.data.lodopab import data_filename
from alara.data.metadata import DatasetInfo, write_metadata
from alara.data.reader import LoDoPaBDataset
from alara.data.writer import write_hdf5, write_patient_ids


def _fake_split(root, split, length, spf, gt_shape=(4, 4), obs_shape=(3, 5), pad_last=True,
                seed=0):
    """A LoDoPaB-style split: values encode the sample index; last file padded to spf."""
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0, 1, (length,) + gt_shape).astype(np.float32)
    obs = rng.uniform(0, 0.1, (length,) + obs_shape).astype(np.float32)
    n = -(-length // spf)
    for i in range(n):
        g, o = gt[i * spf:(i + 1) * spf], obs[i * spf:(i + 1) * spf]
        if pad_last and len(g) < spf:  # LoDoPaB pads the last ground-truth file
            g = np.concatenate([g, np.zeros((spf - len(g),) + gt_shape, np.float32)])
        write_hdf5(root / data_filename("ground_truth", split, i), g)
        write_hdf5(root / data_filename("observation", split, i), o)
    return gt, obs


def test_lodopab_test_split_without_metadata(tmp_path):
    # The published test split at tiny image sizes: 28 files of 128, only 97 valid in the last.
    gt, obs = _fake_split(tmp_path, "test", 3553, 128)
    ids = np.repeat(np.arange(40), 90)[:3553]
    write_patient_ids(tmp_path, "test", ids)
    ds = LoDoPaBDataset(tmp_path, "test")
    assert len(ds) == 3553 and not ds.has_metadata
    assert ds.layout.samples_per_file == 128
    for i in (0, 127, 128, 3455, 3456, 3552, -1):
        item = ds[i]
        np.testing.assert_array_equal(item["ground_truth"][0].numpy(), gt[i])
        np.testing.assert_array_equal(item["observation"][0].numpy(), obs[i])
        assert item["patient_id"] == ids[i]
    assert item["ground_truth"].shape == (1, 4, 4) and item["observation"].shape == (1, 3, 5)
    with pytest.raises(IndexError):
        ds[3553]
    assert ds.geometry.n_views == 1000  # LoDoPaB's geometry when no metadata
    # `alara data check` accepts the published quirk (padded last ground-truth file) ...
    assert check_dataset(tmp_path, ["test"]) == []
    # ... and, without metadata, reports the splits that were not downloaded.
    missing = "\n".join(check_dataset(tmp_path, scan_values=False))
    assert "ground_truth train: 280 of 280 files missing" in missing
    assert "observation validation: 28 of 28 files missing" in missing


def test_samples_per_file_inferred_and_length_override(tmp_path):
    gt, _ = _fake_split(tmp_path, "train", 11, 5)
    ds = LoDoPaBDataset(tmp_path, "train", length=11)
    assert ds.layout.samples_per_file == 5 and len(ds) == 11
    np.testing.assert_array_equal(ds[10]["ground_truth"][0].numpy(), gt[10])
    assert ds[3]["patient_id"] == -1


def test_lodopab_lengths_used_without_metadata(tmp_path, monkeypatch):
    monkeypatch.setattr(layout_mod, "LODOPAB_LENGTHS", {"train": 9, "validation": 2, "test": 2})
    _fake_split(tmp_path, "train", 9, 4)
    assert len(LoDoPaBDataset(tmp_path, "train")) == 9
    # One missing, one extra file: both listed in one error.
    (tmp_path / data_filename("observation", "train", 1)).unlink()
    write_hdf5(tmp_path / data_filename("ground_truth", "train", 3), np.zeros((4, 4, 4)))
    with pytest.raises(DataError) as e:
        LoDoPaBDataset(tmp_path, "train")
    msg = str(e.value)
    assert "2 problem(s)" in msg
    assert "observation_train_001.hdf5" in msg and "ground_truth_train_003.hdf5" in msg


def _meta_dir(tmp_path, length=6, spf=4):
    gt, obs = _fake_split(tmp_path, "validation", length, spf, pad_last=False)
    write_metadata(tmp_path, DatasetInfo(lengths={"validation": length}, samples_per_file=spf,
                                         image_shape=(4, 4), sinogram_shape=(3, 5),
                                         source="test"))
    return gt, obs


def test_metadata_lengths_and_shapes(tmp_path):
    gt, _ = _meta_dir(tmp_path)
    ds = LoDoPaBDataset(tmp_path, "validation")
    assert len(ds) == 6 and ds.has_metadata and ds.geometry is None
    np.testing.assert_array_equal(ds[5]["ground_truth"][0].numpy(), gt[5])
    with pytest.raises(DataError, match="not listed in the metadata"):
        LoDoPaBDataset(tmp_path, "train")
    with pytest.raises(ValueError, match="unknown split"):
        LoDoPaBDataset(tmp_path, "val")


def test_ground_truth_only_and_missing_observations(tmp_path):
    _meta_dir(tmp_path)
    for p in tmp_path.glob("observation_*"):
        p.unlink()
    ds = LoDoPaBDataset(tmp_path, "validation")
    assert "observation" not in ds[0] and not ds.observations
    with pytest.raises(DataError, match="observation validation: 2 of 2 files missing"):
        LoDoPaBDataset(tmp_path, "validation", observations=True)


@pytest.mark.parametrize("damage,match", [
    ("truncate", "not a readable HDF5 file"),
    ("garbage", "not a readable HDF5 file"),
    ("key", "no dataset 'data'"),
    ("dtype", "dtype float64"),
    ("shape", "expected \\(samples, height, width\\)"),
    ("sample_shape", "differs from"),
    ("count", "2 samples, expected 4"),
])
def test_bad_files_name_the_file(tmp_path, damage, match):
    _meta_dir(tmp_path, length=9)
    path = tmp_path / data_filename("ground_truth", "validation", 1)
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not hdf5 at all" * 100)
    else:
        path.unlink()
        with h5py.File(path, "w") as f:
            if damage == "key":
                f["images"] = np.zeros((4, 4, 4), np.float32)
            elif damage == "dtype":
                f["data"] = np.zeros((4, 4, 4), np.float64)
            elif damage == "shape":
                f["data"] = np.zeros((4, 16), np.float32)
            elif damage == "sample_shape":
                f["data"] = np.zeros((4, 5, 5), np.float32)
            elif damage == "count":
                f["data"] = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(DataError, match=match) as e:
        LoDoPaBDataset(tmp_path, "validation")
    assert str(path) in str(e.value)


def test_nan_sample_raises_naming_file(tmp_path):
    _meta_dir(tmp_path)
    path = tmp_path / data_filename("observation", "validation", 1)
    with h5py.File(path, "r+") as f:
        f["data"][1, 0, 0] = np.nan
    ds = LoDoPaBDataset(tmp_path, "validation")
    ds[4]  # the other sample in that file is fine
    with pytest.raises(DataError, match="sample 1 contains NaN") as e:
        ds[5]
    assert str(path) in str(e.value)
    assert torch.isnan(LoDoPaBDataset(tmp_path, "validation", check_finite=False)[5]["observation"]).any()


def test_patient_id_count_mismatch(tmp_path):
    _meta_dir(tmp_path)
    write_patient_ids(tmp_path, "validation", [1, 2, 3])
    with pytest.raises(DataError, match="3 patient ids for 6 samples"):
        LoDoPaBDataset(tmp_path, "validation")
    (tmp_path / "patient_ids_rand_validation.csv").write_text("1\nabc\n")
    with pytest.raises(DataError, match="not an integer patient id"):
        LoDoPaBDataset(tmp_path, "validation")


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="not found"):
        LoDoPaBDataset(tmp_path / "nope", "train")


def test_no_file_is_held_open_by_init(tmp_path):
    _meta_dir(tmp_path)
    ds = LoDoPaBDataset(tmp_path, "validation")
    assert ds._handles == {}
    ds[0]
    assert len(ds._handles) == 2
    ds.close()
    assert ds._handles == {}


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_workers(synth_dir, workers):
    ds = LoDoPaBDataset(synth_dir, "train")
    ds[0]  # the parent opens files first: forked workers must not reuse those handles
    loader = DataLoader(ds, batch_size=4, num_workers=workers, shuffle=False)
    batches = list(loader)
    got = torch.cat([b["ground_truth"] for b in batches])
    want = torch.stack([ds[i]["ground_truth"] for i in range(len(ds))])
    assert got.shape == (len(ds), 1, 32, 32)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(len(ds)))
    assert batches[0]["observation"].shape == (4, 1, 24, 45)


def test_pickle_drops_handles(synth_dir):
    ds = LoDoPaBDataset(synth_dir, "test")
    a = ds[1]["observation"]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handles == {}
    torch.testing.assert_close(clone[1]["observation"], a)
