"""Prior information: pre-scan, scouts, prior exam, with the dose each one spends."""

from __future__ import annotations

import math

import pytest
import torch

from alara import ops
from alara.interfaces import relative_dose
from alara_builtin.metrics import PSNR
from alara_builtin.priors import PreScanPrior, PriorExamPrior, ScoutPrior


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_prescan_dose_and_image(geom, shepp):
    info = PreScanPrior.from_params(relative_dose=0.5)(shepp, geom, generator=gen())
    assert info.image.shape == shepp.shape and info.scouts is None
    assert torch.allclose(info.dose, torch.full((2,), 0.5 * 4096 * geom.n_views, dtype=info.dose.dtype))
    # The total relative dose of a scan counts the pre-scan: 1.0 + 0.5.
    n0 = torch.full((2, geom.n_views), 4096.0, dtype=torch.float64)
    assert torch.allclose(relative_dose(n0, info.dose), torch.full((2,), 1.5, dtype=torch.float64))
    assert float(info.image.min()) >= 0 and float(info.image.max()) <= 1  # clipped
    # A reasonable image of the patient; more dose, better image.
    low = PreScanPrior.from_params(relative_dose=2e-4)(shepp, geom, generator=gen())
    q_high, q_low = PSNR()(info.image, shepp), PSNR()(low.image, shepp)
    assert bool((q_high > 20).all()) and bool((q_high > q_low + 3).all())


def test_prescan_sparse_views_keeps_the_dose(geom, shepp):
    info = PreScanPrior.from_params(relative_dose=0.1, view_step=3)(shepp, geom, generator=gen())
    assert torch.allclose(info.dose, torch.full((2,), 0.1 * 4096 * geom.n_views, dtype=info.dose.dtype))
    assert info.image.shape == shepp.shape
    with pytest.raises(ValueError, match="view_step"):
        PreScanPrior.Config(view_step=0)


def test_scouts_are_the_0_and_90_degree_projections(geom, shepp):
    info = ScoutPrior.from_params(noise=False)(shepp, geom)
    assert info.scouts.shape == (2, 2, geom.n_bins)
    assert torch.allclose(info.scout_angles, torch.tensor([0.0, math.pi / 2], dtype=torch.float64))
    from alara_builtin.priors import with_angles

    expected = ops.project(shepp, with_angles(geom, info.scout_angles))[:, 0]
    assert torch.allclose(info.scouts, expected)
    assert torch.allclose(info.dose, torch.full((2,), 2 * 4096.0, dtype=info.dose.dtype))
    noisy = ScoutPrior.from_params(n0=1e6)(shepp, geom, generator=gen())
    assert not torch.equal(noisy.scouts, info.scouts)
    assert torch.allclose(noisy.scouts, info.scouts, atol=5e-3)
    with pytest.raises(ValueError, match="orthogonal"):
        ScoutPrior.Config(angles_deg=(0.0, 45.0))


def test_prior_exam(geom, shepp):
    exam = torch.rand_like(shepp)
    info = PriorExamPrior()(shepp, geom, exam=exam)
    assert info.image is exam and torch.equal(info.dose, torch.zeros(2, dtype=shepp.dtype))
    same = PriorExamPrior.from_params(max_shift_px=0.0, max_rotation_deg=0.0)(shepp, geom)
    assert torch.allclose(same.image, shepp, atol=1e-12)
    moved = PriorExamPrior.from_params(max_shift_px=3.0)(shepp, geom, generator=gen(1))
    assert not torch.allclose(moved.image, shepp, atol=1e-3)
    assert moved.image.sum().item() == pytest.approx(shepp.sum().item(), rel=0.05)  # same patient
    assert torch.equal(moved.dose, torch.zeros(2, dtype=shepp.dtype))


def test_prior_input_checks(geom):
    with pytest.raises(ValueError, match=r"x must be \[B, 1, H, W\] with \(H, W\) = \(32, 32\)"):
        PreScanPrior()(torch.zeros(1, 1, 16, 16), geom)
