"""The ``poisson`` simulator against the LoDoPaB noise model's theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alara.geometry import LODOPAB_MU_MAX as MU
from alara.noise import postlog_noise
from alara_builtin.simulator import PoissonSimulator


def counts_of(y: torch.Tensor, n0: torch.Tensor) -> torch.Tensor:
    """Invert y = -ln(counts / n0) / mu_max."""
    return n0 * torch.exp(-MU * y)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("training", [False, True])
def test_counts_mean_and_variance_match_theory(training):
    # Columns: three attenuation levels; rows (views): many samples of the same ray.
    s = torch.tensor([0.005, 0.02, 0.04], dtype=torch.float64)
    samples = 40000
    sino = s.expand(1, samples, 3).contiguous()
    n0 = torch.full((1, samples), 4096.0, dtype=torch.float64)
    sim = PoissonSimulator().train(training)
    y = sim(sino, n0, generator=gen(1))
    c = counts_of(y, n0[..., None])[0]
    lam = 4096.0 * torch.exp(-MU * s)
    assert torch.allclose(c.mean(0), lam, rtol=4 * (lam.sqrt() / lam / math.sqrt(samples)).max().item() + 1e-4)
    assert torch.allclose(c.var(0), lam, rtol=0.03)
    if not training:  # exact Poisson: integer counts
        assert torch.allclose(c, c.round(), atol=1e-6)
    # Post-log: E[y] ~ s + 1/(2 lam mu), Var[y] ~ 1/(lam mu^2) (delta method).
    assert torch.allclose(y[0].var(0), 1 / (lam * MU**2), rtol=0.05)
    assert torch.allclose(y[0].mean(0), s + 1 / (2 * lam * MU), atol=3e-4 * s.max())


def test_zero_counts_become_min_count():
    sino = torch.full((1, 1, 2000, 1), 0.2, dtype=torch.float64)  # lambda ~ 4096 e^-16 ~ 5e-4
    n0 = torch.full((1, 2000), 4096.0, dtype=torch.float64)
    y = PoissonSimulator().eval()(sino, n0, generator=gen())
    expected = -math.log(0.1 / 4096.0) / MU
    assert torch.isfinite(y).all()
    assert (y <= expected + 1e-12).all()  # counts are >= 1 or replaced by 0.1
    assert (torch.isclose(y, torch.tensor(expected, dtype=y.dtype))).float().mean() > 0.99


def test_eval_mode_is_not_differentiable_training_mode_is():
    sino = torch.full((2, 1, 5, 3), 0.01, dtype=torch.float64)
    n0 = torch.full((2, 5), 1000.0, dtype=torch.float64, requires_grad=True)
    assert not PoissonSimulator().eval()(sino, n0).requires_grad
    y = PoissonSimulator().train()(sino, n0, generator=gen())
    y.sum().backward()
    assert n0.grad is not None and torch.isfinite(n0.grad).all() and n0.grad.abs().sum() > 0


def expected_y_by_quadrature(n0: float, s: float, nodes: int = 160) -> float:
    """E[y] of the training-mode sample, counts = lam + sqrt(lam) eps (clamped at 0.1),
    by Gauss-Hermite quadrature over eps ~ N(0, 1): deterministic, no sampling error."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    lam = n0 * math.exp(-MU * s)
    counts = np.maximum(lam + math.sqrt(lam) * x, 0.1)
    return float(np.sum(w * -np.log(counts / n0) / MU) / math.sqrt(2 * math.pi))


def test_gradient_matches_finite_differences_of_the_expectation():
    """The reparameterised gradient d y / d n0, averaged over samples, against central
    finite differences of E[y](n0) computed by quadrature, and against the theory: with
    u ~ N(0, 1/lambda), E[-ln(1 + u)] = sigma^2/2 + 3 sigma^4/4 + ..., sigma^2 = 1/(n0 t),
    so d E[y] / d n0 = -(sigma^2/2 + 3 sigma^4/2) / (n0 mu_max) + O(sigma^6)."""
    samples, s, n0_value = 400_000, 0.03, 2000.0
    sino = torch.full((1, 1, samples), s, dtype=torch.float64)
    n0 = torch.tensor([[n0_value]], dtype=torch.float64, requires_grad=True)
    y = PoissonSimulator().train()(sino, n0, generator=gen(7))
    (grad,) = torch.autograd.grad(y.mean(), n0)
    h = 1.0
    fd = (expected_y_by_quadrature(n0_value + h, s) - expected_y_by_quadrature(n0_value - h, s)) / (2 * h)
    # Monte-Carlo error of the mean pathwise gradient ~ sqrt(lambda / samples) ~ 2 %.
    assert grad.item() == pytest.approx(fd, rel=0.08)
    var = 1 / (n0_value * math.exp(-MU * s))  # lambda ~ 174
    theory = -(var / 2 + 1.5 * var**2) / (n0_value * MU)
    assert fd == pytest.approx(theory, rel=1e-3)
    # A sample whose noise scale ignored n0 (sqrt of a detached lambda) would give about
    # twice this gradient: -sigma^2 / (n0 mu_max).
    assert grad.item() / fd < 1.5


def test_electronic_noise_adds_variance():
    samples = 40000
    sino = torch.full((1, samples, 1), 0.02, dtype=torch.float64)
    n0 = torch.full((1, samples), 1000.0, dtype=torch.float64)
    lam = 1000.0 * math.exp(-MU * 0.02)
    for training in (False, True):
        sim = PoissonSimulator.from_params(electronic_std=10.0).train(training)
        c = counts_of(sim(sino, n0, generator=gen(3)), n0[..., None])
        assert c.var().item() == pytest.approx(lam + 100.0, rel=0.04)


def test_shapes_and_errors():
    sim = PoissonSimulator().eval()
    n0 = torch.full((2, 4), 100.0)
    assert sim(torch.zeros(2, 3, 4, 5), n0).shape == (2, 3, 4, 5)
    assert sim(torch.zeros(2, 4, 5), n0).shape == (2, 4, 5)
    assert torch.allclose(sim(torch.zeros(2, 4, 5), n0 * 1e9), torch.zeros(2, 4, 5), atol=1e-4)
    with pytest.raises(ValueError, match=r"needs \[B, views\] = \[2, 6\]"):
        sim(torch.zeros(2, 1, 6, 5), n0)
    with pytest.raises(ValueError, match="n0 must be positive"):
        sim(torch.zeros(2, 4, 5), -n0)
    with pytest.raises(ValueError, match="min_count must be a finite positive"):
        PoissonSimulator.Config(min_count=0.0)
    with pytest.raises(ValueError, match="mu_max must be a finite positive"):
        PoissonSimulator.Config(mu_max=float("inf"))
    for bad in (float("nan"), float("inf")):
        n0_bad = n0.clone()
        n0_bad[1, 2] = bad
        with pytest.raises(ValueError, match=r"n0 must be positive and finite on every view \(1 of 8"):
            sim(torch.zeros(2, 4, 5), n0_bad)
    sino = torch.zeros(2, 4, 5)
    sino[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="sinogram has 1 NaN or inf"):
        sim.train()(sino, n0)
