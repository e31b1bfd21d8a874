"""The component kinds users extend: dose policies, priors, simulators, reconstructors and
image-quality metrics.

Every component is an :class:`torch.nn.Module` with

- a class attribute ``name``: the name a config file picks it by, and
- a nested frozen dataclass ``Config``: its typed parameters with defaults.

It is built from a config instance, ``Cls(Cls.Config(...))``, or from plain keyword
parameters, ``Cls.from_params(...)``.  The registry (:mod:`alara.registry`) checks these
rules when a plugin registers a class.

Shapes (B = batch, C = channels, V = views, K = detector bins):

==============  =====================================  ==========================
kind            call                                   result
==============  =====================================  ==========================
prior           ``prior(x, geometry)``                 :class:`PriorInfo`
dose_policy     ``policy(prior_info, geometry)``       ``n0`` [B, V], > 0
simulator       ``simulator(sinogram, n0)``            ``y`` like ``sinogram``
reconstructor   ``reconstructor(y, geometry)``         ``x_hat`` [B, C, H, W]
iq_metric       ``metric(x_hat, x)``                   [B], unreduced
==============  =====================================  ==========================

Units follow LoDoPaB-CT: images are ``x = mu / mu_max``; sinograms are normalised line
integrals ``A x`` (so ``mu_max * A x`` is the attenuation); ``n0`` is the mean photon
count per detector bin of each view.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from alara.geometry import LODOPAB_N0, Geometry
from alara.noise import postlog_noise

__all__ = [
    "Component",
    "PriorInfo",
    "Prior",
    "DosePolicy",
    "DosePolicyConfig",
    "Simulator",
    "Reconstructor",
    "IQMetric",
    "KINDS",
    "total_dose",
    "relative_dose",
    "scale_to_budget",
]


@dataclass(frozen=True)
class _NoParams:
    """Parameters of a component that has none."""


class Component(nn.Module):
    """Base of every pluggable component: a module with a ``name`` and a ``Config``."""

    #: The registered name a config file uses (set by each concrete subclass).
    name: ClassVar[str] = ""
    #: Frozen dataclass of the component's parameters (override in subclasses).
    Config: ClassVar[type] = _NoParams
    #: The kind this base class stands for (``"dose_policy"``...); set on the five bases.
    kind: ClassVar[str] = ""

    def __init__(self, config: Any = None) -> None:
        super().__init__()
        cfg_cls = type(self).Config
        if config is None:
            config = cfg_cls()
        elif not isinstance(config, cfg_cls):
            raise TypeError(
                f"{type(self).__name__} expects a {type(self).__name__}.Config instance, got "
                f"{type(config).__name__}; build it with {type(self).__name__}.Config(...) or "
                f"use {type(self).__name__}.from_params(**params)"
            )
        self.config = config

    @classmethod
    def from_params(cls, **params: Any) -> "Component":
        """Build the component from keyword parameters (those of ``cls.Config``)."""
        return cls(cls.Config(**params))

    def params(self) -> dict[str, Any]:
        """The parameters as a plain dict (for checkpoints and reports);
        ``type(self).from_params(**self.params())`` rebuilds an equal component."""
        return dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else {}

    def extra_repr(self) -> str:
        fields = dataclasses.fields(self.config) if dataclasses.is_dataclass(self.config) else ()
        return ", ".join(f"{f.name}={getattr(self.config, f.name)!r}" for f in fields)


# ----------------------------------------------------------------------------- dose helpers


def total_dose(n0: torch.Tensor) -> torch.Tensor:
    """Dose ``D = sum_views n0(view)`` (photons per detector bin), shape [B]."""
    if n0.dim() != 2:
        raise ValueError(f"n0 must have shape [B, views], got {tuple(n0.shape)}")
    return n0.sum(dim=-1)


def relative_dose(
    n0: torch.Tensor,
    prior_dose: Optional[torch.Tensor] = None,
    n_ref: float = LODOPAB_N0,
) -> torch.Tensor:
    """Dose relative to LoDoPaB's, ``(D + D_prior) / (n_ref * views)``, shape [B].

    1.0 means ``n_ref`` (4096) photons per bin on every view.  ``prior_dose`` is the dose
    already spent acquiring the prior (e.g. a pre-scan), in the same units as ``D``.
    """
    dose = total_dose(n0)
    if prior_dose is not None:
        dose = dose + _check_prior_dose(prior_dose).to(dose)
    return dose / (float(n_ref) * n0.shape[-1])


def _check_prior_dose(prior_dose: torch.Tensor) -> torch.Tensor:
    # A negative prior dose would be counted as budget gained; NaN would poison every dose.
    if not bool(torch.isfinite(prior_dose).all()) or bool((prior_dose < 0).any()):
        raise ValueError(f"the prior's dose must be finite and >= 0 photons per bin, got "
                         f"{prior_dose.detach().flatten()[:8].tolist()}: check the prior (its relative_dose)")
    return prior_dose


def scale_to_budget(
    n0: torch.Tensor,
    budget: float,
    prior_dose: Optional[torch.Tensor] = None,
    n_ref: float = LODOPAB_N0,
) -> torch.Tensor:
    """Rescale each patient's ``n0`` so that its relative dose (prior included) equals
    ``budget``: ``n0 * (budget * n_ref * V - D_prior) / sum_v n0``.  Keeps the angular
    shape and stays differentiable in ``n0``."""
    if n0.dim() != 2:
        raise ValueError(f"n0 must have shape [B, views], got {tuple(n0.shape)}")
    if not (math.isfinite(float(budget)) and float(budget) > 0):
        raise ValueError(f"dose budget must be a finite relative dose > 0, got {budget!r}")
    total = n0.detach().sum(dim=-1)
    if not bool(torch.isfinite(n0.detach()).all()) or bool((n0.detach() < 0).any()) or bool((total <= 0).any()):
        raise ValueError("n0 must be finite and >= 0 on every view with a positive sum per patient to be scaled "
                         f"to a budget (sums per patient: {total.flatten()[:8].tolist()}): an all-zero angular "
                         "shape has no dose to scale; check the dose policy's output")
    target = torch.full_like(n0[:, 0], float(budget) * float(n_ref) * n0.shape[-1])
    if prior_dose is not None:
        target = target - _check_prior_dose(prior_dose).to(target)
    if bool((target <= 0).any()):
        raise ValueError(
            f"dose budget {budget} (relative) is used up by the prior acquisition alone; "
            "raise the budget or lower the prior's dose"
        )
    return n0 * (target / n0.sum(dim=-1)).unsqueeze(-1)


# ----------------------------------------------------------------------------------- priors


@dataclass
class PriorInfo:
    """What a dose policy knows about a patient before the scan.

    - ``image``: a prior image ``z`` [B, 1, H, W] in ``x`` units (FBP of a pre-scan, or a
      prior exam), or ``None``;
    - ``scouts``: normalised line integrals of scout views [B, S, K] at ``scout_angles``
      (rad), or ``None``;
    - ``dose``: photons per bin, summed over views, already spent on the prior [B]
      (zero for a prior exam); it counts in the patient's total dose.
    """

    image: Optional[torch.Tensor] = None
    scouts: Optional[torch.Tensor] = None
    scout_angles: Optional[torch.Tensor] = None
    dose: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if self.image is None and self.scouts is None:
            raise ValueError("PriorInfo needs an image or scouts (both are None)")
        if self.image is not None and self.image.dim() != 4:
            raise ValueError(f"PriorInfo.image must be [B, 1, H, W], got {tuple(self.image.shape)}")
        if self.scouts is not None:
            if self.scouts.dim() != 3:
                raise ValueError(f"PriorInfo.scouts must be [B, S, K], got {tuple(self.scouts.shape)}")
            if self.scout_angles is None or self.scout_angles.numel() != self.scouts.shape[1]:
                raise ValueError("PriorInfo.scout_angles must give one angle per scout view")
        if self.dose is None:
            ref = self.image if self.image is not None else self.scouts
            self.dose = torch.zeros(ref.shape[0], dtype=ref.dtype, device=ref.device)
        else:
            _check_prior_dose(self.dose)

    @classmethod
    def cat(cls, parts: "list[PriorInfo]") -> "PriorInfo":
        """Concatenate the priors of several batches along the batch axis."""
        first = parts[0]

        def join(name: str) -> Optional[torch.Tensor]:
            vals = [getattr(p, name) for p in parts]
            return None if vals[0] is None else torch.cat(vals)

        return cls(image=join("image"), scouts=join("scouts"), scout_angles=first.scout_angles, dose=join("dose"))

    def batches(self, size: int) -> "list[PriorInfo]":
        """The inverse of :meth:`cat`: consecutive batches of at most ``size`` patients."""
        def part(t: Optional[torch.Tensor], s: int) -> Optional[torch.Tensor]:
            return None if t is None else t[s:s + size]

        return [type(self)(image=part(self.image, s), scouts=part(self.scouts, s), scout_angles=self.scout_angles,
                           dose=part(self.dose, s)) for s in range(0, self.batch_size, size)]

    @property
    def batch_size(self) -> int:
        """Number of patients B."""
        return (self.image if self.image is not None else self.scouts).shape[0]

    def network_input(self) -> torch.Tensor:
        """A one-channel image for a CNN policy: the prior image, else the scouts stacked
        as rows ([B, 1, S, K])."""
        if self.image is not None:
            return self.image
        return self.scouts.unsqueeze(1)


class Prior(Component):
    """Acquires prior information about a patient, ``prior(x, geometry) -> PriorInfo``.

    ``x`` is the true image [B, 1, H, W] (the simulation's patient); implementations may
    only use it the way a scanner could (by simulating an acquisition), and must report
    the dose they spent in ``PriorInfo.dose``.
    """

    kind = "prior"

    def forward(self, x: torch.Tensor, geometry: Geometry, simulator: Optional["Simulator"] = None,
                generator: Optional[torch.Generator] = None) -> PriorInfo:  # pragma: no cover
        """Acquire the prior of ``x``; noisy acquisitions go through :meth:`acquire`."""
        raise NotImplementedError

    @staticmethod
    def acquire(sinogram: torch.Tensor, n0: torch.Tensor, simulator: Optional["Simulator"] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A noisy acquisition of ``sinogram`` at ``n0`` [B, V] photons per bin: exact noise
        of ``simulator`` (the pipeline's), or LoDoPaB's model when none is given."""
        if simulator is None:
            return postlog_noise(sinogram, n0, generator=generator)
        return simulator.simulate(sinogram, n0, differentiable=False, generator=generator)


# ----------------------------------------------------------------------------- dose policy


@dataclass(frozen=True)
class DosePolicyConfig:
    """Parameters every dose policy has.

    ``budget``: if set, each patient's relative dose (prior included) is held to this value
    (1.0 = LoDoPaB's 4096 photons per bin on every view).
    """

    budget: Optional[float] = None

    def __post_init__(self) -> None:
        if self.budget is not None and not (math.isfinite(self.budget) and self.budget > 0):
            raise ValueError(f"budget must be a finite positive relative dose, got {self.budget!r}")


class DosePolicy(Component):
    """Chooses photons per view, ``policy(prior, geometry) -> n0`` [B, views], ``n0 > 0``.

    Subclasses implement :meth:`propose`; :meth:`forward` checks the result (shape,
    positive and finite) and, when ``config.budget`` is set, rescales it to the budget.
    Must be differentiable in its parameters for learned policies.
    """

    kind = "dose_policy"
    Config: ClassVar[type] = DosePolicyConfig

    def propose(self, prior: PriorInfo, geometry: Geometry) -> torch.Tensor:  # pragma: no cover
        """The policy's ``n0`` [B, views] before the budget is applied (implement this)."""
        raise NotImplementedError

    def forward(self, prior: PriorInfo, geometry: Geometry) -> torch.Tensor:
        n0 = self.propose(prior, geometry)
        expected = (prior.batch_size, geometry.n_views)
        if tuple(n0.shape) != expected:
            raise ValueError(
                f"dose policy {self.name!r} returned n0 of shape {tuple(n0.shape)}, "
                f"expected [B, views] = {list(expected)}"
            )
        self._check_positive(n0, "returned")
        budget = getattr(self.config, "budget", None)
        if budget is not None:
            # Checked again: a huge proposal can overflow to inf once rescaled.
            n0 = scale_to_budget(n0, budget, prior.dose)
            self._check_positive(n0, f"gave, once scaled to its budget {budget},")
        return n0

    def _check_positive(self, n0: torch.Tensor, what: str) -> None:
        if not bool(((n0 > 0) & torch.isfinite(n0)).all()):
            raise ValueError(f"dose policy {self.name!r} {what} n0 that is not positive and finite "
                             "on every view (photons per bin must be > 0)")


# ------------------------------------------------------------------------------- simulator


class Simulator(Component):
    """Noisy measurement, ``simulator(sinogram, n0) -> y``.

    ``sinogram``: normalised line integrals ``A x`` [B, C, V, K] (or [B, V, K]);
    ``n0``: photons per bin per view [B, V].  ``y`` has the sinogram's shape and units
    (post-log, divided by ``mu_max``, as LoDoPaB's observations).  In training mode the
    sample must be differentiable in ``n0``; in eval mode it is the exact noise model.

    Subclasses implement :meth:`simulate`; priors call it with ``differentiable=False``,
    so a pre-scan or scout is acquired with the same noise model as the scan.
    """

    kind = "simulator"
    #: ``simulate`` accepts a list of generators, one per batch row (row ``b`` drawing
    #: from its own alone), so per-patient noise streams need not cost one call each.
    row_generators: bool = False

    def simulate(self, sinogram: torch.Tensor, n0: torch.Tensor, *, differentiable: bool,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:  # pragma: no cover
        """The noisy post-log sinogram (implement this); reparameterised and differentiable
        in ``n0`` when ``differentiable``, else the exact noise model."""
        raise NotImplementedError

    def forward(self, sinogram: torch.Tensor, n0: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.simulate(sinogram, n0, differentiable=self.training, generator=generator)


# --------------------------------------------------------------------------- reconstructor


class Reconstructor(Component):
    """Image from a post-log sinogram, ``reconstructor(y, geometry) -> x_hat``.

    ``y``: [B, C, V, K]; ``x_hat``: [B, C, H, W] on ``geometry.grid``, in ``x`` units.
    """

    kind = "reconstructor"

    def forward(self, y: torch.Tensor, geometry: Geometry) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


# ------------------------------------------------------------------------------- IQ metric


class IQMetric(Component):
    """Image quality, ``metric(x_hat, x) -> [B]`` (one unreduced value per image).

    ``x_hat`` and ``x`` are [B, C, H, W] (or [B, H, W]) of equal shape; ``x`` is the
    reference.  ``higher_is_better`` says which way is good (True for PSNR and SSIM).
    Subclasses implement :meth:`compute` on [B, C, H, W] pairs (differentiable in
    ``x_hat``); :meth:`forward` checks the inputs and that the result is [B] and finite.
    :meth:`shortfall` turns values into the signed distance below a target, so a loss
    works for any metric without knowing its direction.

    A task-based metric may need per-image truth beyond ``x`` (the lesions of each image,
    the lesion-free reference): it names the batch keys it needs in ``requires`` and those
    it uses when present in ``accepts``; callers pass them as keyword tensors
    (:meth:`truth_from` picks them out of a data-set batch).
    """

    kind = "iq_metric"
    #: Whether larger values mean better images.
    higher_is_better: ClassVar[bool] = True
    #: Unit for reports ("dB", "" ...).
    unit: ClassVar[str] = ""
    #: Values the metric can take (SSIM: [-1, 1]); a target outside can never be met.
    value_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)
    #: Per-image truth (batch keys) the metric cannot do without, and what it uses if given.
    requires: ClassVar[tuple[str, ...]] = ()
    accepts: ClassVar[tuple[str, ...]] = ()

    def check_target(self, target: float, where: str = "[objective] target") -> None:
        """Refuse a target ``q`` outside :attr:`value_range`: a hinge on it could never be
        met, and training would push every dose up for nothing."""
        lo, hi = self.value_range
        if not (lo <= target <= hi):
            unit = f" {self.unit}" if self.unit else ""
            raise ValueError(f"{where} = {target:g}{unit} is outside the range of {self.name} "
                             f"([{lo:g}, {hi:g}]), so it can never be met; give a target within it "
                             f"(e.g. 0.9 for ssim, 38.57 dB for psnr)")

    @property
    def needs_background_scans(self) -> bool:
        """Whether the metric reads ``background_scans``: reconstructions of the lesion-free
        twin at the same dose (``Pipeline.forward(background=...)``; see :func:`scored`)."""
        return "background_scans" in self.requires

    def truth_from(self, batch: Any) -> dict[str, torch.Tensor]:
        """The entries of a data-set batch (a dict) that this metric reads besides ``x``."""
        if not isinstance(batch, dict):
            return {}
        return {k: batch[k] for k in (*self.requires, *self.accepts) if batch.get(k) is not None}

    @staticmethod
    def check_pair(x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate shapes; return both as [B, C, H, W]."""
        if x_hat.shape != x.shape:
            raise ValueError(
                f"x_hat and x must have the same shape, got {tuple(x_hat.shape)} and {tuple(x.shape)}"
            )
        if x.dim() == 3:
            return x_hat.unsqueeze(1), x.unsqueeze(1)
        if x.dim() != 4:
            raise ValueError(f"images must be [B, C, H, W] or [B, H, W], got {tuple(x.shape)}")
        return x_hat, x

    def applies_to(self, **truth: torch.Tensor) -> Optional[torch.Tensor]:
        """Boolean [B]: the images this metric has a task in (``None``: every image); e.g.
        a lesion-detection metric scores only images with a lesion."""
        return None

    def compute(self, x_hat: torch.Tensor, x: torch.Tensor, **truth: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Per-image values [B] of checked [B, C, H, W] images (implement this); ``truth``
        holds the keys of ``requires`` (and of ``accepts`` when given)."""
        raise NotImplementedError

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, **truth: Optional[torch.Tensor]) -> torch.Tensor:
        x_hat, x = self.check_pair(x_hat, x)
        missing = [k for k in self.requires if truth.get(k) is None]
        if missing:
            raise ValueError(
                f"iq_metric {self.name!r} needs {', '.join(missing)} with every batch, besides the images: "
                "use data that records it (alara data synth writes the lesion truth; check with "
                "alara data check), or another iq_metric")
        used = {k: truth[k].to(x.device) for k in (*self.requires, *self.accepts) if truth.get(k) is not None}
        q = self.compute(x_hat, x, **used)
        if tuple(q.shape) != (x.shape[0],):
            raise ValueError(f"iq_metric {self.name!r} returned shape {tuple(q.shape)}, expected one "
                             f"value per image [{x.shape[0]}]")
        # A perfect image may score +inf (PSNR of x_hat == x); NaN and the worst infinity
        # mean broken input, which would otherwise poison means and the loss silently.
        perfect = float("inf") if self.higher_is_better else float("-inf")
        bad = ~(torch.isfinite(q) | (q == perfect))
        if bool(bad.any()):
            raise ValueError(f"iq_metric {self.name!r} is NaN or {-perfect} for {int(bad.sum())} of {q.numel()} "
                             f"images: {self._cause(x_hat, x, bad)}")
        return q

    def _cause(self, x_hat: torch.Tensor, x: torch.Tensor, bad: torch.Tensor) -> str:
        """The likeliest cause of a NaN score, from what is (not) finite."""
        rec = int((~torch.isfinite(x_hat[bad])).sum())
        ref = int((~torch.isfinite(x[bad])).sum())
        if rec:
            return (f"the reconstruction has {rec} NaN/inf pixels there (a diverged model: lower train.lr / "
                    "train.policy_lr; or NaN doses upstream)")
        if ref:
            return f"the reference images have {ref} NaN/inf pixels there: check the data (alara data check)"
        flat = x[bad].flatten(1)
        if bool(((flat.amax(1) - flat.amin(1)) == 0).any()):
            return ("some reference images are constant, so a range or contrast computed from them is zero "
                    f"(e.g. data_range = 'per_image', or lesions without contrast); give {self.name} a fixed "
                    "data_range or use other images")
        return (f"reconstruction and reference are finite, so {self.name} itself is undefined for them: check "
                "its parameters and the per-image truth it reads")

    def shortfall(self, q: torch.Tensor, target: float) -> torch.Tensor:
        """Signed margin of ``q`` below ``target`` in the metric's units: positive where an
        image misses the target, ``target - q`` (higher is better) or ``q - target``."""
        return (target - q) if self.higher_is_better else (q - target)

    def meets(self, q: torch.Tensor, target: float) -> torch.Tensor:
        """Boolean [B]: the image reaches the target (``shortfall <= 0``)."""
        return self.shortfall(q, target) <= 0


#: The component kinds, mapped to their base classes (also the config section names).
KINDS: dict[str, type[Component]] = {
    "prior": Prior,
    "dose_policy": DosePolicy,
    "simulator": Simulator,
    "reconstructor": Reconstructor,
    "iq_metric": IQMetric,
}
