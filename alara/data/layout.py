"""Find and validate the files of one split of a LoDoPaB-layout directory.

Only file headers are read here (names, keys, shapes, dtypes), so validating even the full
115 GB download takes well under a second; value checks live in :mod:`alara.data.check`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import h5py
import numpy as np

from alara.data.lodopab import (
    KEY, LODOPAB_LENGTHS, data_filename, n_files, parse_data_filename, patient_ids_filename,
    valid_in_last_file,
)
from alara.data.metadata import DatasetInfo, read_metadata

__all__ = ["DataError", "SplitLayout", "inspect_split", "open_data", "open_or_report",
           "read_patient_ids", "resolve_info"]

PathLike = Union[str, Path]


class DataError(ValueError):
    """A data set is missing, incomplete or malformed; the message names the file(s)."""


@dataclass
class SplitLayout:
    """The validated files of one split."""

    root: Path
    split: str
    length: int
    samples_per_file: int
    #: kind -> files in index order (only the kinds that were inspected).
    files: dict[str, list[Path]] = field(default_factory=dict)
    #: kind -> per-sample shape, e.g. ``(362, 362)`` and ``(1000, 513)``.
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    patient_ids: Optional[np.ndarray] = None


def resolve_info(root: PathLike) -> tuple[DatasetInfo, bool]:
    """The directory's metadata and whether it came from a file (else LoDoPaB's numbers)."""
    info = read_metadata(root)
    if info is not None:
        return info, True
    return DatasetInfo(lengths=dict(LODOPAB_LENGTHS)), False


def open_data(path: Path, key: str = KEY) -> tuple[h5py.File, h5py.Dataset]:
    """Open ``path`` read-only and return its dataset ``key``; errors name the file."""
    try:
        # No HDF5 file locking: reads only, and alara's writers never expose a partial file
        # (temporary name, then rename). Locking fails on many NFS/Lustre mounts where
        # LoDoPaB downloads live ("unable to lock file").
        f = h5py.File(path, "r", locking=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from None
    try:
        ds = f[key]
    except KeyError:
        keys = list(f.keys())
        f.close()
        raise DataError(f"{path}: no dataset {key!r} (found keys: {keys})") from None
    if not isinstance(ds, h5py.Dataset):
        f.close()
        raise DataError(f"{path}: {key!r} is a group, not a dataset")
    return f, ds


def read_patient_ids(path: Path) -> np.ndarray:
    """Integer patient ids, one per non-empty line of ``path``."""
    ids = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            try:
                ids.append(int(float(text)) if "." in text else int(text))
            except ValueError:
                raise DataError(f"{path}:{lineno}: not an integer patient id: {text!r}") from None
    return np.asarray(ids, dtype=np.int64)


def open_or_report(path: Path, problems: list[str]) -> Optional[tuple[h5py.File, h5py.Dataset]]:
    """:func:`open_data`, or ``None`` with the error appended to ``problems``."""
    try:
        return open_data(path)
    except DataError as exc:
        problems.append(str(exc))
        return None


def _header(path: Path, problems: list[str]) -> Optional[tuple[tuple[int, ...], np.dtype]]:
    opened = open_or_report(path, problems)
    if opened is None:
        return None
    f, ds = opened
    with f:
        return tuple(ds.shape), ds.dtype


def inspect_split(root: PathLike, split: str, kinds: Sequence[str], *,
                  info: Optional[DatasetInfo] = None, has_metadata: bool = True,
                  length: Optional[int] = None) -> tuple[SplitLayout, list[str]]:
    """Check names, counts, keys, shapes and dtypes of one split; returns problems found.

    ``length`` overrides the split length (else metadata, else LoDoPaB's).  Samples per file
    come from the metadata, else from the first file's leading dimension.  Pass ``info``
    and ``has_metadata`` from :func:`resolve_info` to avoid reading the metadata again.
    """
    root = Path(root)
    from_file = has_metadata
    if info is None:
        info, from_file = resolve_info(root)
    problems: list[str] = []
    if length is None:
        if split not in info.lengths:
            problems.append(f"split {split!r} is not listed in the metadata "
                            f"(it lists {sorted(info.lengths)})")
            return SplitLayout(root, split, 0, info.samples_per_file), problems
        length = info.lengths[split]

    spf = info.samples_per_file
    if not from_file:
        # LoDoPaB ships no metadata: samples per file is the first file's length.
        for kind in kinds:
            hdr = _header(root / data_filename(kind, split, 0), [])
            if hdr is not None and len(hdr[0]) >= 1 and hdr[0][0] > 0:
                spf = int(hdr[0][0])
                break
    headers: dict[str, list[Path]] = {}
    for kind in kinds:
        headers[kind] = sorted(
            (p for p in root.glob(f"{kind}_{split}_*.hdf5")
             if (parsed := parse_data_filename(p.name)) and parsed[:2] == (kind, split)),
            key=lambda p: p.name)

    expected = n_files(length, spf)
    valid_last = valid_in_last_file(length, spf)
    layout = SplitLayout(root, split, length, spf)
    if expected > 1000:  # NNN has three digits
        problems.append(f"{split}: {length} samples at {spf} per file need {expected} files, "
                        f"more than the layout's 1000 (wrong samples per file or length?"
                        f"{'' if from_file else ' no alara metadata: LoDoPaB lengths assumed'})")
        return layout, problems
    for kind in kinds:
        wanted = [root / data_filename(kind, split, i) for i in range(expected)]
        present = set(headers[kind])
        missing = [p for p in wanted if p not in present]
        extra = sorted(present - set(wanted))
        if missing:
            names = ", ".join(p.name for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
            problems.append(f"{kind} {split}: {len(missing)} of {expected} files missing in "
                            f"{root}: {names}")
        if extra:
            problems.append(f"{kind} {split}: unexpected extra files for a split of {length} "
                            f"samples: {', '.join(p.name for p in extra)}")
        shape: Optional[tuple[int, ...]] = None
        for i, path in enumerate(wanted):
            if path not in present:
                continue
            hdr = _header(path, problems)
            if hdr is None:
                continue
            fshape, dtype = hdr
            if dtype != np.float32:
                problems.append(f"{path}: dtype {dtype}, expected float32")
            if len(fshape) != 3:
                problems.append(f"{path}: shape {fshape}, expected (samples, height, width)")
                continue
            if shape is None:
                shape = fshape[1:]
            elif fshape[1:] != shape:
                problems.append(f"{path}: sample shape {fshape[1:]} differs from "
                                f"{wanted[0].name}'s {shape}")
            want_n = spf if i < expected - 1 else valid_last
            ok = fshape[0] == want_n if i < expected - 1 else want_n <= fshape[0] <= spf
            if not ok:
                problems.append(f"{path}: {fshape[0]} samples, expected "
                                f"{want_n if i < expected - 1 else f'{want_n} to {spf}'}")
        declared = info.image_shape if kind == "ground_truth" else info.sinogram_shape
        if shape is not None and from_file and declared is not None and shape != tuple(declared):
            problems.append(f"{kind} {split}: sample shape {shape} but the metadata says "
                            f"{tuple(declared)}")
        layout.files[kind] = wanted
        if shape is not None:
            layout.shapes[kind] = shape

    ids_path = root / patient_ids_filename(split)
    if ids_path.exists():
        try:
            ids = read_patient_ids(ids_path)
        except (DataError, OSError, UnicodeDecodeError) as exc:
            problems.append(str(exc) if isinstance(exc, DataError) else f"{ids_path}: {exc}")
        else:
            if len(ids) != length:
                problems.append(f"{ids_path}: {len(ids)} patient ids for {length} samples")
            else:
                layout.patient_ids = ids
    return layout, problems
