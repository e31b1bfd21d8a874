"""Scheduling of the native CPU operators (csrc/cpu/parallel.h): one parallel region per
operator call, results independent of the thread count, errors raised inside the region
(issue 23)."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from alara import ops
from alara.geometry import FanBeam, ImageGrid, ParallelBeam, uniform_angles
from alara.ops import backend

if backend.native_module() is None:
    pytest.skip("needs alara._C", allow_module_level=True)

GRID = ImageGrid.square(64, 0.2)


def geometries() -> dict[str, object]:
    """Square grids (the symmetric paths take them) and the per-view paths' geometries."""
    fan_angles = uniform_angles(96, 0, 2 * math.pi)
    return {
        "parallel-symmetric": ParallelBeam(GRID, uniform_angles(96), 91, 0.003),
        "parallel-97-views": ParallelBeam(GRID, uniform_angles(97), 91, 0.003),
        "fan-symmetric": FanBeam(GRID, fan_angles, 91, 0.005, src_radius=0.4, det_radius=0.3),
        "fan-curved-offset": FanBeam(GRID, fan_angles, 91, 0.005, src_radius=0.4, det_radius=0.3,
                                     detector="curved", bin_offset=0.00125),
    }


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("name", list(geometries()))
@pytest.mark.parametrize("batch", [1, 3, 9])
def test_results_do_not_depend_on_the_thread_count(name, batch, two_threads):
    # every task owns its outputs (rays, pixel rows, planes): no reduction order changes
    g = geometries()[name]
    gen = torch.Generator().manual_seed(batch)
    x = torch.rand((batch, 1) + g.grid.shape, generator=gen)
    y = torch.rand((batch, 1) + g.sinogram_shape, generator=gen)
    two = ops.project(x, g, "native"), ops.backproject(y, g, "native")
    torch.set_num_threads(1)
    one = ops.project(x, g, "native"), ops.backproject(y, g, "native")
    assert torch.equal(two[0], one[0]) and torch.equal(two[1], one[1])


def test_an_error_inside_the_region_is_raised_and_the_next_call_works(monkeypatch, two_threads):
    # ALARA_SYMMETRY is read inside the operator's region: a bad value throws there, on the
    # leading thread, while the other thread serves the region's tasks.
    g = geometries()["parallel-symmetric"]
    y = torch.rand((1, 1) + g.sinogram_shape)
    monkeypatch.setenv("ALARA_SYMMETRY", "sometimes")
    with pytest.raises(RuntimeError, match="ALARA_SYMMETRY must be 0"):
        ops.backproject(y, g, "native")
    monkeypatch.delenv("ALARA_SYMMETRY")
    assert ops.backproject(y, g, "native").shape == (1, 1) + g.grid.shape


_COUNTER = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
static long n_regions = 0;
typedef void (*fn_t)(void (*)(void*), void*, unsigned, unsigned);
void GOMP_parallel(void (*f)(void*), void* d, unsigned nt, unsigned fl) {
  static fn_t real = 0;
  if (!real) real = (fn_t)dlsym(RTLD_NEXT, "GOMP_parallel");
  __atomic_add_fetch(&n_regions, 1, __ATOMIC_RELAXED);
  real(f, d, nt, fl);
}
long regions(void) { return n_regions; }
"""

_COUNT = textwrap.dedent("""
    import ctypes, os, sys, torch
    from alara.ops import native
    from alara.ops.raymath import GeometryParams
    sys.path.insert(0, sys.argv[2])
    from test_scheduling import geometries
    lib = ctypes.CDLL(sys.argv[1]); lib.regions.restype = ctypes.c_long
    os.environ.pop("LD_PRELOAD")  # (the shim is loaded; subprocesses need not)
    torch.set_num_threads(2)
    def count(fn):
        fn()
        n = lib.regions(); fn(); return lib.regions() - n
    big = torch.rand(1 << 22)
    print("calibration", count(lambda: big.add(1.0)))  # ATen's own parallel add
    for name, g in geometries().items():
        p = GeometryParams.of(g)
        for batch in (1, 3, 9):
            x = torch.rand((batch, 1) + g.grid.shape)
            y = torch.rand((batch, 1) + g.sinogram_shape)
            print(name, batch, count(lambda: native.project(x, p, g.angles)),
                  count(lambda: native.backproject(y, p, g.angles)))
""")


@pytest.mark.skipif(shutil.which("cc") is None or not sys.platform.startswith("linux"),
                    reason="needs a C compiler on Linux to count OpenMP regions")
def test_one_parallel_region_per_operator_call(tmp_path):
    """Counted with a shim over libgomp's GOMP_parallel (each region's entry)."""
    (tmp_path / "count.c").write_text(_COUNTER)
    lib = tmp_path / "libcount.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", str(tmp_path / "count.c"), "-o", str(lib),
                    "-ldl"], check=True)
    import os

    from pathlib import Path

    env = dict(os.environ, LD_PRELOAD=str(lib))
    r = subprocess.run([sys.executable, "-c", _COUNT, str(lib), str(Path(__file__).parent)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = [line.split() for line in r.stdout.splitlines()]
    if int(lines[0][1]) < 1:
        pytest.skip("torch's threads are not libgomp's here (the shim counts nothing)")
    for name, batch, fp, bp in lines[1:]:
        assert (int(fp), int(bp)) == (1, 1), f"{name} batch {batch}: {fp} / {bp} regions"
