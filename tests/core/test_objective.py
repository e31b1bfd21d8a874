"""The constrained hinge: above q only the dose acts (and lowers n0); below q the quality
term's gradient raises Q; the metric's direction is respected."""

from __future__ import annotations

import pytest
import torch

from alara.objective import ConstrainedHinge, ObjectiveConfig, reconstruction_loss
from alara.pipeline import Scan
from alara_builtin.metrics import PSNR


def scan_for(x: torch.Tensor, noise: float, log_n0: torch.Tensor) -> Scan:
    """A scan whose image error shrinks with dose: x_hat = x + noise * exp(-log_n0 / 2)."""
    n0 = torch.exp(log_n0).unsqueeze(-1).expand(-1, 10)
    x_hat = x + noise * torch.exp(-log_n0 / 2).view(-1, 1, 1, 1) * torch.linspace(-1, 1, x[0].numel()).view(x[0].shape)
    rel = n0.sum(-1) / (4096 * 10)
    return Scan(None, n0, rel, torch.zeros(1), torch.zeros(1), x_hat)


def test_above_q_only_dose_acts_and_pushes_n0_down():
    x = torch.full((2, 1, 8, 8), 0.3, dtype=torch.float64)
    log_n0 = torch.tensor([8.0, 8.0], dtype=torch.float64, requires_grad=True)
    hinge = ConstrainedHinge(PSNR(), ObjectiveConfig(target=10.0, weight=5.0))
    terms = hinge(scan_for(x, 0.5, log_n0), x)
    assert bool((terms.shortfall < 0).all())          # both images beat q = 10 dB
    terms.loss.backward()
    # d/d log n0 of mean(relative dose) = relative dose / B > 0: descent lowers n0.
    expected = terms.relative_dose / 2
    assert torch.allclose(log_n0.grad, expected)


def test_below_q_the_gradient_raises_quality():
    x = torch.full((1, 1, 8, 8), 0.3, dtype=torch.float64)
    log_n0 = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    hinge = ConstrainedHinge(PSNR(), ObjectiveConfig(target=60.0, weight=5.0))
    scan = scan_for(x, 0.5, log_n0)
    terms = hinge(scan, x)
    assert float(terms.shortfall[0]) > 0
    terms.loss.backward()
    assert float(log_n0.grad[0]) < 0                  # descent raises n0, hence PSNR
    with torch.no_grad():
        step = log_n0 - 0.1 * log_n0.grad
    assert float(PSNR()(scan_for(x, 0.5, step).x_hat, x)[0]) > float(terms.quality[0])


def test_margin_and_direction():
    x = torch.full((1, 1, 8, 8), 0.3, dtype=torch.float64)
    log_n0 = torch.tensor([6.0], dtype=torch.float64)
    q = float(PSNR()(scan_for(x, 0.5, log_n0).x_hat, x)[0])
    at_q = ConstrainedHinge(PSNR(), ObjectiveConfig(target=q - 0.1))(scan_for(x, 0.5, log_n0), x)
    with_margin = ConstrainedHinge(PSNR(), ObjectiveConfig(target=q - 0.1, margin=0.5))(scan_for(x, 0.5, log_n0), x)
    assert float(at_q.shortfall[0]) == pytest.approx(-0.1) and float(with_margin.shortfall[0]) == pytest.approx(0.4)

    class Error(PSNR):   # lower is better: aim at q - m
        name = "neg_psnr"
        higher_is_better = False

        def compute(self, x_hat, x):
            return -super().compute(x_hat, x)

    h = ConstrainedHinge(Error(), ObjectiveConfig(target=-q + 0.1, margin=0.5))
    assert h.aim == pytest.approx(-q + 0.1 - 0.5)
    assert float(h(scan_for(x, 0.5, log_n0), x).shortfall[0]) == pytest.approx(0.4)


def test_reconstruction_term_and_config_errors():
    x = torch.zeros(2, 1, 4, 4)
    x_hat = torch.ones(2, 1, 4, 4) * 0.5
    assert torch.allclose(reconstruction_loss(x_hat, x, "mse"), torch.full((2,), 0.25))
    assert torch.allclose(reconstruction_loss(x_hat, x, "l1"), torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="weight \\(lambda\\) must be positive"):
        ObjectiveConfig(weight=0.0)
    with pytest.raises(ValueError, match="target must be a finite number"):
        ObjectiveConfig(target=float("nan"))
