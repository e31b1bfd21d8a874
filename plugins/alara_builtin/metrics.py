"""Image-quality metrics ``psnr`` and ``ssim``: one value per image, differentiable.

``data_range`` is 1.0 by default (LoDoPaB's "PSNR-FR", images in [0, 1]); ``"per_image"``
uses the reference image's max - min instead (DIVal's default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F

from alara.interfaces import IQMetric

from alara_builtin import checks

__all__ = ["PSNR", "RangeConfig", "SSIM", "gaussian_window"]

DataRange = Union[float, Literal["per_image"]]


@dataclass(frozen=True)
class RangeConfig:
    """The parameter both metrics have (their ``Config`` classes extend this one)."""

    #: Peak value R: a number, or "per_image" for the reference's max - min.
    data_range: DataRange = 1.0

    def __post_init__(self) -> None:
        if self.data_range == "per_image":
            return
        try:
            checks.positive(self, "data_range")
        except ValueError:
            raise ValueError(f"data_range must be a positive number or 'per_image', got "
                             f"{self.data_range!r} (1.0 for images in [0, 1])") from None


def _data_range(data_range: DataRange, x: torch.Tensor) -> torch.Tensor:
    """[B, 1, 1, 1] range per image."""
    if data_range == "per_image":
        flat = x.flatten(1)
        return (flat.amax(1) - flat.amin(1)).view(-1, 1, 1, 1)
    return torch.full((x.shape[0], 1, 1, 1), float(data_range), dtype=x.dtype, device=x.device)


class PSNR(IQMetric):
    """Peak signal-to-noise ratio ``10 log10(R^2 / MSE)`` in dB, per image."""

    name = "psnr"
    higher_is_better = True
    unit = "dB"

    @dataclass(frozen=True)
    class Config(RangeConfig):
        pass

    def compute(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mse = (x_hat - x).pow(2).flatten(1).mean(1)
        r = _data_range(self.config.data_range, x).flatten()
        return 10 * torch.log10(r**2 / mse)


def gaussian_window(size: int, sigma: float, dtype: torch.dtype = torch.float64,
                    device: Optional[torch.device] = None) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (scipy's truncated ``gaussian_filter``)."""
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


class SSIM(IQMetric):
    """Structural similarity (Wang et al., 2004) with a Gaussian window, per image.

    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``
    with ``C_i = (K_i R)^2``, local statistics from an 11x11 Gaussian (sigma 1.5), averaged
    over the pixels at least 5 from the border: the same numbers as
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``.
    """

    name = "ssim"
    higher_is_better = True
    unit = ""
    value_range = (-1.0, 1.0)

    @dataclass(frozen=True)
    class Config(RangeConfig):
        #: Side of the square Gaussian window (odd).
        window_size: int = 11
        sigma: float = 1.5
        k1: float = 0.01
        k2: float = 0.03

        def __post_init__(self) -> None:
            super().__post_init__()
            checks.whole(self, "window_size", 1)
            if self.window_size % 2 == 0:
                raise ValueError(f"window_size must be a positive odd number, got {self.window_size}")
            checks.positive(self, "sigma", "k1", "k2")

    def compute(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        b, ch, h, w = x.shape
        if min(h, w) < c.window_size:
            raise ValueError(f"images of {h}x{w} pixels are smaller than the SSIM window ({c.window_size})")
        g = gaussian_window(c.window_size, c.sigma, x.dtype, x.device)

        def blur(t: torch.Tensor) -> torch.Tensor:
            # Separable 'valid' convolution: only pixels whose window lies inside the image,
            # i.e. exactly the region skimage averages after cropping its border.
            t = t.reshape(b * ch, 1, h, w)
            t = F.conv2d(t, g.view(1, 1, -1, 1))
            return F.conv2d(t, g.view(1, 1, 1, -1))

        r = _data_range(c.data_range, x).repeat_interleave(ch, 0)
        c1, c2 = (c.k1 * r) ** 2, (c.k2 * r) ** 2
        mu_x, mu_y = blur(x_hat), blur(x)
        var_x = blur(x_hat * x_hat) - mu_x**2
        var_y = blur(x * x) - mu_y**2
        cov = blur(x_hat * x) - mu_x * mu_y
        s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        return s.reshape(b, -1).mean(1)
