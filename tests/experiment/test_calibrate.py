"""Calibration on a toy problem: the factor found for a share reaches that share (and a
slightly smaller one does not); the oracle and matched-mean searches hit their targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alara.experiment import calibrate as cal
from alara.geometry import lodopab
from alara.pipeline import Pipeline
from alara_builtin.metrics import PSNR
from alara_builtin.policies import FixedPolicy
from alara_builtin.priors import PriorExamPrior
from alara_builtin.reconstructors import FBPReconstructor
from alara_builtin.simulator import PoissonSimulator


@pytest.fixture(scope="module")
def problem():
    g = lodopab(n_angles=24, n_bins=33, image_size=24)
    xs, ys = g.grid.coordinates(dtype=torch.float32)
    X, Y = torch.meshgrid(xs, ys, indexing="ij")
    gen = torch.Generator().manual_seed(0)
    imgs = []
    for _ in range(20):   # blobs of varied size and density: varied dose needs
        s, a = 0.03 + 0.03 * float(torch.rand((), generator=gen)), 0.1 + 0.2 * float(torch.rand((), generator=gen))
        imgs.append(a * torch.exp(-(X ** 2 + Y ** 2) / (2 * s ** 2)))
    x = torch.stack(imgs)[:, None]
    pipe = Pipeline(PriorExamPrior.from_params(max_shift_px=0.0, max_rotation_deg=0.0),
                    FixedPolicy.from_params(n0=256.0), PoissonSimulator(),
                    FBPReconstructor.from_params(filter="hann", frequency_scaling=0.8))
    return pipe, x, torch.arange(20), g


def test_factor_for_share_reaches_the_share(problem):
    pipe, x, index, g = problem
    q = 40.0
    c = cal.per_image_thresholds(pipe, PSNR(), q, x, index, g, seed=3, realisations=2, steps=12)
    assert np.isfinite(c.thresholds).all() and len(np.unique(c.thresholds.round(3))) > 5
    for share in (0.5, 0.8, 0.95):
        f0 = cal.factor_for_share(c, share)
        f, measured = cal.verified_factor(pipe, PSNR(), q, c, share, x, index, g, seed=3, realisations=2)
        assert f0 <= f <= 1.1 * f0 and measured >= share    # the quantile is (nearly) right
        qs, _, _ = cal.quality_at(pipe, PSNR(), x, index, g, torch.full((20,), f), seed=3, realisations=2)
        assert float((qs >= q).double().mean()) == measured >= share
        below, _, _ = cal.quality_at(pipe, PSNR(), x, index, g, torch.full((20,), f0 * 0.9), seed=3, realisations=2)
        assert float((below >= q).double().mean()) < share
    # The doses: all scan, no prior (a free prior exam); the curve rises with the share.
    assert np.allclose(c.prior_dose, 0) and np.allclose(c.scan_dose, 256.0 / 4096.0)
    curve = cal.guarantee_curve(c, (0.5, 0.8, 1.0))
    assert [s for s, _ in curve] == [0.5, 0.8, 1.0] and curve[0][1] < curve[1][1] < curve[2][1]
    # The oracle at share 1 pays each image its own threshold: never more than fixed.
    assert cal.oracle_dose(c, 1.0) == pytest.approx(float(np.mean(c.thresholds * c.scan_dose)))
    assert cal.oracle_dose(c, 0.95) < curve[-1][1]


def test_unreachable_share_is_a_clear_error(problem):
    pipe, x, index, g = problem
    c = cal.per_image_thresholds(pipe, PSNR(), 80.0, x, index, g, seed=3, realisations=1, steps=2)
    with pytest.raises(ValueError, match=r"only 0 of 20 calibration images reach q .*lower \[objective\] target"):
        cal.factor_for_share(c, 0.95)


def test_match_mean_quality(problem):
    pipe, x, index, g = problem
    f = cal.match_mean_quality(pipe, PSNR(), 38.0, x, index, g, seed=3, realisations=1, steps=14)
    qs, _, _ = cal.quality_at(pipe, PSNR(), x, index, g, torch.full((20,), f), seed=3, realisations=1)
    assert float(qs.mean()) == pytest.approx(38.0, abs=0.1)
    assert math.isfinite(f)
