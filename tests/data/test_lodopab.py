import numpy as np
import pytest
import torch

from alara.data.lodopab import (
    LODOPAB_LENGTHS, data_filename, hu_to_mu, hu_to_x, n_files, observation_max,
    parse_data_filename, patient_ids_filename, valid_in_last_file,
)
from alara.geometry import LODOPAB_MU_MAX


def test_file_names_match_lodopab():
    assert data_filename("ground_truth", "train", 7) == "ground_truth_train_007.hdf5"
    assert data_filename("observation", "validation", 27) == "observation_validation_027.hdf5"
    assert patient_ids_filename("test") == "patient_ids_rand_test.csv"
    assert parse_data_filename("observation_test_027.hdf5") == ("observation", "test", 27)
    assert parse_data_filename("observation_test_27.hdf5") is None
    assert parse_data_filename("ground_truth_dev_000.hdf5") is None


@pytest.mark.parametrize("kind,split", [("truth", "train"), ("observation", "val")])
def test_bad_names_rejected(kind, split):
    with pytest.raises(ValueError):
        data_filename(kind, split, 0)


def test_lodopab_split_files_and_last_file_quirk():
    # Published: 280 / 28 / 28 files; the last file holds the remainder.
    assert [n_files(LODOPAB_LENGTHS[s]) for s in ("train", "validation", "test")] == [280, 28, 28]
    assert valid_in_last_file(35820) == 35820 - 128 * 279 == 108
    assert valid_in_last_file(3522) == 66
    assert valid_in_last_file(3553) == 97
    assert valid_in_last_file(256) == 128
    assert n_files(0) == 0 and valid_in_last_file(0) == 0


def test_hu_conversion_recipe():
    assert hu_to_mu(0.0) == pytest.approx(20.0)
    assert hu_to_mu(-1000.0) == pytest.approx(0.02)
    x = hu_to_x(np.array([-1000.0, 0.0, 5000.0, -3000.0]))
    np.testing.assert_allclose(x, [0.02 / LODOPAB_MU_MAX, 20 / LODOPAB_MU_MAX, 1.0, 0.0])
    t = hu_to_x(torch.tensor([0.0, 4000.0]))
    assert isinstance(t, torch.Tensor) and t[1] == 1.0


def test_observation_max_is_min_count_bin():
    assert observation_max() == pytest.approx(np.log(4096 / 0.1) / LODOPAB_MU_MAX)
