"""Reconstructors: ``fbp`` and ``fbp_unet`` (FBP followed by DIVal's LoDoPaB U-Net)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from alara import ops
from alara.geometry import Geometry
from alara.interfaces import Reconstructor

from alara_builtin import checks
from alara_builtin.unet import UNet

__all__ = ["FBPParams", "FBPReconstructor", "FBPUNetReconstructor"]

Filter = Literal["ram-lak", "shepp-logan", "cosine", "hamming", "hann"]


@dataclass(frozen=True)
class FBPParams:
    """The FBP parameters of ``fbp``, ``fbp_unet`` and the ``prescan`` prior (their
    ``Config`` classes extend this one); defaults: DIVal's LoDoPaB reference."""

    #: Filter window applied to the ramp filter.
    filter: Filter = "hann"
    #: Cut-off as a fraction of the Nyquist frequency.
    frequency_scaling: float = 0.641

    def __post_init__(self) -> None:
        if self.filter not in ops.FILTERS:
            raise ValueError(f"filter must be one of {ops.FILTERS}, got {self.filter!r}")
        if not 0 < self.frequency_scaling <= 1:
            raise ValueError(f"frequency_scaling must be in (0, 1], got {self.frequency_scaling}")

    def fbp(self, y: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        """``alara.ops.fbp`` of ``y`` [B, C, views, bins] with these parameters."""
        return ops.fbp(y, geometry, filter=self.filter, frequency_scaling=self.frequency_scaling)


def _check_sinogram(y: torch.Tensor) -> None:
    if y.dim() != 4:
        raise ValueError(f"y must be a sinogram batch [B, C, views, bins], got shape {tuple(y.shape)}")


class FBPReconstructor(Reconstructor):
    """Filtered backprojection (default: DIVal's LoDoPaB reference, Hann at 0.641)."""

    name = "fbp"

    @dataclass(frozen=True)
    class Config(FBPParams):
        #: Clip the image to [0, 1] (the range of x).
        clip: bool = False

    def forward(self, y: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        _check_sinogram(y)
        x = self.config.fbp(y, geometry)
        return x.clamp(0.0, 1.0) if self.config.clip else x


class FBPUNetReconstructor(Reconstructor):
    """FBP, then a U-Net post-processing network (DIVal's LoDoPaB FBP+U-Net)."""

    name = "fbp_unet"

    @dataclass(frozen=True)
    class Config(FBPParams):
        #: Depth: number of U-Net scales (uses the first ``scales`` entries of channels).
        scales: int = 5
        #: Width: channels per scale.
        channels: tuple[int, ...] = (32, 32, 64, 64, 128, 128)
        #: Channels of each skip connection (0 disables skips).
        skip_channels: int = 4
        use_sigmoid: bool = True
        use_norm: bool = True
        #: Learn a correction of the FBP image, ``x_hat = FBP + U-Net(FBP)``, starting at
        #: exactly FBP (last layer zero): trains in far fewer steps; needs use_sigmoid = false.
        residual: bool = False

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.residual and self.use_sigmoid:
                raise ValueError("residual = true needs use_sigmoid = false (a sigmoid cannot output a "
                                 "correction of the FBP image)")
            checks.whole(self, "scales", 1)
            checks.whole(self, "skip_channels", 0)
            if len(self.channels) < self.scales:
                raise ValueError(f"channels needs at least `scales` = {self.scales} entries, got {self.channels}")
            if any(isinstance(ch, bool) or not isinstance(ch, int) or ch < 1 for ch in self.channels):
                raise ValueError(f"channels must be whole numbers >= 1, got {self.channels!r}")

    def __init__(self, config: Optional[Config] = None) -> None:
        super().__init__(config)
        c = self.config
        self.unet = UNet(1, 1, c.channels[: c.scales], [c.skip_channels] * c.scales,
                         use_sigmoid=c.use_sigmoid, use_norm=c.use_norm)
        if c.residual:
            with torch.no_grad():
                self.unet.outc.weight.zero_()
                self.unet.outc.bias.zero_()

    def forward(self, y: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        _check_sinogram(y)
        x = self.config.fbp(y, geometry)
        b, ch, h, w = x.shape
        param = next(self.unet.parameters())
        # Channels as batch: the U-Net is single-channel, like DIVal's.
        out = self.unet(x.reshape(b * ch, 1, h, w).to(param.dtype)).reshape(b, ch, h, w).to(x.dtype)
        return x + out if self.config.residual else out
