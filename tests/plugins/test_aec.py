"""``aec``: its formula, and the two ends of its strength (constant dose, constant noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alara.geometry import LODOPAB_MU_MAX, lodopab
from alara.interfaces import PriorInfo
from alara_builtin.aec import AECPolicy


def scouts(p_a: float, p_b: float) -> PriorInfo:
    """Two orthogonal scouts whose largest line integrals are p_a (0 deg) and p_b (90 deg)
    (flat over the 5 bins the profile is smoothed over)."""
    s = torch.zeros(1, 2, 9, dtype=torch.float64)
    s[0, 0, 2:7], s[0, 1, 2:7] = p_a, p_b
    return PriorInfo(scouts=s, scout_angles=torch.tensor([0.0, math.pi / 2], dtype=torch.float64))


@pytest.mark.parametrize("strength, modulation", [(0.5, 0.5), (0.0, 0.5), (1.0, 0.0), (0.3, 1.0)])
def test_formula(strength, modulation):
    g = lodopab(n_angles=12, n_bins=9, image_size=8)
    pa, pb = 0.06, 0.035
    n0 = AECPolicy.from_params(strength=strength, modulation=modulation, n0_ref=1000.0, p_ref=0.04, size="p_max")(
        scouts(pa, pb), g)[0].numpy()
    th = g.angles.numpy()
    p = 1 / np.sqrt(np.cos(th) ** 2 / pa ** 2 + np.sin(th) ** 2 / pb ** 2)   # ellipse model
    mu = LODOPAB_MU_MAX
    w = np.exp(modulation * mu * p)
    expected = 1000.0 * np.exp(strength * mu * (p.mean() - 0.04)) * w / w.mean()
    np.testing.assert_allclose(n0, expected, rtol=1e-10)


def test_constant_dose_and_constant_noise_ends():
    g = lodopab(n_angles=12, n_bins=9, image_size=8)
    small, large = scouts(0.03, 0.02), scouts(0.07, 0.05)
    const_dose = AECPolicy.from_params(strength=0.0, size="p_max")
    assert torch.allclose(const_dose(small, g).mean(), const_dose(large, g).mean())
    const_noise = AECPolicy.from_params(strength=1.0, modulation=0.0, size="p_max")
    counts = [float(const_noise(p, g).mean() * torch.exp(-LODOPAB_MU_MAX * p_bar))
              for p, p_bar in ((small, const_noise_pbar(small, g)), (large, const_noise_pbar(large, g)))]
    assert counts[0] == pytest.approx(counts[1], rel=1e-9)
    assert float(const_noise(large, g).mean()) > 10 * float(const_noise(small, g).mean())


def const_noise_pbar(prior, g):
    from alara_builtin.policies import max_line_integrals

    return max_line_integrals(prior, g).mean()


def test_strength_outside_0_2_is_refused():
    with pytest.raises(ValueError, match=r"strength must be in \[0, 2\] \(0: constant dose, 1: constant noise"):
        AECPolicy.from_params(strength=2.5)
