"""Observation simulation (LoDoPaB's protocol) and synthetic data-set generation."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from alara.data.layout import DataError
from alara.data.lodopab import MIN_COUNT, SPLITS, hu_to_x, parse_data_filename
from alara.data.metadata import METADATA_FILE, DatasetInfo, geometry_to_dict, write_metadata
from alara.data.phantoms import render_slice, sample_patient, slice_positions
from alara.data.writer import SplitWriter, write_patient_ids
from alara.geometry import LODOPAB_MU_MAX, LODOPAB_N0, Geometry, ImageGrid, lodopab

__all__ = ["fine_geometry", "simulate_observation", "small_geometry", "SynthResult",
           "generate_dataset", "prepare_output_dir", "finish_output_dir"]

PathLike = Union[str, Path]


def small_geometry(image_size: int = 128, n_angles: int = 180, n_bins: Optional[int] = None) -> Geometry:
    """LoDoPaB's field of view at a CPU-friendly sampling (default 128 x 128, 180 views).

    ``n_bins`` defaults to the odd number nearest ``image_size * sqrt(2)`` (LoDoPaB: 513
    bins for 362 pixels), so bins and pixels have about the same size.
    """
    if n_bins is None:
        n_bins = int(round(image_size * 2 ** 0.5)) | 1
    return lodopab(n_angles=n_angles, n_bins=n_bins, image_size=image_size)


def fine_geometry(geometry: Geometry, upsample: int) -> Geometry:
    """The same scanner over a grid ``upsample`` times finer with the same extent."""
    g = geometry.grid
    fine = ImageGrid((g.shape[0] * upsample, g.shape[1] * upsample), g.min_pt, g.max_pt)
    return dataclasses.replace(geometry, grid=fine)


def simulate_observation(x: torch.Tensor, geometry: Geometry, n0: float = LODOPAB_N0, *,
                         generator: Optional[torch.Generator] = None,
                         mu_max: float = LODOPAB_MU_MAX, backend: str = "auto") -> torch.Tensor:
    """LoDoPaB's noisy post-log data for images ``x = mu / mu_max`` ``[B, C, H, W]``.

    Counts ~ Poisson(n0 exp(-mu_max A x)); zero counts become 0.1 (so the log is finite);
    ``y = -ln(counts / n0) / mu_max``.  Returns ``[B, C, views, bins]`` in x's dtype.
    """
    from alara.ops import project

    line = project(x, geometry, backend=backend)
    lam = n0 * torch.exp(-mu_max * line.double())
    counts = torch.poisson(lam, generator=generator).clamp_min_(MIN_COUNT)
    return (-torch.log(counts / n0) / mu_max).to(x.dtype)


@dataclass
class SynthResult:
    """What :func:`generate_dataset` wrote and how long it took."""

    root: Path
    info: DatasetInfo
    n_patients: int
    seconds: float

    @property
    def seconds_per_patient(self) -> float:
        return self.seconds / max(self.n_patients, 1)


def prepare_output_dir(root: PathLike, overwrite: bool) -> list[Path]:
    """Create ``root``; refuse to mix with an existing data set unless ``overwrite``.

    With ``overwrite``, the old metadata is removed at once, so that a run interrupted
    midway leaves a directory that ``alara data check`` and the reader reject instead of
    a silent mix of old and new files.  Returns the old data files, which
    :func:`finish_output_dir` removes once the new files are in place.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    existing = [p for p in root.iterdir()
                if parse_data_filename(p.name) or p.name == METADATA_FILE
                or (p.name.startswith("patient_ids_rand_") and p.suffix == ".csv")]
    if existing and not overwrite:
        raise DataError(f"{root} already holds a data set ({len(existing)} files, e.g. "
                        f"{existing[0].name}); pass overwrite=True / --overwrite to replace it")
    (root / METADATA_FILE).unlink(missing_ok=True)
    return [p for p in existing if p.name != METADATA_FILE]


def finish_output_dir(root: PathLike, info: DatasetInfo, written: set[Path],
                      stale: list[Path]) -> None:
    """Write the metadata last (its presence marks a complete data set), then delete the
    old data set's files that the new one did not replace."""
    written.add(write_metadata(root, info))
    for p in stale:
        if p not in written:
            p.unlink(missing_ok=True)


def generate_dataset(root: PathLike, *, patients: Sequence[int] = (8, 2, 2),
                     slices_per_patient: int = 4, geometry: Optional[Geometry] = None,
                     upsample: int = 2, n0: float = LODOPAB_N0, seed: int = 0,
                     samples_per_file: int = 128, observations: bool = True,
                     overwrite: bool = False, progress: bool = True,
                     backend: str = "auto") -> SynthResult:
    """Write a synthetic data set in the LoDoPaB layout under ``root``.

    ``patients`` gives the number of patients in (train, validation, test); each patient
    contributes ``slices_per_patient`` slices to its split only.  Samples are shuffled
    within a split (LoDoPaB's ``_rand`` order) and ``patient_ids_rand_{split}.csv`` records
    each sample's patient.  Ground truth is the ``upsample``-times finer rendering averaged
    down to the grid; observations are simulated from the fine rendering.
    """
    if len(patients) != 3 or any(int(n) < 0 for n in patients):
        raise ValueError(f"patients must be three counts (train, validation, test), got {patients}")
    if slices_per_patient <= 0 or upsample <= 0:
        raise ValueError("slices_per_patient and upsample must be positive")
    geometry = geometry if geometry is not None else small_geometry()
    fine = fine_geometry(geometry, upsample)
    root = Path(root)
    stale = prepare_output_dir(root, overwrite)

    master = torch.Generator().manual_seed(int(seed))
    total_patients = sum(int(n) for n in patients)
    patient_seeds = torch.randint(0, 2 ** 31, (total_patients,), generator=master).tolist()
    noise = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 31, (), generator=master)))

    lengths: dict[str, int] = {}
    written: set[Path] = set()
    start = time.perf_counter()
    bar = tqdm(total=total_patients * slices_per_patient, desc="alara data synth",
               unit="slice", disable=not progress)
    pid = 0
    for split, n_pat in zip(SPLITS, patients):
        items = []
        for _ in range(int(n_pat)):
            patient = sample_patient(patient_seeds[pid], pid)
            items += [(patient, t) for t in slice_positions(patient, slices_per_patient)]
            pid += 1
        order = torch.randperm(len(items), generator=master).tolist()
        items = [items[i] for i in order]
        gt = SplitWriter(root, split, "ground_truth", samples_per_file)
        obs = SplitWriter(root, split, "observation", samples_per_file) if observations else None
        for patient, t in items:
            x_fine = hu_to_x(render_slice(patient, t, fine.grid))[None, None]
            gt.append(F.avg_pool2d(x_fine, upsample)[0, 0])
            if obs is not None:
                y = simulate_observation(x_fine, fine, n0, generator=noise, backend=backend)
                obs.append(y[0, 0])
            bar.update(1)
        lengths[split] = gt.close()
        written.update(gt.paths)
        if obs is not None:
            obs.close()
            written.update(obs.paths)
        written.add(write_patient_ids(root, split, [p.pid for p, _ in items]))
    bar.close()
    seconds = time.perf_counter() - start

    info = DatasetInfo(
        lengths=lengths, samples_per_file=samples_per_file, image_shape=geometry.grid.shape,
        sinogram_shape=geometry.sinogram_shape if observations else None,
        geometry=geometry_to_dict(geometry), n0=float(n0), source="alara-synth",
        extra={"seed": int(seed), "patients": [int(n) for n in patients],
               "slices_per_patient": int(slices_per_patient), "upsample": int(upsample)},
    )
    finish_output_dir(root, info, written, stale)
    return SynthResult(root, info, total_patients, seconds)
