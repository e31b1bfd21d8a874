"""The water-equivalent diameter (AAPM report 220) from scouts and prior images, the
size-only control policy built on it, and AEC's WED size term."""

from __future__ import annotations

import math

import pytest
import torch

from alara.geometry import LODOPAB_MU_MAX, lodopab
from alara.interfaces import PriorInfo
from alara_builtin.aec import AECPolicy
from alara_builtin.policies import MU_WATER, SizePolicy, water_equivalent_diameter
from alara_builtin.priors import ScoutPrior

WATER = MU_WATER / LODOPAB_MU_MAX      # x of water


@pytest.fixture(scope="module")
def geom():
    return lodopab(n_angles=8, n_bins=91, image_size=64)


def water_disc(geom, radius: float, copies: int = 1) -> torch.Tensor:
    """A uniform water disc of ``radius`` (m), [copies, 1, H, W] float64."""
    xs, ys = geom.grid.coordinates(dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="ij")
    disc = WATER * ((X ** 2 + Y ** 2) <= radius ** 2).double()
    return disc[None, None].repeat(copies, 1, 1, 1)


def noisy_scouts(x: torch.Tensor, geom, n0: float, seed: int = 0) -> PriorInfo:
    prior = ScoutPrior.from_params(n0=n0)
    return PriorInfo.cat([prior(x[i:i + 1], geom, generator=torch.Generator().manual_seed(seed + i))
                          for i in range(x.shape[0])])


@pytest.mark.parametrize("radius", [0.04, 0.06, 0.09])
def test_wed_of_a_water_disc_is_its_diameter(geom, radius):
    x = water_disc(geom, radius)
    from_scouts = water_equivalent_diameter(ScoutPrior.from_params(noise=False)(x, geom), geom)
    from_image = water_equivalent_diameter(PriorInfo(image=x), geom)
    assert from_scouts.shape == (1,) and from_scouts.dtype == torch.float64
    assert float(from_scouts[0]) == pytest.approx(2 * radius, rel=0.02)
    assert float(from_image[0]) == pytest.approx(2 * radius, rel=0.02)
    # Both measure the same integral of the image (up to the projector's discretisation).
    assert float(from_scouts[0]) == pytest.approx(float(from_image[0]), rel=1e-3)


def test_wed_scales_with_attenuation(geom):
    """A disc of twice water's attenuation has the WED of a water disc sqrt(2) as wide."""
    x = water_disc(geom, 0.05)
    w1 = float(water_equivalent_diameter(PriorInfo(image=x), geom)[0])
    w2 = float(water_equivalent_diameter(PriorInfo(image=2 * x), geom)[0])
    assert w2 == pytest.approx(math.sqrt(2) * w1, rel=1e-9)
    # mu_max scales the water-equivalent area the same way.
    w3 = float(water_equivalent_diameter(PriorInfo(image=x), geom, mu_max=2 * LODOPAB_MU_MAX)[0])
    assert w3 == pytest.approx(w2, rel=1e-9)
    # Nothing in the field: zero (not NaN).
    assert float(water_equivalent_diameter(PriorInfo(image=torch.zeros_like(x)), geom)[0]) == 0.0


def test_wed_is_robust_to_photon_noise_where_the_maximum_is_not(geom):
    """Scouts at 64 photons per bin: 12 cm of water leaves ~6 photons behind the centre.
    The WED (a sum over every bin) stays within a few percent of the noiseless one; the
    maximum of the raw noisy profile, the old size estimate, is biased far upwards."""
    copies = 12
    x = water_disc(geom, 0.06, copies)
    clean = ScoutPrior.from_params(noise=False)(x[:1], geom)
    noisy = noisy_scouts(x, geom, 64.0)
    w_clean = float(water_equivalent_diameter(clean, geom)[0])
    w_noisy = water_equivalent_diameter(noisy, geom)
    assert len(torch.unique(w_noisy)) == copies                 # the scouts really are noisy
    assert float(w_noisy.mean()) == pytest.approx(w_clean, rel=0.03)
    assert float((w_noisy / w_clean - 1).abs().max()) < 0.06
    p_clean = float(clean.scouts.amax(dim=-1).mean())
    p_noisy = noisy.scouts.amax(dim=-1)                         # [copies, 2]
    assert float(p_noisy.mean()) > 1.2 * p_clean
    assert float((p_noisy > p_clean).double().mean()) > 0.9
    # Relative bias: the maximum's is several times the WED's.
    assert (float(p_noisy.mean()) / p_clean - 1) > 5 * abs(float(w_noisy.mean()) / w_clean - 1)


@pytest.mark.parametrize("intercept, slope", [(0.0, 0.15), (-1.2, 0.08), (0.7, -0.05)])
def test_size_policy_is_flat_and_follows_the_log_linear_rule(geom, intercept, slope):
    x = torch.cat([water_disc(geom, r) for r in (0.04, 0.06, 0.09)])
    policy = SizePolicy.from_params(intercept=intercept, slope_per_cm=slope, n0_ref=1000.0)
    for prior in (ScoutPrior.from_params(noise=False)(x, geom), PriorInfo(image=x)):
        n0 = policy(prior, geom)
        assert n0.shape == (3, geom.n_views) and n0.dtype == x.dtype
        assert torch.equal(n0, n0[:, :1].expand_as(n0))           # one n0 on every view
        wed_cm = 100 * water_equivalent_diameter(prior, geom)
        expect = 1000.0 * torch.exp(intercept + slope * wed_cm)
        torch.testing.assert_close(n0[:, 0], expect, rtol=1e-12, atol=0)
        # And with the disc's true diameter, to a few percent of the exponent's rate.
        true_cm = torch.tensor([8.0, 12.0, 18.0], dtype=torch.float64)
        torch.testing.assert_close(n0[:, 0], 1000.0 * torch.exp(intercept + slope * true_cm), rtol=0.02, atol=0)


def test_size_policy_budget_scales_to_the_budget(geom):
    x = torch.cat([water_disc(geom, r) for r in (0.04, 0.09)])
    prior = ScoutPrior.from_params(noise=False, n0=512.0)(x, geom)
    n0 = SizePolicy.from_params(budget=0.5)(prior, geom)
    total = (n0.sum(-1) + prior.dose) / (4096.0 * geom.n_views)
    torch.testing.assert_close(total, torch.full((2,), 0.5, dtype=torch.float64))


@pytest.mark.parametrize("key", ["intercept", "slope_per_cm"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1.0", True])
def test_size_policy_refuses_non_finite_parameters(key, value):
    with pytest.raises(ValueError, match=f"SizePolicy.Config: {key} must be a finite number"):
        SizePolicy.from_params(**{key: value})


def test_size_policy_does_not_overflow_on_extrapolation(geom):
    x = water_disc(geom, 0.09)
    n0 = SizePolicy.from_params(intercept=0.0, slope_per_cm=100.0)(PriorInfo(image=x), geom)
    assert bool(torch.isfinite(n0).all()) and float(n0[0, 0]) == pytest.approx(4096.0 * math.exp(50.0))


def test_aec_constant_noise_and_constant_dose_ends(geom):
    x = torch.cat([water_disc(geom, 0.04), water_disc(geom, 0.09)])
    prior = ScoutPrior.from_params(noise=False)(x, geom)
    wed = water_equivalent_diameter(prior, geom)
    assert float(wed[1] - wed[0]) == pytest.approx(0.10, rel=0.03)
    noise_end = AECPolicy.from_params(strength=1.0, modulation=0.0)(prior, geom)
    assert torch.equal(noise_end, noise_end[:, :1].expand_as(noise_end))       # no modulation
    mean = noise_end.mean(-1)
    # The larger disc gets exp(20 * 0.10) ~ 7.4 times the photons ...
    assert float(mean[1] / mean[0]) == pytest.approx(math.exp(MU_WATER * 0.10), rel=0.1)
    # ... so the counts behind the centre of each disc's water cylinder are the same,
    # those of the reference patient (WED 0.2 m at n0_ref 4096).
    behind = mean * torch.exp(-MU_WATER * wed)
    torch.testing.assert_close(behind[0], behind[1], rtol=1e-12, atol=0)
    assert float(behind[0]) == pytest.approx(4096.0 * math.exp(-MU_WATER * 0.2), rel=1e-12)
    dose_end = AECPolicy.from_params(strength=0.0, modulation=0.0)(prior, geom)
    torch.testing.assert_close(dose_end.mean(-1), torch.full((2,), 4096.0, dtype=torch.float64))
    # In between: both discs are smaller than the reference (WED 0.08 and 0.18 < 0.2 m),
    # so more strength means fewer photons for both.
    half = AECPolicy.from_params(strength=0.5, modulation=0.0)(prior, geom).mean(-1)
    assert bool((noise_end.mean(-1) < half).all()) and bool((half < dose_end.mean(-1)).all())
