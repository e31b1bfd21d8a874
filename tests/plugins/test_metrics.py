"""``psnr`` and ``ssim`` against scikit-image, and their gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alara_builtin.metrics import PSNR, SSIM, gaussian_window

skm = pytest.importorskip("skimage.metrics")


def pair(b: int = 3, c: int = 1, h: int = 40, w: int = 37, noise: float = 0.08, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g, dtype=torch.float64) * 0.6 + 0.1
    x_hat = (x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x_hat, x


def sk_ssim(x_hat: np.ndarray, x: np.ndarray, data_range: float, channel_axis=None) -> float:
    return skm.structural_similarity(x, x_hat, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=data_range, channel_axis=channel_axis)


def test_psnr_matches_skimage():
    x_hat, x = pair()
    ours = PSNR()(x_hat, x)
    ref = [skm.peak_signal_noise_ratio(x[i, 0].numpy(), x_hat[i, 0].numpy(), data_range=1.0) for i in range(3)]
    assert torch.allclose(ours, torch.tensor(ref, dtype=torch.float64), atol=1e-8)
    per_image = PSNR.from_params(data_range="per_image")(x_hat, x)
    ref = [skm.peak_signal_noise_ratio(x[i, 0].numpy(), x_hat[i, 0].numpy(),
                                       data_range=float(x[i].max() - x[i].min())) for i in range(3)]
    assert torch.allclose(per_image, torch.tensor(ref, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(PSNR.from_params(data_range=2.0)(x_hat, x), ours + 20 * math.log10(2))


@pytest.mark.parametrize("shape", [(40, 37), (11, 11), (64, 64)])
def test_ssim_matches_skimage(shape):
    x_hat, x = pair(h=shape[0], w=shape[1], seed=shape[0])
    ours = SSIM()(x_hat, x)
    ref = [sk_ssim(x_hat[i, 0].numpy(), x[i, 0].numpy(), 1.0) for i in range(3)]
    assert torch.allclose(ours, torch.tensor(ref, dtype=torch.float64), atol=1e-3)
    ours32 = SSIM()(x_hat.float(), x.float())
    assert torch.allclose(ours32.double(), torch.tensor(ref, dtype=torch.float64), atol=1e-3)


def test_ssim_per_image_range_and_channels():
    x_hat, x = pair(b=2, c=3)
    ours = SSIM.from_params(data_range="per_image")(x_hat, x)
    ref = [sk_ssim(x_hat[i].numpy(), x[i].numpy(), float(x[i].max() - x[i].min()), channel_axis=0) for i in range(2)]
    assert torch.allclose(ours, torch.tensor(ref, dtype=torch.float64), atol=1e-3)


def test_identical_images_and_ordering():
    x_hat, x = pair(b=2)
    assert torch.allclose(SSIM()(x, x), torch.ones(2, dtype=torch.float64))
    assert torch.isinf(PSNR()(x, x)).all()  # perfect: allowed
    broken = x.clone()
    broken[1, 0, 0, 0] = float("nan")
    for metric in (PSNR(), SSIM()):
        with pytest.raises(ValueError, match=rf"iq_metric '{metric.name}' is NaN or -inf for 1 of 2 images"):
            metric(broken, x)
    worse, _ = pair(b=2, noise=0.2)
    for metric in (PSNR(), SSIM()):
        assert metric.higher_is_better
        assert bool((metric(x_hat, x) > metric(worse, x)).all())
    assert PSNR.unit == "dB"


def test_gaussian_window_is_scipys_truncated_gaussian():
    w = gaussian_window(11, 1.5)
    t = np.arange(-5, 6)
    ref = np.exp(-0.5 * (t / 1.5) ** 2)
    assert np.allclose(w.numpy(), ref / ref.sum())


@pytest.mark.parametrize("metric", [PSNR(), SSIM.from_params(window_size=5, sigma=1.0)])
def test_gradcheck(metric):
    x_hat, x = pair(b=2, h=7, w=6)
    x_hat.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: metric(a, x), (x_hat,))


def test_errors():
    with pytest.raises(ValueError, match="data_range must be a positive number or 'per_image'"):
        PSNR.Config(data_range=0.0)
    with pytest.raises(ValueError, match="data_range"):
        SSIM.Config(data_range="per-image")
    with pytest.raises(ValueError, match="positive odd"):
        SSIM.Config(window_size=10)
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        SSIM()(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        PSNR()(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))


def test_shortfall_follows_the_metric_direction():
    q = torch.tensor([30.0, 40.0])
    assert torch.equal(PSNR().shortfall(q, 35.0), torch.tensor([5.0, -5.0]))
    assert torch.equal(PSNR().meets(q, 35.0), torch.tensor([False, True]))

    class Noise(PSNR):  # a lower-is-better metric: the margin flips sign
        name = "noise_std"
        higher_is_better = False

    assert torch.equal(Noise().shortfall(q, 35.0), torch.tensor([-5.0, 5.0]))
    assert torch.equal(Noise().meets(q, 35.0), torch.tensor([True, False]))
