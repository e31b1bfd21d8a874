"""Writers for the LoDoPaB layout.

Every file goes through :func:`alara.atomic.atomic_file` (temporary name in the target
directory, fsync, ``os.replace``), so a crash or an error never leaves a half-written file
under a final name and never damages the file it would replace.

A whole data set is written through :class:`OutputDir`: locked against a second writer,
staged in a hidden folder, checked, and only then moved over the old data set, so a bad
option, an error or a kill midway never costs the data set that was there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
import os
import re
import shutil
import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Sequence, Union

import h5py
import numpy as np
import torch

from alara.atomic import LOCK_FILE, DirectoryLock, atomic_file, write_bytes
from alara.data.lodopab import (
    KEY, SAMPLES_PER_FILE, data_filename, n_files, parse_data_filename, patient_ids_filename,
)

if TYPE_CHECKING:
    from alara.data.metadata import DatasetInfo

__all__ = ["atomic_file", "write_hdf5", "write_patient_ids", "SplitWriter", "OutputDir", "DirectoryLock",
           "output_path", "check_write_options", "check_file_count", "sha256_file",
           "LOCK_FILE", "STAGING_PREFIX", "MAX_FILES"]

PathLike = Union[str, Path]
ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_float32(array: ArrayLike, what: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: refusing to write non-finite values (NaN or inf)")
    return array


def write_hdf5(path: PathLike, array: ArrayLike, key: str = KEY) -> Path:
    """Write ``array`` as float32 dataset ``key`` of the HDF5 file ``path``, atomically."""
    path = Path(path)
    data = _as_float32(array, str(path))
    # The file is built in memory and written by alara.atomic: HDF5 never touches the
    # disk, so a full disk is one clear WriteError instead of a crash inside the HDF5
    # library (which segfaults when it cannot flush a file it is closing).
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        # Chunk by sample so that reading one sample touches one chunk.
        chunks = (1,) + data.shape[1:] if data.ndim >= 2 and data.shape[0] > 0 else None
        f.create_dataset(key, data=data, chunks=chunks)
    write_bytes(path, buf.getbuffer())
    return path


def write_patient_ids(root: PathLike, split: str, ids: Sequence[int]) -> Path:
    """Write ``patient_ids_rand_{split}.csv`` (one integer id per line), atomically."""
    path = Path(root) / patient_ids_filename(split)
    with atomic_file(path) as tmp, open(tmp, "w", encoding="ascii") as f:
        f.writelines(f"{int(i)}\n" for i in ids)
    return path


class SplitWriter:
    """Stream samples of one split and kind into ``{kind}_{split}_NNN.hdf5`` files.

    Samples are buffered until a file is full (``samples_per_file``) and then written
    atomically; :meth:`close` writes the last, possibly shorter, file.  Used as a context
    manager, an exception discards the unwritten buffer instead of writing a partial file.
    """

    def __init__(self, root: PathLike, split: str, kind: str,
                 samples_per_file: int = SAMPLES_PER_FILE) -> None:
        _whole("samples_per_file", samples_per_file, 1)
        data_filename(kind, split, 0)  # validates kind and split
        self.root = Path(root)
        self.split, self.kind = split, kind
        self.samples_per_file = int(samples_per_file)
        self.n_written = 0
        self.paths: list[Path] = []
        self._buffer: list[np.ndarray] = []
        self._shape: Optional[tuple[int, ...]] = None
        self._closed = False

    def append(self, sample: ArrayLike) -> None:
        """Add one sample (a 2-D image or sinogram)."""
        if self._closed:
            raise ValueError("SplitWriter is closed")
        what = f"{self.kind} {self.split} sample {self.n_written + len(self._buffer)}"
        arr = _as_float32(sample, what)
        if arr.ndim != 2:
            raise ValueError(f"{what}: expected a 2-D array, got shape {tuple(arr.shape)}")
        if self._shape is None:
            self._shape = arr.shape
        elif arr.shape != self._shape:
            raise ValueError(f"{what}: shape {arr.shape} differs from earlier samples {self._shape}")
        self._buffer.append(arr)
        if len(self._buffer) == self.samples_per_file:
            self._flush()

    def extend(self, samples: Iterable[ArrayLike]) -> None:
        for s in samples:
            self.append(s)

    def _flush(self) -> None:
        index = len(self.paths)
        path = self.root / data_filename(self.kind, self.split, index)
        write_hdf5(path, np.stack(self._buffer))
        self.paths.append(path)
        self.n_written += len(self._buffer)
        self._buffer = []

    def close(self) -> int:
        """Write the remaining samples; returns the number of samples written."""
        if not self._closed:
            if self._buffer:
                self._flush()
            self._closed = True
        return self.n_written

    def __enter__(self) -> "SplitWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._buffer = []
            self._closed = True


# ------------------------------------------------------------------------- data-set writes

#: Prefix of the hidden folder a data set is staged in before it replaces the old one.
STAGING_PREFIX = ".alara-staging-"
#: ``NNN`` in the file names has three digits.
MAX_FILES = 1000

def output_path(root: object, what: str = "output directory") -> Path:
    """``root`` as a :class:`Path`; an empty path is refused (``Path("")`` would be the
    current directory)."""
    if root is None or not str(root).strip():
        raise ValueError(f"{what} is empty; give the directory to write, e.g. data/synth")
    return Path(root)


def _whole(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r} "
                         f"({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_write_options(*, n0: float, samples_per_file: int, upsample: int, seed: int) -> None:
    """Refuse the options every data-set writer shares before anything is touched:
    ``n0`` a positive finite photon count, the sizes whole numbers >= 1."""
    if isinstance(n0, bool) or not isinstance(n0, numbers.Real) or not (
            math.isfinite(n0) and n0 > 0):
        raise ValueError(f"n0 (--n0) must be a positive finite number of photons per bin, "
                         f"got {n0!r}; LoDoPaB uses 4096")
    from alara.noise import check_photon_count

    check_photon_count(float(n0), what="n0 (--n0)")
    _whole("samples_per_file (--samples-per-file)", samples_per_file, 1)
    _whole("upsample (--upsample)", upsample, 1)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed (--seed) must be an integer, got {seed!r}")


def check_file_count(split: str, length: int, samples_per_file: int) -> None:
    """Refuse a split that would need more files than ``NNN`` can number."""
    files = n_files(length, samples_per_file)
    if files > MAX_FILES:
        raise ValueError(f"{split}: {length} samples at {samples_per_file} per file need "
                         f"{files} files, more than the layout's {MAX_FILES}; raise "
                         f"--samples-per-file to at least {-(-length // MAX_FILES)}")


def sha256_file(path: PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes (read in 4 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_TMP_RE = re.compile(r"^\.(?P<final>.+)\.[^.]+\.tmp$")


def is_dataset_file(name: str) -> bool:
    """Whether ``name`` (relative to the data set's folder, ``/``-separated) is one of a
    data set's files: data, metadata, patient ids, or lesion truth in its sub-folders."""
    from alara.data.lesions import LESION_FREE_DIR, LESIONS_DIR
    from alara.data.metadata import METADATA_FILE

    sub, _, base = name.rpartition("/")
    if sub == LESIONS_DIR:
        return bool(re.fullmatch(r"lesions_(train|validation|test)\.json", base))
    if sub == LESION_FREE_DIR:
        return bool((parsed := parse_data_filename(base)) and parsed[0] == "ground_truth")
    return not sub and bool(parse_data_filename(name) or name == METADATA_FILE
                            or (name.startswith("patient_ids_rand_") and name.endswith(".csv")))


def _files_below(root: Path) -> list[str]:
    """Every file under ``root``, as ``/``-separated names relative to it, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def leftovers(root: Path) -> list[Path]:
    """Temporary files and staging folders an interrupted write left in ``root``."""
    out = []
    for p in sorted(root.iterdir()):
        m = _TMP_RE.match(p.name)
        if (m and is_dataset_file(m.group("final")) and p.is_file()) or (
                p.name.startswith(STAGING_PREFIX) and p.is_dir()):
            out.append(p)
    return out


class OutputDir:
    """Write one data set into ``root`` without ever losing the one that is there.

    Used as a context manager: entering creates ``root``, locks it against a second
    writer (:data:`LOCK_FILE`, ``fcntl.flock``, released on exit, also when the process
    is killed), removes what a killed earlier write left behind, refuses a directory that
    already holds a data set unless ``overwrite``, and creates the staging folder
    :attr:`path` the writers write into.  :meth:`commit` checks the staged data set with
    :func:`alara.data.check.check_dataset` (a set its checker rejects is never written),
    records a SHA-256 checksum of every file in the metadata and only then replaces the
    old data set: old metadata removed (an interrupted commit leaves a directory the
    checker and the reader reject), new files moved in, new metadata written last, old
    files the new set does not replace deleted.  Leaving the block without a commit
    discards the staged files and leaves the old data set untouched.
    """

    def __init__(self, root: PathLike, overwrite: bool = False) -> None:
        self.root = output_path(root)
        self.overwrite = bool(overwrite)
        #: Staging folder (inside ``root``) the data set is written to.
        self.path: Path = self.root
        #: What an interrupted earlier write left behind and entering removed.
        self.cleaned: list[Path] = []
        self._lock = DirectoryLock(self.root)

    def __enter__(self) -> "OutputDir":
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"{self.root} is a file, not a directory; give a directory to "
                             f"write the data set into")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self.cleaned = leftovers(self.root)
            for p in self.cleaned:
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            existing = self._dataset_files()
            if existing and not self.overwrite:
                from alara.data.layout import DataError

                raise DataError(f"{self.root} already holds a data set ({len(existing)} "
                                f"files, e.g. {existing[0].name}); pass overwrite=True / "
                                f"--overwrite to replace it")
            self.path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
        except BaseException:
            self._lock.release()
            raise
        return self

    def _dataset_files(self) -> list[Path]:
        from alara.data.lesions import LESION_FREE_DIR, LESIONS_DIR

        found = [p for p in sorted(self.root.iterdir()) if p.is_file() and is_dataset_file(p.name)]
        for sub in (LESIONS_DIR, LESION_FREE_DIR):
            if (self.root / sub).is_dir():
                found += [p for p in sorted((self.root / sub).iterdir())
                          if p.is_file() and is_dataset_file(f"{sub}/{p.name}")]
        return found

    def commit(self, info: "DatasetInfo") -> "DatasetInfo":
        """Check the staged data set, record checksums and move it into ``root``;
        returns the metadata written."""
        from alara.data.check import check_dataset
        from alara.data.layout import DataError
        from alara.data.metadata import METADATA_FILE, write_metadata

        if self.path == self.root:
            raise RuntimeError("OutputDir.commit() outside its `with` block")
        # Named by their final paths: the staging folder is deleted on the way out.
        problems = [p.replace(str(self.path), str(self.root))
                    for p in check_dataset(self.path, info=info)]
        if problems:
            listing = "\n  - ".join(problems)
            raise DataError(f"the new data set fails its own check, so it was not written "
                            f"({self.root} is unchanged); {len(problems)} problem(s):\n"
                            f"  - {listing}")
        # Names relative to the data set: files in sub-folders (lesion truth) included.
        staged = _files_below(self.path)
        info = dataclasses.replace(info, checksums={n: sha256_file(self.path / n) for n in staged})
        old = self._dataset_files()
        (self.root / METADATA_FILE).unlink(missing_ok=True)
        for name in staged:
            (self.root / name).parent.mkdir(exist_ok=True)
            os.replace(self.path / name, self.root / name)
        write_metadata(self.root, info)
        new = set(staged) | {METADATA_FILE}
        for p in old:
            if p.relative_to(self.root).as_posix() not in new:
                p.unlink(missing_ok=True)
        for sub in {p.parent for p in old if p.parent != self.root}:
            if sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()
        shutil.rmtree(self.path)  # only the emptied sub-folders are left in it
        self.path = self.root
        return info

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.path != self.root:
                shutil.rmtree(self.path, ignore_errors=True)
                self.path = self.root
        finally:
            self._lock.release()
