"""Continuous tissue texture for synthetic patients: random fields defined in world coordinates.

Real CT is textured everywhere: organ parenchyma, fat septa, trabecular bone, lung
parenchyma.  Each texture here is a stationary Gaussian random field with a chosen power
spectrum, drawn once on a fixed lattice (``TextureParams.cell`` metres, over a square of
``TextureParams.extent`` metres centred on the rotation axis) and interpolated bilinearly
at the pixel centres, so the same seed gives the same texture on every grid.  Grids whose
pixels are coarser than the lattice sample the lattice averaged over one pixel, so a
coarse rendering approximates the fine rendering averaged down, as the detector would.

Fields (unit standard deviation on the lattice; amplitudes are in HU):

- soft tissue and organs: power-law noise, power spectrum ``~ f^-beta`` (real CT organ
  texture and anatomical "clutter" follow power laws, beta about 2-3);
- lung parenchyma: the same kind of field (alveolar structure, interlobular septa);
- fat: septa (fibrous strands), the thin zero-level lines of a band-pass field at ~8 mm,
  ``exp(-(n / w)^2)``, with ``w`` set so a fraction ``fat_strands`` of the fat is covered;
- cancellous bone: fine band-pass noise at ~2.5 mm (the trabecular mottle CT resolves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = ["TextureParams", "DEFAULT_TEXTURE", "TextureFields", "SOFT", "LUNG", "STRANDS",
           "TRABECULAR", "box_coverage"]

#: Channels of :class:`TextureFields`.
SOFT, LUNG, STRANDS, TRABECULAR = range(4)


@dataclass(frozen=True)
class TextureParams:
    """Texture amplitudes (HU, standard deviations) and fine-anatomy settings.

    Defaults: see docs/data.md ("Texture"), measured on real CT where a measurement exists.
    """

    #: Soft tissue and organ texture, std (HU); clipped at 3 std.
    soft_hu: float = 15.0
    #: Power-law exponent of the soft-tissue / lung spectra (power ~ f^-beta).
    beta: float = 2.0
    #: Lung parenchyma texture, std (HU).
    lung_hu: float = 40.0
    #: Trabecular mottle in cancellous bone, std (HU).
    bone_hu: float = 120.0
    #: Fraction of the fat area covered by fibrous septa (soft-tissue HU).
    fat_strands: float = 0.15
    #: Density of lung vessels and airways (1: default; 0: none).
    vessels: float = 1.0
    #: Lattice cell (m): the finest texture scale.
    cell: float = 0.00125
    #: Side of the square lattice (m), centred on the rotation axis.
    extent: float = 0.32

    def __post_init__(self) -> None:
        for name in ("soft_hu", "lung_hu", "bone_hu", "vessels"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"TextureParams.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.fat_strands < 1:
            raise ValueError(f"TextureParams.fat_strands must be in [0, 1), got {self.fat_strands}")
        if not 0 < self.beta < 6:
            raise ValueError(f"TextureParams.beta must be in (0, 6), got {self.beta}")
        if not (0 < self.cell and self.extent >= 16 * self.cell):
            raise ValueError(f"TextureParams needs cell > 0 and extent >= 16 cells, got cell "
                             f"{self.cell} m, extent {self.extent} m")


DEFAULT_TEXTURE = TextureParams()


@lru_cache(maxsize=8)
def _spectra(params: TextureParams, m: int) -> torch.Tensor:
    """Amplitude filters ``[4, m, m // 2 + 1]`` (one per channel) on the lattice's
    half-spectrum frequencies (``rfft2`` layout)."""
    fx = torch.fft.fftfreq(m, d=params.cell, dtype=torch.float64)       # cycles / m
    fy = torch.fft.rfftfreq(m, d=params.cell, dtype=torch.float64)
    f = torch.sqrt(fx[:, None] ** 2 + fy[None, :] ** 2)
    nyq = 0.5 / params.cell
    # Roll off towards the lattice Nyquist frequency so bilinear interpolation is smooth,
    # and below 1 / (6 cm): slower variation is the organs' own (painted) layout.
    roll = torch.exp(-(f / (0.8 * nyq)) ** 2)
    low = 1.0 / 0.06
    power_law = (torch.clamp(f, min=low) ** (-params.beta / 2)) * roll * (1 - torch.exp(-(f / low) ** 2))

    def band(centre: float) -> torch.Tensor:
        return torch.exp(-((f - 1.0 / centre) / (0.5 / centre)) ** 2) * roll

    return torch.stack([power_law, power_law, band(0.008), band(0.0025)]).to(torch.float32)


class TextureFields:
    """The four texture channels of one slice, drawn from ``gen`` on the fixed lattice."""

    def __init__(self, gen: torch.Generator, params: TextureParams) -> None:
        self.params = params
        m = 2 * int(math.ceil(params.extent / params.cell / 2))
        white = torch.randn((2, 4, m, m // 2 + 1), generator=gen, dtype=torch.float32)
        # A random half-spectrum: irfft2 makes it Hermitian, so the field is real.
        fields = torch.fft.irfft2(torch.complex(white[0], white[1]) * _spectra(params, m), s=(m, m))
        # Unit std; a subsample estimates it well (fields are smooth over several cells).
        fields = fields / fields[:, ::4, ::4].flatten(1).std(dim=1).clamp_min(1e-12)[:, None, None]
        # Septa: thin lines along the zero level set of the band-pass field.  For a unit
        # Gaussian n, P(|n| < w) ~ 2 w / sqrt(2 pi): w sets the covered fraction.
        w = max(params.fat_strands, 1e-6) * math.sqrt(2 * math.pi) / 2
        fields[STRANDS] = torch.exp(-(fields[STRANDS] / w) ** 2) if params.fat_strands > 0 else 0.0
        self.lattice = fields[None]  # [1, 4, m, m]; axis -2 is x, axis -1 is y

    def sample(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Channels ``[4, len(xs), len(ys)]`` at the pixel centres ``xs x ys`` (metres).

        On pixels at least as large as a lattice cell, the lattice is first averaged over
        one pixel (a box filter applied in Fourier space), as the detector would average
        it; finer grids interpolate the lattice directly.
        """
        hx = float(xs[1] - xs[0]) if len(xs) > 1 else 0.0
        hy = float(ys[1] - ys[0]) if len(ys) > 1 else 0.0
        lat = self.lattice
        if max(hx, hy) >= self.params.cell:
            m = lat.shape[-1]
            fx = torch.fft.fftfreq(m, d=self.params.cell)[:, None]
            fy = torch.fft.rfftfreq(m, d=self.params.cell)[None, :]
            box = torch.sinc(fx * hx) * torch.sinc(fy * hy)
            lat = torch.fft.irfft2(torch.fft.rfft2(lat) * box, s=(m, m))
        half = self.params.extent / 2
        X, Y = torch.meshgrid(xs.to(torch.float32) / half, ys.to(torch.float32) / half, indexing="ij")
        # grid_sample's last grid axis is (width, height) = (lattice axis -1, axis -2).
        g = torch.stack((Y, X), dim=-1)[None]
        return F.grid_sample(lat, g, mode="bilinear", padding_mode="border",
                             align_corners=False)[0]


def box_coverage(distance: torch.Tensor, radius: torch.Tensor, pixel: float) -> torch.Tensor:
    """Fraction of a pixel of width ``pixel`` covered by a bar of half-width ``radius`` whose
    axis lies ``distance`` from the pixel centre (1-D box filter: partial-volume averaging)."""
    lo = torch.maximum(distance - pixel / 2, -radius)
    hi = torch.minimum(distance + pixel / 2, radius)
    return ((hi - lo) / pixel).clamp(0.0, 1.0)
