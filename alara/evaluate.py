"""Evaluation: per-image results (patient, dose, every metric) and their summary.

Noise is exact Poisson (the pipeline in eval mode).  The scan's noise is drawn from a
generator seeded by ``(seed, realisation, image index)`` and the prior's (scouts,
pre-scan) from a separate stream seeded by ``(seed, PRIOR_STREAM, image index)``, so a
result is reproducible and every policy sees the same scan noise for the same image,
whatever its prior drew (common random numbers: the comparison is not blurred by
independent noise draws).  The prior is acquired once per image: realisations repeat the
scan at the policy's decision, not the decision.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from alara.progress import tqdm

from alara.geometry import Geometry
from alara.interfaces import IQMetric, relative_dose
from alara.pipeline import Pipeline, noise_generator, scan_truth, twin_background

__all__ = ["PRIOR_STREAM", "EvalConfig", "Results", "measure", "evaluate", "summarise", "percentile", "task_indices",
           "task_subset"]

PathLike = Union[str, Path]

#: Stream id of the prior's noise (scan realisations use 0, 1, ...; far from them).
PRIOR_STREAM = 1 << 40


@dataclass(frozen=True)
class EvalConfig:
    """The ``[eval]`` section."""

    #: Split evaluated by ``alara evaluate`` (the experiment uses validation to calibrate).
    split: str = "test"
    batch_size: int = 16
    #: Noise realisations per image (Q is averaged over them).
    realisations: int = 1
    seed: int = 1234
    #: Metrics reported besides the objective's, by registered name (default parameters).
    metrics: tuple[str, ...] = ("psnr", "ssim")
    #: Share of images that must reach the target: the experiment's guarantee.
    share: float = 0.95

    def __post_init__(self) -> None:
        if self.split not in ("train", "validation", "test"):
            raise ValueError(f"split must be 'train', 'validation' or 'test', got {self.split!r}")
        if self.batch_size < 1 or self.realisations < 1:
            raise ValueError("batch_size and realisations must be >= 1")
        if not (math.isfinite(self.share) and 0 < self.share <= 1):
            raise ValueError(f"share must be in (0, 1], got {self.share}")


def task_indices(dataset: Any, metric: IQMetric, split: str = "data") -> list[int]:
    """Indices of the images of ``dataset`` that ``metric`` has a task in
    (:meth:`IQMetric.applies_to`; every image for PSNR/SSIM, the images with a lesion for
    detectability)."""
    if not (*metric.requires, *metric.accepts):
        # A metric that reads no per-image truth scores every image: no item needs reading
        # (which on LoDoPaB-CT would mean 35,820 HDF5 reads before training starts).
        return list(range(len(dataset)))
    keep = []
    for i in range(len(dataset)):
        item = dataset[i]
        truth = metric.truth_from(item)
        mask = metric.applies_to(**{k: v[None] for k, v in truth.items()}) if truth else None
        if mask is None or bool(mask[0]):
            keep.append(i)
    if not keep:
        raise ValueError(f"the {split} split has no image that iq_metric {metric.name!r} can score (no "
                         "lesion?): write data with lesions in the slices (alara data synth --lesion-slices; "
                         "[experiment] lesion_slices = true)")
    return keep


def task_subset(dataset: Any, metric: IQMetric, split: str = "data",
                log: Optional[Any] = None) -> Any:
    """``dataset`` restricted to :func:`task_indices` (itself when every image has the task);
    ``log(message)`` hears how many were left out."""
    keep = task_indices(dataset, metric, split)
    if len(keep) == len(dataset):
        return dataset
    if log is not None:
        log(f"{split}: {len(keep)} of {len(dataset)} images have a task for {metric.name} (the rest are left out)")
    return torch.utils.data.Subset(dataset, keep)


def percentile(values: np.ndarray, q: float) -> float:
    """The ``q``-th percentile (linear interpolation, as numpy's default)."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


@dataclass
class Results:
    """Per-image values: ``columns[name]`` arrays of length N (averaged over noise
    realisations), with the image ``index`` and ``patient_id``."""

    columns: dict[str, np.ndarray]
    metric_names: list[str]
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["index"])

    def to_csv(self) -> str:
        """The table as CSV text, one row per image."""
        buf = io.StringIO()
        keys = list(self.columns)
        w = csv.writer(buf)
        w.writerow(keys)
        for i in range(len(self)):
            w.writerow([_fmt(self.columns[k][i]) for k in keys])
        return buf.getvalue()

    def write_csv(self, path: PathLike) -> Path:
        """Write :meth:`to_csv` atomically."""
        from alara.atomic import atomic_file

        with atomic_file(path) as tmp:
            tmp.write_text(self.to_csv())
        return Path(path)


def _fmt(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return int(v) if isinstance(v, (np.integer,)) else v


@torch.no_grad()
def measure(pipeline: Pipeline, metrics: Mapping[str, IQMetric], x: torch.Tensor, geometry: Geometry,
            index: torch.Tensor, *, seed: int = 1234, realisations: int = 1,
            dose_scale: Union[float, torch.Tensor] = 1.0,
            truth: Optional[Mapping[str, torch.Tensor]] = None,
            n0: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """Scan and score one batch ``x`` [B, 1, H, W] with images ids ``index`` [B]: returns
    ``relative_dose`` (prior included), ``scan_dose`` (the scan's alone), ``mean_n0`` and
    each metric, [B, realisations] each (float64).  ``truth`` holds the per-image truth a
    task-based metric reads (``lesions``, ``background``: see :class:`IQMetric`).

    ``n0`` [B, V] replaces the policy (no prior is acquired; the scan's noise is the
    same draw as with the policy, by the common random numbers above).

    The pipeline runs in eval mode: exact noise, the policy's inference behaviour."""
    pipeline.eval()
    device = x.device
    out: dict[str, list[torch.Tensor]] = {}
    prior_gens = [noise_generator(seed, PRIOR_STREAM, int(i), device=device) for i in index]
    prior = None
    for r in range(realisations):
        # One generator per image: results do not depend on how images are batched.
        gens = [noise_generator(seed, r, int(i), device=device) for i in index]
        scan = pipeline(x, geometry, generator=gens, dose_scale=dose_scale, n0=n0,
                        background=twin_background(metrics.values(), truth), prior_generator=prior_gens,
                        prior=prior)
        prior = scan.prior   # acquired once: realisations repeat the scan, not the decision
        scored = scan_truth(scan, truth)
        vals = {"relative_dose": scan.relative_dose, "scan_dose": relative_dose(scan.n0),
                "mean_n0": scan.n0.mean(-1)}
        vals.update({name: m(scan.x_hat.float(), x.float(), **scored) for name, m in metrics.items()})
        for k, v in vals.items():
            out.setdefault(k, []).append(v.detach().double().cpu())
    return {k: torch.stack(v, dim=1) for k, v in out.items()}


def evaluate(pipeline: Pipeline, metrics: Mapping[str, IQMetric], data: Union[Dataset, Iterable],
             geometry: Geometry, *, seed: int = 1234, realisations: int = 1, batch_size: int = 16,
             dose_scale: Union[float, torch.Tensor] = 1.0, device: Union[str, torch.device] = "cpu",
             progress: bool = True) -> Results:
    """Evaluate ``pipeline`` on every image of ``data`` (a LoDoPaBDataset or any dataset of
    dicts with ``ground_truth``/``index``/``patient_id``); ``dose_scale`` is a number or one
    factor per image of the data set, by position."""
    if isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        total = math.ceil(len(data) / batch_size)  # type: ignore[arg-type]
    else:
        loader, total = data, None
    pipeline.to(device)
    cols: dict[str, list[np.ndarray]] = {"index": [], "patient_id": []}
    pos = 0
    for batch in tqdm(loader, total=total, desc="alara evaluate", unit="batch", disable=not progress):
        x = batch["ground_truth"].to(device)
        n = x.shape[0]
        index = batch.get("index", torch.arange(pos, pos + n))
        scale = dose_scale[pos:pos + n] if isinstance(dose_scale, torch.Tensor) and dose_scale.dim() else dose_scale
        truth = {k: v.to(device) for m in metrics.values() for k, v in m.truth_from(batch).items()}
        vals = measure(pipeline, metrics, x, geometry, torch.as_tensor(index), seed=seed,
                       realisations=realisations, dose_scale=scale, truth=truth)
        cols["index"].append(np.asarray(index))
        cols["patient_id"].append(np.asarray(batch.get("patient_id", torch.full((n,), -1))))
        for k, v in vals.items():
            cols.setdefault(k, []).append(v.mean(dim=1).numpy())
        pos += n
    if pos == 0:
        raise ValueError("nothing to evaluate: the data set is empty")
    return Results({k: np.concatenate(v) for k, v in cols.items()}, list(metrics),
                   {k: m.higher_is_better for k, m in metrics.items()})


def summarise(results: Results, target: Optional[tuple[str, float]] = None) -> dict[str, Any]:
    """Dose and metric statistics (mean, std, median, 5th/95th percentile, min, max) and,
    for ``target = (metric, q)``, the share of images reaching ``q``."""

    def stats(v: np.ndarray) -> dict[str, float]:
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                "median": float(np.median(v)), "p5": percentile(v, 5), "p95": percentile(v, 95),
                "min": float(v.min()), "max": float(v.max())}

    c = results.columns
    out: dict[str, Any] = {"images": len(results),
                           "patients": int(len(np.unique(c["patient_id"]))),
                           "relative_dose": stats(c["relative_dose"]),
                           "metrics": {m: stats(c[m]) for m in results.metric_names}}
    if target is not None:
        name, q = target
        v = c[name]
        met = v >= q if results.higher_is_better.get(name, True) else v <= q
        out["target"] = {"metric": name, "q": float(q), "share_met": float(met.mean())}
    return out


def write_json(path: PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON, written atomically."""
    from alara.atomic import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return Path(path)
