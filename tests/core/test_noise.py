"""The noise model: exact Poisson by inverse CDF (moments, coupling across doses), the
reparameterised form, and refused inputs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alara.noise import MIN_COUNT, poisson_inverse_cdf, postlog_noise


@pytest.mark.parametrize("lam", [0.02, 0.7, 4.0, 60.0, 3000.0, 2.0e6])
def test_inverse_cdf_has_poisson_moments(lam):
    n = 200_000
    u = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    k = poisson_inverse_cdf(torch.full((n,), lam, dtype=torch.float64), u)
    assert bool((k == k.round()).all()) and bool((k >= 0).all())
    se = math.sqrt(lam / n)
    assert abs(float(k.mean()) - lam) < 5 * se
    assert float(k.var()) == pytest.approx(lam, rel=0.03)
    if lam < 5:   # P(K = 0) = exp(-lam)
        assert float((k == 0).double().mean()) == pytest.approx(math.exp(-lam), abs=5e-3)


@settings(max_examples=40, deadline=None)
@given(lam=st.floats(1e-3, 1e7), u=st.floats(1e-9, 1 - 1e-9))
def test_inverse_cdf_is_the_quantile(lam, u):
    lam_t, u_t = torch.tensor([lam], dtype=torch.float64), torch.tensor([u], dtype=torch.float64)
    k = float(poisson_inverse_cdf(lam_t, u_t)[0])
    cdf = lambda j: float(torch.special.gammaincc(torch.tensor([j + 1.0], dtype=torch.float64), lam_t)[0])  # noqa: E731
    assert cdf(k) >= u - 1e-12
    assert k == 0 or cdf(k - 1) < u + 1e-12


def test_seeded_draws_are_coupled_across_doses():
    """Same seed, more photons: every bin's counts grow, so the post-log error shrinks."""
    sino = torch.full((1, 1, 30, 40), 0.04, dtype=torch.float64)
    ys = [postlog_noise(sino, torch.full((1, 30), n0, dtype=torch.float64),
                        generator=torch.Generator().manual_seed(5)) for n0 in (100.0, 110.0, 400.0)]
    counts = [n0 * torch.exp(-81.35858 * y) for n0, y in zip((100.0, 110.0, 400.0), ys)]
    assert bool((counts[1] >= counts[0] - 1e-6).all()) and bool((counts[2] >= counts[1] - 1e-6).all())
    err = [float((y - sino).pow(2).mean()) for y in ys]
    assert err[0] > err[1] > err[2]


def test_both_samplers_agree_in_distribution_and_refuse_bad_input():
    sino = torch.full((4, 1, 50, 50), 0.03, dtype=torch.float64)
    n0 = torch.full((4, 50), 500.0, dtype=torch.float64)
    a = postlog_noise(sino, n0, generator=torch.Generator().manual_seed(0))
    b = postlog_noise(sino, n0, generator=torch.Generator().manual_seed(0), sampler="poisson")
    assert float(a.mean()) == pytest.approx(float(b.mean()), abs=3e-4)
    assert float(a.std()) == pytest.approx(float(b.std()), rel=0.05)
    zero = postlog_noise(torch.full((1, 1, 4, 4), 5.0, dtype=torch.float64), torch.full((1, 4), 10.0, dtype=torch.float64))
    assert torch.allclose(zero, torch.full_like(zero, -math.log(MIN_COUNT / 10.0) / 81.35858))
    with pytest.raises(ValueError, match="sampler must be one of inverse_cdf, poisson"):
        postlog_noise(sino, n0, sampler="gauss")
    with pytest.raises(ValueError, match="mu_max must be a finite positive number"):
        postlog_noise(sino, n0, mu_max=-1.0)
