"""Native operators (alara._C) on the LoDoPaB geometry vs pure torch and ASTRA CPU.

Run: ``python -m pytest benchmarks/test_ops_native.py --benchmark-only -s``

Every case of a group runs in the same session on the same data; the summary at the end
(benchmarks/conftest.py) prints each case's ratio to ``astra-line``.  For the fan-beam
groups ``astra-line`` is ASTRA's ``line_fanflat`` (its fan-beam line projector).
The ASTRA convention is checked in tests/ops/test_peers.py; ``alara bench`` runs the
same comparison as a command and is what docs/benchmarks.md quotes.  ``test_peak_memory``
prints the extra memory of FP + backward at batch 8 (autograd saves no intermediates).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from alara import ops
from alara.cli import bench
from alara.geometry import lodopab
from alara.ops import backend

import peers  # benchmarks/ is put on sys.path by benchmarks/conftest.py

if backend.native_module() is None:
    pytest.skip("alara._C is not built", allow_module_level=True)

PARALLEL = lodopab()
FAN = bench.fan_geometry("flat")  # the same grid, 1000 views over 2 pi, 513 bins
GEOMETRIES = {"lodopab": PARALLEL, "fan": FAN, "fan-curved": bench.fan_geometry("curved")}
BATCHES = (1, 8)
ASTRA = {"lodopab": {"line": "line", "linear": "linear"}, "fan": {"line": "line_fanflat"}}
SWEEP = tuple(range(1, 17))


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name, g in GEOMETRIES.items():
        for b in BATCHES:
            out[name, b] = (torch.rand(b, 1, *g.grid.shape, generator=gen),
                            torch.rand(b, 1, *g.sinogram_shape, generator=gen))
    return out


def _rounds(batch: int) -> int:
    return 3 if batch == 1 else 2


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["fp", "bp"])
def test_native(timed, data, geometry, batch, op):
    g = GEOMETRIES[geometry]
    x, y = data[geometry, batch]
    fn = ops.project if op == "fp" else ops.backproject
    timed(f"{op} {geometry} b{batch}", "alara-native", fn, x if op == "fp" else y, g,
          "native", rounds=5 if batch == 1 else 3)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["fp", "bp"])
def test_torch(timed, data, geometry, batch, op):
    g = GEOMETRIES[geometry]
    x, y = data[geometry, batch]
    fn = ops.project if op == "fp" else ops.backproject
    timed(f"{op} {geometry} b{batch}", "alara-torch", fn, x if op == "fp" else y, g, "torch",
          rounds=_rounds(batch) - 1)


@pytest.mark.parametrize("geometry, projector",
                         [("lodopab", "line"), ("lodopab", "linear"), ("fan", "line")])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["fp", "bp"])
def test_astra_cpu(timed, data, geometry, projector, batch, op):
    fwd, bwd = peers.astra_cpu(GEOMETRIES[geometry], ASTRA[geometry][projector])
    x, y = data[geometry, batch]
    arg = (x if op == "fp" else y).numpy()
    timed(f"{op} {geometry} b{batch}", f"astra-{projector}", fwd if op == "fp" else bwd, arg,
          rounds=_rounds(batch))


@pytest.mark.parametrize("geometry", ["lodopab", "fan"])
@pytest.mark.parametrize("batch", SWEEP)
@pytest.mark.parametrize("op", ["fp", "bp"])
def test_native_batch_sweep(timed, geometry, batch, op):
    """Batch 1..16: per image, a batch must never cost more than batch 1 (issue 11)."""
    g = GEOMETRIES[geometry]
    shape = g.grid.shape if op == "fp" else g.sinogram_shape
    arg = torch.rand(batch, 1, *shape, generator=torch.Generator().manual_seed(batch))
    fn = ops.project if op == "fp" else ops.backproject
    timed(f"sweep {op} {geometry} b{batch:02d}", "alara-native", fn, arg, g, "native", rounds=2)


_MEMORY_SCRIPT = r"""
import json, sys, torch
from alara import ops
from alara.geometry import lodopab

def status(key):  # kB
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

g = lodopab()
backend = sys.argv[1]
x = torch.rand(8, 1, 362, 362, requires_grad=True)
w = torch.rand(8, 1, 1000, 513)
ops.project(x[:1].detach(), g, backend)  # warm-up (allocator, tables)
saved = []
def keep(t):
    saved.append(t.numel() * t.element_size())
    return t
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak resident set size (VmHWM) to the current one
before = status("VmRSS:")
with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
    y = ops.project(x, g, backend)
(y * w).sum().backward()
peak = status("VmHWM:")
print(json.dumps({"peak_rss_increase_mb": (peak - before) / 1024,
                  "saved_bytes": sum(saved)}))
"""


@pytest.mark.parametrize("backend_name", ["native", "torch"])
def test_peak_memory(backend_name, benchmark):
    """Peak memory of FP + backward at batch 8 (fresh process; inputs 4 MB, sinogram 16 MB)."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, backend_name],
                         capture_output=True, text=True, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    benchmark.extra_info.update(info)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print(f"\nFP + backward, batch 8, {backend_name}: peak RSS +{info['peak_rss_increase_mb']:.1f} MB,"
          f" autograd saved {info['saved_bytes']} bytes")
    if backend_name == "native":
        assert info["saved_bytes"] <= 8 * PARALLEL.n_views  # only the float64 angles
