"""The U-Net of DIVal's LoDoPaB-CT FBP+U-Net reference (Leuschner et al., 2021).

Per scale: two 3x3 conv + BatchNorm + LeakyReLU(0.2) blocks; downsampling by a stride-2
conv; upsampling bilinear (align_corners=True); skip connections squeezed by a 1x1 conv
to ``skip_channels``; 1x1 output conv, optional sigmoid.  DIVal's LoDoPaB setting:
5 scales of channels (32, 32, 64, 64, 128), 4 skip channels, sigmoid output.

One deliberate difference: with ``skip_channels = 0`` DIVal still concatenates a zeroed
one-channel skip; here that scale simply has no skip (one input channel fewer).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet"]


def _conv_bn_act(in_ch: int, out_ch: int, stride: int = 1, use_norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)]
    if use_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class _Down(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, use_norm: bool) -> None:
        super().__init__()
        self.conv = nn.Sequential(*_conv_bn_act(in_ch, out_ch, 2, use_norm), *_conv_bn_act(out_ch, out_ch, 1, use_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Up(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, skip_ch: int, use_norm: bool) -> None:
        super().__init__()
        pre: list[nn.Module] = [nn.BatchNorm2d(in_ch + skip_ch)] if use_norm else []
        self.conv = nn.Sequential(*pre, *_conv_bn_act(in_ch + skip_ch, out_ch, 1, use_norm),
                                  *_conv_bn_act(out_ch, out_ch, 1, use_norm))
        self.skip = None
        if skip_ch > 0:
            skip: list[nn.Module] = [nn.Conv2d(out_ch, skip_ch, 1)]
            if use_norm:
                skip.append(nn.BatchNorm2d(skip_ch))
            skip.append(nn.LeakyReLU(0.2, inplace=True))
            self.skip = nn.Sequential(*skip)

    def forward(self, x: torch.Tensor, bridge: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        if self.skip is not None:
            s = self.skip(bridge)
            # Odd sizes: upsampling overshoots by one pixel; centre-crop both to the smaller.
            h, w = min(x.shape[-2], s.shape[-2]), min(x.shape[-1], s.shape[-1])
            x = torch.cat([_centre_crop(x, h, w), _centre_crop(s, h, w)], dim=1)
        else:
            x = _centre_crop(x, bridge.shape[-2], bridge.shape[-1])
        return self.conv(x)


def _centre_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


class UNet(nn.Module):
    """U-Net with ``len(channels)`` scales; ``skip_channels`` per scale (0: no skip)."""

    def __init__(self, in_ch: int, out_ch: int, channels: Sequence[int], skip_channels: Sequence[int],
                 use_sigmoid: bool = True, use_norm: bool = True) -> None:
        super().__init__()
        if len(channels) != len(skip_channels) or len(channels) < 1:
            raise ValueError(f"channels and skip_channels need the same length >= 1, got "
                             f"{len(channels)} and {len(skip_channels)}")
        self.scales = len(channels)
        self.use_sigmoid = use_sigmoid
        self.inc = nn.Sequential(*_conv_bn_act(in_ch, channels[0], 1, use_norm))
        self.down = nn.ModuleList(_Down(channels[i - 1], channels[i], use_norm) for i in range(1, self.scales))
        self.up = nn.ModuleList(_Up(channels[-i], channels[-i - 1], skip_channels[-i], use_norm)
                                for i in range(1, self.scales))
        self.outc = nn.Conv2d(channels[0], out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = [self.inc(x)]
        for down in self.down:
            xs.append(down(xs[-1]))
        y = xs[-1]
        for i, up in enumerate(self.up):
            y = up(y, xs[-2 - i])
        y = self.outc(y)
        return torch.sigmoid(y) if self.use_sigmoid else y
