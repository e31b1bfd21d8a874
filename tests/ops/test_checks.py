"""Input checks of the operators: the same clear error for non-finite input on CPU, and
no host-device synchronisation per operator call on CUDA (issue 23)."""

from __future__ import annotations

import math

import pytest
import torch

from alara import ops
from alara.ops import backend, checks
from alara.testing import small_geometries

GEOMETRY = small_geometries()["parallel"]
BACKENDS = ["torch"] + (["native"] if backend.native_module() is not None else [])


def _bad(shape, dtype, values):
    t = torch.zeros((1, 1) + shape, dtype=dtype)
    for i, v in enumerate(values):
        t.view(-1)[7 * i + 3] = v
    return t


@pytest.mark.parametrize("impl", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("values", [[math.nan], [math.inf], [-math.inf], [math.inf, -math.inf],
                                    [1.0, math.nan, -math.inf]])
def test_non_finite_input_raises_the_same_error(impl, dtype, values):
    x = _bad(GEOMETRY.grid.shape, dtype, values)
    with pytest.raises(ValueError, match="^x contains NaN or infinite values$"):
        ops.project(x, GEOMETRY, impl)
    y = _bad(GEOMETRY.sinogram_shape, dtype, values)
    with pytest.raises(ValueError, match="^y contains NaN or infinite values$"):
        ops.backproject(y, GEOMETRY, impl)


@pytest.mark.parametrize("dtype, big", [(torch.float32, 3e38), (torch.float16, 6e4),
                                        (torch.float64, 1e308)])
def test_finite_values_whose_sum_overflows_are_accepted(dtype, big):
    # the one-reduction check sees an infinite sum here and must fall back to the exact test
    x = torch.full((1, 1) + GEOMETRY.grid.shape, big, dtype=dtype)
    assert not bool(torch.isfinite(x.sum()))
    checks.check_finite_values(x, "x")  # no error
    checks.check_finite_values(-x, "x")
    with pytest.raises(ValueError, match="x contains NaN"):
        checks.check_finite_values(torch.cat([x, _bad(GEOMETRY.grid.shape, dtype, [math.nan])]), "x")


def test_the_check_keeps_the_input_out_of_autograd():
    x = torch.rand((1, 1) + GEOMETRY.grid.shape, requires_grad=True)
    checks.check_finite_values(x, "x")
    y = ops.project(x, GEOMETRY, "torch")
    y.sum().backward()
    assert x.grad is not None


@pytest.mark.skipif(backend.native_module() is None, reason="needs alara._C")
def test_angles_copied_to_a_device_once_per_tensor():
    from alara.ops import native

    # the meta device stands in for a GPU: any device other than the angles' own
    meta = torch.device("meta")
    a = torch.linspace(0, 1, 5, dtype=torch.float64)
    first = native._angles_on(a, meta)
    assert first.device == meta and native._angles_on(a, meta) is first
    a.add_(1.0)  # modified in place: copied again
    assert native._angles_on(a, meta) is not first
    b = a.clone()
    assert native._angles_on(b, meta) is not native._angles_on(a, meta)
    assert native._angles_on(a, torch.device("cpu")) is a  # same device: no copy


needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or not backend.native_available(torch.device("cuda")),
    reason="needs a CUDA GPU and alara._C built with CUDA")


@needs_cuda
@pytest.mark.parametrize("kind", list(small_geometries()))
def test_operator_calls_do_not_synchronise_on_cuda(kind):
    g = small_geometries()[kind]
    x = torch.rand((2, 1) + g.grid.shape, device="cuda", requires_grad=True)
    y = torch.rand((2, 1) + g.sinogram_shape, device="cuda")
    ops.backproject(ops.project(x, g), g)  # warm-up: the angles reach the device here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        s = ops.project(x, g)
        b = ops.backproject(y, g)
        (s.square().sum() + b.sum()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


@needs_cuda
def test_non_finite_input_fails_on_cuda_without_a_sync_per_call():
    # The device-side assert ends the CUDA context, so it runs in a fresh process.
    import subprocess
    import sys

    code = ("import math, torch\nfrom alara import ops\nfrom alara.testing import small_geometries\n"
            "g = small_geometries()['parallel']\n"
            "x = torch.zeros((1, 1) + g.grid.shape, device='cuda'); x[0, 0, 2, 2] = math.nan\n"
            "ops.project(x, g)\ntorch.cuda.synchronize()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    # (whether CUDA's assert carries torch._assert_async's message depends on the build)
    assert "x contains NaN or infinite values" in r.stderr or "device-side assert" in r.stderr, r.stderr
