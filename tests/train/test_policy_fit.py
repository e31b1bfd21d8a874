"""The regression warm start (alara.train.policy_fit): a toy whose right answer is known."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from alara.geometry import LODOPAB_N0
from alara.data.synth import small_geometry
from alara.interfaces import DosePolicy, DosePolicyConfig, Prior, PriorInfo
from alara.train.policy_fit import PolicyFitConfig, dihedral, fit_policy


class ExactPrior(Prior):
    """The true image itself, free (a noiseless prior exam)."""

    name = "test_exact"

    def forward(self, x, geometry, simulator=None, generator=None):
        return PriorInfo(image=x.clone())


class LinearPolicy(DosePolicy):
    """``log n0 = a + b * mean(prior)``: two parameters the fit must find."""

    name = "test_linear"

    @dataclass(frozen=True)
    class Config(DosePolicyConfig):
        pass

    def __init__(self):
        super().__init__(self.Config())
        self.a = nn.Parameter(torch.tensor(5.0, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))

    def propose(self, prior, geometry):
        m = prior.image.double().mean(dim=(1, 2, 3))
        return torch.exp(self.a + self.b * m).unsqueeze(-1).expand(-1, geometry.n_views)


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=g, dtype=torch.float64) * torch.rand(n, 1, 1, 1, generator=g,
                                                                                    dtype=torch.float64)


def test_fit_recovers_a_known_log_linear_rule():
    geometry = small_geometry(16, 8)
    x = _images(64)
    c_true, d_true = 6.5, 4.0
    thresholds = torch.exp(c_true + d_true * x.mean(dim=(1, 2, 3))) / LODOPAB_N0
    policy = LinearPolicy()
    info = fit_policy(policy, ExactPrior(), None, x, thresholds, geometry,
                      PolicyFitConfig(steps=1500, batch_size=16, lr=0.05, weight_decay=0.0, seed=1))
    # The mean is invariant under the square's symmetries, so augmentation changes nothing
    # here and the fit must land on the rule that made the thresholds.
    assert policy.a.item() == pytest.approx(c_true, abs=0.05)
    assert policy.b.item() == pytest.approx(d_true, abs=0.2)
    assert info["loss_last"] < info["loss_first"] / 100 and info["images"] == 64


def test_unreached_thresholds_are_left_out_and_too_few_refused():
    geometry = small_geometry(16, 8)
    x = _images(4)
    t = torch.tensor([0.05, math.inf, float("nan"), 0.1])
    info = fit_policy(LinearPolicy(), ExactPrior(), None, x, t, geometry, PolicyFitConfig(steps=2))
    assert info["images"] == 2
    with pytest.raises(ValueError, match="only 1 images have a finite threshold"):
        fit_policy(LinearPolicy(), ExactPrior(), None, x, torch.tensor([0.05, math.inf, math.inf, -1.0]), geometry,
                   PolicyFitConfig(steps=2))
    with pytest.raises(ValueError, match="3 thresholds for 4 images"):
        fit_policy(LinearPolicy(), ExactPrior(), None, x, t[:3], geometry, PolicyFitConfig(steps=2))


@pytest.mark.parametrize("key, value", [("steps", 0), ("lr", 0.0), ("huber_beta", float("nan")),
                                        ("weight_decay", -1.0)])
def test_bad_fit_settings_are_refused(key, value):
    with pytest.raises(ValueError, match=f"policy fit: {key}"):
        PolicyFitConfig(**{key: value})


def test_dihedral_gives_the_eight_symmetries_of_the_square():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    images = [dihedral(x, k) for k in range(8)]
    assert torch.equal(images[0], x)
    assert len({tuple(im.flatten().tolist()) for im in images}) == 8
    for im in images:
        assert float(im.sum()) == float(x.sum())
    with pytest.raises(ValueError, match="0..7"):
        dihedral(x, 8)
