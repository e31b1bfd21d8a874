"""Scheduling of the native CPU operators (csrc/cpu/parallel.h): one parallel region per
operator call on the calling thread's pool of helpers, results independent of the thread
count, errors raised inside the region, the pool's life with its thread and across a
fork (issue 23)."""

from __future__ import annotations

import math
import os
import select
import shutil
import subprocess
import sys
import textwrap
import threading
import time

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
def test_no_openmp_region_per_operator_call(tmp_path):
    """The operators' tasks run on the calling thread's pool of helpers (csrc/cpu/parallel.h)
    and the ATen ops inside an operator call run serially on it: a call opens no OpenMP
    region, whose end would be a barrier waiting for every thread of the team.  Counted
    with a shim over libgomp's GOMP_parallel (each region's entry)."""
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
        assert (int(fp), int(bp)) == (0, 0), f"{name} batch {batch}: {fp} / {bp} regions"


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc to count threads")
def test_pool_helpers_live_and_end_with_their_thread(two_threads):
    """A thread's first operator call on 2 threads starts one helper for it, later calls
    reuse it, and the helper ends with the thread (joined, not leaked)."""
    g = geometries()["fan-curved-offset"]
    y = torch.rand((1, 1) + g.sinogram_shape)
    expected = ops.backproject(y, g, "native")
    seen = {}

    def caller():
        seen["before"] = _threads()
        seen["first"] = ops.backproject(y, g, "native")
        seen["after_first"] = _threads()
        ops.backproject(y, g, "native")
        seen["after_second"] = _threads()

    baseline = _threads()
    t = threading.Thread(target=caller)
    t.start()
    t.join()
    assert torch.equal(seen["first"], expected)
    assert seen["after_first"] == seen["before"] + 1 == seen["after_second"]
    # (join() returns before the thread's C++ thread-locals, the pool among them, are
    # destroyed: give its exit a moment)
    for _ in range(200):
        if _threads() == baseline:
            break
        time.sleep(0.01)
    assert _threads() == baseline


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_the_operators(two_threads):
    """A child forked after the parent's pool started (as DataLoader workers are) has none
    of its helper threads: it must build its own, not wait on the parent's."""
    g = geometries()["parallel-97-views"]
    y = torch.rand((2, 1) + g.sinogram_shape)
    expected = ops.backproject(y, g, "native")  # (the parent's pool exists now)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether its result matches, then leave at once
        ok = False
        try:
            ok = torch.equal(ops.backproject(y, g, "native"), expected)
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 120)
        answer = os.read(read, 1) if ready else b""
    finally:
        if not ready:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(read)
    assert answer == b"1", "the forked child hung" if not answer else "the child's result differs"


def test_threads_calling_at_once_each_get_their_own_pool(two_threads):
    """Three Python threads calling the operators at the same time (each with its own pool
    of helpers) get the results of calls made one after another."""
    g = geometries()["fan-curved-offset"]
    gen = torch.Generator().manual_seed(5)
    ys = [torch.rand((2, 1) + g.sinogram_shape, generator=gen) for _ in range(3)]
    expected = [ops.backproject(y, g, "native") for y in ys]
    got: dict[int, list[torch.Tensor]] = {}
    start = threading.Barrier(3)

    def caller(i):
        start.wait()
        got[i] = [ops.backproject(ys[i], g, "native") for _ in range(4)]

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        assert all(torch.equal(r, expected[i]) for r in got[i]), i
