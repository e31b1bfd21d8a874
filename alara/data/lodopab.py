"""LoDoPaB-CT layout: split names, file names, sizes and the HU -> image recipe.

Everything here is a fact about the published data set (Leuschner et al., 2021), so that a
real download and a data set written by alara are read by the same code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Union

import numpy as np
import torch

from alara.geometry import LODOPAB_MU_MAX, LODOPAB_N0

__all__ = [
    "SPLITS",
    "KINDS",
    "KEY",
    "SAMPLES_PER_FILE",
    "LODOPAB_LENGTHS",
    "MU_WATER",
    "MU_AIR",
    "MIN_COUNT",
    "Split",
    "Kind",
    "data_filename",
    "parse_data_filename",
    "patient_ids_filename",
    "n_files",
    "valid_in_last_file",
    "hu_to_mu",
    "hu_to_x",
    "observation_max",
]

Split = Literal["train", "validation", "test"]
Kind = Literal["ground_truth", "observation"]

SPLITS: tuple[str, ...] = ("train", "validation", "test")
KINDS: tuple[str, ...] = ("ground_truth", "observation")
#: HDF5 dataset name inside every file.
KEY = "data"
#: Samples per HDF5 file in the published data set.
SAMPLES_PER_FILE = 128
#: Number of samples per split in the published data set.
LODOPAB_LENGTHS: dict[str, int] = {"train": 35820, "validation": 3522, "test": 3553}
#: Attenuation of water and air (1/m) used by LoDoPaB's HU conversion.
MU_WATER = 20.0
MU_AIR = 0.02
#: LoDoPaB replaces zero photon counts by this value before taking the log (the noise
#: model lives in alara.noise).
from alara.noise import MIN_COUNT  # noqa: E402

_NAME_RE = re.compile(r"^(ground_truth|observation)_(train|validation|test)_(\d{3})\.hdf5$")

PathLike = Union[str, Path]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def data_filename(kind: str, split: str, index: int) -> str:
    """``{kind}_{split}_NNN.hdf5`` (``NNN`` zero-padded to three digits)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    _check_split(split)
    if not 0 <= index <= 999:
        raise ValueError(f"file index must be in [0, 999], got {index}")
    return f"{kind}_{split}_{index:03d}.hdf5"


def parse_data_filename(name: str) -> tuple[str, str, int] | None:
    """``(kind, split, index)`` for a LoDoPaB data file name, else ``None``."""
    m = _NAME_RE.match(name)
    return (m.group(1), m.group(2), int(m.group(3))) if m else None


def patient_ids_filename(split: str) -> str:
    """``patient_ids_rand_{split}.csv``: one patient id per sample, one per line."""
    _check_split(split)
    return f"patient_ids_rand_{split}.csv"


def n_files(length: int, samples_per_file: int = SAMPLES_PER_FILE) -> int:
    """Number of files holding ``length`` samples."""
    if length < 0 or samples_per_file <= 0:
        raise ValueError(f"bad length {length} / samples per file {samples_per_file}")
    return -(-length // samples_per_file)


def valid_in_last_file(length: int, samples_per_file: int = SAMPLES_PER_FILE) -> int:
    """Valid entries in a split's last file: ``length - spf * (files - 1)``.

    LoDoPaB's last ground-truth file can hold more (padding) entries than this; only the
    first ones are samples.
    """
    files = n_files(length, samples_per_file)
    return length - samples_per_file * (files - 1) if files else 0


def hu_to_mu(hu):
    """Hounsfield units to linear attenuation (1/m): ``mu = HU (mu_w - mu_a)/1000 + mu_w``."""
    return hu * ((MU_WATER - MU_AIR) / 1000.0) + MU_WATER


def hu_to_x(hu):
    """Hounsfield units to LoDoPaB image values ``clip(mu / mu_max, 0, 1)`` (tensor or array)."""
    x = hu_to_mu(hu) / LODOPAB_MU_MAX
    if isinstance(x, torch.Tensor):
        return x.clamp(0.0, 1.0)
    return np.clip(x, 0.0, 1.0)


def observation_max(n0: float = LODOPAB_N0, mu_max: float = LODOPAB_MU_MAX) -> float:
    """Largest possible post-log value: a bin with ``MIN_COUNT`` photons."""
    return float(np.log(n0 / MIN_COUNT) / mu_max)
