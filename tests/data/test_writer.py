import h5py
import numpy as np
import pytest

from alara.data.writer import SplitWriter, write_hdf5, write_patient_ids


def _files(d):
    return sorted(p.name for p in d.iterdir())


def test_write_hdf5_roundtrip_float32(tmp_path):
    a = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    path = write_hdf5(tmp_path / "ground_truth_train_000.hdf5", a)
    with h5py.File(path, "r") as f:
        assert list(f.keys()) == ["data"]
        assert f["data"].dtype == np.float32
        np.testing.assert_array_equal(f["data"][()], a.astype(np.float32))
    assert _files(tmp_path) == ["ground_truth_train_000.hdf5"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = write_hdf5(tmp_path / "x.hdf5", np.zeros((1, 2, 2)))

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_hdf5(path, np.ones((1, 2, 2)))
    monkeypatch.undo()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["data"][()], np.zeros((1, 2, 2)))
    assert _files(tmp_path) == ["x.hdf5"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_exception_mid_write_leaves_nothing(tmp_path, monkeypatch, exc):
    real = h5py.Group.create_dataset

    def half_then_fail(self, name, data=None, **kwargs):
        real(self, name, data=data[: len(data) // 2], **kwargs)  # bytes are on disk...
        raise exc("interrupted")                                  # ...then the write dies

    monkeypatch.setattr(h5py.Group, "create_dataset", half_then_fail)
    with pytest.raises(exc):
        write_hdf5(tmp_path / "ground_truth_test_000.hdf5", np.ones((4, 2, 2)))
    with pytest.raises(exc):
        with SplitWriter(tmp_path, "test", "observation", samples_per_file=2) as w:
            w.extend(np.ones((3, 2, 2)))
    assert _files(tmp_path) == []  # no final name, no temporary file


def test_nan_is_refused_before_anything_is_written(tmp_path):
    a = np.zeros((1, 2, 2))
    a[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write_hdf5(tmp_path / "y.hdf5", a)
    assert _files(tmp_path) == []


def test_split_writer_chunks_files(tmp_path):
    with SplitWriter(tmp_path, "train", "ground_truth", samples_per_file=4) as w:
        for i in range(10):
            w.append(np.full((3, 3), i))
    assert w.n_written == 10
    assert _files(tmp_path) == [f"ground_truth_train_00{i}.hdf5" for i in range(3)]
    sizes = []
    for i in range(3):
        with h5py.File(tmp_path / f"ground_truth_train_00{i}.hdf5", "r") as f:
            sizes.append(f["data"].shape[0])
            assert f["data"][0, 0, 0] == 4 * i
    assert sizes == [4, 4, 2]


def test_split_writer_rejects_shape_change_and_discards_on_error(tmp_path):
    with pytest.raises(ValueError, match="differs"):
        with SplitWriter(tmp_path, "test", "observation", samples_per_file=4) as w:
            for _ in range(5):
                w.append(np.zeros((2, 3)))
            w.append(np.zeros((3, 2)))
    # The full first file was written; the partial second one never appears.
    assert _files(tmp_path) == ["observation_test_000.hdf5"]
    with pytest.raises(ValueError, match="2-D"):
        SplitWriter(tmp_path, "test", "observation").append(np.zeros(3))


def test_write_patient_ids(tmp_path):
    p = write_patient_ids(tmp_path, "validation", [3, 3, 10])
    assert p.name == "patient_ids_rand_validation.csv"
    assert p.read_text() == "3\n3\n10\n"


def test_output_dir_stages_checks_and_records_checksums(tmp_path):
    import hashlib

    from alara.data.metadata import DatasetInfo, read_metadata
    from alara.data.writer import LOCK_FILE, OutputDir

    root = tmp_path / "set"
    with OutputDir(root) as out:
        assert (root / LOCK_FILE).exists() and out.path.parent == root
        with SplitWriter(out.path, "test", "ground_truth", samples_per_file=2) as w:
            w.extend(np.full((3, 4, 4), 0.5))
        write_patient_ids(out.path, "test", [0, 0, 1])
        assert _files(root) == sorted([LOCK_FILE, out.path.name])  # nothing final yet
        info = out.commit(DatasetInfo(lengths={"test": 3}, samples_per_file=2,
                                      image_shape=(4, 4), sinogram_shape=None, source="test"))
    names = ["ground_truth_test_000.hdf5", "ground_truth_test_001.hdf5",
             "patient_ids_rand_test.csv"]
    assert _files(root) == sorted(names + ["alara_dataset.json"])  # no lock, no staging
    assert sorted(info.checksums) == names
    for name in names:
        assert info.checksums[name] == hashlib.sha256((root / name).read_bytes()).hexdigest()
    assert read_metadata(root).checksums == info.checksums


def test_output_dir_commit_refuses_what_the_checker_rejects(tmp_path):
    from alara.data.layout import DataError
    from alara.data.metadata import DatasetInfo
    from alara.data.writer import OutputDir

    root = tmp_path / "set"
    with pytest.raises(DataError, match=r"(?s)fails its own check.*1 of 1 files missing"):
        with OutputDir(root) as out:  # metadata promises a sample that was never written
            out.commit(DatasetInfo(lengths={"test": 1}, image_shape=(4, 4),
                                   sinogram_shape=None, source="test"))
    assert _files(root) == []
