"""Import CT DICOM slices as LoDoPaB-layout ground truth (LoDoPaB's own recipe).

Pixel values are rescaled to HU (RescaleSlope / RescaleIntercept), converted with
``mu = HU (mu_w - mu_a)/1000 + mu_w`` and ``x = clip(mu / mu_max, 0, 1)``, and put on the
image grid in one of two ways:

- ``"resample"`` (default): area averaging using PixelSpacing, slice centre on the
  rotation axis, air outside the slice: physically consistent sizes.
- ``"crop"``: LoDoPaB's own generator, exactly: the central ``n x n`` DICOM pixels
  (``pixel_array[75:-75, 75:-75]`` for 512 -> 362), PixelSpacing ignored, plus uniform
  [0, 1) HU dequantisation noise.

Orientation is LoDoPaB's: it stores ``pixel_array[...].T``, so ``x[i, j]`` samples DICOM
column ``i`` (towards the patient's left) and row ``j`` (anterior to posterior); array
axis 0 is world x, axis 1 world y, and ``imshow(x.T)`` shows the slice upright.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from alara.progress import tqdm

from alara.data.layout import DataError
from alara.data.lodopab import SAMPLES_PER_FILE, SPLITS, hu_to_x
from alara.data.metadata import DatasetInfo, geometry_to_dict
from alara.data.synth import fine_geometry, simulate_observation
from alara.data.writer import (
    OutputDir, SplitWriter, check_file_count, check_write_options, output_path,
    write_patient_ids,
)
from alara.geometry import LODOPAB_N0, Geometry, ImageGrid, lodopab

__all__ = ["CTSlice", "read_ct_slice", "resample_to_grid", "crop_to_grid", "collect_dicom_files",
           "import_dicom", "MODES"]

PathLike = Union[str, Path]
AIR_HU = -1000.0


@dataclass
class CTSlice:
    """One CT slice in HU with its pixel spacing (metres) and sort keys."""

    path: Path
    hu: np.ndarray                   # [rows, cols], float64
    spacing: Optional[tuple[float, float]]  # (row, column) spacing in metres; None: absent
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
    spacing = None
    if "PixelSpacing" in ds:
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        if not (row_mm > 0 and col_mm > 0):
            raise DataError(f"{path}: invalid PixelSpacing {ds.PixelSpacing}")
        spacing = (row_mm / 1000.0, col_mm / 1000.0)
    iop = ds.get("ImageOrientationPatient")
    if iop is not None and len(iop) == 6 and max(abs(float(iop[2])), abs(float(iop[5]))) > 0.1:
        # Rows and columns are used as stored (as LoDoPaB does); that is only an axial slice
        # when both direction cosines lie in the patient's x-y plane.
        raise DataError(f"{path}: not an axial slice (ImageOrientationPatient "
                        f"{[float(v) for v in iop]})")
    slope = float(ds.get("RescaleSlope", 1.0) if ds.get("RescaleSlope") not in (None, "") else 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) if ds.get("RescaleIntercept") not in (None, "") else 0.0)
    if not (math.isfinite(slope) and slope != 0) or not math.isfinite(intercept):
        # A slope of 0 maps every pixel to the intercept: reading it as 1 would invent HU.
        raise DataError(f"{path}: RescaleSlope {slope:g} / RescaleIntercept {intercept:g} cannot map pixels "
                        "to HU (the slope must be finite and non-zero); fix the file's rescale tags")
    hu = pixels.astype(np.float64) * slope + intercept
    pos = ds.get("ImagePositionPatient")
    z = float(pos[2]) if pos is not None and len(pos) == 3 else float(
        ds.get("SliceLocation", ds.get("InstanceNumber", 0)) or 0)
    return CTSlice(path, hu, spacing, str(ds.get("PatientID", "")),
                   str(ds.get("SeriesInstanceUID", "")), z)


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
    col = px / col_sp + (cols - 1) / 2                           # world x -> column index
    row = py / row_sp + (rows - 1) / 2                           # world y -> row (posterior)
    gx = col / max(cols - 1, 1) * 2 - 1
    gy = row / max(rows - 1, 1) * 2 - 1
    GX, GY = torch.meshgrid(gx, gy, indexing="ij")               # [n0 k, n1 k]
    src = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float64) - fill)[None, None]
    # Sampling (HU - fill) with zero padding puts exactly `fill` outside the slice.
    out = F.grid_sample(src, torch.stack((GX, GY), -1)[None], mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    # float64 so that the HU -> x conversion adds no rounding before the float32 write.
    return F.avg_pool2d(out, k)[0, 0] + fill


def crop_to_grid(hu: np.ndarray, shape: tuple[int, int], *,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """LoDoPaB's recipe: the central ``shape[1]`` rows x ``shape[0]`` columns, transposed.

    ``x[i, j] = hu[r0 + j, c0 + i]`` with the crop centred (``r0 = (rows - shape[1]) // 2``;
    512 -> 362 gives LoDoPaB's ``[75:-75]``).  With ``generator``, uniform [0, 1) HU noise
    is added as LoDoPaB does to make the integer HU continuous.  Returns float64 ``shape``.
    """
    rows, cols = hu.shape
    n0, n1 = shape
    if rows < n1 or cols < n0:
        raise ValueError(f"slice of {rows} x {cols} pixels is smaller than the "
                         f"{n1} x {n0} crop")
    r0, c0 = (rows - n1) // 2, (cols - n0) // 2
    out = torch.from_numpy(np.ascontiguousarray(hu[r0:r0 + n1, c0:c0 + n0].T, dtype=np.float64))
    if generator is not None:
        out += torch.rand(out.shape, generator=generator, dtype=torch.float64)
    return out


MODES = ("resample", "crop")


def _check_fits(s: CTSlice, grid: ImageGrid, mode: str) -> None:
    """Raise ``DataError`` naming the file if ``s`` cannot be put on ``grid`` by ``mode``."""
    if mode == "crop":
        rows, cols = s.hu.shape
        if rows < grid.shape[1] or cols < grid.shape[0]:
            raise DataError(f"{s.path}: slice of {rows} x {cols} pixels is smaller than the "
                            f"{grid.shape[1]} x {grid.shape[0]} crop")
    elif s.spacing is None:
        raise DataError(f"{s.path}: no PixelSpacing, so the slice cannot be resampled onto "
                        f"the grid (--crop uses LoDoPaB's spacing-free crop)")


def _to_grid(s: CTSlice, grid: ImageGrid, mode: str, generator: torch.Generator) -> torch.Tensor:
    if mode == "crop":
        return crop_to_grid(s.hu, grid.shape, generator=generator)
    return resample_to_grid(s.hu, s.spacing, grid)


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
                 mode: str = "resample", progress: bool = True) -> DatasetInfo:
    """Convert CT DICOM slices (files or directories) into one split under ``root``.

    Slices are ordered by patient, series and position; ``patient_ids_rand_{split}.csv``
    numbers patients 0, 1, ... in that order (DICOM PatientIDs are not copied).  With
    ``observations``, post-log data are simulated as for synthetic patients, from the
    slice on an ``upsample``-times finer grid (``"crop"``: the crop upsampled bilinearly, as
    LoDoPaB does).  ``mode`` is ``"resample"`` (by PixelSpacing) or ``"crop"`` (LoDoPaB's
    central crop; see the module docstring).  Files in directories that are not DICOM are
    skipped; any DICOM that is not a CT slice with pixels, or that does not fit ``mode``,
    is an error, raised before anything is written.
    """
    # Every option and input is checked before the output directory is touched.
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    check_write_options(n0=n0, samples_per_file=samples_per_file, upsample=upsample, seed=seed)
    output_path(root)
    geometry = geometry if geometry is not None else lodopab()
    fine = fine_geometry(geometry, upsample)
    named = {Path(p) for p in inputs if Path(p).is_file()}
    slices: list[CTSlice] = []
    for path in collect_dicom_files(inputs):
        try:
            ct = read_ct_slice(path)
        except DataError as exc:
            if path not in named and "not a DICOM file" in str(exc):
                continue  # stray non-DICOM file inside a directory
            raise
        _check_fits(ct, geometry.grid, mode)
        slices.append(ct)
    if not slices:
        raise DataError(f"no DICOM CT slices found in {', '.join(map(str, inputs))}")
    slices.sort(key=lambda s: (s.patient, s.series, s.z, str(s.path)))
    check_file_count(split, len(slices), samples_per_file)
    with OutputDir(root, overwrite) as out:
        return _write_split(out, slices, split, geometry, fine, mode, observations, upsample,
                            n0, seed, samples_per_file, progress)


def _write_split(out: OutputDir, slices: list[CTSlice], split: str, geometry: Geometry,
                 fine: Geometry, mode: str, observations: bool, upsample: int, n0: float,
                 seed: int, samples_per_file: int, progress: bool) -> DatasetInfo:
    """:func:`import_dicom` once its inputs are checked: stage, then commit ``out``."""
    root = out.path
    patient_index: dict[str, int] = {}
    ids = [patient_index.setdefault(s.patient, len(patient_index)) for s in slices]
    noise = torch.Generator().manual_seed(int(seed))
    dequant = torch.Generator().manual_seed(int(seed) + 1)
    gt = SplitWriter(root, split, "ground_truth", samples_per_file)
    obs = SplitWriter(root, split, "observation", samples_per_file) if observations else None
    for s in tqdm(slices, desc="alara data import-dicom", unit="slice", disable=not progress):
        if obs is None:
            gt.append(hu_to_x(_to_grid(s, geometry.grid, mode, dequant)))
            continue
        if mode == "crop":  # LoDoPaB: ground truth on the grid, upsampled for the data
            x = hu_to_x(_to_grid(s, geometry.grid, mode, dequant))
            gt.append(x)
            x_fine = F.interpolate(x[None, None], scale_factor=upsample, mode="bilinear",
                                   align_corners=False)
        else:
            x_fine = hu_to_x(_to_grid(s, fine.grid, mode, dequant))[None, None]
            gt.append(F.avg_pool2d(x_fine, upsample)[0, 0])
        obs.append(simulate_observation(x_fine, fine, n0, generator=noise)[0, 0])
    n = gt.close()
    if obs is not None:
        obs.close()
    write_patient_ids(root, split, ids)
    info = DatasetInfo(
        lengths={split: n}, samples_per_file=samples_per_file, image_shape=geometry.grid.shape,
        sinogram_shape=geometry.sinogram_shape if observations else None,
        geometry=geometry_to_dict(geometry), n0=float(n0), source="alara-import-dicom",
        extra={"n_patients": len(patient_index), "mode": mode,
               "upsample": int(upsample) if observations else None},
    )
    return out.commit(info)
