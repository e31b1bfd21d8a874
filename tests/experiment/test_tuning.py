"""Tuning a baseline on validation: the AEC strength that is best by construction is the
one chosen, with the selection the experiment runs (stats.guarantee_mean_dose and
stats.best_on_validation over the real AEC policy's doses)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alara.experiment import stats
from alara.geometry import LODOPAB_MU_MAX, LODOPAB_N0
from alara.data.synth import small_geometry
from alara_builtin.aec import AECPolicy
from alara_builtin.policies import MU_WATER, water_equivalent_diameter
from alara_builtin.priors import ScoutPrior

STRENGTHS = [round(0.1 * k, 1) for k in range(11)]


@pytest.fixture(scope="module")
def discs():
    """Water discs of 12 radii (noiseless scouts): patients of known size."""
    g = small_geometry(32, 24)
    xs, ys = g.grid.coordinates(dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="ij")
    radii = np.linspace(0.04, 0.12, 12)
    x = torch.stack([((X ** 2 + Y ** 2) <= r ** 2).double() * (MU_WATER / LODOPAB_MU_MAX) for r in radii])[:, None]
    scouts = ScoutPrior.from_params(noise=False)(x, g)
    return g, scouts, water_equivalent_diameter(scouts, g).numpy()


def _grid(g, scouts, thresholds, share):
    rows = []
    for s in STRENGTHS:
        n0 = AECPolicy.from_params(strength=s)(scouts, g)
        level = (n0.mean(-1) / LODOPAB_N0).numpy()
        rows.append({"strength": s, "validation_dose": stats.guarantee_mean_dose(thresholds, level,
                                                                                np.zeros_like(level), share)})
    return rows


@pytest.mark.parametrize("best", [0.0, 0.3, 0.6, 1.0])
def test_aec_tuner_finds_the_strength_best_by_construction(discs, best):
    g, scouts, wed = discs
    # Image i needs the dose C exp(best * mu_water * WED_i): exactly AEC's rule at `best`.
    thresholds = 0.05 * np.exp(best * MU_WATER * wed)
    rows = _grid(g, scouts, thresholds, share=0.9)   # rank ceil(13 * 0.9) = 12 = n: every image
    chosen = stats.best_on_validation(rows)
    assert chosen["strength"] == pytest.approx(best)
    # The chosen strength's dose is the images' own thresholds: nothing wasted.
    assert chosen["validation_dose"] == pytest.approx(thresholds.mean(), rel=1e-9)
    # Every other strength costs more.
    others = [r["validation_dose"] for r in rows if r["strength"] != chosen["strength"]]
    assert min(others) > chosen["validation_dose"] * (1 + 1e-6)


def test_wed_of_water_discs_is_their_diameter(discs):
    _, _, wed = discs
    radii = np.linspace(0.04, 0.12, 12)
    np.testing.assert_allclose(wed, 2 * radii, rtol=0.05)


def test_out_of_reach_guarantee_is_inf():
    # 3 images, share 0.9: the conformal rank ceil(4 * 0.9) = 4 exceeds n.
    assert math.isinf(stats.guarantee_mean_dose(np.ones(3), np.ones(3), np.zeros(3), 0.9))
    # An image that never reaches q within the limits (threshold inf) at the rank: inf too.
    assert math.isinf(stats.guarantee_mean_dose(np.array([1.0, 2.0, np.inf]), np.ones(3), np.zeros(3), 0.7))


def test_size_tilted_policy_is_the_base_policy_times_the_tilt(discs):
    from alara.experiment.tilt import SizeTiltedPolicy

    g, scouts, wed = discs
    base = AECPolicy.from_params(strength=0.3)
    n0 = base(scouts, g)
    same = SizeTiltedPolicy(base, SizeTiltedPolicy.Config(tilt_per_cm=0.0))(scouts, g)
    torch.testing.assert_close(same, n0, rtol=1e-12, atol=0)
    tilted = SizeTiltedPolicy(base, SizeTiltedPolicy.Config(tilt_per_cm=0.1, wed_ref_cm=18.0))(scouts, g)
    expect = n0 * torch.exp(0.1 * (100 * torch.as_tensor(wed) - 18.0)).unsqueeze(-1)
    torch.testing.assert_close(tilted, expect, rtol=1e-10, atol=0)
    with pytest.raises(TypeError, match="wraps a DosePolicy"):
        SizeTiltedPolicy(torch.nn.Identity(), SizeTiltedPolicy.Config())
