"""Dose policies: ``fixed``, ``tcm`` (against its formula) and ``resnet18``."""

from __future__ import annotations

import math

import pytest
import torch

from alara import ops
from alara.geometry import LODOPAB_MU_MAX as MU
from alara.interfaces import PriorInfo, relative_dose
from alara_builtin.policies import FixedPolicy, TCMPolicy, max_line_integrals
from alara_builtin.priors import ScoutPrior
from alara_builtin.resnet_policy import ResNet18Policy, fourier_basis


def image_prior(x: torch.Tensor, dose: float = 0.0) -> PriorInfo:
    return PriorInfo(image=x, dose=torch.full((x.shape[0],), dose, dtype=x.dtype))


def test_fixed(geom, shepp):
    n0 = FixedPolicy.from_params(n0=1000.0)(image_prior(shepp), geom)
    assert n0.shape == (2, geom.n_views) and bool((n0 == 1000.0).all())
    info = image_prior(shepp, dose=0.1 * 4096 * geom.n_views)
    held = FixedPolicy.from_params(budget=0.25)(info, geom)
    assert torch.allclose(relative_dose(held, info.dose), torch.full((2,), 0.25, dtype=held.dtype))
    assert torch.allclose(held, torch.full_like(held, 0.15 * 4096))
    with pytest.raises(ValueError, match="n0 must be positive"):
        FixedPolicy.Config(n0=0.0)


def test_tcm_follows_the_square_root_rule(geom, shepp):
    n0 = TCMPolicy.from_params(n0_mean=2000.0)(image_prior(shepp), geom)
    p_max = ops.project(shepp, geom)[:, 0].amax(-1)
    w = torch.exp(MU * p_max / 2)
    expected = 2000.0 * geom.n_views * w / w.sum(-1, keepdim=True)
    assert torch.allclose(n0, expected, rtol=1e-10)
    # Ratios between views follow exp(mu_max (p_i - p_j) / 2) whatever the scale.
    i, j = p_max[0].argmax(), p_max[0].argmin()
    assert (n0[0, i] / n0[0, j]).item() == pytest.approx(math.exp(MU * (p_max[0, i] - p_max[0, j]).item() / 2))
    assert torch.allclose(n0.mean(-1), torch.full((2,), 2000.0, dtype=n0.dtype))


def test_tcm_strength_zero_is_fixed_and_budget_holds(geom, shepp):
    flat = TCMPolicy.from_params(strength=0.0, n0_mean=3000.0)(image_prior(shepp), geom)
    assert torch.allclose(flat, torch.full_like(flat, 3000.0))
    info = image_prior(shepp, dose=0.05 * 4096 * geom.n_views)
    held = TCMPolicy.from_params(budget=0.3)(info, geom)
    assert torch.allclose(relative_dose(held, info.dose), torch.full((2,), 0.3, dtype=held.dtype))
    free = TCMPolicy()(info, geom)
    assert torch.allclose(held / held.sum(-1, keepdim=True), free / free.sum(-1, keepdim=True))


def test_tcm_modulates_towards_the_long_axis(geom, ellipse):
    # Ellipse long along world x: rays along x (view angle pi/2, direction (-1, 0)) cross
    # more tissue, so they get more photons.
    x = ellipse(a=0.11, b=0.05)
    n0 = TCMPolicy()(image_prior(x), geom)[0]
    angles = geom.angles
    assert n0[(angles - math.pi / 2).abs().argmin()] > 2 * n0[angles.argmin()]


def test_scouts_elliptical_model_matches_the_image(geom, ellipse):
    x = ellipse(a=0.1, b=0.06)
    from_image = max_line_integrals(image_prior(x), geom)
    scouts = ScoutPrior.from_params(noise=False)(x, geom)
    from_scouts = max_line_integrals(scouts, geom)
    assert torch.allclose(from_scouts, from_image, rtol=0.03)
    n0_img = TCMPolicy()(image_prior(x), geom)
    n0_sc = TCMPolicy()(scouts, geom)
    assert torch.allclose(n0_sc, n0_img, rtol=0.05)


@pytest.mark.parametrize("mode", ["scalar", "angular"])
def test_resnet18_positive_shape_and_gradients(geom, shepp, mode):
    torch.manual_seed(0)
    policy = ResNet18Policy.from_params(mode=mode, harmonics=2, input_size=32)
    assert policy.net.conv1.in_channels == 1 and policy.net.fc.out_features == (1 if mode == "scalar" else 5)
    n0 = policy(image_prior(shepp.float()), geom)
    assert n0.shape == (2, geom.n_views) and bool((n0 > 0).all())
    # Starts near init_n0 (small last layer).
    assert torch.allclose(n0, torch.full_like(n0, 4096.0), rtol=0.2)
    if mode == "scalar":
        assert torch.allclose(n0, n0[:, :1].expand_as(n0))
    else:
        # log n0 lies in the span of the low-order Fourier basis: a smooth modulation.
        basis = fourier_basis(geom.angles.float(), 2)
        log_n0 = torch.log(n0).detach()
        coef = torch.linalg.lstsq(basis.T, log_n0.T).solution
        assert torch.allclose(basis.T @ coef, log_n0.T, atol=1e-4)
    torch.log(n0).sum().backward()
    for p in (policy.net.conv1.weight, policy.net.layer1[0].conv1.weight, policy.net.fc.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_resnet18_budget_and_scouts_input(geom, shepp):
    torch.manual_seed(0)
    scouts = ScoutPrior()(shepp.float(), geom, generator=torch.Generator().manual_seed(0))
    policy = ResNet18Policy.from_params(mode="angular", budget=0.5, input_size=32)
    n0 = policy(scouts, geom)
    assert torch.allclose(relative_dose(n0, scouts.dose), torch.full((2,), 0.5), rtol=1e-5)
    # Held to the budget, the angular shape is still learnable.
    (n0[:, 0] - n0[:, -1]).sum().backward()
    assert policy.net.fc.weight.grad.abs().sum() > 0


def test_resnet18_bounded_and_validated(geom):
    with pytest.raises(ValueError, match="input_size"):
        ResNet18Policy.Config(input_size=16)
    with pytest.raises(ValueError, match="harmonics"):
        ResNet18Policy.Config(harmonics=-1)
    policy = ResNet18Policy.from_params(input_size=32, max_log_change=1.0).eval()
    with torch.no_grad():
        policy.net.fc.bias.fill_(100.0)  # a wild network output
    n0 = policy(PriorInfo(image=torch.rand(1, 1, 40, 40)), geom)
    assert torch.allclose(n0, torch.full_like(n0, 4096.0 * math.e), rtol=1e-4)


def test_resnet18_batch_of_one(geom):
    """BatchNorm cannot train on one small prior: a clear error naming the remedies; eval mode
    and ``norm = "group"`` work with a single patient."""
    torch.manual_seed(0)
    one = PriorInfo(image=torch.rand(1, 1, 32, 32))
    policy = ResNet18Policy.from_params(input_size=32)
    with pytest.raises(ValueError, match=r"cannot train on a batch of 1 .*norm = \"group\".*eval\(\)"):
        policy.train()(one, geom)
    assert policy.eval()(one, geom).shape == (1, geom.n_views)
    # Larger inputs leave BatchNorm several values per channel: batch 1 trains.
    assert ResNet18Policy.from_params(input_size=64).train()(one, geom).shape == (1, geom.n_views)

    group = ResNet18Policy.from_params(input_size=32, norm="group", mode="angular").train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in group.modules())
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in group.modules()) == 20
    n0 = group(one, geom)
    assert n0.shape == (1, geom.n_views) and bool((n0 > 0).all())
    torch.log(n0).sum().backward()
    assert group.net.conv1.weight.grad.abs().sum() > 0
    # Batch-independent: a patient's dose does not change with the other patients.
    two = PriorInfo(image=torch.cat([one.image, torch.rand(1, 1, 32, 32)]))
    assert torch.allclose(group(two, geom)[:1], n0, rtol=1e-5)
    with pytest.raises(ValueError, match="norm must be"):
        ResNet18Policy.Config(norm="layer")
