"""``postlog_noise`` with one generator per batch row: row b draws from its own generator
alone, exactly as a call on that row by itself would (what lets the pipeline batch
patients while each keeps its own noise stream)."""

from __future__ import annotations

import pytest
import torch

from alara.noise import postlog_noise

SEEDS = (11, 5, 2024, 7)


def _problem(dim: int):
    gen = torch.Generator().manual_seed(0)
    shape = (len(SEEDS), 1, 6, 9) if dim == 4 else (len(SEEDS), 6, 9)
    sino = torch.rand(shape, generator=gen, dtype=torch.float64) * 0.06   # up to ~5 attenuation
    n0 = torch.tensor([[64.0] * 6, [4096.0] * 6, [3.0] * 6, [1e5, 10.0, 500.0, 80.0, 7.0, 2e3]],
                      dtype=torch.float64)
    return sino, n0


def _gens():
    return [torch.Generator().manual_seed(s) for s in SEEDS]


@pytest.mark.parametrize("dim", [4, 3])
@pytest.mark.parametrize("electronic_std", [0.0, 2.5])
@pytest.mark.parametrize("differentiable", [False, True])
@pytest.mark.parametrize("sampler", ["inverse_cdf", "poisson"])
def test_row_generators_equal_per_row_calls(sampler, differentiable, electronic_std, dim):
    sino, n0 = _problem(dim)
    kw = dict(sampler=sampler, differentiable=differentiable, electronic_std=electronic_std)
    batched = postlog_noise(sino, n0, generator=_gens(), **kw)
    rows = torch.cat([postlog_noise(sino[b:b + 1], n0[b:b + 1], generator=torch.Generator().manual_seed(s), **kw)
                      for b, s in enumerate(SEEDS)])
    assert batched.shape == sino.shape and batched.dtype == sino.dtype
    assert torch.equal(batched, rows)
    # The rows really are noisy and really differ (not one draw broadcast to every row).
    assert not torch.equal(batched, sino)
    same_n0 = postlog_noise(sino[:1].expand_as(sino).contiguous(), n0[:1].expand_as(n0).contiguous(),
                            generator=_gens(), **kw)
    assert not torch.equal(same_n0[0], same_n0[1])


@pytest.mark.parametrize("sampler", ["inverse_cdf", "poisson"])
def test_row_generator_order_matters(sampler):
    """Swapping two generators swaps the noise of the two rows (when their data agree)."""
    sino, n0 = _problem(4)
    sino = sino[:1].expand_as(sino).contiguous()
    n0 = n0[:1].expand_as(n0).contiguous()
    a = postlog_noise(sino, n0, generator=_gens(), sampler=sampler)
    g = _gens()
    g[0], g[1] = g[1], g[0]
    b = postlog_noise(sino, n0, generator=g, sampler=sampler)
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[0]) and torch.equal(a[2:], b[2:])


def test_row_generators_keep_the_gradient():
    sino, n0 = _problem(4)
    n0 = n0.clone().requires_grad_(True)
    y = postlog_noise(sino, n0, generator=_gens(), differentiable=True)
    y.sum().backward()
    assert n0.grad is not None and bool(torch.isfinite(n0.grad).all()) and bool((n0.grad != 0).any())


_WRONG = [pytest.param(s, d, e, k, id=f"{s}-diff{int(d)}-e{e}-{k}gens")
          for s in ("inverse_cdf", "poisson") for d in (False, True) for e in (0.0, 2.5) for k in (1, 3, 5)]


@pytest.mark.parametrize("sampler, differentiable, electronic_std, count", _WRONG)
def test_wrong_number_of_generators_is_refused(sampler, differentiable, electronic_std, count):
    sino, n0 = _problem(4)
    gens = [torch.Generator().manual_seed(s) for s in range(count)]
    with pytest.raises(ValueError, match=f"got {count} generators for a batch of 4"):
        postlog_noise(sino, n0, generator=gens, sampler=sampler, differentiable=differentiable,
                      electronic_std=electronic_std)
