"""Atomic writer for the LoDoPaB layout.

Every file is written under a temporary name in the target directory and moved into place
with ``os.replace`` (atomic on POSIX and Windows), so a crash or an error never leaves a
half-written file under a final name and never damages the file it would replace.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import h5py
import numpy as np
import torch

from alara.data.lodopab import KEY, SAMPLES_PER_FILE, data_filename, patient_ids_filename

__all__ = ["atomic_file", "write_hdf5", "write_patient_ids", "SplitWriter"]

PathLike = Union[str, Path]
ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_float32(array: ArrayLike, what: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: refusing to write non-finite values (NaN or inf)")
    return array


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it to ``path`` when the block succeeds.

    On any exception (``KeyboardInterrupt`` included) the temporary file is deleted, so
    ``path`` is either untouched or complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    # mkstemp makes the file private (0600); give the result the permissions any newly
    # created file would get, so shared data sets stay readable by the group.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_hdf5(path: PathLike, array: ArrayLike, key: str = KEY) -> Path:
    """Write ``array`` as float32 dataset ``key`` of the HDF5 file ``path``, atomically."""
    path = Path(path)
    data = _as_float32(array, str(path))
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        # Chunk by sample so that reading one sample touches one chunk.
        chunks = (1,) + data.shape[1:] if data.ndim >= 2 and data.shape[0] > 0 else None
        f.create_dataset(key, data=data, chunks=chunks)
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
        if samples_per_file <= 0:
            raise ValueError(f"samples_per_file must be positive, got {samples_per_file}")
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
