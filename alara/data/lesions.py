"""Lesion truth of a synthetic data set: the sidecar ``lesions/lesions_{split}.json``.

The HDF5 files keep LoDoPaB's layout and names; what a task-based metric needs to know
about the lesions (where, how large, how much contrast) lives beside them, one JSON file
per split, one list of lesions per sample in the split's sample order.  Lesion-free ground
truth, when written, lives in ``lesion_free/`` in the same layout as the ground truth.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import torch

from alara.data.lodopab import MU_AIR, MU_WATER, SPLITS
from alara.data.phantoms import Patient, lesion_centre_world, lesion_section
from alara.atomic import atomic_file
from alara.geometry import LODOPAB_MU_MAX, ImageGrid

__all__ = ["LESION_COLUMNS", "LESIONS_DIR", "LESION_FREE_DIR", "CONVENTION", "FORMAT_VERSION",
           "LesionRecord", "LesionTable", "lesions_path", "lesion_free_root", "has_lesion_free",
           "recorded_pixel_size", "world_to_pixel",
           "pixel_size", "slice_lesions", "write_lesions", "read_lesions", "lesion_problems",
           "lesion_tensor"]

if TYPE_CHECKING:
    from alara.data.metadata import DatasetInfo

PathLike = Union[str, Path]

#: Columns of the per-sample lesion tensor the reader gives (``in_lung`` as 0/1).
LESION_COLUMNS = ("row", "col", "radius_px", "contrast", "in_lung")
#: Sub-folder of the data set holding ``lesions_{split}.json``.
LESIONS_DIR = "lesions"
#: Sub-folder holding the lesion-free ground truth ``ground_truth_{split}_NNN.hdf5``.
LESION_FREE_DIR = "lesion_free"
FORMAT_VERSION = 1
#: Pixel convention of the sidecar, stored in every file.
CONVENTION = ("row = array row (axis 0) of ground_truth, col = array column (axis 1), pixel "
              "centres at integer indices, radius in pixels")
# HU -> x units (mu / mu_max) for a contrast: the slope of alara.data.lodopab.hu_to_x.
_X_PER_HU = (MU_WATER - MU_AIR) / 1000.0 / LODOPAB_MU_MAX


@dataclass(frozen=True)
class LesionRecord:
    """One lesion as painted in one slice (pixel units of the ground truth grid).

    ``radius_px`` / ``radius_mm``: the sphere's cross-section with the slice;
    ``contrast``: added to the host tissue, in x units (``mu / mu_max``, signed);
    ``patient_lesion``: index of the lesion among its patient's lesions.
    """

    row: float
    col: float
    radius_px: float
    radius_mm: float
    contrast: float
    contrast_hu: float
    in_lung: bool
    patient_lesion: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Any, where: str) -> "LesionRecord":
        """Parse one lesion; errors name ``where`` (file, sample, lesion) and the field."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected an object with keys "
                             f"{[f.name for f in fields(cls)]}, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        missing, unknown = set(names) - set(d), set(d) - set(names)
        if missing or unknown:
            raise ValueError(f"{where}: missing keys {sorted(missing)}, unknown keys "
                             f"{sorted(unknown)}")
        if not isinstance(d["in_lung"], bool):
            raise ValueError(f"{where}: in_lung must be true or false, got {d['in_lung']!r}")
        pl = d["patient_lesion"]
        if isinstance(pl, bool) or not isinstance(pl, int) or pl < 0:
            raise ValueError(f"{where}: patient_lesion must be a whole number >= 0, got {pl!r}")
        values = {}
        for key in ("row", "col", "radius_px", "radius_mm", "contrast", "contrast_hu"):
            v = d[key]
            # JSON has no NaN; Python's json writes and reads it, so test explicitly.
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{where}: {key} must be a finite number, got {v!r}")
            values[key] = float(v)
        if values["radius_px"] < 0 or values["radius_mm"] < 0:
            raise ValueError(f"{where}: radius must be >= 0, got radius_px "
                             f"{values['radius_px']}, radius_mm {values['radius_mm']}")
        return cls(**values, in_lung=d["in_lung"], patient_lesion=pl)


@dataclass
class LesionTable:
    """The sidecar of one split: pixel size and the lesions of every sample."""

    pixel_size_m: float
    samples: list[list[LesionRecord]]


def lesions_path(root: PathLike, split: str) -> Path:
    """``root/lesions/lesions_{split}.json``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return Path(root) / LESIONS_DIR / f"lesions_{split}.json"


def lesion_free_root(root: PathLike) -> Path:
    """The folder of the lesion-free ground truth, ``root/lesion_free``."""
    return Path(root) / LESION_FREE_DIR


def has_lesion_free(root: PathLike, info: Optional["DatasetInfo"] = None) -> bool:
    """Whether the data set at ``root`` has lesion-free ground truth: its metadata says
    so (``extra.lesion_free``), or ``lesion_free/`` holds ground-truth files."""
    if info is not None and info.extra.get("lesion_free") is True:
        return True
    folder = lesion_free_root(root)
    return folder.is_dir() and any(folder.glob("ground_truth_*.hdf5"))


def recorded_pixel_size(info: "DatasetInfo") -> Optional[float]:
    """Pixel side (m) of the geometry in ``info``, or ``None`` if none is recorded (or it
    is invalid: the metadata checks report that)."""
    if info.geometry is None:
        return None
    try:
        return info.get_geometry().grid.spacing[0]
    except (KeyError, TypeError, ValueError):
        return None


def pixel_size(grid: ImageGrid) -> float:
    """The grid's pixel side (m); the sidecar needs square pixels to give one radius."""
    dx, dy = grid.spacing
    if not math.isclose(dx, dy, rel_tol=1e-9):
        raise ValueError(f"lesion truth needs square pixels (one radius in pixels), the "
                         f"grid has {dx:.6g} x {dy:.6g} m; use a grid with equal extent per "
                         f"pixel along both axes")
    return dx


def world_to_pixel(grid: ImageGrid, x: float, y: float) -> tuple[float, float]:
    """World point (m) -> ``(row, col)``: fractional array indices, pixel centres at
    integers: ``row = (x - min_x) / dx - 1/2``, ``col = (y - min_y) / dy - 1/2``."""
    (dx, dy), (x0, y0) = grid.spacing, grid.min_pt
    return (x - x0) / dx - 0.5, (y - y0) / dy - 0.5


def slice_lesions(patient: Patient, t: float, grid: ImageGrid,
                  painted: Sequence[int]) -> list[LesionRecord]:
    """The lesions of ``patient`` painted in slice ``t`` (``painted``: pixel counts per
    lesion, from :func:`alara.data.phantoms.render_slice_layers`), on ``grid``."""
    if len(painted) != len(patient.lesions):
        raise ValueError(f"painted has {len(painted)} counts for {len(patient.lesions)} lesions")
    size = pixel_size(grid)
    out = []
    for k, (les, count) in enumerate(zip(patient.lesions, painted)):
        section = lesion_section(les, t)
        if count <= 0 or section is None:
            continue
        row, col = world_to_pixel(grid, *lesion_centre_world(patient, les))
        out.append(LesionRecord(row=row, col=col, radius_px=section / size,
                                radius_mm=section * 1e3, contrast=les.contrast * _X_PER_HU,
                                contrast_hu=les.contrast, in_lung=bool(les.in_lung),
                                patient_lesion=k))
    return out


def write_lesions(root: PathLike, split: str, samples: Sequence[Sequence[LesionRecord]],
                  pixel_size_m: float) -> Path:
    """Write the sidecar of ``split`` under ``root`` atomically; returns its path."""
    path = lesions_path(root, split)
    doc = {"version": FORMAT_VERSION, "convention": CONVENTION,
           "pixel_size_m": float(pixel_size_m),
           "samples": [[les.to_json() for les in sample] for sample in samples]}
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, allow_nan=False)
        f.write("\n")
    return path


def read_lesions(root: PathLike, split: str) -> Optional[LesionTable]:
    """The sidecar of ``split``, or ``None`` when there is none; a malformed file raises
    ``ValueError`` naming the file, the sample and what is wrong."""
    path = lesions_path(root, split)
    if not path.exists():
        return None
    fix = "recreate the data set (alara data synth) or restore the file"
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable lesion sidecar ({exc}); {fix}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("samples"), list):
        raise ValueError(f"{path}: expected an object with a 'samples' list; {fix}")
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: sidecar version {version!r}, this alara reads "
                         f"version {FORMAT_VERSION}; {fix}")
    size = doc.get("pixel_size_m")
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not (
            math.isfinite(size) and size > 0):
        raise ValueError(f"{path}: pixel_size_m must be a positive number, got {size!r}; {fix}")
    samples = []
    for i, sample in enumerate(doc["samples"]):
        if not isinstance(sample, list):
            raise ValueError(f"{path}: sample {i}: expected a list of lesions, got "
                             f"{type(sample).__name__}; {fix}")
        try:
            samples.append([LesionRecord.from_json(d, f"sample {i}, lesion {k}")
                            for k, d in enumerate(sample)])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}; {fix}") from None
    return LesionTable(float(size), samples)


def lesion_problems(table: LesionTable, path: PathLike, length: int,
                    image_shape: Sequence[int],
                    pixel_size_m: Optional[float] = None) -> list[str]:
    """What is wrong with a parsed sidecar of a split of ``length`` samples on images
    ``image_shape`` (empty: valid): sample count, centres outside the image, pixel size
    other than the geometry's ``pixel_size_m``."""
    problems = []
    fix = "recreate the data set (alara data synth) or restore the file"
    if len(table.samples) != length:
        problems.append(f"{path}: {len(table.samples)} samples for a split of {length}; {fix}")
    if pixel_size_m is not None and not math.isclose(table.pixel_size_m, pixel_size_m,
                                                     rel_tol=1e-6):
        problems.append(f"{path}: pixel_size_m {table.pixel_size_m:.6g} but the geometry's "
                        f"pixels are {pixel_size_m:.6g} m; {fix}")
    h, w = image_shape
    outside = [(i, k) for i, sample in enumerate(table.samples) for k, les in enumerate(sample)
               if not (-0.5 <= les.row <= h - 0.5 and -0.5 <= les.col <= w - 0.5)]
    if outside:
        shown = ", ".join(f"sample {i} lesion {k}" for i, k in outside[:5])
        problems.append(f"{path}: {len(outside)} lesion centre(s) outside the {h} x {w} "
                        f"image ({shown}{' ...' if len(outside) > 5 else ''}); {fix}")
    return problems


def lesion_tensor(samples: Sequence[Sequence[LesionRecord]]) -> torch.Tensor:
    """``[N, L_max, 5]`` float32 table (:data:`LESION_COLUMNS`), zero-padded rows;
    ``L_max`` = the most lesions of any sample, at least 1."""
    width = max([len(s) for s in samples] + [1])
    rows = [[[les.row, les.col, les.radius_px, les.contrast, float(les.in_lung)] for les in s]
            + [[0.0] * len(LESION_COLUMNS)] * (width - len(s)) for s in samples]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(samples), width,
                                                           len(LESION_COLUMNS))
