"""Reconstructors ``fbp`` and ``fbp_unet`` (DIVal's LoDoPaB U-Net)."""

from __future__ import annotations

import pytest
import torch

from alara import ops
from alara_builtin.metrics import PSNR
from alara_builtin.reconstructors import FBPReconstructor, FBPUNetReconstructor
from alara_builtin.unet import UNet


def test_fbp_is_the_configured_ops_fbp(geom, shepp):
    y = ops.project(shepp, geom)
    rec = FBPReconstructor.from_params(filter="shepp-logan", frequency_scaling=0.9)
    assert torch.allclose(rec(y, geom), ops.fbp(y, geom, filter="shepp-logan", frequency_scaling=0.9))
    default = FBPReconstructor()
    assert (default.config.filter, default.config.frequency_scaling) == ("hann", 0.641)
    assert bool((PSNR()(default(y, geom), shepp) > 20).all())
    clipped = FBPReconstructor.from_params(clip=True)(y, geom)
    assert float(clipped.min()) >= 0 and float(clipped.max()) <= 1


def test_fbp_errors(geom):
    with pytest.raises(ValueError, match="filter must be one of"):
        FBPReconstructor.Config(filter="hanning")
    with pytest.raises(ValueError, match=r"frequency_scaling must be in \(0, 1\]"):
        FBPReconstructor.Config(frequency_scaling=0.0)
    with pytest.raises(ValueError, match=r"y must be a sinogram batch \[B, C, views, bins\]"):
        FBPReconstructor()(torch.zeros(geom.sinogram_shape), geom)


def test_unet_dival_reference_architecture():
    rec = FBPUNetReconstructor()
    net = rec.unet
    assert net.scales == 5 and rec.config.channels[:5] == (32, 32, 64, 64, 128)
    assert net.inc[0].out_channels == 32
    assert [d.conv[0].out_channels for d in net.down] == [32, 64, 64, 128]
    assert all(d.conv[0].stride == (2, 2) for d in net.down)
    assert [u.skip[0].out_channels for u in net.up] == [4, 4, 4, 4]
    assert [u.conv[1].in_channels for u in net.up] == [128 + 4, 64 + 4, 64 + 4, 32 + 4]
    assert net.outc.out_channels == 1 and net.use_sigmoid
    assert sum(p.numel() for p in net.parameters()) == dival_unet_parameters((32, 32, 64, 64, 128), 4)


def dival_unet_parameters(ch: tuple[int, ...], skip: int) -> int:
    """Parameter count of DIVal's ``UNet(1, 1, ch, [skip] * len(ch))`` block by block
    (dival/reconstructors/networks/unet.py): conv weights + biases, BatchNorm scale + shift."""
    conv = lambda cin, cout, k: cout * cin * k * k + cout  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(1, ch[0], 3) + bn(ch[0])  # InBlock
    for cin, cout in zip(ch[:-1], ch[1:]):  # DownBlocks
        total += conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
    rev = ch[::-1]
    for cin, cout in zip(rev[:-1], rev[1:]):  # UpBlocks
        total += bn(cin + skip) + conv(cin + skip, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
        total += conv(cout, skip, 1) + bn(skip)  # skip_conv
    return total + conv(ch[0], 1, 1)  # OutBlock


@pytest.mark.parametrize("size", [32, 37])
def test_fbp_unet_shapes_range_and_gradients(geom, shepp, size):
    rec = FBPUNetReconstructor.from_params(scales=3, channels=(8, 8, 16), skip_channels=2)
    assert rec.unet.scales == 3 and len(rec.unet.down) == 2
    if size == 32:
        y = ops.project(shepp, geom).float().requires_grad_(True)
        out = rec(y, geom)
        assert out.shape == shepp.shape and out.dtype == torch.float32
        out.sum().backward()
        assert y.grad is not None and y.grad.abs().sum() > 0
    else:  # odd sizes: the upsampled path is cropped to the skip's size
        out = rec.unet(torch.rand(2, 1, size, size))
        assert out.shape == (2, 1, size, size)
    assert float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1  # sigmoid


def test_fbp_unet_channels_as_batch_and_no_skips(geom, shepp):
    rec = FBPUNetReconstructor.from_params(scales=2, channels=(4, 8), skip_channels=0, use_sigmoid=False).eval()
    y = ops.project(shepp, geom).float()
    two = rec(torch.cat([y, y], dim=1), geom)
    assert two.shape == (2, 2, 32, 32)
    assert torch.allclose(two[:, 0], two[:, 1])
    assert rec.unet.up[0].skip is None


def test_fbp_unet_config_errors():
    with pytest.raises(ValueError, match="channels needs at least `scales` = 7"):
        FBPUNetReconstructor.Config(scales=7)
    with pytest.raises(ValueError, match="scales must be >= 1"):
        FBPUNetReconstructor.Config(scales=0)
    with pytest.raises(ValueError, match="same length"):
        UNet(1, 1, (4, 8), (1,))


def test_residual_unet_starts_at_fbp_and_refuses_a_sigmoid(geometry):
    from alara_builtin.reconstructors import FBPReconstructor, FBPUNetReconstructor

    y = torch.rand(2, 1, geometry.n_views, geometry.n_bins, dtype=torch.float64) * 0.1
    params = dict(scales=2, channels=(4, 8), skip_channels=2, use_sigmoid=False, residual=True)
    rec = FBPUNetReconstructor.from_params(**params).double().eval()
    assert torch.allclose(rec(y, geometry), FBPReconstructor()(y, geometry), atol=1e-12)
    with pytest.raises(ValueError, match="residual = true needs use_sigmoid = false"):
        FBPUNetReconstructor.from_params(residual=True)
