"""Property: whatever the split length and samples per file, the writer and the reader agree
(file count, last-file rule, order), with and without metadata."""

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings, strategies as st

from alara.data.check import check_dataset
from alara.data.lodopab import n_files
from alara.data.metadata import DatasetInfo, write_metadata
from alara.data.reader import LoDoPaBDataset
from alara.data.writer import SplitWriter


@settings(max_examples=25, deadline=None)
@given(length=st.integers(1, 23), spf=st.integers(1, 7), metadata=st.booleans())
def test_writer_reader_roundtrip(length, spf, metadata):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        samples = np.arange(length * 6, dtype=np.float32).reshape(length, 2, 3) / (length * 6)
        with SplitWriter(root, "test", "ground_truth", spf) as w:
            w.extend(samples)
        assert len(list(root.glob("ground_truth_test_*.hdf5"))) == n_files(length, spf)
        if metadata:
            write_metadata(root, DatasetInfo(lengths={"test": length}, samples_per_file=spf,
                                             image_shape=(2, 3), sinogram_shape=None))
            assert check_dataset(root) == []
        ds = LoDoPaBDataset(root, "test", length=None if metadata else length)
        assert len(ds) == length
        got = np.stack([ds[i]["ground_truth"][0].numpy() for i in range(length)])
        np.testing.assert_array_equal(got, samples)
