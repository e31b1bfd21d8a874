"""Data benchmarks: loader throughput (samples/s, 0 and 2 workers) and synthesis time.

Run: ``pytest benchmarks/test_data_bench.py --benchmark-columns=mean,stddev,rounds``.
Throughput is printed in ``extra_info`` (``samples_per_s``); see docs/benchmarks.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from alara.data.reader import LoDoPaBDataset
from alara.data.synth import generate_dataset, small_geometry
from alara.data.writer import SplitWriter
from alara.data.metadata import DatasetInfo, write_metadata

SHAPES = {
    # name: (samples, samples per file, image shape, sinogram shape)
    "small": (512, 128, (128, 128), (180, 181)),
    "lodopab": (64, 32, (362, 362), (1000, 513)),
}


@pytest.fixture(scope="module", params=list(SHAPES))
def data_dir(request, tmp_path_factory):
    n, spf, img, sino = SHAPES[request.param]
    root = tmp_path_factory.mktemp(f"bench_{request.param}")
    rng = np.random.default_rng(0)
    for kind, shape, scale in (("ground_truth", img, 1.0), ("observation", sino, 0.1)):
        with SplitWriter(root, "train", kind, spf) as w:
            for _ in range(n):
                w.append(rng.random(shape, dtype=np.float32) * scale)
    write_metadata(root, DatasetInfo(lengths={"train": n}, samples_per_file=spf,
                                     image_shape=img, sinogram_shape=sino, source="bench"))
    return request.param, root


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_throughput(benchmark, data_dir, workers):
    name, root = data_dir
    ds = LoDoPaBDataset(root, "train")
    loader = DataLoader(ds, batch_size=16, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(0))

    def epoch():
        n = 0
        for batch in loader:
            n += batch["ground_truth"].shape[0]
        return n

    epoch()  # warm-up: start workers, fill the OS page cache
    n = benchmark.pedantic(epoch, rounds=3, iterations=1)
    assert n == len(ds)
    if benchmark.stats is not None:  # None under --benchmark-disable (a smoke run)
        benchmark.extra_info["samples_per_s"] = round(n / benchmark.stats.stats.mean, 1)
    benchmark.extra_info["data"] = name


@pytest.mark.parametrize("backend", ["torch", "native"])
@pytest.mark.parametrize("size", [64, 128])
def test_synthesis_time_per_patient(benchmark, tmp_path, size, backend):
    from alara.ops import native_available

    if backend == "native" and not native_available():
        pytest.skip("alara._C not built")
    geometry = small_geometry(size)
    slices = 4
    counter = iter(range(1000))

    def one_patient():
        generate_dataset(tmp_path / str(next(counter)), patients=(1, 0, 0),
                         slices_per_patient=slices, geometry=geometry, progress=False,
                         backend=backend)

    one_patient()  # warm-up
    benchmark.pedantic(one_patient, rounds=3, iterations=1)
    benchmark.extra_info["slices_per_patient"] = slices
    benchmark.extra_info["geometry"] = f"{size}x{size}, {geometry.n_views} views x {geometry.n_bins} bins"
