"""No batch-size cliff in the native CPU kernels: per image, a batch never costs much more
than a single image (issue 11: batches of 2-7 used to cost 10x per call).

What is compared is the CPU time of one thread (``time.process_time``), not wall time: on a
shared machine a short call often fits between two preemptions and a longer one does not,
so wall-time ratios of small kernels measure the machine's load rather than the kernels.
The bound is loose: a batch of B may cost up to 1.6 B times a single image, where the old
cliff cost about 10 B; ``alara bench --batch 1-16`` measures the wall-time ratios at full
size (docs/benchmarks.md).
"""

from __future__ import annotations

import time

import pytest
import torch

from alara import ops
from alara.geometry import FanBeam, ImageGrid, lodopab, uniform_angles
from alara.ops import native_available

pytestmark = pytest.mark.skipif(not native_available(), reason="alara._C not built")

GRID = ImageGrid.square(128, 0.26)
GEOMETRIES = {
    "parallel": lodopab(180, 183, 128),
    "fan": FanBeam(GRID, uniform_angles(180, 0, 6.283185307179586), 185, 0.0042,
                   src_radius=0.5, det_radius=0.5),
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _best_ms_pair(fn, one, many, rounds: int = 5) -> tuple[float, float]:
    """Best CPU times (ms) of fn(one) and fn(many), measured alternately."""
    fn(one), fn(many)
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, arg in enumerate((one, many)):
            t0 = time.process_time()
            fn(arg)
            best[i] = min(best[i], time.process_time() - t0)
    return best[0] * 1e3, best[1] * 1e3


@pytest.mark.parametrize("kind", list(GEOMETRIES))
@pytest.mark.parametrize("op", ["fp", "bp"])
def test_per_image_cost_has_no_cliff(kind, op):
    g = GEOMETRIES[kind]
    shape = g.grid.shape if op == "fp" else g.sinogram_shape
    fn = (lambda t: ops.project(t, g, "native")) if op == "fp" else \
         (lambda t: ops.backproject(t, g, "native"))
    single = torch.rand(1, 1, *shape)
    for batch, channels in ((2, 1), (3, 1), (1, 3), (5, 1), (9, 1)):
        one, t = _best_ms_pair(fn, single, torch.rand(batch, channels, *shape))
        n = batch * channels
        assert t / n <= 1.6 * one, (f"{kind} {op}: batch {batch} x {channels} channels costs "
                                    f"{t / n:.2f} ms per image, batch 1 {one:.2f} ms")


@pytest.mark.parametrize("kind", list(GEOMETRIES))
@pytest.mark.parametrize("op", ["fp", "bp"])
def test_batching_pays_from_eight_images(monkeypatch, kind, op):
    """From 8 images on a batch must be cheaper per image than single images (issue 11:
    <= 0.6 at full size; measured 0.2-0.55 there).  12 images: a full block of 8 channels
    and a partial one; 16: two full blocks.  The per-view kernels: on this symmetric fan
    geometry a single image already fills the channel lanes with its own views (see
    test_symmetry_pays_at_batch_one)."""
    monkeypatch.setenv("ALARA_SYMMETRY", "0")
    g = GEOMETRIES[kind]
    shape = g.grid.shape if op == "fp" else g.sinogram_shape
    fn = (lambda t: ops.project(t, g, "native")) if op == "fp" else \
         (lambda t: ops.backproject(t, g, "native"))
    single = torch.rand(1, 1, *shape)
    for batch in (12, 16):
        one, t = _best_ms_pair(fn, single, torch.rand(batch, 1, *shape))
        assert t / batch <= 0.85 * one, (f"{kind} {op}: batch {batch} costs {t / batch:.2f} ms "
                                         f"per image, batch 1 {one:.2f} ms")


@pytest.mark.parametrize("kind, op", [("fan", "fp"), ("fan", "bp"), ("parallel", "bp")])
def test_symmetry_pays_at_batch_one(monkeypatch, kind, op):
    """On a square grid centred on the axis the views come in orbits under the symmetries
    of the square, and one image runs as 8 channels of an eighth of the views (fan beam),
    or of a quarter of the views on half the rows (parallel beam, whose half turn maps
    each view onto itself; csrc/cpu/symmetry.h).  At full size that costs 0.33 (fan fp),
    0.22 (fan bp) and 0.46 (parallel bp) of the per-view time; here it must at least pay
    clearly.  Batches then cost no more per image than that."""
    # The symmetric paths run the 8-lane (AVX2) channel kernels: compared with the per-view
    # kernels of the same width.  (The 16-pixel AVX-512 rows of the parallel beam's batch 1
    # come within 10% of the orbits at full size; tests/ops/test_simd_widths.py.)
    monkeypatch.setenv("ALARA_SIMD", "avx2")
    g = GEOMETRIES[kind]
    shape = g.grid.shape if op == "fp" else g.sinogram_shape
    fn = (lambda t: ops.project(t, g, "native")) if op == "fp" else \
         (lambda t: ops.backproject(t, g, "native"))
    single = torch.rand(1, 1, *shape)
    fn(single)
    per_view = float("inf")
    monkeypatch.setenv("ALARA_SYMMETRY", "0")
    for _ in range(5):
        t0 = time.process_time()
        fn(single)
        per_view = min(per_view, time.process_time() - t0)
    monkeypatch.delenv("ALARA_SYMMETRY")
    for batch in (12, 16):
        one, t = _best_ms_pair(fn, single, torch.rand(batch, 1, *shape))
        assert one <= 0.85 * per_view * 1e3, (f"{kind} {op}: batch 1 costs {one:.2f} ms with "
                                             f"the symmetries, {per_view * 1e3:.2f} ms without")
        assert t / batch <= 1.0 * one, (f"{kind} {op}: batch {batch} costs {t / batch:.2f} ms "
                                        f"per image, batch 1 {one:.2f} ms")
