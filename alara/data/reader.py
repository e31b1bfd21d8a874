"""``LoDoPaBDataset``: a torch Dataset over a LoDoPaB-CT (or alara-written) directory.

HDF5 files are opened lazily, per process, on first access: h5py handles must not cross a
``fork``, so DataLoader workers each open their own and nothing is held open by
``__init__``.
"""

from __future__ import annotations

import operator

import os
from pathlib import Path
from typing import Any, Optional, Union

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from alara.data.layout import DataError, SplitLayout, inspect_split, open_data, resolve_info
from alara.data.lesions import (
    LESION_COLUMNS, has_lesion_free, lesion_free_root, lesion_problems, lesion_tensor,
    lesions_path, read_lesions, recorded_pixel_size,
)
from alara.data.lodopab import SPLITS
from alara.geometry import Geometry

__all__ = ["LoDoPaBDataset"]

PathLike = Union[str, Path]


class LoDoPaBDataset(Dataset):
    """One split of a LoDoPaB-layout directory.

    Each item is a dict with ``"ground_truth"`` ``[1, H, W]``, ``"observation"``
    ``[1, views, bins]`` (when loaded), ``"patient_id"`` (``-1`` where no CSV exists) and
    ``"index"``; the leading channel axis matches ``alara.ops``' ``[B, C, ...]`` layout.
    Synthetic data sets add their lesion truth (:mod:`alara.data.lesions`) where present:
    ``"lesions"`` ``[L_max, 5]`` (columns :data:`~alara.data.lesions.LESION_COLUMNS`,
    zero rows pad; ``L_max`` is the split's largest lesion count, so batches collate to
    ``[B, L_max, 5]``) and ``"background"`` ``[1, H, W]``, the lesion-free ground truth.

    Args:
        root: directory holding the ``*.hdf5`` files.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        observations: load observations (``None``: when the split has any).
        length: split length override (else metadata, else LoDoPaB's published lengths).
        check_finite: raise on NaN/inf in a loaded sample (cheap; catches corrupt data).
    """

    def __init__(self, root: PathLike, split: str = "train", *,
                 observations: Optional[bool] = None, length: Optional[int] = None,
                 check_finite: bool = True) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        self.root = Path(root)
        if self.root.is_file():
            raise DataError(f"{self.root}: is a file; give the directory that holds the "
                            f"*.hdf5 files")
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data directory not found")
        self.info, self.has_metadata = resolve_info(self.root)
        if observations is None:
            observations = any(self.root.glob(f"observation_{split}_*.hdf5"))
        kinds = ("ground_truth", "observation") if observations else ("ground_truth",)
        layout, problems = inspect_split(self.root, split, kinds, info=self.info,
                                         has_metadata=self.has_metadata, length=length)
        if problems:
            what = "alara data set" if self.has_metadata else "LoDoPaB-CT data set (no metadata)"
            listing = "\n  - ".join(problems)
            raise DataError(f"{self.root}: {what}, split {split!r}: {len(problems)} "
                            f"problem(s):\n  - {listing}")
        self.split = split
        self.layout: SplitLayout = layout
        self.background_layout: Optional[SplitLayout] = None
        self._lesions: Optional[torch.Tensor] = None
        self._load_lesion_truth()
        self.observations = bool(observations)
        self.check_finite = check_finite
        self._handles: dict[Path, tuple[h5py.File, h5py.Dataset]] = {}
        self._pid: Optional[int] = None

    def _load_lesion_truth(self) -> None:
        """Read the lesion sidecar and find the lesion-free files (where present)."""
        where = f"{self.root}: split {self.split!r}"
        shape = self.layout.shapes.get("ground_truth", tuple(self.info.image_shape))
        try:
            table = read_lesions(self.root, self.split)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
        if table is not None:
            size = recorded_pixel_size(self.info) if self.has_metadata else None
            problems = lesion_problems(table, lesions_path(self.root, self.split), len(self),
                                       shape, size)
            if problems:
                raise DataError(f"{where}: " + "; ".join(problems))
            self._lesions = lesion_tensor(table.samples)
        if has_lesion_free(self.root, self.info):
            layout, problems = inspect_split(
                lesion_free_root(self.root), self.split, ("ground_truth",), info=self.info,
                has_metadata=self.has_metadata, length=len(self))
            if not problems and layout.shapes.get("ground_truth", shape) != shape:
                problems.append(f"lesion-free images have shape {layout.shapes['ground_truth']}, "
                                f"the ground truth {shape}")
            if problems:
                listing = "\n  - ".join(problems)
                raise DataError(f"{where}: lesion-free ground truth: {len(problems)} "
                                f"problem(s):\n  - {listing}")
            self.background_layout = layout

    # -- properties ---------------------------------------------------------------------
    @property
    def has_lesions(self) -> bool:
        """Whether items carry ``"lesions"`` (the split has a lesion sidecar)."""
        return self._lesions is not None

    @property
    def has_background(self) -> bool:
        """Whether items carry ``"background"`` (lesion-free ground truth)."""
        return self.background_layout is not None

    @property
    def lesion_columns(self) -> tuple[str, ...]:
        """Column names of ``item["lesions"]``."""
        return LESION_COLUMNS

    @property
    def geometry(self) -> Optional[Geometry]:
        """The acquisition geometry recorded for the data set (LoDoPaB's if none)."""
        return self.info.get_geometry()

    @property
    def patient_ids(self) -> Optional[np.ndarray]:
        """Per-sample patient ids from ``patient_ids_rand_{split}.csv``, if present."""
        return self.layout.patient_ids

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.layout.shapes["ground_truth"]

    def __len__(self) -> int:
        return self.layout.length

    # -- reading ------------------------------------------------------------------------
    def _dataset(self, path: Path) -> h5py.Dataset:
        pid = os.getpid()
        if self._pid != pid:
            # A forked worker inherits the parent's dict: never reuse those handles.
            self._handles, self._pid = {}, pid
        entry = self._handles.get(path)
        if entry is None:
            entry = self._handles[path] = open_data(path)
        return entry[1]

    def _read(self, kind: str, index: int, layout: Optional[SplitLayout] = None) -> torch.Tensor:
        layout = layout if layout is not None else self.layout
        spf = layout.samples_per_file
        path = layout.files[kind][index // spf]
        local = index % spf
        try:
            arr = np.asarray(self._dataset(path)[local], dtype=np.float32)
        except DataError:
            raise
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read sample {local} (corrupt file?): {exc}") from None
        if arr.shape != self.layout.shapes[kind]:
            raise DataError(f"{path}: sample {local} has shape {arr.shape}, expected "
                            f"{self.layout.shapes[kind]}")
        if self.check_finite and not np.isfinite(arr).all():
            raise DataError(f"{path}: sample {local} contains NaN or inf values")
        return torch.from_numpy(arr).unsqueeze(0)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        try:
            # operator.index, not int(): 2.7 must not silently become sample 2.
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"{self.split} split: index must be a whole number, got {index!r} "
                            f"({type(index).__name__})") from None
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {self.split} split of {n} samples")
        item: dict[str, Any] = {"ground_truth": self._read("ground_truth", index)}
        if self.observations:
            item["observation"] = self._read("observation", index)
        if self._lesions is not None:
            item["lesions"] = self._lesions[index].clone()
        if self.background_layout is not None:
            item["background"] = self._read("ground_truth", index, self.background_layout)
        ids = self.layout.patient_ids
        item["patient_id"] = int(ids[index]) if ids is not None else -1
        item["index"] = index
        return item

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the HDF5 files this process opened."""
        if getattr(self, "_pid", None) == os.getpid():
            for f, _ in self._handles.values():
                try:
                    f.close()
                except Exception:  # closing during interpreter shutdown may fail; harmless
                    pass
        self._handles = {}

    def __getstate__(self) -> dict[str, Any]:
        # Spawned workers get a pickled copy: handles cannot be pickled, reopen there.
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = {}, None
        return state

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"LoDoPaBDataset(root={str(self.root)!r}, split={self.split!r}, "
                f"len={len(self)}, observations={self.observations})")
