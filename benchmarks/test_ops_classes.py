"""Native operators on the geometry classes of issue 23, per thread, and on a shared machine.

Run: ``python -m pytest benchmarks/test_ops_classes.py --benchmark-only -s``

Per thread (one torch thread, as ASTRA's CPU projectors use one) every class of
``alara bench --geometry`` without the square's symmetries, and the symmetric LoDoPaB and
fan for comparison, at batch 1 and 8 against ASTRA's CPU line projector (``line_fanflat``
for fan beams, on the nearest geometry ASTRA has: a curved fan as the flat one, a detector
offset dropped); target <= 0.15x.  The summary (benchmarks/conftest.py) prints each
case's ratio to ``astra-line``.

``test_shared_machine`` runs ``alara bench --sharing``'s measurement (two threads alone,
then beside another PyTorch process doing 2-thread work, on two threads and on one, in
alternation) on two classes and prints its table with the targets: worst two-thread
loaded call / worst one-thread loaded call <= 1.1, median loaded / alone <= 2.2.
"""

from __future__ import annotations

import pytest
import torch

from alara import ops
from alara.cli import bench
from alara.cli.bench_sharing import format_sharing, measure_sharing
from alara.geometry import ParallelBeam
from alara.ops import backend

import peers  # benchmarks/ is put on sys.path by benchmarks/conftest.py

if backend.native_module() is None:
    pytest.skip("alara._C is not built", allow_module_level=True)

CLASSES = ["lodopab", "fan", "fan-curved", "parallel-1001", "off-centre", "non-square",
           "fan-offset", "fan-short", "fan-997"]
BATCHES = (1, 8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def cases():
    """Each class's geometry and inputs, built once."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name in CLASSES:
        g = bench.bench_geometry(name)
        for b in BATCHES:
            out[name, b] = (g, torch.rand(b, 1, *g.grid.shape, generator=gen),
                            torch.rand(b, 1, *g.sinogram_shape, generator=gen))
    return out


def _rounds(batch: int) -> int:
    return 3 if batch == 1 else 1


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["fp", "bp"])
def test_native(timed, cases, name, batch, op):
    g, x, y = cases[name, batch]
    fn = ops.project if op == "fp" else ops.backproject
    timed(f"{op} {name} b{batch}", "alara-native", fn, x if op == "fp" else y, g, "native",
          rounds=_rounds(batch))


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["fp", "bp"])
def test_astra_cpu(timed, cases, name, batch, op):
    g, x, y = cases[name, batch]
    projector = "line" if isinstance(g, ParallelBeam) else "line_fanflat"
    fwd, bwd = peers.astra_cpu(bench.peer_geometry(g, name), projector)
    # (under the reference's name, whichever ASTRA projector it is, so the summary divides by it)
    timed(f"{op} {name} b{batch}", "astra-line", fwd if op == "fp" else bwd,
          (x if op == "fp" else y).numpy(), rounds=_rounds(batch))


def test_shared_machine(benchmark, note):
    """Two threads alone and beside a 2-thread torch process (the shared-machine targets)."""
    def measure():
        return measure_sharing(bench.run, lambda: bench.BusyLoad(1, "torch", 2),
                               ["lodopab", "fan-short"], [1], ["fp", "bp"], torch.float32,
                               rounds=7, impls={"native"}, threads=2, repeats=2,
                               log=lambda s: None)

    torch.set_num_threads(2)
    try:
        rows = benchmark.pedantic(measure, rounds=1, iterations=1)
    finally:
        torch.set_num_threads(1)
    table = format_sharing(rows, 2)
    note("alara: shared machine (alara bench --sharing --geometry lodopab,fan-short)", table)
    benchmark.extra_info["sharing"] = table
