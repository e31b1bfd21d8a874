"""The one noise model: LoDoPaB-CT's Poisson photon counts, post-log.

Mean counts ``lambda = n0 exp(-mu_max A x)``; counts ``~ Poisson(lambda)`` (+ optional
Gaussian electronic noise of ``electronic_std`` counts); counts below ``min_count``
(LoDoPaB: zero counts) become ``min_count = 0.1``; ``y = -ln(counts / n0) / mu_max``.

Two forms:

- exact (``differentiable=False``): Poisson sampling in float64 (float32 loses the
  integer counts above 2^24 photons and biases the log at low counts), detached; by
  inverse transform of one uniform per bin (``sampler="inverse_cdf"``, the default), so a
  seeded draw at a higher dose has at least as many counts in every bin: evaluations at
  different doses share their random numbers and the counts rise with dose in every bin
  for a fixed seed, so image quality follows dose without independent noise on top
  (what per-image calibration needs; a filtered reconstruction's quality can still dip
  slightly between neighbouring doses), or by ``torch.poisson``
  (``sampler="poisson"``, about 10x faster, uncoupled across doses; above
  :data:`NORMAL_ABOVE` mean counts, where torch.poisson degenerates, the normal
  approximation);
- reparameterised (``differentiable=True``): ``lambda + sqrt(lambda + sigma_e^2) eps``,
  ``eps ~ N(0, 1)``, the Gaussian approximation of the Poisson law (accurate at the counts
  CT works with), differentiable in ``n0`` so a dose policy can learn through it.

Data synthesis, DICOM import, the priors and the ``poisson`` simulator all call
:func:`postlog_noise`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from alara.geometry import LODOPAB_MU_MAX

__all__ = ["MIN_COUNT", "SAMPLERS", "NORMAL_ABOVE", "NEGATIVE_TOLERANCE", "broadcast_n0", "mean_counts",
           "poisson_inverse_cdf", "postlog_noise", "check_noise_params", "check_photon_count"]

#: Exact Poisson samplers (see the module docstring).
SAMPLERS = ("inverse_cdf", "poisson")

#: LoDoPaB replaces zero photon counts by this value before taking the log.
MIN_COUNT = 0.1
#: Mean counts above which the ``poisson`` sampler draws from the normal approximation
#: ``lambda + sqrt(lambda) eps``: torch.poisson loses accuracy near 1e18 and overflows its
#: int64 counts above 2^63 (negative counts: a constant, wrong sinogram), while at 1e8 the
#: normal law's error (skewness 1e-4) is far below float32's resolution of the log.
NORMAL_ABOVE = 1e8
#: Line integrals (``mu / mu_max`` units) below ``-NEGATIVE_TOLERANCE`` are refused: no
#: matter attenuates negatively; the tolerance admits the projectors' rounding.
NEGATIVE_TOLERANCE = 1e-4


def check_noise_params(mu_max: float, min_count: float, electronic_std: float) -> None:
    """Refuse parameters without physical meaning (each must be finite; ``mu_max`` and
    ``min_count`` positive, ``electronic_std`` >= 0)."""
    for key, value, ok in (("mu_max", mu_max, mu_max > 0), ("min_count", min_count, min_count > 0),
                           ("electronic_std", electronic_std, electronic_std >= 0)):
        if not (math.isfinite(value) and ok):
            need = "a finite number >= 0" if key == "electronic_std" else "a finite positive number"
            raise ValueError(f"{key} must be {need}, got {value!r}")


def check_photon_count(n0: float, min_count: float = MIN_COUNT, what: str = "n0") -> float:
    """Refuse a photon count per bin that no scan could measure: not finite, or at most
    ``min_count`` (every expected count is then below the value zero counts are clamped to,
    so every observation is the constant ``ln(n0 / min_count) / mu_max``, not data)."""
    if isinstance(n0, bool) or not isinstance(n0, (int, float)) or not math.isfinite(n0) or n0 <= 0:
        raise ValueError(f"{what} must be a positive finite number of photons per bin, got {n0!r}; "
                         "LoDoPaB uses 4096")
    if n0 <= min_count:
        raise ValueError(f"{what} = {n0:g} photons per bin is not above the noise model's minimum count "
                         f"{min_count:g} (zero counts are clamped to it), so every observation would be the "
                         f"same constant; use at least {10 * min_count:g} (LoDoPaB: 4096)")
    return float(n0)


def broadcast_n0(n0: torch.Tensor, sinogram: torch.Tensor) -> torch.Tensor:
    """``n0`` [B, V] reshaped to broadcast against ``sinogram`` [B, C, V, K] or [B, V, K]."""
    if not isinstance(n0, torch.Tensor) or n0.dim() != 2:
        shape = tuple(n0.shape) if isinstance(n0, torch.Tensor) else type(n0).__name__
        raise ValueError(f"n0 must be a tensor of shape [B, views], got {shape}")
    if sinogram.dim() not in (3, 4):
        raise ValueError(f"sinogram must be [B, C, views, bins] or [B, views, bins], got {tuple(sinogram.shape)}")
    b, v = sinogram.shape[0], sinogram.shape[-2]
    if tuple(n0.shape) != (b, v):
        raise ValueError(f"n0 has shape {tuple(n0.shape)} but the sinogram {tuple(sinogram.shape)} "
                         f"needs [B, views] = [{b}, {v}]")
    n0 = n0.to(device=sinogram.device)
    return n0[:, None, :, None] if sinogram.dim() == 4 else n0[:, :, None]


def _check_values(sinogram: torch.Tensor, n0: torch.Tensor) -> None:
    # NaN passes every comparison-based range check, and a NaN dose would silently give
    # NaN images; both tensors are small next to the reconstruction, so check them always.
    if not bool(torch.isfinite(n0).all()) or not bool((n0 > 0).all()):
        bad = int((~(torch.isfinite(n0) & (n0 > 0))).sum())
        raise ValueError(f"n0 must be positive and finite on every view ({bad} of {n0.numel()} "
                         "values are not): check the dose policy's output and its budget")
    if not bool(torch.isfinite(sinogram).all()):
        bad = int((~torch.isfinite(sinogram)).sum())
        raise ValueError(f"the sinogram has {bad} NaN or inf values: check the image (x must be "
                         "finite, in mu / mu_max units) and the projector's input")
    low = float(sinogram.min()) if sinogram.numel() else 0.0
    if low < -NEGATIVE_TOLERANCE:
        bad = int((sinogram < -NEGATIVE_TOLERANCE).sum())
        raise ValueError(f"the sinogram has {bad} negative line integrals (min {low:.4g}): attenuation "
                         "cannot be negative; check the image (x in [0, 1], mu / mu_max units) or pass "
                         "line integrals, not post-log data with noise")


def poisson_inverse_cdf(lam: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The ``u``-quantile of Poisson(``lam``): the smallest ``k`` with ``P(K <= k) >= u``
    (float64 tensors of one shape).  Exact: ``P(K <= k) = Q(k + 1, lam)`` (regularised
    upper incomplete gamma); the search starts at the Cornish-Fisher quantile and walks
    with the pmf recurrence, which takes at most a few steps."""
    z = math.sqrt(2.0) * torch.erfinv((2 * u - 1).clamp(-1 + 1e-16, 1 - 1e-16))
    k = torch.floor(lam + torch.sqrt(lam) * z + (z * z - 1) / 6 + 0.5).clamp_(min=0)
    cdf = torch.special.gammaincc(k + 1, lam)
    pmf = torch.exp(k * torch.log(lam) - lam - torch.lgamma(k + 1))
    for _ in range(64):
        down = (cdf - pmf >= u) & (k > 0)      # P(K <= k - 1) >= u: step down
        up = cdf < u
        if not bool((down | up).any()):
            break
        cdf = torch.where(down, cdf - pmf, cdf)
        pmf = torch.where(down, pmf * k / lam, pmf)
        k = torch.where(down, k - 1, k)
        k_up = k + 1
        pmf_up = pmf * lam / k_up
        k = torch.where(up, k_up, k)
        pmf = torch.where(up, pmf_up, pmf)
        cdf = torch.where(up, cdf + pmf_up, cdf)
    return k


def mean_counts(sinogram: torch.Tensor, n0: torch.Tensor, mu_max: float = LODOPAB_MU_MAX) -> torch.Tensor:
    """Expected photon counts ``lambda = n0 exp(-mu_max A x)``, shaped like ``sinogram``."""
    return broadcast_n0(n0, sinogram).to(sinogram.dtype) * torch.exp(-mu_max * sinogram)


def postlog_noise(
    sinogram: torch.Tensor,
    n0: torch.Tensor,
    *,
    mu_max: float = LODOPAB_MU_MAX,
    min_count: float = MIN_COUNT,
    electronic_std: float = 0.0,
    differentiable: bool = False,
    generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
    sampler: str = "inverse_cdf",
) -> torch.Tensor:
    """Noisy post-log sinogram ``y`` (``sinogram``'s shape and dtype) for normalised line
    integrals ``sinogram`` [B, C, V, K] or [B, V, K] and photons per bin ``n0`` [B, V].

    ``y = -ln(max(counts, min_count) / n0) / mu_max`` with counts drawn as the module
    docstring says; exact Poisson unless ``differentiable``.  ``generator`` may be one
    generator per batch row: row ``b`` then draws from ``generator[b]`` alone, exactly as
    a call on that row by itself would, while the sampling runs on the whole batch.
    """
    check_noise_params(mu_max, min_count, electronic_std)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if isinstance(generator, (list, tuple)) and len(generator) != sinogram.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {sinogram.shape[0]}; give one per row")
    n0b = broadcast_n0(n0, sinogram)
    _check_values(sinogram, n0b)
    if differentiable:
        n0b = n0b.to(sinogram.dtype)
        lam = n0b * torch.exp(-mu_max * sinogram)
        eps = _draw(torch.randn, lam, generator)
        counts = lam + torch.sqrt(lam + electronic_std ** 2) * eps
        # clamp, not where: keeps a (zero) gradient path and maps 0 -> min_count as LoDoPaB.
        return -torch.log(counts.clamp(min=min_count) / n0b) / mu_max
    with torch.no_grad():
        n64 = n0b.detach().double()
        lam = n64 * torch.exp(-mu_max * sinogram.detach().double())
        if sampler == "poisson":
            big = lam > NORMAL_ABOVE
            rate = lam.clamp(max=NORMAL_ABOVE) if bool(big.any()) else lam
            if isinstance(generator, (list, tuple)):
                counts = torch.cat([torch.poisson(rate[b:b + 1], generator=g) for b, g in enumerate(generator)])
            else:
                counts = torch.poisson(rate, generator=generator)
            if bool(big.any()):  # drawn only then: results at ordinary doses are unchanged
                counts = torch.where(big, lam + torch.sqrt(lam) * _draw(torch.randn, lam, generator), counts)
        else:
            counts = poisson_inverse_cdf(lam, _draw(torch.rand, lam, generator))
        if electronic_std > 0:
            counts = counts + electronic_std * _draw(torch.randn, lam, generator)
        return (-torch.log(counts.clamp_(min=min_count) / n64) / mu_max).to(sinogram.dtype)


def _draw(fn: object, like: torch.Tensor,
          generator: Union[None, torch.Generator, Sequence[torch.Generator]]) -> torch.Tensor:
    """``fn`` (torch.rand / torch.randn) shaped like ``like``; with one generator per
    batch row, each row drawn from its own (the same numbers as a call on that row)."""
    kw = dict(dtype=like.dtype, device=like.device)
    if isinstance(generator, (list, tuple)):
        if len(generator) != like.shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {like.shape[0]}; give one per row")
        return torch.cat([fn(like[b:b + 1].shape, generator=g, **kw) for b, g in enumerate(generator)])
    return fn(like.shape, generator=generator, **kw)
