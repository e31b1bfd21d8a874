"""Lesion truth of synthetic data sets: the sidecar, lesion-free ground truth, the reader
and the checker (alara.data.lesions)."""

import json
import math
import shutil
import tempfile

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.utils.data import DataLoader

from alara.cli import main
from alara.data.check import check_dataset
from alara.data.layout import DataError
from alara.data.lesions import (
    CONVENTION, LESION_COLUMNS, LesionRecord, lesion_free_root, lesion_tensor, lesions_path,
    read_lesions, world_to_pixel, write_lesions,
)
from alara.data.lodopab import data_filename, hu_to_x
from alara.data.metadata import read_metadata, write_metadata
from alara.data.phantoms import sample_patient, slice_positions
from alara.data.reader import LoDoPaBDataset
from alara.data.synth import generate_dataset, small_geometry
from alara.geometry import ImageGrid

# 64 x 64 pixels of 4 mm: lesions of 3-10 mm are 0.7-2.5 pixels in radius.
SIZE = 64
SEED = 4


@pytest.fixture(scope="module")
def lesion_dir(tmp_path_factory):
    """Ground truth only, with lesion-free truth, slices through the lesions."""
    root = tmp_path_factory.mktemp("lesions")
    generate_dataset(root, patients=(8, 1, 0), slices_per_patient=3,
                     geometry=small_geometry(SIZE, 8), samples_per_file=8, seed=SEED,
                     observations=False, lesion_free=True, lesion_slices=True, progress=False)
    return root


@pytest.fixture
def copy(lesion_dir, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(lesion_dir, dst)
    return dst


def _host(background: np.ndarray, les: LesionRecord) -> bool:
    """Whether the lesion's host tissue fills its disk in the lesion-free
    image: then the whole cross-section was painted (phantoms paints host tissue only)."""
    rows, cols = np.indices(background.shape)
    # Every pixel that overlaps the disk has its centre within r + sqrt(2)/2.
    disk = np.hypot(rows - les.row, cols - les.col) <= les.radius_px + 0.71
    lo, hi = (0.0, hu_to_x(-500.0)) if les.in_lung else (hu_to_x(-200.0), hu_to_x(200.0))
    values = background[disk]
    return bool(disk.any() and ((values > lo) & (values < hi)).all())


def test_recorded_lesions_match_the_rendered_signal(lesion_dir):
    ds = LoDoPaBDataset(lesion_dir, "train")
    table = read_lesions(lesion_dir, "train")
    rows, cols = np.indices((SIZE, SIZE))
    whole = 0
    for i, sample in enumerate(table.samples):
        item = ds[i]
        bg = item["background"][0].double().numpy()
        diff = item["ground_truth"][0].double().numpy() - bg
        near_any = np.zeros(diff.shape, dtype=bool)
        for k, les in enumerate(sample):
            near = np.hypot(rows - les.row, cols - les.col) <= les.radius_px + 1.5
            near_any |= near
            signal = diff * near
            # Every recorded lesion was painted.
            assert np.abs(signal).sum() > 0, (i, k, les)
            isolated = all(math.hypot(o.row - les.row, o.col - les.col)
                           > o.radius_px + les.radius_px + 3 for o in sample if o is not les)
            if not isolated:
                continue
            assert np.sign(signal.sum()) == np.sign(les.contrast), (i, k, les)
            if not _host(bg, les):
                continue  # partly outside its host tissue: only part of it is painted
            whole += 1
            weight = np.abs(signal)
            centroid = ((weight * rows).sum() / weight.sum(), (weight * cols).sum() / weight.sum())
            assert abs(centroid[0] - les.row) < 0.5 and abs(centroid[1] - les.col) < 0.5, (
                i, k, centroid, les)
            # Area at the partial volume of the averaged-down fine rendering: each pixel
            # counts the fraction of it the lesion covers.
            area = signal.sum() / les.contrast
            assert abs(math.sqrt(area / math.pi) - les.radius_px) < 0.5, (i, k, area, les)
            centre = diff[int(round(les.row)), int(round(les.col))] / les.contrast
            if les.radius_px >= 1.5:  # the centre pixel lies wholly inside the disk
                assert centre == pytest.approx(1.0, abs=1e-3), (i, k, les)
            else:
                assert 0 < centre <= 1 + 1e-3, (i, k, les)
            assert les.contrast == pytest.approx(les.contrast_hu * (20 - 0.02) / 1000 / 81.35858)
            assert les.radius_mm == pytest.approx(les.radius_px * 260 / SIZE)
        # Nothing but the recorded lesions differs.
        assert np.abs(diff[~near_any]).max(initial=0) == 0, i
    assert whole >= 3, f"only {whole} lesions lie wholly in their host tissue: weak test"


def test_world_to_pixel_and_convention():
    grid = ImageGrid.square(4, 0.4)  # pixel centres at -0.15, -0.05, 0.05, 0.15
    assert world_to_pixel(grid, -0.15, 0.15) == pytest.approx((0.0, 3.0))
    assert world_to_pixel(grid, 0.0, 0.0) == pytest.approx((1.5, 1.5))
    assert "row" in CONVENTION and "integer" in CONVENTION


def test_sidecar_format(lesion_dir):
    doc = json.loads(lesions_path(lesion_dir, "train").read_text())
    assert doc["version"] == 1 and doc["convention"] == CONVENTION
    assert doc["pixel_size_m"] == pytest.approx(0.26 / SIZE)
    assert len(doc["samples"]) == 24
    keys = {"row", "col", "radius_px", "radius_mm", "contrast", "contrast_hu", "in_lung",
            "patient_lesion"}
    lesions = [les for sample in doc["samples"] for les in sample]
    assert lesions and all(set(les) == keys for les in lesions)
    assert all(isinstance(les["in_lung"], bool) for les in lesions)
    # The lesions' patients: each sample's lesion index points into its patient's lesions.
    ids = LoDoPaBDataset(lesion_dir, "train").patient_ids
    seeds = _patient_seeds(SEED, 9)
    for pid, sample in zip(ids, doc["samples"]):
        patient = sample_patient(seeds[pid], pid)
        for les in sample:
            truth = patient.lesions[les["patient_lesion"]]
            assert les["contrast_hu"] == pytest.approx(truth.contrast)
            assert les["in_lung"] == truth.in_lung


def _patient_seeds(seed, n):
    master = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2 ** 31, (n,), generator=master).tolist()


def test_reader_items_and_collate(lesion_dir):
    ds = LoDoPaBDataset(lesion_dir, "train")
    assert ds.has_lesions and ds.has_background and ds.lesion_columns == LESION_COLUMNS
    table = read_lesions(lesion_dir, "train")
    width = max(len(s) for s in table.samples)
    for i in (0, 9, 23):
        item = ds[i]
        lesions, sample = item["lesions"], table.samples[i]
        assert lesions.shape == (width, 5) and lesions.dtype == torch.float32
        want = [[les.row, les.col, les.radius_px, les.contrast, float(les.in_lung)] for les in sample]
        torch.testing.assert_close(lesions[:len(sample)], torch.tensor(want, dtype=torch.float32).reshape(-1, 5))
        assert (lesions[len(sample):] == 0).all()
        with h5py.File(lesion_free_root(lesion_dir) / data_filename("ground_truth", "train", i // 8),
                       "r", locking=False) as f:
            np.testing.assert_array_equal(item["background"][0].numpy(), f["data"][i % 8])
        assert item["background"].shape == item["ground_truth"].shape
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["lesions"].shape == (5, width, 5)
    assert batch["background"].shape == (5, 1, SIZE, SIZE)


def test_lesion_tensor_is_at_least_one_row(tmp_path, lesion_dir):
    # A split whose samples have no lesions still collates: one zero row each.
    shutil.copytree(lesion_dir, tmp_path / "d")
    write_lesions(tmp_path / "d", "validation", [[]] * 3, 0.26 / SIZE)
    _drop_checksums(tmp_path / "d", "lesions/lesions_validation.json")
    ds = LoDoPaBDataset(tmp_path / "d", "validation")
    assert ds[2]["lesions"].shape == (1, 5) and (ds[2]["lesions"] == 0).all()


def _drop_checksums(root, *names):
    info = read_metadata(root)
    for name in names:
        info.checksums.pop(name, None)
    write_metadata(root, info)


def test_data_set_without_lesion_truth_still_reads(copy):
    # As written before lesion truth existed: no sub-folders, nothing about them recorded.
    shutil.rmtree(copy / "lesions")
    shutil.rmtree(copy / "lesion_free")
    info = read_metadata(copy)
    info.extra = {k: v for k, v in info.extra.items() if k not in ("lesion_free", "lesion_slices")}
    info.checksums = {n: v for n, v in info.checksums.items() if "/" not in n}
    write_metadata(copy, info)
    ds = LoDoPaBDataset(copy, "train")
    assert not ds.has_lesions and not ds.has_background
    assert set(ds[0]) == {"ground_truth", "patient_id", "index"}
    assert check_dataset(copy) == []


def test_lesion_free_option_changes_nothing_else(tmp_path):
    kw = dict(patients=(2, 0, 0), slices_per_patient=2, geometry=small_geometry(32, 8),
              seed=5, progress=False)
    generate_dataset(tmp_path / "a", **kw)
    generate_dataset(tmp_path / "b", lesion_free=True, **kw)
    for kind in ("ground_truth", "observation"):
        with h5py.File(tmp_path / "a" / data_filename(kind, "train", 0)) as fa, \
                h5py.File(tmp_path / "b" / data_filename(kind, "train", 0)) as fb:
            np.testing.assert_array_equal(fa["data"][()], fb["data"][()])
    assert lesions_path(tmp_path / "a", "test").exists()  # always written, even when empty
    assert not lesion_free_root(tmp_path / "a").exists()
    assert read_metadata(tmp_path / "b").extra["lesion_free"] is True
    # Overwriting without the option removes the old lesion-free files.
    generate_dataset(tmp_path / "b", overwrite=True, **kw)
    assert not lesion_free_root(tmp_path / "b").exists()
    assert not LoDoPaBDataset(tmp_path / "b", "train").has_background
    assert check_dataset(tmp_path / "b") == []


def test_lesion_slices_go_through_every_lesion():
    for seed in range(20):
        patient = sample_patient(seed, 0)
        n = len(patient.lesions)
        ts = slice_positions(patient, n + 2, through_lesions=True)
        assert len(ts) == n + 2 and ts == sorted(ts)
        assert all(les.t in ts for les in patient.lesions)
        assert slice_positions(patient, 1, through_lesions=True) == [patient.lesions[0].t]
        # the others: as without the option
        rest = [t for t in ts if t not in [les.t for les in patient.lesions]]
        assert rest == slice_positions(patient, 2)


def test_lesion_slices_put_lesions_in_more_samples(tmp_path, lesion_dir):
    generate_dataset(tmp_path, patients=(8, 1, 0), slices_per_patient=3,
                     geometry=small_geometry(SIZE, 8), samples_per_file=8, seed=SEED,
                     observations=False, progress=False)
    with_lesion = {}
    for name, root in (("spread", tmp_path), ("through", lesion_dir)):
        samples = read_lesions(root, "train").samples
        with_lesion[name] = sum(bool(s) for s in samples) / len(samples)
    assert with_lesion["through"] > with_lesion["spread"] + 0.2, with_lesion
    assert read_metadata(lesion_dir).extra["lesion_slices"] is True
    assert read_metadata(tmp_path).extra["lesion_slices"] is False


def _edit_sidecar(root, edit):
    path = lesions_path(root, "train")
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


def _first_lesion(doc):
    return next(les for sample in doc["samples"] for les in sample)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["samples"].pop(), "23 samples for a split of 24"),
    (lambda d: _first_lesion(d).update(row=float("nan")), "row must be a finite number"),
    (lambda d: _first_lesion(d).update(col=SIZE + 3.0), "lesion centre(s) outside the 64 x 64"),
    (lambda d: _first_lesion(d).update(radius_px=-1.0), "radius must be >= 0"),
    (lambda d: _first_lesion(d).update(in_lung=1), "in_lung must be true or false"),
    (lambda d: d.update(pixel_size_m=0.001), "pixel_size_m 0.001 but the geometry's"),
])
def test_check_catches_a_damaged_sidecar(copy, edit, message):
    path = _edit_sidecar(copy, edit)
    problems = check_dataset(copy, scan_values=False)
    assert any(str(path) in p and message in p for p in problems), problems
    assert "recreate the data set" in "\n".join(problems)
    with pytest.raises(DataError, match="lesions_train.json"):
        LoDoPaBDataset(copy, "train")
    LoDoPaBDataset(copy, "validation")  # the other split is intact


def test_check_catches_lesion_free_problems(copy):
    table = read_lesions(copy, "train")
    path = lesion_free_root(copy) / data_filename("ground_truth", "train", 1)
    i = next(i for i in range(8, 16) if not table.samples[i] or table.samples[i][0].row > 20)
    with h5py.File(path, "r+") as f:
        f["data"][i - 8, 2, 2] += 0.01  # far from every lesion
    text = "\n".join(check_dataset(copy))
    # only the first few samples are compared: the damage is in file 1
    assert f"{path}: SHA-256" in text and "differs from the ground truth" not in text
    path0 = lesion_free_root(copy) / data_filename("ground_truth", "train", 0)
    with h5py.File(path0, "r+") as f:
        f["data"][0, 2, 2] += 0.01
        f["data"][1, 3, 3] = np.nan
    text = "\n".join(check_dataset(copy))
    assert f"{path0}: sample 0 differs from the ground truth at 1 pixel(s) away from its " \
           f"recorded lesions (first at row 2, col 2)" in text
    assert f"{path0}: NaN or inf in 1 sample(s): 1" in text
    (lesion_free_root(copy) / data_filename("ground_truth", "validation", 0)).unlink()
    text = "\n".join(check_dataset(copy, scan_values=False))
    assert "ground_truth validation: 1 of 1 files missing" in text
    with pytest.raises(DataError, match="lesion-free ground truth"):
        LoDoPaBDataset(copy, "validation")


def test_cli_synth_lesion_options(tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["data", "synth", str(out), "--train", "1", "--validation", "0", "--test", "1",
                 "--slices", "2", "--image-size", "32", "--n-angles", "8", "-q",
                 "--lesion-free", "--lesion-slices"]) == 0
    assert main(["data", "check", "-q", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    extra = read_metadata(out).extra
    assert extra["lesion_free"] is True and extra["lesion_slices"] is True
    ds = LoDoPaBDataset(out, "test")
    assert ds.has_lesions and ds.has_background and "observation" in ds[1]


_finite = st.floats(-1e3, 1e3, allow_nan=False)
_records = st.builds(LesionRecord, row=_finite, col=_finite, radius_px=st.floats(0, 50),
                     radius_mm=st.floats(0, 50), contrast=_finite, contrast_hu=_finite,
                     in_lung=st.booleans(), patient_lesion=st.integers(0, 9))


@settings(max_examples=30, deadline=None)
@given(samples=st.lists(st.lists(_records, max_size=4), max_size=6))
def test_sidecar_roundtrip(samples):
    with tempfile.TemporaryDirectory() as d:
        write_lesions(d, "test", samples, 0.002)
        table = read_lesions(d, "test")
        assert table.samples == samples and table.pixel_size_m == 0.002
        tensor = lesion_tensor(samples)
        assert tensor.shape == (len(samples), max([len(s) for s in samples] + [1]), 5)
        for i, sample in enumerate(samples):
            for k, les in enumerate(sample):
                assert tensor[i, k, 4] == float(les.in_lung)
                assert tensor[i, k, 2] == pytest.approx(les.radius_px, rel=1e-6, abs=1e-30)
