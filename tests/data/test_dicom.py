import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from alara.cli import main
from alara.data.check import check_dataset
from alara.data.dicom import crop_to_grid, import_dicom, read_ct_slice, resample_to_grid
from alara.data.layout import DataError
from alara.data.lodopab import hu_to_x
from alara.data.reader import LoDoPaBDataset
from alara.data.synth import small_geometry
from alara.geometry import ImageGrid

CT = get_testdata_file("CT_small.dcm")


def test_read_ct_small_in_hu():
    s = read_ct_slice(CT)
    raw = pydicom.dcmread(CT).pixel_array
    np.testing.assert_array_equal(s.hu, raw.astype(np.float64) - 1024.0)  # slope 1, icpt -1024
    assert s.spacing == pytest.approx((0.000661468, 0.000661468))
    assert s.hu.shape == (128, 128)


def test_resample_same_spacing_is_exact_and_upright():
    s = read_ct_slice(CT)
    grid = ImageGrid.square(128, 128 * s.spacing[0])
    hu = resample_to_grid(s.hu, s.spacing, grid).double().numpy()
    # LoDoPaB stores pixel_array.T: axis 0 = DICOM columns, axis 1 = rows (anterior first).
    np.testing.assert_allclose(hu, s.hu.T, atol=1e-3)


def test_crop_is_lodopabs_recipe():
    s = read_ct_slice(CT)
    out = crop_to_grid(s.hu, (100, 90))
    # LoDoPaB: pixel_array[75:-75, 75:-75].T for 512 -> 362; here rows 19:109, cols 14:114.
    np.testing.assert_array_equal(out.numpy(), s.hu[19:109, 14:114].T)
    noisy = crop_to_grid(s.hu, (100, 90), generator=torch.Generator().manual_seed(0)) - out
    assert 0 <= noisy.min() and noisy.max() < 1 and noisy.std() > 0.2  # uniform [0, 1) HU
    with pytest.raises(ValueError, match="smaller than"):
        crop_to_grid(s.hu, (130, 128))


def test_import_crop_mode_ignores_spacing(tmp_path):
    geometry = small_geometry(96, 16)
    path = _broken(tmp_path, "spacing")
    import_dicom([path], tmp_path / "out", geometry=geometry, mode="crop", observations=True,
                 progress=False)
    x = LoDoPaBDataset(tmp_path / "out", "test")[0]["ground_truth"][0].double()
    s = read_ct_slice(CT)
    want = hu_to_x(torch.from_numpy(s.hu[16:112, 16:112].T.copy()))
    assert (x - want).abs().max() < 1.0 * 20 / 1000 / 81.35858 + 1e-6  # up to 1 HU of noise
    assert check_dataset(tmp_path / "out") == []
    with pytest.raises(DataError, match="smaller than the 362 x 362 crop") as e:
        import_dicom([path], tmp_path / "o2", mode="crop", progress=False)
    assert str(path) in str(e.value) and not (tmp_path / "o2").exists()


def test_resample_area_average_and_air_outside():
    hu = np.full((40, 40), 100.0)
    hu[:, 20:] = -100.0  # left half of the columns 100, right half -100
    grid = ImageGrid.square(8, 0.04)  # 5 mm pixels over a 40 mm (1 mm spacing) slice -> inside
    out = resample_to_grid(hu, (0.001, 0.001), grid)
    assert out.dtype == torch.float64
    assert out[0].allclose(torch.tensor(100.0, dtype=torch.float64))
    assert out[-1].allclose(torch.tensor(-100.0, dtype=torch.float64))
    assert out.mean().item() == pytest.approx(0.0, abs=1e-3)
    big = resample_to_grid(hu, (0.001, 0.001), ImageGrid.square(16, 0.16))
    assert big[0, 0] == -1000.0 and big[8, 8] != -1000.0


def test_import_ct_small(tmp_path):
    geometry = small_geometry(64, 32)
    info = import_dicom([CT], tmp_path, geometry=geometry, progress=False)
    assert info.lengths == {"test": 1} and info.sinogram_shape is None
    assert check_dataset(tmp_path) == []
    x = LoDoPaBDataset(tmp_path, "test")[0]["ground_truth"][0]
    assert x.shape == (64, 64)
    s = read_ct_slice(CT)
    want = hu_to_x(resample_to_grid(s.hu, s.spacing, geometry.grid))
    torch.testing.assert_close(x, want.float())
    assert x[0, 0] == pytest.approx(0.02 / 81.35858, rel=1e-5)   # air outside the slice
    assert 0.2 < x.max() <= 1.0


def test_import_with_observations_and_directory(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    ds = pydicom.dcmread(CT)
    for k in range(3):
        ds.ImagePositionPatient = [0, 0, float(5 - k)]
        ds.save_as(src / f"s{k}.dcm")
    (src / "notes.txt").write_text("not dicom")  # skipped inside a directory
    out = tmp_path / "out"
    import_dicom([src], out, split="validation", geometry=small_geometry(32, 16),
                 observations=True, samples_per_file=2, progress=False)
    assert check_dataset(out) == []
    data = LoDoPaBDataset(out, "validation")
    assert len(data) == 3 and data[2]["observation"].shape == (1, 16, 45)
    assert data.patient_ids.tolist() == [0, 0, 0]


def _broken(tmp_path, how):
    ds = pydicom.dcmread(CT)
    if how == "modality":
        ds.Modality = "MR"
    elif how == "pixels":
        del ds.PixelData
    elif how == "spacing":
        del ds.PixelSpacing
    elif how == "sagittal":
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    path = tmp_path / f"{how}.dcm"
    ds.save_as(path)
    return path


@pytest.mark.parametrize("how,match", [
    ("modality", "modality is 'MR', not 'CT'"),
    ("pixels", "no pixel data"),
    ("spacing", "no PixelSpacing"),
    ("sagittal", "not an axial slice"),
])
def test_bad_dicom_clear_errors(tmp_path, how, match):
    path = _broken(tmp_path, how)
    with pytest.raises(DataError, match=match) as e:
        import_dicom([path], tmp_path / "out", progress=False)
    assert str(path) in str(e.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_not_dicom_named_explicitly(tmp_path):
    p = tmp_path / "x.dcm"
    p.write_text("hello")
    with pytest.raises(DataError, match="not a DICOM file"):
        import_dicom([p], tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="no such file"):
        import_dicom([tmp_path / "nope.dcm"], tmp_path / "out", progress=False)


def test_cli_import_dicom(tmp_path, capsys):
    out = tmp_path / "imp"
    assert main(["data", "import-dicom", str(out), CT, "--image-size", "48", "-q"]) == 0
    assert "1 test slices from 1 patient(s)" in capsys.readouterr().out
    assert LoDoPaBDataset(out, "test")[0]["ground_truth"].shape == (1, 48, 48)
    bad = _broken(tmp_path, "modality")
    assert main(["data", "import-dicom", str(tmp_path / "o2"), str(bad), "-q"]) == 1
    assert "not 'CT'" in capsys.readouterr().err
