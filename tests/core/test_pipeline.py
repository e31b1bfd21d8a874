"""Pipeline: one forward pass with the dose counted once (prior included), dose factors,
given n0, and clear errors."""

from __future__ import annotations

import pytest
import torch

from alara.interfaces import relative_dose
from alara.pipeline import Pipeline, noise_generator
from alara_builtin.policies import FixedPolicy
from alara_builtin.priors import ScoutPrior
from alara_builtin.reconstructors import FBPReconstructor
from alara_builtin.simulator import PoissonSimulator


def pipeline():
    return Pipeline(ScoutPrior.from_params(n0=2048.0), FixedPolicy.from_params(n0=1000.0), PoissonSimulator(),
                    FBPReconstructor()).eval()


def test_scan_counts_the_prior_dose_and_applies_factors(geometry):
    x = torch.rand(3, 1, *geometry.grid.shape, dtype=torch.float64) * 0.2
    scan = pipeline()(x, geometry, generator=noise_generator(0, 1))
    v = geometry.n_views
    assert scan.n0.shape == (3, v) and bool((scan.n0 == 1000.0).all())
    assert torch.allclose(scan.relative_dose, torch.full((3,), (1000.0 * v + 2 * 2048.0) / (4096.0 * v),
                                                          dtype=torch.float64))
    assert scan.x_hat.shape == x.shape and scan.y.shape == scan.sinogram.shape
    per_image = pipeline()(x, geometry, dose_scale=torch.tensor([1.0, 2.0, 0.5]))
    assert per_image.n0[:, 0].tolist() == [1000.0, 2000.0, 500.0]
    given = pipeline()(x, geometry, n0=torch.full((3, v), 64.0, dtype=torch.float64))
    assert given.prior is None and torch.allclose(given.relative_dose, relative_dose(given.n0))


def test_same_generator_seed_same_noise(geometry):
    x = torch.rand(2, 1, *geometry.grid.shape, dtype=torch.float64) * 0.2
    a = pipeline()(x, geometry, generator=noise_generator(7, 3, 1))
    b = pipeline()(x, geometry, generator=noise_generator(7, 3, 1))
    c = pipeline()(x, geometry, generator=noise_generator(7, 1, 3))
    assert torch.equal(a.y, b.y) and not torch.equal(a.y, c.y)


def test_errors(geometry):
    x = torch.rand(2, 1, *geometry.grid.shape)
    with pytest.raises(ValueError, match=r"x must be \[B, 1, H, W\]"):
        pipeline()(x[:, :, :-1], geometry)
    with pytest.raises(ValueError, match="dose_scale must be finite and positive"):
        pipeline()(x, geometry, dose_scale=float("nan"))
    with pytest.raises(ValueError, match=r"dose_scale must be a number or one factor per patient \[2\]"):
        pipeline()(x, geometry, dose_scale=torch.ones(3))
    with pytest.raises(ValueError, match=r"n0 must be \[B, views\]"):
        pipeline()(x, geometry, n0=torch.ones(2, 3))
    with pytest.raises(TypeError, match="Pipeline reconstructor must be an alara.interfaces.Reconstructor"):
        Pipeline(ScoutPrior(), FixedPolicy(), PoissonSimulator(), torch.nn.Identity())


def test_one_generator_per_patient_makes_noise_independent_of_the_batch(geometry):
    x = torch.rand(3, 1, *geometry.grid.shape, dtype=torch.float64) * 0.2
    gens = lambda: [noise_generator(1, i) for i in range(3)]  # noqa: E731
    batch = pipeline()(x, geometry, generator=gens())
    alone = [pipeline()(x[i:i + 1], geometry, generator=[noise_generator(1, i)]) for i in range(3)]
    assert torch.equal(batch.y, torch.cat([a.y for a in alone]))
    assert torch.equal(batch.prior.scouts, torch.cat([a.prior.scouts for a in alone]))
    assert torch.allclose(batch.x_hat, torch.cat([a.x_hat for a in alone]))
    with pytest.raises(ValueError, match="got 2 generators for 3 patients"):
        pipeline()(x, geometry, generator=gens()[:2])
