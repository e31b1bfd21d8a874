"""Import CT DICOM slices as LoDoPaB-layout ground truth (LoDoPaB's own recipe).

Pixel values are rescaled to HU (RescaleSlope / RescaleIntercept), converted with
``mu = HU (mu_w - mu_a)/1000 + mu_w`` and ``x = clip(mu / mu_max, 0, 1)``, and resampled
onto the image grid by area averaging, using PixelSpacing, with the slice centre on the
rotation axis.  DICOM rows run posterior-wards and columns towards the patient's left;
the grid's axis 0 is world x (lateral) and axis 1 world y (anterior), so ``x[i, j]``
samples column ``i`` and row ``n_rows - 1 - j`` (LoDoPaB's orientation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from alara.data.layout import DataError
from alara.data.lodopab import SAMPLES_PER_FILE, hu_to_x
from alara.data.metadata import DatasetInfo, geometry_to_dict, write_metadata
from alara.data.synth import fine_geometry, prepare_output_dir, simulate_observation
from alara.data.writer import SplitWriter, write_patient_ids
from alara.geometry import LODOPAB_N0, Geometry, ImageGrid, lodopab

__all__ = ["CTSlice", "read_ct_slice", "resample_to_grid", "collect_dicom_files", "import_dicom"]

PathLike = Union[str, Path]
AIR_HU = -1000.0


@dataclass
class CTSlice:
    """One CT slice in HU with its pixel spacing (metres) and sort keys."""

    path: Path
    hu: np.ndarray                   # [rows, cols], float64
    spacing: tuple[float, float]     # (row spacing, column spacing) in metres
    patient: str
    series: str
    z: float


def read_ct_slice(path: PathLike) -> CTSlice:
    """Read a CT slice and rescale to HU; non-CT or pixel-less files raise ``DataError``."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise DataError(f"{path}: not a DICOM file ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    modality = str(ds.get("Modality", "")).upper()
    if modality != "CT":
        raise DataError(f"{path}: modality is {modality or 'missing'!r}, not 'CT'; only CT "
                        f"slices can be converted to attenuation")
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no pixel data")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for unsupported transfer syntaxes
        raise DataError(f"{path}: cannot decode pixel data: {exc}") from None
    if pixels.ndim != 2:
        raise DataError(f"{path}: expected a single 2-D slice, got pixel array shape "
                        f"{pixels.shape} (multi-frame files are not supported)")
    if "PixelSpacing" not in ds:
        raise DataError(f"{path}: no PixelSpacing, so the slice cannot be placed on the grid")
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    if not (row_mm > 0 and col_mm > 0):
        raise DataError(f"{path}: invalid PixelSpacing {ds.PixelSpacing}")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    hu = pixels.astype(np.float64) * slope + intercept
    pos = ds.get("ImagePositionPatient")
    z = float(pos[2]) if pos is not None and len(pos) == 3 else float(
        ds.get("SliceLocation", ds.get("InstanceNumber", 0)) or 0)
    return CTSlice(path, hu, (row_mm / 1000.0, col_mm / 1000.0),
                   str(ds.get("PatientID", "")), str(ds.get("SeriesInstanceUID", "")), z)


def resample_to_grid(hu: np.ndarray, spacing: tuple[float, float], grid: ImageGrid,
                     fill: float = AIR_HU) -> torch.Tensor:
    """Area-average a ``[rows, cols]`` HU slice onto ``grid`` (slice centre at the origin).

    Each grid pixel averages ``k x k`` bilinear samples, ``k`` the ratio of grid to DICOM
    pixel size, so down-sampling does not alias; outside the slice is ``fill`` (air).
    Returns float64 ``grid.shape``.
    """
    rows, cols = hu.shape
    row_sp, col_sp = spacing
    dx, dy = grid.spacing
    k = max(1, math.ceil(max(dx / col_sp, dy / row_sp) - 1e-9))
    xs, ys = grid.coordinates(dtype=torch.float64)
    sub = (torch.arange(k, dtype=torch.float64) + 0.5) / k - 0.5
    px = (xs[:, None] + sub[None, :] * dx).reshape(-1)          # [n0 * k]
    py = (ys[:, None] + sub[None, :] * dy).reshape(-1)          # [n1 * k]
    col = px / col_sp + (cols - 1) / 2                           # lateral -> column index
    row = (rows - 1) / 2 - py / row_sp                            # anterior -> smaller row
    gx = col / max(cols - 1, 1) * 2 - 1
    gy = row / max(rows - 1, 1) * 2 - 1
    GX, GY = torch.meshgrid(gx, gy, indexing="ij")               # [n0 k, n1 k]
    src = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float64) - fill)[None, None]
    # Sampling (HU - fill) with zero padding puts exactly `fill` outside the slice.
    out = F.grid_sample(src, torch.stack((GX, GY), -1)[None], mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    # float64 so that the HU -> x conversion adds no rounding before the float32 write.
    return F.avg_pool2d(out, k)[0, 0] + fill


def collect_dicom_files(inputs: Iterable[PathLike]) -> list[Path]:
    """Files named directly, plus every file under named directories (sorted)."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or directory")
    return files


def import_dicom(inputs: Sequence[PathLike], root: PathLike, *, split: str = "test",
                 geometry: Optional[Geometry] = None, observations: bool = False,
                 upsample: int = 2, n0: float = LODOPAB_N0, seed: int = 0,
                 samples_per_file: int = SAMPLES_PER_FILE, overwrite: bool = False,
                 progress: bool = True) -> DatasetInfo:
    """Convert CT DICOM slices (files or directories) into one split under ``root``.

    Slices are ordered by patient, series and position; ``patient_ids_rand_{split}.csv``
    numbers patients 0, 1, ... in that order (DICOM PatientIDs are not copied).  With
    ``observations``, post-log data are simulated as for synthetic patients, from the
    slice resampled on an ``upsample``-times finer grid.  Files in directories that are
    not DICOM are skipped; any DICOM that is not a CT slice with pixels is an error.
    """
    geometry = geometry if geometry is not None else lodopab()
    named = {Path(p) for p in inputs if Path(p).is_file()}
    slices: list[CTSlice] = []
    for path in collect_dicom_files(inputs):
        try:
            slices.append(read_ct_slice(path))
        except DataError as exc:
            if path not in named and "not a DICOM file" in str(exc):
                continue  # stray non-DICOM file inside a directory
            raise
    if not slices:
        raise DataError(f"no DICOM CT slices found in {', '.join(map(str, inputs))}")
    slices.sort(key=lambda s: (s.patient, s.series, s.z, str(s.path)))
    stale = prepare_output_dir(root, overwrite)

    patient_index: dict[str, int] = {}
    ids = [patient_index.setdefault(s.patient, len(patient_index)) for s in slices]
    fine = fine_geometry(geometry, upsample)
    noise = torch.Generator().manual_seed(int(seed))
    gt = SplitWriter(root, split, "ground_truth", samples_per_file)
    obs = SplitWriter(root, split, "observation", samples_per_file) if observations else None
    for s in tqdm(slices, desc="alara data import-dicom", unit="slice", disable=not progress):
        if obs is None:
            gt.append(hu_to_x(resample_to_grid(s.hu, s.spacing, geometry.grid)))
            continue
        x_fine = hu_to_x(resample_to_grid(s.hu, s.spacing, fine.grid))[None, None]
        gt.append(F.avg_pool2d(x_fine, upsample)[0, 0])
        obs.append(simulate_observation(x_fine, fine, n0, generator=noise)[0, 0])
    n = gt.close()
    written = set(gt.paths)
    if obs is not None:
        obs.close()
        written |= set(obs.paths)
    written.add(write_patient_ids(root, split, ids))
    info = DatasetInfo(
        lengths={split: n}, samples_per_file=samples_per_file, image_shape=geometry.grid.shape,
        sinogram_shape=geometry.sinogram_shape if observations else None,
        geometry=geometry_to_dict(geometry), n0=float(n0), source="alara-import-dicom",
        extra={"n_patients": len(patient_index), "upsample": int(upsample) if observations else None},
    )
    written.add(write_metadata(root, info))
    for p in stale:
        if p not in written:
            p.unlink(missing_ok=True)
    return info
