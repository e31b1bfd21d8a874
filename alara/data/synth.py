"""Observation simulation (LoDoPaB's protocol) and synthetic data-set generation."""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from alara.progress import tqdm

from alara.data.lesions import lesion_free_root, pixel_size, slice_lesions, write_lesions
from alara.data.lodopab import SPLITS, hu_to_x
from alara.data.metadata import DatasetInfo, geometry_to_dict
from alara.data.phantoms import render_slice_layers, sample_patient, slice_positions
from alara.data.texture import DEFAULT_TEXTURE, TextureParams
from alara.data.writer import (
    OutputDir, SplitWriter, check_file_count, check_write_options, write_patient_ids,
)
from alara.noise import postlog_noise
from alara.geometry import LODOPAB_MU_MAX, LODOPAB_N0, Geometry, ImageGrid, lodopab

__all__ = ["fine_geometry", "simulate_observation", "small_geometry", "SynthResult",
           "generate_dataset"]

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
    """LoDoPaB's noisy post-log data for images ``x = mu / mu_max`` ``[B, C, H, W]``: the
    projection, then :func:`alara.noise.postlog_noise` (exact Poisson) at ``n0`` photons
    per bin on every view.  Returns ``[B, C, views, bins]`` in x's dtype."""
    from alara.ops import project

    if not (isinstance(n0, numbers.Real) and math.isfinite(n0) and n0 > 0):
        raise ValueError(f"n0 must be a finite positive photon count, got {n0!r}")
    line = project(x, geometry, backend=backend)
    n0_views = torch.full((x.shape[0], geometry.n_views), float(n0), dtype=torch.float64, device=x.device)
    # Data sets need no coupling across doses: the faster sampler.
    return postlog_noise(line, n0_views, mu_max=mu_max, generator=generator, sampler="poisson")


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


def generate_dataset(root: PathLike, *, patients: Sequence[int] = (8, 2, 2),
                     slices_per_patient: int = 4, geometry: Optional[Geometry] = None,
                     upsample: int = 2, n0: float = LODOPAB_N0, seed: int = 0,
                     samples_per_file: int = 128, observations: bool = True,
                     overwrite: bool = False, progress: bool = True,
                     backend: str = "auto",
                     texture: Optional[TextureParams] = DEFAULT_TEXTURE,
                     lesion_free: bool = False, lesion_slices: bool = False,
                     train_sizes: str = "population") -> SynthResult:
    """Write a synthetic data set in the LoDoPaB layout under ``root``.

    ``patients`` gives the number of patients in (train, validation, test); each patient
    contributes ``slices_per_patient`` slices to its split only.  Samples are shuffled
    within a split (LoDoPaB's ``_rand`` order) and ``patient_ids_rand_{split}.csv`` records
    each sample's patient.  Ground truth is the ``upsample``-times finer rendering averaged
    down to the grid; observations are simulated from the fine rendering.  ``texture``
    sets the tissue texture and lung vessels (:class:`alara.data.texture.TextureParams`);
    ``None`` writes the piecewise-constant cartoon patients.

    Lesion truth (:mod:`alara.data.lesions`): ``lesions/lesions_{split}.json`` records the
    lesions painted in every sample.  ``lesion_free`` also writes each sample's ground
    truth without its lesions to ``lesion_free/ground_truth_{split}_NNN.hdf5``;
    ``lesion_slices`` places each patient's slices through its lesions' centres first.

    ``train_sizes``: ``"population"`` draws every split's body sizes from the same
    distribution; ``"stratified"`` gives the training split's k-th of n patients a size
    drawn in the k-th of n equal strata of the whole size range, so training covers the
    smallest child and the largest adult that validation and test may hold.
    """
    # Every option is checked before the output directory is touched.
    if len(patients) != 3 or any(isinstance(n, bool) or not isinstance(n, numbers.Integral)
                                 or n < 0 for n in patients):
        raise ValueError(f"patients must be three whole numbers >= 0 (train, validation, "
                         f"test: --train, --validation, --test), got {tuple(patients)}")
    if isinstance(slices_per_patient, bool) or not isinstance(slices_per_patient, numbers.Integral) \
            or slices_per_patient < 1:
        raise ValueError(f"slices_per_patient (--slices) must be a whole number >= 1, got "
                         f"{slices_per_patient!r}")
    check_write_options(n0=n0, samples_per_file=samples_per_file, upsample=upsample, seed=seed)
    if texture is not None and not isinstance(texture, TextureParams):
        raise ValueError(f"texture must be an alara.data.texture.TextureParams or None (the "
                         f"cartoon patients), got {type(texture).__name__}")
    if train_sizes not in ("population", "stratified"):
        raise ValueError(f"train_sizes must be 'population' or 'stratified', got {train_sizes!r}")
    for name, flag in (("lesion_free", lesion_free), ("lesion_slices", lesion_slices)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False, got {flag!r}")
    for split, n_pat in zip(SPLITS, patients):
        check_file_count(split, int(n_pat) * int(slices_per_patient), samples_per_file)
    geometry = geometry if geometry is not None else small_geometry()
    fine_geometry(geometry, upsample)
    pixel_size(geometry.grid)
    with OutputDir(root, overwrite) as out:
        return _write_dataset(out, patients, slices_per_patient, geometry, upsample, n0, seed,
                              samples_per_file, observations, progress, backend, texture,
                              lesion_free, lesion_slices, train_sizes)


def _write_dataset(out: OutputDir, patients: Sequence[int], slices_per_patient: int,
                   geometry: Geometry, upsample: int, n0: float, seed: int,
                   samples_per_file: int, observations: bool, progress: bool,
                   backend: str, texture: Optional[TextureParams], lesion_free: bool,
                   lesion_slices: bool, train_sizes: str = "population") -> SynthResult:
    """:func:`generate_dataset` once its options are checked: stage, then commit ``out``."""
    root = out.path
    fine = fine_geometry(geometry, upsample)
    master = torch.Generator().manual_seed(int(seed))
    total_patients = sum(int(n) for n in patients)
    patient_seeds = torch.randint(0, 2 ** 31, (total_patients,), generator=master).tolist()
    noise = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 31, (), generator=master)))

    lengths: dict[str, int] = {}
    start = time.perf_counter()
    bar = tqdm(total=total_patients * slices_per_patient, desc="alara data synth",
               unit="slice", disable=not progress)
    pid = 0
    strata = torch.Generator().manual_seed(int(seed) + 1)
    for split, n_pat in zip(SPLITS, patients):
        items = []
        sizes: list[Optional[float]] = [None] * int(n_pat)
        if split == "train" and train_sizes == "stratified" and n_pat:
            u = torch.rand(int(n_pat), generator=strata, dtype=torch.float64)
            sizes = ((torch.randperm(int(n_pat), generator=strata) + u) / int(n_pat)).tolist()
        for k in range(int(n_pat)):
            patient = sample_patient(patient_seeds[pid], pid, sizes[k])
            items += [(patient, t) for t in slice_positions(patient, slices_per_patient,
                                                            lesion_slices)]
            pid += 1
        order = torch.randperm(len(items), generator=master).tolist()
        items = [items[i] for i in order]
        gt = SplitWriter(root, split, "ground_truth", samples_per_file)
        obs = SplitWriter(root, split, "observation", samples_per_file) if observations else None
        free = SplitWriter(lesion_free_root(root), split, "ground_truth",
                           samples_per_file) if lesion_free else None
        truth = []
        for patient, t in items:
            layers = render_slice_layers(patient, t, fine.grid, texture, background=lesion_free)
            x_fine = hu_to_x(layers.hu)[None, None]
            gt.append(F.avg_pool2d(x_fine, upsample)[0, 0])
            truth.append(slice_lesions(patient, t, geometry.grid, layers.painted))
            if free is not None:
                free.append(F.avg_pool2d(hu_to_x(layers.background)[None, None], upsample)[0, 0])
            if obs is not None:
                y = simulate_observation(x_fine, fine, n0, generator=noise, backend=backend)
                obs.append(y[0, 0])
            bar.update(1)
        lengths[split] = gt.close()
        if obs is not None:
            obs.close()
        if free is not None:
            free.close()
        write_patient_ids(root, split, [p.pid for p, _ in items])
        write_lesions(root, split, truth, pixel_size(geometry.grid))
    bar.close()
    seconds = time.perf_counter() - start

    info = DatasetInfo(
        lengths=lengths, samples_per_file=samples_per_file, image_shape=geometry.grid.shape,
        sinogram_shape=geometry.sinogram_shape if observations else None,
        geometry=geometry_to_dict(geometry), n0=float(n0), source="alara-synth",
        extra={"seed": int(seed), "patients": [int(n) for n in patients],
               "slices_per_patient": int(slices_per_patient), "upsample": int(upsample),
               "texture": dataclasses.asdict(texture) if texture is not None else None,
               "lesion_free": bool(lesion_free), "lesion_slices": bool(lesion_slices)},
    )
    info = out.commit(info)
    return SynthResult(out.root, info, total_patients, seconds)
