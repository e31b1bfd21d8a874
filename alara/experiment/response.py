"""Per-image dose response: each image's quality on a ladder of doses, and the dose at
which it reaches q.

A policy's plan for image ``i`` is ``n0_i = level_i * 4096 * shape_i``: a scan dose
``level_i`` (relative to LoDoPaB's, prior excluded) times a view profile ``shape_i`` with
mean 1.  With common random numbers (the scan noise of image ``i`` is the same draw
whatever the policy, and the inverse-CDF sampler makes counts rise with dose), image
``i``'s quality depends only on the reconstructor, its shape and the dose it gets, and
rises with that dose (as a trend: the counts rise in every bin, but a filtered
reconstruction's PSNR can dip by a few tenths of a dB between neighbouring doses, so
the threshold is the dose from which on every measured dose passes).  So one :class:`Response` per (reconstructor, shape) serves every
policy of that shape: a flat shape serves fixed dose, the size-only control and a scalar
learned policy alike, and one scout-planned angular shape serves TCM and AEC at every
strength.  A policy's factor is then ``threshold_i / level_i`` per image, and the
guarantee's global factor is a quantile of those (see :mod:`alara.experiment.stats`).

The search: a ladder of doses spaced by ``step`` (default a factor 2) over a start range,
extended image by image, up or down, until every image has a dose where it fails and a
higher one where it passes (bounded by ``limits``); the threshold is interpolated
linearly in log dose between the bracketing doses, then refined by evaluating every image
at its estimate and interpolating again (regula falsi).  An image whose bracket could not
be found within ``limits`` is *clamped*: the count is reported, never hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np
import torch

from alara.evaluate import measure
from alara.geometry import LODOPAB_N0, Geometry
from alara.interfaces import IQMetric
from alara.pipeline import Pipeline

__all__ = ["Response", "measure_response", "quality_at_doses", "flat_shape"]


def flat_shape(n: int, views: int) -> torch.Tensor:
    """The shape of one dose on every view, [n, views] of ones."""
    return torch.ones(n, views, dtype=torch.float64)


@torch.no_grad()
def quality_at_doses(pipeline: Pipeline, metric: IQMetric, x: torch.Tensor, index: torch.Tensor,
                     geometry: Geometry, shape: torch.Tensor, dose: torch.Tensor, *, seed: int,
                     realisations: int, batch_size: int = 64,
                     truth: Optional[Mapping[str, torch.Tensor]] = None) -> np.ndarray:
    """Q [N] of images ``x`` [N, 1, H, W] scanned with ``n0 = dose_i * 4096 * shape_i``
    (``dose`` [N]: relative scan dose; ``shape`` [N, V] with mean 1 over the views), Q
    averaged over ``realisations`` of the scan noise (the pipeline's policy and prior
    are not used)."""
    out = []
    for s in range(0, x.shape[0], batch_size):
        sl = slice(s, s + batch_size)
        n0 = (dose[sl, None].double() * LODOPAB_N0 * shape[sl].double()).to(x.dtype)
        m = measure(pipeline, {"q": metric}, x[sl], geometry, index[sl], seed=seed, realisations=realisations,
                    truth={k: v[sl] for k, v in (truth or {}).items()}, n0=n0)
        out.append(m["q"].mean(1))
    return torch.cat(out).numpy()


@dataclass
class Response:
    """Q of N images at doses around their thresholds (relative scan dose).

    ``doses[i]`` and ``quality[i]``: the doses image ``i`` was scanned at (ascending) and
    its Q there; ``thresholds[i]``: the interpolated dose at which Q reaches q (``inf``
    where no dose within the limits reached it; the lower limit where even that passed);
    ``clamped_low`` / ``clamped_high``: how many images sit on a limit."""

    q: float
    higher_is_better: bool
    doses: list[np.ndarray]
    quality: list[np.ndarray]
    thresholds: np.ndarray
    clamped_low: int = 0
    clamped_high: int = 0
    passes: int = 0
    limits: tuple[float, float] = field(default=(0.0, math.inf))

    def quality_at(self, dose: np.ndarray) -> np.ndarray:
        """Each image's Q at ``dose`` [N] (relative scan dose), interpolated linearly in log
        dose between the measured points.  Beyond them, for at most one doubling, it follows
        the outermost two points' slope (Q is close to linear in log dose over a doubling;
        a slope against the metric's direction is taken as flat); further out it is held
        at that doubling's value: no claim far outside what was measured."""
        out = []
        sign = 1.0 if self.higher_is_better else -1.0
        reach = math.log(2.0)
        for d, ds, qs in zip(np.asarray(dose, dtype=float), self.doses, self.quality):
            ld, lx = math.log(d), np.log(ds)
            if len(ds) >= 2 and (ld > lx[-1] or ld < lx[0]):
                j = (-2, -1) if ld > lx[-1] else (0, 1)
                slope = sign * max(sign * (qs[j[1]] - qs[j[0]]) / (lx[j[1]] - lx[j[0]]), 0.0)
                ref = j[1] if ld > lx[-1] else j[0]
                step = min(max(ld - lx[ref], -reach), reach)
                out.append(float(qs[ref] + slope * step))
            else:
                out.append(float(np.interp(ld, lx, qs)))
        return np.array(out)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (``inf`` as ``None``)."""
        return {"q": self.q, "higher_is_better": self.higher_is_better,
                "doses": [d.tolist() for d in self.doses], "quality": [v.tolist() for v in self.quality],
                "thresholds": [None if not math.isfinite(t) else float(t) for t in self.thresholds],
                "clamped_low": self.clamped_low, "clamped_high": self.clamped_high, "passes": self.passes,
                "limits": list(self.limits)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Response":
        """The inverse of :meth:`to_json`."""
        return cls(q=float(d["q"]), higher_is_better=bool(d["higher_is_better"]),
                   doses=[np.asarray(v, dtype=float) for v in d["doses"]],
                   quality=[np.asarray(v, dtype=float) for v in d["quality"]],
                   thresholds=np.array([math.inf if t is None else t for t in d["thresholds"]], dtype=float),
                   clamped_low=int(d["clamped_low"]), clamped_high=int(d["clamped_high"]),
                   passes=int(d["passes"]), limits=tuple(d["limits"]))


def _meets(q: np.ndarray, target: float, higher_is_better: bool) -> np.ndarray:
    return q >= target if higher_is_better else q <= target


def _bracket(ds: np.ndarray, qs: np.ndarray, target: float, hib: bool) -> tuple[int, int]:
    """``(j_fail, j_pass)``: the highest failing dose below the lowest dose from which on
    every measured dose passes (``-1`` / ``len`` when there is none)."""
    ok = _meets(qs, target, hib)
    j_pass = len(ds)
    for j in range(len(ds) - 1, -1, -1):
        if not ok[j]:
            break
        j_pass = j
    return j_pass - 1, j_pass


def _interpolate(d0: float, q0: float, d1: float, q1: float, target: float) -> float:
    """The dose between ``d0`` (fails) and ``d1`` (passes) where Q reaches ``target``,
    linear in log dose."""
    if q1 == q0:
        return d1
    w = min(max((target - q0) / (q1 - q0), 0.0), 1.0)
    return math.exp(math.log(d0) + w * (math.log(d1) - math.log(d0)))


def measure_response(pipeline: Pipeline, metric: IQMetric, target: float, x: torch.Tensor, index: torch.Tensor,
                     geometry: Geometry, shape: torch.Tensor, *, seed: int, realisations: int,
                     start: tuple[float, float] = (0.004, 0.25), step: float = 2.0,
                     limits: tuple[float, float] = (1e-5, 1e3), refine: int = 1,
                     truth: Optional[Mapping[str, torch.Tensor]] = None,
                     progress: Optional[Any] = None) -> Response:
    """The :class:`Response` of ``pipeline``'s reconstructor on images ``x`` with view
    profiles ``shape`` [N, V] (see the module docstring for the search)."""
    lo, hi = start
    if not (0 < limits[0] <= lo < hi <= limits[1]) or step <= 1:
        raise ValueError(f"need 0 < limits[0] <= start[0] < start[1] <= limits[1] and step > 1, got "
                         f"start={start}, limits={limits}, step={step}")
    n = x.shape[0]
    hib = bool(metric.higher_is_better)
    shape = shape.double() / shape.double().mean(dim=-1, keepdim=True)
    points: list[dict[float, float]] = [dict() for _ in range(n)]
    passes = 0

    def run(sel: np.ndarray, dose: np.ndarray) -> None:
        nonlocal passes
        if len(sel) == 0:
            return
        idx = torch.as_tensor(sel)
        qv = quality_at_doses(pipeline, metric, x[idx], index[idx], geometry, shape[idx],
                              torch.as_tensor(dose, dtype=torch.float64), seed=seed, realisations=realisations,
                              truth={k: v[idx] for k, v in (truth or {}).items()})
        for i, d, v in zip(sel, dose, qv):
            points[i][float(d)] = float(v)
        passes += 1
        if progress is not None:
            progress.update(1)

    # The ladder lo, lo * step, ... up to hi (hi itself as the last rung), never past the limits.
    ladder = [lo * step ** j for j in range(int(math.floor(math.log(hi / lo) / math.log(step) + 1e-9)) + 1)]
    if ladder[-1] < hi * (1 - 1e-9):
        ladder.append(hi)
    everyone = np.arange(n)
    for d in ladder:
        run(everyone, np.full(n, d))
    # Extend image by image until each has a failing dose below a passing one.
    while True:
        up, down = [], []
        for i in range(n):
            ds = np.array(sorted(points[i]))
            jf, jp = _bracket(ds, np.array([points[i][d] for d in ds]), target, hib)
            if jp == len(ds) and ds[-1] < limits[1] * (1 - 1e-9):
                up.append((i, min(ds[-1] * step, limits[1])))
            elif jf < 0 and ds[0] > limits[0] * (1 + 1e-9):
                down.append((i, max(ds[0] / step, limits[0])))
        if not up and not down:
            break
        for todo in (up, down):
            if todo:
                run(np.array([i for i, _ in todo]), np.array([d for _, d in todo]))

    def thresholds() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.empty(n)
        low = np.zeros(n, dtype=bool)
        high = np.zeros(n, dtype=bool)
        for i in range(n):
            ds = np.array(sorted(points[i]))
            qs = np.array([points[i][d] for d in ds])
            jf, jp = _bracket(ds, qs, target, hib)
            if jp == len(ds):
                t[i], high[i] = math.inf, True
            elif jf < 0:
                t[i], low[i] = ds[0], True
            else:
                t[i] = _interpolate(ds[jf], qs[jf], ds[jp], qs[jp], target)
        return t, low, high

    for _ in range(refine):
        t, low, high = thresholds()
        sel = np.flatnonzero(~low & ~high)
        sel = np.array([i for i in sel if float(t[i]) not in points[i]], dtype=int)
        run(sel, t[sel])
    t, low, high = thresholds()
    doses = [np.array(sorted(p)) for p in points]
    quality = [np.array([p[d] for d in ds]) for p, ds in zip(points, doses)]
    return Response(float(target), hib, doses, quality, t, int(low.sum()), int(high.sum()), passes,
                    (float(limits[0]), float(limits[1])))
