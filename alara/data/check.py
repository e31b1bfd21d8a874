"""Validate a LoDoPaB-layout directory: files, counts, shapes, dtypes and value ranges."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from alara.data.layout import SplitLayout, inspect_split, open_or_report, resolve_info
from alara.data.lesions import (
    LESION_FREE_DIR, LESIONS_DIR, LesionTable, has_lesion_free, lesion_free_root,
    lesion_problems, lesions_path, read_lesions, recorded_pixel_size,
)
from alara.data.lodopab import SPLITS, observation_max, parse_data_filename
from alara.data.metadata import DatasetInfo
from alara.data.writer import STAGING_PREFIX, is_dataset_file, sha256_file

__all__ = ["check_dataset", "GT_RANGE", "OBS_MIN"]

PathLike = Union[str, Path]

#: Ground truth is ``clip(mu / mu_max, 0, 1)``.
GT_RANGE = (0.0, 1.0)
#: Post-log data go slightly negative where Poisson counts exceed n0; at n0 = 4096 even a
#: 10-sigma excess gives only -0.0019, so anything below this marks wrong data (at low n0
#: the bound widens to a 10-sigma excess, see :func:`observation_min`).
OBS_MIN = -0.01
# Samples read per HDF5 access when scanning values (bounds memory: 16 LoDoPaB
# sinograms are 33 MB).
_CHUNK = 16
#: Samples per split whose ground truth is compared with the lesion-free ground truth.
LESION_FREE_SAMPLES = 4
# |ground truth - lesion-free| above this is a difference (float32 values in [0, 1]).
_SAME = 1e-6


def _scan(path: Path, n_valid: int, lo: float, hi: float, problems: list[str]) -> None:
    opened = open_or_report(path, problems)
    if opened is None:
        return
    f, ds = opened
    with f:
        bad_nonfinite, vmin, vmax = [], np.inf, -np.inf
        for start in range(0, n_valid, _CHUNK):
            try:
                block = ds[start:min(start + _CHUNK, n_valid)]
            except (OSError, ValueError) as exc:
                problems.append(f"{path}: cannot read samples {start}+ (corrupt file?): {exc}")
                return
            finite = np.isfinite(block).reshape(len(block), -1).all(axis=1)
            bad_nonfinite += [start + i for i in np.flatnonzero(~finite)]
            if finite.any():
                good = block[finite]
                vmin, vmax = min(vmin, float(good.min())), max(vmax, float(good.max()))
        if bad_nonfinite:
            shown = ", ".join(map(str, bad_nonfinite[:8])) + (" ..." if len(bad_nonfinite) > 8 else "")
            problems.append(f"{path}: NaN or inf in {len(bad_nonfinite)} sample(s): {shown}")
        if vmin < lo or vmax > hi:
            problems.append(f"{path}: values in [{vmin:.4g}, {vmax:.4g}], expected within "
                            f"[{lo:.4g}, {hi:.4g}]")


def observation_min(n0: float, mu_max: float) -> float:
    """Lowest plausible post-log value: counts ``n0 + 10 sqrt(n0) + 10`` (a 10-sigma
    Poisson excess), or :data:`OBS_MIN` where that is lower."""
    return min(OBS_MIN, -math.log1p(10 / math.sqrt(n0) + 10 / n0) / mu_max)


def _split_of(name: str) -> Optional[str]:
    name = name.rpartition("/")[2]
    parsed = parse_data_filename(name)
    if parsed:
        return parsed[1]
    for prefix, suffix in (("patient_ids_rand_", ".csv"), ("lesions_", ".json")):
        if name.startswith(prefix) and name.endswith(suffix):
            return name[len(prefix):-len(suffix)]
    return None


def _verify_checksums(root: Path, info: DatasetInfo, splits: Sequence[str],
                      problems: list[str], note: Optional[Callable[[str], None]]) -> None:
    if not info.checksums:
        if note is not None:
            note(f"{root}: the metadata records no checksums (written before alara kept "
                 f"them), so file integrity is not verified; rewrite the data set to add them")
        return
    for name, recorded in sorted(info.checksums.items()):
        sub = name.rpartition("/")[0]
        if Path(name).name != name and not (sub in (LESIONS_DIR, LESION_FREE_DIR)
                                            and is_dataset_file(name)):
            problems.append(f"{root}: metadata checksum entry {name!r} is not a plain file name")
            continue
        if _split_of(name) not in splits:
            continue
        path = root / name
        if not path.is_file():
            problems.append(f"{path}: listed in the metadata checksums but missing")
            continue
        actual = sha256_file(path)
        if actual != recorded:
            problems.append(f"{path}: SHA-256 {actual[:16]}... differs from the "
                            f"{recorded[:16]}... recorded when it was written: the file was "
                            f"changed or corrupted since; restore it or recreate the data set")


def _read_sample(path: Path, index: int, problems: list[str]) -> Optional[np.ndarray]:
    opened = open_or_report(path, problems)
    if opened is None:
        return None
    f, ds = opened
    with f:
        try:
            return np.asarray(ds[index], dtype=np.float64)
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: cannot read sample {index} (corrupt file?): {exc}")
            return None


def _compare_lesion_free(layout: SplitLayout, free: SplitLayout, table: LesionTable,
                         problems: list[str]) -> None:
    """Ground truth and lesion-free truth of the first samples differ only within
    ``2 r + 1`` pixels of a recorded lesion centre (the partial volume of the averaged-down
    rendering reaches ``r + 0.71`` pixels)."""
    spf = layout.samples_per_file
    for i in range(min(LESION_FREE_SAMPLES, layout.length, len(table.samples))):
        gt_path, free_path = layout.files["ground_truth"][i // spf], free.files["ground_truth"][i // spf]
        gt, bg = _read_sample(gt_path, i % spf, problems), _read_sample(free_path, i % spf, problems)
        if gt is None or bg is None or gt.shape != bg.shape:
            continue
        rows, cols = np.meshgrid(np.arange(gt.shape[0]), np.arange(gt.shape[1]), indexing="ij")
        near = np.zeros(gt.shape, dtype=bool)
        for les in table.samples[i]:
            near |= np.hypot(rows - les.row, cols - les.col) <= 2 * les.radius_px + 1
        stray = (np.abs(gt - bg) > _SAME) & ~near
        if stray.any():
            r, c = np.argwhere(stray)[0]
            problems.append(f"{free_path}: sample {i % spf} differs from the ground truth at "
                            f"{int(stray.sum())} pixel(s) away from its recorded lesions "
                            f"(first at row {r}, col {c}): the lesion-free truth or the lesion "
                            f"sidecar does not belong to this data set; recreate it with "
                            f"alara data synth --lesion-free")


def _check_lesion_truth(root: Path, split: str, layout: SplitLayout, info: DatasetInfo,
                        from_file: bool, scan_values: bool, problems: list[str],
                        progress: Optional[Callable[[str], None]]) -> None:
    """The lesion sidecar and lesion-free ground truth of one split, where present."""
    table = None
    path = lesions_path(root, split)
    if path.exists():
        try:
            table = read_lesions(root, split)
        except ValueError as exc:
            problems.append(str(exc))
        else:
            shape = layout.shapes.get("ground_truth", tuple(info.image_shape))
            size = recorded_pixel_size(info) if from_file else None
            problems += lesion_problems(table, path, layout.length, shape, size)
    if not has_lesion_free(root, info):
        return
    free_root = lesion_free_root(root)
    free, free_problems = inspect_split(free_root, split, ("ground_truth",), info=info,
                                        has_metadata=from_file, length=layout.length)
    problems += free_problems
    if not path.exists():
        problems.append(f"{free_root}: lesion-free ground truth of split {split!r} without "
                        f"its lesion sidecar {path}; recreate the data set with alara data "
                        f"synth --lesion-free")
    if free_problems or not scan_values:
        return
    files = free.files.get("ground_truth", [])
    for i, fpath in enumerate(files):
        n_valid = layout.length - i * free.samples_per_file if i == len(files) - 1 \
            else free.samples_per_file
        if progress is not None:
            progress(f"{LESION_FREE_DIR}/{fpath.name}")
        _scan(fpath, n_valid, GT_RANGE[0], GT_RANGE[1], problems)
    if table is not None and "ground_truth" in layout.files and \
            free.shapes.get("ground_truth") == layout.shapes.get("ground_truth"):
        _compare_lesion_free(layout, free, table, problems)
    elif free.shapes.get("ground_truth") != layout.shapes.get("ground_truth"):
        problems.append(f"{free_root}: lesion-free images of split {split!r} have shape "
                        f"{free.shapes.get('ground_truth')}, the ground truth "
                        f"{layout.shapes.get('ground_truth')}; recreate the data set")


def check_dataset(root: PathLike, splits: Optional[Sequence[str]] = None, *,
                  scan_values: bool = True,
                  progress: Optional[Callable[[str], None]] = None,
                  note: Optional[Callable[[str], None]] = None,
                  info: Optional[DatasetInfo] = None) -> list[str]:
    """All problems found in the data set at ``root`` (empty list: the data set is valid).

    ``splits`` defaults to the metadata's splits, or all three for a LoDoPaB download.
    ``scan_values`` reads every sample to check for NaN/inf and out-of-range values, and
    every file's SHA-256 against the metadata's checksums.  ``progress`` is called with
    each file name before it is scanned, ``note`` with remarks that are not problems (no
    checksums recorded).  ``info`` replaces the metadata file (to check a data set
    before its metadata is written).
    """
    root = Path(root)
    if not root.is_dir():
        return [f"{root}: not a directory"]
    if info is not None:
        from_file = True
    else:
        try:
            info, from_file = resolve_info(root)
        except ValueError as exc:
            return [str(exc)]
    problems: list[str] = []
    if splits is None:
        splits = list(info.lengths) if from_file else list(SPLITS)
    for split in splits:
        if split not in SPLITS:
            problems.append(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    splits = [s for s in splits if s in SPLITS]

    for p in sorted(root.iterdir()):
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            problems.append(f"{p}: leftover temporary file of an interrupted write")
        elif p.name.startswith(STAGING_PREFIX) and p.is_dir():
            problems.append(f"{p}: leftover staging folder of an interrupted write (the "
                            f"data set beside it is intact; the next write removes it)")
        elif p.suffix == ".hdf5" and parse_data_filename(p.name) is None:
            problems.append(f"{p}: HDF5 file with a name outside the LoDoPaB layout")

    if from_file and info.geometry is not None:
        try:
            geometry = info.get_geometry()
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{root}: metadata geometry is invalid: {exc}")
        else:
            if tuple(geometry.grid.shape) != tuple(info.image_shape):
                problems.append(f"{root}: metadata geometry grid {geometry.grid.shape} differs "
                                f"from image_shape {tuple(info.image_shape)}")
            if info.sinogram_shape is not None and geometry.sinogram_shape != tuple(info.sinogram_shape):
                problems.append(f"{root}: metadata geometry sinogram {geometry.sinogram_shape} "
                                f"differs from sinogram_shape {tuple(info.sinogram_shape)}")

    with_obs = info.sinogram_shape is not None or not from_file
    kinds = ("ground_truth", "observation") if with_obs else ("ground_truth",)
    obs_hi = observation_max(info.n0, info.mu_max) + 1e-4
    obs_lo = observation_min(info.n0, info.mu_max)
    if with_obs:
        from alara.noise import MIN_COUNT

        if not (math.isfinite(info.n0) and info.n0 > MIN_COUNT):
            # Every expected count is below the clamp: the "observations" are a constant.
            problems.append(f"{root}: metadata n0 = {info.n0:g} photons per bin is not above the noise model's "
                            f"minimum count {MIN_COUNT:g}, so its observations are a constant, not measurements; "
                            "write the data set again with a larger --n0")
    for split in splits:
        layout, split_problems = inspect_split(root, split, kinds, info=info,
                                               has_metadata=from_file)
        problems += split_problems
        _check_lesion_truth(root, split, layout, info, from_file, scan_values, problems, progress)
        if not scan_values:
            continue
        bad = {q.split(":", 1)[0] for q in split_problems}
        for kind, files in layout.files.items():
            lo, hi = GT_RANGE if kind == "ground_truth" else (obs_lo, obs_hi)
            for i, path in enumerate(files):
                if not path.exists() or str(path) in bad:
                    continue  # already reported
                last = i == len(files) - 1
                n_valid = layout.length - i * layout.samples_per_file if last else layout.samples_per_file
                if progress is not None:
                    progress(path.name)
                _scan(path, n_valid, lo, hi, problems)
    if scan_values and from_file:
        _verify_checksums(root, info, splits, problems, note)
    return problems
