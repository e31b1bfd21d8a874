"""Validate a LoDoPaB-layout directory: files, counts, shapes, dtypes and value ranges."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from alara.data.layout import inspect_split, open_or_report, resolve_info
from alara.data.lodopab import SPLITS, observation_max, parse_data_filename
from alara.data.metadata import DatasetInfo
from alara.data.writer import STAGING_PREFIX, sha256_file

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
    parsed = parse_data_filename(name)
    if parsed:
        return parsed[1]
    if name.startswith("patient_ids_rand_") and name.endswith(".csv"):
        return name[len("patient_ids_rand_"):-len(".csv")]
    return None


def _verify_checksums(root: Path, info: DatasetInfo, splits: Sequence[str],
                      problems: list[str], note: Optional[Callable[[str], None]]) -> None:
    if not info.checksums:
        if note is not None:
            note(f"{root}: the metadata records no checksums (written before alara kept "
                 f"them), so file integrity is not verified; rewrite the data set to add them")
        return
    for name, recorded in sorted(info.checksums.items()):
        if Path(name).name != name:
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
    for split in splits:
        layout, split_problems = inspect_split(root, split, kinds, info=info,
                                               has_metadata=from_file)
        problems += split_problems
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
