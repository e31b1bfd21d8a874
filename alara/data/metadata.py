"""The metadata file alara writes next to a data set (``alara_dataset.json``).

LoDoPaB itself ships no metadata: a directory without this file is read as the published
data set (its split lengths and geometry).  Data sets written by alara record their split
lengths, samples per file, shapes and geometry here, so the reader needs no guessing.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from alara.geometry import LODOPAB_MU_MAX, LODOPAB_N0, FanBeam, Geometry, ImageGrid, ParallelBeam
from alara.data.lodopab import LODOPAB_LENGTHS, SAMPLES_PER_FILE, SPLITS
from alara.atomic import atomic_file

__all__ = ["METADATA_FILE", "DatasetInfo", "geometry_to_dict", "geometry_from_dict",
           "read_metadata", "write_metadata", "lodopab_info"]

METADATA_FILE = "alara_dataset.json"
#: 2: ``checksums`` added (version-1 files are read as sets without checksums).
FORMAT_VERSION = 2

PathLike = Union[str, Path]


def geometry_to_dict(geometry: Geometry) -> dict[str, Any]:
    """A JSON-able description of a geometry (angles stored explicitly)."""
    g = geometry.grid
    out: dict[str, Any] = {
        "kind": geometry.kind,
        "grid": {"shape": list(g.shape), "min_pt": list(g.min_pt), "max_pt": list(g.max_pt)},
        "angles": [float(a) for a in geometry.angles.tolist()],
        "n_bins": geometry.n_bins,
        "bin_spacing": geometry.bin_spacing,
        "bin_offset": geometry.bin_offset,
    }
    if isinstance(geometry, FanBeam):
        out.update(src_radius=geometry.src_radius, det_radius=geometry.det_radius,
                   detector=geometry.detector)
    return out


def geometry_from_dict(d: dict[str, Any]) -> Geometry:
    """Inverse of :func:`geometry_to_dict`."""
    grid = ImageGrid(tuple(d["grid"]["shape"]), tuple(d["grid"]["min_pt"]), tuple(d["grid"]["max_pt"]))
    common = dict(grid=grid, angles=torch.tensor(d["angles"], dtype=torch.float64),
                  n_bins=int(d["n_bins"]), bin_spacing=float(d["bin_spacing"]),
                  bin_offset=float(d.get("bin_offset", 0.0)))
    if d["kind"] == "parallel":
        return ParallelBeam(**common)
    if d["kind"] == "fan":
        return FanBeam(**common, src_radius=float(d["src_radius"]),
                       det_radius=float(d["det_radius"]), detector=d["detector"])
    raise ValueError(f"unknown geometry kind {d['kind']!r}")


@dataclass
class DatasetInfo:
    """What a reader needs to know about a LoDoPaB-layout directory."""

    lengths: dict[str, int]
    samples_per_file: int = SAMPLES_PER_FILE
    image_shape: tuple[int, int] = (362, 362)
    #: ``(views, bins)``, or ``None`` for a ground-truth-only data set.
    sinogram_shape: Optional[tuple[int, int]] = (1000, 513)
    geometry: Optional[dict[str, Any]] = None
    mu_max: float = LODOPAB_MU_MAX
    n0: float = LODOPAB_N0
    source: str = "lodopab"
    #: Free-form provenance (seed, generator options, ...).
    extra: dict[str, Any] = field(default_factory=dict)
    #: File name -> hex SHA-256 of every file written with the data set (empty: not
    #: recorded, e.g. a data set written before checksums existed).
    checksums: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.lengths) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)} in lengths")
        if any(int(n) < 0 for n in self.lengths.values()):
            raise ValueError(f"split lengths must be >= 0, got {self.lengths}")
        if int(self.samples_per_file) <= 0:
            raise ValueError(f"samples_per_file must be positive, got {self.samples_per_file}")
        if not (math.isfinite(float(self.n0)) and self.n0 > 0):
            raise ValueError(f"n0 must be a positive finite number of photons, got {self.n0!r}")
        if not (math.isfinite(float(self.mu_max)) and self.mu_max > 0):
            raise ValueError(f"mu_max must be a positive finite attenuation (1/m), got {self.mu_max!r}")
        if not isinstance(self.checksums, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.checksums.items()):
            raise ValueError("checksums must map file names to hex SHA-256 strings")
        self.lengths = {s: int(self.lengths[s]) for s in SPLITS if s in self.lengths}
        self.samples_per_file = int(self.samples_per_file)
        self.image_shape = tuple(int(v) for v in self.image_shape)  # type: ignore[assignment]
        if self.sinogram_shape is not None:
            self.sinogram_shape = tuple(int(v) for v in self.sinogram_shape)  # type: ignore[assignment]

    def get_geometry(self) -> Optional[Geometry]:
        """The acquisition geometry, if recorded (always for LoDoPaB itself)."""
        if self.geometry is not None:
            return geometry_from_dict(self.geometry)
        if self.source == "lodopab":
            from alara.geometry import lodopab
            return lodopab()
        return None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "DatasetInfo":
        d = dict(d)
        version = d.pop("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(f"metadata format version {version} is newer than this alara "
                             f"understands ({FORMAT_VERSION})")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown metadata field(s) {sorted(unknown)}")
        return cls(**d)


def lodopab_info() -> DatasetInfo:
    """The published LoDoPaB-CT data set."""
    return DatasetInfo(lengths=dict(LODOPAB_LENGTHS))


def read_metadata(root: PathLike) -> Optional[DatasetInfo]:
    """The metadata of ``root``, or ``None`` when the directory has none (real LoDoPaB)."""
    path = Path(root) / METADATA_FILE
    if not path.exists():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return DatasetInfo.from_json(json.load(f))
    except (json.JSONDecodeError, TypeError, KeyError, ValueError, OSError) as exc:
        # OSError: the name is a directory or unreadable; ValueError: includes non-UTF-8
        raise ValueError(f"{path}: invalid alara metadata: {exc}; recreate the data set or "
                         f"restore the file") from exc


def write_metadata(root: PathLike, info: DatasetInfo) -> Path:
    """Write ``info`` atomically (temporary file in ``root``, then ``os.replace``)."""
    path = Path(root) / METADATA_FILE
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(info.to_json(), f, indent=1)
        f.write("\n")
    return path
