"""The component base classes, PriorInfo and the dose helpers."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass

import pytest
import torch

from alara.geometry import ImageGrid, ParallelBeam, uniform_angles
from alara.interfaces import (
    KINDS,
    Component,
    DosePolicy,
    DosePolicyConfig,
    IQMetric,
    PriorInfo,
    relative_dose,
    scale_to_budget,
    total_dose,
)

GEOM = ParallelBeam(ImageGrid.square(16, 0.26), uniform_angles(8), 24, 0.26 * 1.42 / 24)


class Constant(DosePolicy):
    name = "constant"

    @dataclass(frozen=True)
    class Config(DosePolicyConfig):
        value: float = 10.0
        views: int = 0  # 0: geometry's

    def propose(self, prior, geometry):
        v = self.config.views or geometry.n_views
        return torch.full((prior.batch_size, v), self.config.value, dtype=torch.float64)


def prior(b: int = 3, dose: float = 0.0) -> PriorInfo:
    return PriorInfo(image=torch.zeros(b, 1, 16, 16, dtype=torch.float64),
                     dose=torch.full((b,), dose, dtype=torch.float64))


def test_kinds_and_bases():
    assert list(KINDS) == ["prior", "dose_policy", "simulator", "reconstructor", "iq_metric"]
    for kind, base in KINDS.items():
        assert issubclass(base, Component) and issubclass(base, torch.nn.Module)
        assert base.kind == kind


def test_config_construction_and_errors():
    p = Constant()
    assert p.config == Constant.Config() and p.config.budget is None
    p = Constant.from_params(value=3.0, budget=0.5)
    assert p.config.value == 3.0 and p.config.budget == 0.5
    with pytest.raises(FrozenInstanceError):
        p.config.value = 1.0
    with pytest.raises(TypeError, match=r"Constant expects a Constant.Config instance, got dict"):
        Constant({"value": 1.0})
    with pytest.raises(ValueError, match="budget must be a finite positive relative dose"):
        Constant.Config(budget=0.0)
    assert "value=3.0" in repr(Constant.from_params(value=3.0))
    assert p.params() == {"budget": 0.5, "value": 3.0, "views": 0}
    assert Constant.from_params(**p.params()).config == p.config


def test_dose_helpers():
    n0 = torch.tensor([[4096.0, 4096.0], [1024.0, 3072.0]])
    assert torch.equal(total_dose(n0), torch.tensor([8192.0, 4096.0]))
    assert torch.allclose(relative_dose(n0), torch.tensor([1.0, 0.5]))
    assert torch.allclose(relative_dose(n0, prior_dose=torch.tensor([0.0, 4096.0])), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"n0 must have shape \[B, views\]"):
        total_dose(torch.ones(4))


def test_scale_to_budget_keeps_shape_and_counts_prior():
    n0 = torch.tensor([[1.0, 3.0], [2.0, 2.0]], requires_grad=True)
    prior_dose = torch.tensor([0.0, 2048.0])
    out = scale_to_budget(n0, 0.75, prior_dose)
    assert torch.allclose(relative_dose(out, prior_dose), torch.tensor([0.75, 0.75]))
    assert torch.allclose(out[0, 1] / out[0, 0], torch.tensor(3.0))
    out.sum().backward()  # differentiable
    assert n0.grad is not None
    with pytest.raises(ValueError, match="used up by the prior"):
        scale_to_budget(n0.detach(), 0.25, torch.tensor([0.0, 2048.0]))


def test_dose_policy_forward_checks_shape_and_applies_budget():
    info = prior(dose=4096.0)
    n0 = Constant()(info, GEOM)
    assert n0.shape == (3, 8) and bool((n0 == 10).all())
    held = Constant.from_params(budget=0.5)(info, GEOM)
    assert torch.allclose(relative_dose(held, info.dose), torch.full((3,), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"returned n0 of shape \(3, 5\), expected \[B, views\] = \[3, 8\]"):
        Constant.from_params(views=5)(info, GEOM)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="not positive and finite"):
            Constant.from_params(value=bad)(info, GEOM)


def test_prior_info_validation():
    info = PriorInfo(scouts=torch.zeros(2, 2, 24), scout_angles=torch.tensor([0.0, 1.57]))
    assert info.batch_size == 2 and torch.equal(info.dose, torch.zeros(2))
    assert info.network_input().shape == (2, 1, 2, 24)
    assert prior().network_input().shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match="needs an image or scouts"):
        PriorInfo()
    with pytest.raises(ValueError, match=r"image must be \[B, 1, H, W\]"):
        PriorInfo(image=torch.zeros(16, 16))
    with pytest.raises(ValueError, match="one angle per scout"):
        PriorInfo(scouts=torch.zeros(2, 2, 24), scout_angles=torch.tensor([0.0]))


def test_iq_metric_check_pair():
    a, b = torch.zeros(2, 5, 5), torch.zeros(2, 5, 5)
    x_hat, x = IQMetric.check_pair(a, b)
    assert x_hat.shape == (2, 1, 5, 5)
    with pytest.raises(ValueError, match="same shape"):
        IQMetric.check_pair(a, torch.zeros(2, 5, 6))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        IQMetric.check_pair(torch.zeros(5), torch.zeros(5))


def test_prior_batches_invert_cat():
    p = prior(5, dose=2.0)
    parts = p.batches(2)
    assert [q.batch_size for q in parts] == [2, 2, 1]
    back = PriorInfo.cat(parts)
    for name in ("image", "scouts", "dose"):
        a, b = getattr(p, name), getattr(back, name)
        assert (a is None and b is None) or torch.equal(a, b)
