"""The one forward pass: patient -> prior -> dose policy -> simulator -> reconstructor.

Training, evaluation, calibration, the demo and the experiment all call
:meth:`Pipeline.forward`, so a dose is always counted the same way (the prior's dose
included) and noise is always drawn by the configured simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from alara import ops
from alara.geometry import Geometry
from alara.interfaces import DosePolicy, IQMetric, Prior, PriorInfo, Reconstructor, Simulator, relative_dose

__all__ = ["Scan", "Pipeline", "noise_generator", "twin_background", "scan_truth"]


@dataclass
class Scan:
    """Everything one pass produced for a batch of B patients.

    - ``prior``: what the policy saw (its ``dose`` is already spent); ``None`` when ``n0``
      was given and no policy ran;
    - ``n0``: photons per bin per view [B, V] actually used (after ``dose_scale``);
    - ``relative_dose``: ``(sum_v n0 + prior dose) / (4096 V)`` [B]: 1.0 is LoDoPaB's dose;
    - ``sinogram``: noiseless normalised line integrals ``A x`` [B, 1, V, K];
    - ``y``: the noisy post-log measurement; ``x_hat``: the reconstruction [B, 1, H, W];
    - ``background_scans``: when a lesion-free ``background`` was given, its
      reconstructions [B, 2, H, W] at the same ``n0``: channel 0 with the same noise draws
      as ``y`` (``x_hat - background_scans[:, :1]`` is the reconstructed lesion), channel
      1 with fresh draws (the difference of the two channels is noise alone).
    """

    prior: Optional[PriorInfo]
    n0: torch.Tensor
    relative_dose: torch.Tensor
    sinogram: torch.Tensor
    y: torch.Tensor
    x_hat: torch.Tensor
    background_scans: Optional[torch.Tensor] = None


def noise_generator(seed: int, *streams: int, device: Union[str, torch.device] = "cpu") -> torch.Generator:
    """A generator seeded by ``seed`` and stream ids (rank, step, batch...): the same ids
    give the same noise, on any machine and after a resume, without saving RNG state."""
    # SplitMix-style mixing so (1, 2) and (2, 1) give unrelated seeds.
    h = int(seed) & 0xFFFFFFFFFFFFFFFF
    for s in streams:
        h = (h ^ (int(s) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return torch.Generator(device=device).manual_seed(h & 0x7FFFFFFFFFFFFFFF)


class Pipeline(nn.Module):
    """``Pipeline(prior, dose_policy, simulator, reconstructor)``: built modules, no config.

    ``forward(x, geometry)`` returns a :class:`Scan`.  ``dose_scale`` multiplies the
    policy's ``n0`` (a scalar or one factor per patient [B]): the global calibration factor
    of the experiment, or the per-image doses of the oracle.  ``n0`` replaces the policy
    altogether, and then no prior is acquired (the reconstructor's warm-up over a range
    of doses).
    """

    def __init__(self, prior: Prior, dose_policy: DosePolicy, simulator: Simulator,
                 reconstructor: Reconstructor, backend: str = "auto") -> None:
        super().__init__()
        for what, module, base in (("prior", prior, Prior), ("dose_policy", dose_policy, DosePolicy),
                                   ("simulator", simulator, Simulator),
                                   ("reconstructor", reconstructor, Reconstructor)):
            if not isinstance(module, base):
                raise TypeError(f"Pipeline {what} must be an alara.interfaces.{base.__name__}, "
                                f"got {type(module).__name__}")
        self.prior = prior
        self.dose_policy = dose_policy
        self.simulator = simulator
        self.reconstructor = reconstructor
        self.backend = backend

    def forward(self, x: torch.Tensor, geometry: Geometry, *,
                generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
                dose_scale: Union[float, torch.Tensor] = 1.0,
                n0: Optional[torch.Tensor] = None,
                background: Optional[torch.Tensor] = None,
                prior_generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
                prior: Optional[PriorInfo] = None) -> Scan:
        """Scan and reconstruct patients ``x`` [B, 1, H, W] (``x = mu / mu_max``).

        ``generator`` may be one generator per patient: each patient's noise then depends
        on its own generator only (not on the batch it is in), while the policy and the
        reconstructor still run on the whole batch.  ``background`` [B, 1, H, W], the
        lesion-free twin of ``x``, is scanned too (``Scan.background_scans``): what a
        signal-present / signal-absent detectability estimate needs.

        ``prior_generator`` (one, or one per patient) draws the prior's noise on a stream of
        its own, so the scan's noise does not depend on what the prior drew (common random
        numbers across policies with different priors); without it the prior draws from
        ``generator`` before the scan does.  ``prior``: one already acquired for these
        patients (not acquired again; its dose still counts)."""
        if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != tuple(geometry.grid.shape):
            raise ValueError(f"x must be [B, 1, H, W] with (H, W) = {tuple(geometry.grid.shape)} "
                             f"(the geometry's grid), got {tuple(x.shape)}")
        sinogram = ops.project(x, geometry, backend=self.backend)
        per_patient = isinstance(generator, (list, tuple))
        if per_patient and len(generator) != x.shape[0]:
            raise ValueError(f"got {len(generator)} generators for {x.shape[0]} patients; give one each")
        if n0 is None:
            prior, n0 = self.plan(x, geometry, generator if prior_generator is None else prior_generator,
                                  prior=prior)
        elif tuple(n0.shape) != (x.shape[0], geometry.n_views):
            raise ValueError(f"n0 must be [B, views] = [{x.shape[0]}, {geometry.n_views}], "
                             f"got {tuple(n0.shape)}")
        n0 = n0 * _as_factor(dose_scale, n0)
        gens = list(generator) if per_patient else [generator]
        if background is None:
            y = self._simulate(sinogram, n0, gens, per_patient)
            x_hat = self.reconstructor(y, geometry)
            twins = None
        else:
            if tuple(background.shape) != tuple(x.shape):
                raise ValueError(f"background (the lesion-free twin of x) must be {tuple(x.shape)}, "
                                 f"got {tuple(background.shape)}")
            if generator is None:
                raise ValueError("scanning a lesion-free twin needs a noise generator (the same draws "
                                 "for both): pass generator=")
            # The twin gets the very draws of x (generators restored to their state
            # before them), then fresh ones (the generators as x's draws left them).
            same = [_clone(g) for g in gens]
            y = self._simulate(sinogram, n0, gens, per_patient)
            bg_sino = ops.project(background, geometry, backend=self.backend)
            y_same = self._simulate(bg_sino, n0, same, per_patient)
            y_new = self._simulate(bg_sino, n0, gens, per_patient)
            b = x.shape[0]
            recon = self.reconstructor(torch.cat([y, y_same, y_new]), geometry)
            x_hat = recon[:b]
            twins = torch.cat([recon[b:2 * b], recon[2 * b:]], dim=1)
        dose = relative_dose(n0, prior.dose if prior is not None else None)
        return Scan(prior, n0, dose, sinogram, y, x_hat, twins)

    def plan(self, x: torch.Tensor, geometry: Geometry,
             prior_generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None, *,
             prior: Optional[PriorInfo] = None) -> tuple[PriorInfo, torch.Tensor]:
        """``(prior, n0)``: the prior acquired for patients ``x`` (unless given) and the
        policy's ``n0`` [B, V] at dose factor 1, without scanning."""
        if prior is None:
            if isinstance(prior_generator, (list, tuple)):
                if len(prior_generator) != x.shape[0]:
                    raise ValueError(f"got {len(prior_generator)} prior generators for {x.shape[0]} patients; "
                                     "give one each")
                prior = PriorInfo.cat([self.prior(x[i:i + 1], geometry, simulator=self.simulator, generator=g)
                                       for i, g in enumerate(prior_generator)])
            else:
                prior = self.prior(x, geometry, simulator=self.simulator, generator=prior_generator)
        return prior, self.dose_policy(prior, geometry)

    def _simulate(self, sinogram: torch.Tensor, n0: torch.Tensor, gens: list, per_patient: bool) -> torch.Tensor:
        if per_patient and getattr(self.simulator, "row_generators", False):
            return self.simulator(sinogram, n0, generator=gens)
        if per_patient:
            return torch.cat([self.simulator(sinogram[i:i + 1], n0[i:i + 1], generator=g)
                              for i, g in enumerate(gens)])
        return self.simulator(sinogram, n0, generator=gens[0])


def twin_background(metrics: Iterable[IQMetric], truth: Optional[Mapping[str, torch.Tensor]]) -> Optional[torch.Tensor]:
    """The lesion-free truth to scan beside the patients when one of ``metrics`` reads
    ``background_scans`` (else ``None``: no extra scans)."""
    if not any(m.needs_background_scans for m in metrics):
        return None
    bg = (truth or {}).get("background")
    if bg is None:
        raise ValueError("this iq_metric compares each reconstruction with its lesion-free twin's, which needs "
                         "the lesion-free ground truth with every batch: write the data with alara data synth "
                         "--lesion-free ([experiment] lesion_free = true)")
    return bg


def scan_truth(scan: Scan, truth: Optional[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``truth`` plus what the scan adds to it (``background_scans``, when it scanned a twin)."""
    out = dict(truth or {})
    if scan.background_scans is not None:
        out["background_scans"] = scan.background_scans
    return out


def _clone(g: Optional[torch.Generator]) -> Optional[torch.Generator]:
    """A generator in ``g``'s current state (``g`` itself does not move)."""
    if g is None:
        return None
    c = torch.Generator(device=g.device)
    c.set_state(g.get_state())
    return c


def _as_factor(scale: Union[float, torch.Tensor], n0: torch.Tensor) -> torch.Tensor:
    """``scale`` as a [B, 1] factor for ``n0`` [B, V]; refuses non-positive or NaN."""
    s = torch.as_tensor(scale, dtype=n0.dtype, device=n0.device)
    if s.dim() == 0:
        s = s.expand(n0.shape[0])
    if tuple(s.shape) != (n0.shape[0],):
        raise ValueError(f"dose_scale must be a number or one factor per patient [{n0.shape[0]}], "
                         f"got shape {tuple(s.shape)}")
    if not bool((torch.isfinite(s) & (s > 0)).all()):
        raise ValueError(f"dose_scale must be finite and positive, got {s.tolist()}")
    return s.unsqueeze(-1)
