"""CT acquisition geometry: the image grid and parallel- and fan-beam scanners.

Coordinate convention (the ODL convention, so that LoDoPaB-CT is reproduced exactly):

- An image tensor ``x[..., i, j]`` samples the plane at pixel centres
  ``(px_i, py_j) = (min_pt[0] + (i + 1/2) * dx, min_pt[1] + (j + 1/2) * dy)``:
  array axis 0 is the world ``x`` axis, array axis 1 the world ``y`` axis.
- At angle ``theta`` the rays travel along ``e(theta) = (-sin theta, cos theta)`` and the
  detector axis is ``u(theta) = (cos theta, sin theta)``; angles increase counter-clockwise.
- Parallel beam: bin ``k`` at detector coordinate ``s_k`` carries the ray ``s_k u + t e``.
- Fan beam: the source sits at ``-R_s e``; a flat detector lies on ``R_d e + s u``; a curved
  (equiangular) detector is an arc of radius ``R_s + R_d`` around the source, parametrised
  by arc length ``s`` (fan angle ``gamma = s / (R_s + R_d)``).
- Detector bin centres are ``s_k = offset + (k - (n_bins - 1) / 2) * spacing``.

All lengths are in metres, so a projection of ``mu`` in 1/m is dimensionless.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Literal, Sequence, Union

import torch

__all__ = [
    "ImageGrid",
    "ParallelBeam",
    "FanBeam",
    "Geometry",
    "lodopab",
    "uniform_angles",
    "LODOPAB_MU_MAX",
    "LODOPAB_N0",
]

#: LoDoPaB-CT normalisation constant (1/m): images are ``mu / LODOPAB_MU_MAX``.
LODOPAB_MU_MAX = 81.35858
#: LoDoPaB-CT mean photon count per detector bin and view.
LODOPAB_N0 = 4096.0


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _count(name: str, value: object) -> int:
    """A size or count: an integer >= 1.  A float such as 64.5 (or 90.0) is refused rather
    than truncated, so a computed size never silently changes the geometry."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = int(value)
        else:
            hint = (f"; pass int({value!r}) if {int(value)} is meant"
                    if isinstance(value, float) and value.is_integer() else "")
            raise TypeError(f"{name} must be a whole number, got {value!r} "
                            f"({type(value).__name__}){hint}")
    if value <= 0:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


@dataclass(frozen=True)
class ImageGrid:
    """A regular pixel grid on the rectangle ``[min_pt, max_pt]`` (metres).

    ``shape`` is ``(n0, n1)``: the sizes of array axes 0 and 1 (world ``x`` and ``y``).
    """

    shape: tuple[int, int]
    min_pt: tuple[float, float]
    max_pt: tuple[float, float]

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or len(self.min_pt) != 2 or len(self.max_pt) != 2:
            raise ValueError("ImageGrid needs 2-element shape, min_pt and max_pt")
        shape = tuple(_count(f"ImageGrid.shape[{a}] (pixels)", s) for a, s in enumerate(self.shape))
        lo = tuple(float(v) for v in self.min_pt)
        hi = tuple(float(v) for v in self.max_pt)
        for a in range(2):
            if not (math.isfinite(lo[a]) and math.isfinite(hi[a]) and hi[a] > lo[a]):
                raise ValueError(
                    f"ImageGrid extent along axis {a} must satisfy min_pt < max_pt, "
                    f"got [{lo[a]}, {hi[a]}]"
                )
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "min_pt", lo)
        object.__setattr__(self, "max_pt", hi)

    @classmethod
    def square(cls, n: int, size: float) -> "ImageGrid":
        """An ``n x n`` grid of side ``size`` metres centred on the rotation axis."""
        half = _positive("size", size) / 2
        return cls((n, n), (-half, -half), (half, half))

    @property
    def spacing(self) -> tuple[float, float]:
        """Pixel size ``(dx, dy)`` in metres."""
        return tuple((h - l) / n for l, h, n in zip(self.min_pt, self.max_pt, self.shape))  # type: ignore[return-value]

    @property
    def radius(self) -> float:
        """Distance from the rotation axis to the farthest grid corner."""
        return max(
            math.hypot(x, y)
            for x in (self.min_pt[0], self.max_pt[0])
            for y in (self.min_pt[1], self.max_pt[1])
        )

    def coordinates(self, dtype: torch.dtype = torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-centre coordinates along axis 0 and axis 1 (1-D tensors)."""
        (dx, dy), (x0, y0) = self.spacing, self.min_pt
        i = torch.arange(self.shape[0], dtype=dtype, device=device)
        j = torch.arange(self.shape[1], dtype=dtype, device=device)
        return x0 + (i + 0.5) * dx, y0 + (j + 0.5) * dy


def uniform_angles(n: int, start: float = 0.0, stop: float = math.pi) -> torch.Tensor:
    """``n`` angles at the cell midpoints of ``[start, stop)`` (ODL's uniform partition)."""
    n = _count("number of angles", n)
    if not (math.isfinite(start) and math.isfinite(stop) and stop != start):
        raise ValueError(f"angle range [{start}, {stop}) must be finite and non-empty")
    step = (stop - start) / n
    return start + (torch.arange(n, dtype=torch.float64) + 0.5) * step


def _angles_tensor(angles: Union[Sequence[float], torch.Tensor]) -> torch.Tensor:
    a = torch.as_tensor(angles, dtype=torch.float64).flatten().cpu()
    if a.numel() == 0:
        raise ValueError("angles must not be empty")
    if not torch.isfinite(a).all():
        raise ValueError("angles must be finite (got NaN or inf)")
    return a


@dataclass(frozen=True, eq=False)
class _Beam:
    grid: ImageGrid
    angles: torch.Tensor
    n_bins: int
    bin_spacing: float
    bin_offset: float = 0.0

    def _validate_detector(self) -> None:
        object.__setattr__(self, "angles", _angles_tensor(self.angles))
        object.__setattr__(self, "n_bins", _count("n_bins", self.n_bins))
        object.__setattr__(self, "bin_spacing", _positive("bin_spacing", self.bin_spacing))
        if not math.isfinite(float(self.bin_offset)):
            raise ValueError(f"bin_offset must be finite, got {self.bin_offset!r}")
        object.__setattr__(self, "bin_offset", float(self.bin_offset))

    @property
    def n_views(self) -> int:
        return int(self.angles.numel())

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """``(views, bins)``."""
        return (self.n_views, self.n_bins)

    @property
    def bin_start(self) -> float:
        """Detector coordinate of bin 0's centre."""
        return self.bin_offset - 0.5 * (self.n_bins - 1) * self.bin_spacing

    def bin_centres(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        k = torch.arange(self.n_bins, dtype=dtype, device=device)
        return self.bin_start + k * self.bin_spacing

    def _key(self) -> tuple:
        return (type(self).__name__, self.grid, tuple(self.angles.tolist()), self.n_bins,
                self.bin_spacing, self.bin_offset)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Beam) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass(frozen=True, eq=False)
class ParallelBeam(_Beam):
    """2-D parallel-beam geometry with a flat detector of ``n_bins`` bins."""

    kind: Literal["parallel"] = field(default="parallel", init=False)

    def __post_init__(self) -> None:
        self._validate_detector()
        lo = self.bin_start - 0.5 * self.bin_spacing
        hi = lo + self.n_bins * self.bin_spacing
        r = self.grid.radius
        if hi <= -r or lo >= r:
            raise ValueError(
                f"the detector [{lo:.4g}, {hi:.4g}] m misses the image, whose projection "
                f"covers [{-r:.4g}, {r:.4g}] m; check bin_spacing, n_bins and bin_offset"
            )


@dataclass(frozen=True, eq=False)
class FanBeam(_Beam):
    """2-D fan-beam geometry: point source at distance ``src_radius`` from the rotation
    axis, detector at ``det_radius`` on the other side; ``detector`` is ``"flat"`` or
    ``"curved"`` (equiangular arc centred on the source; bins in arc length)."""

    src_radius: float = 1.0
    det_radius: float = 0.0
    detector: Literal["flat", "curved"] = "flat"
    kind: Literal["fan"] = field(default="fan", init=False)

    def __post_init__(self) -> None:
        self._validate_detector()
        object.__setattr__(self, "src_radius", _positive("src_radius", self.src_radius))
        det = float(self.det_radius)
        if not math.isfinite(det) or det < 0:
            raise ValueError(f"det_radius must be >= 0, got {self.det_radius!r}")
        object.__setattr__(self, "det_radius", det)
        if self.detector not in ("flat", "curved"):
            raise ValueError(f"detector must be 'flat' or 'curved', got {self.detector!r}")
        r = self.grid.radius
        if self.src_radius <= r:
            raise ValueError(
                f"the source (src_radius={self.src_radius:.4g} m) lies inside the field of "
                f"view (image corners reach {r:.4g} m from the axis); move it further out"
            )
        # The fan must cover part of the image: compare fan angles.
        half_fov = math.asin(r / self.src_radius)
        lo = self.bin_start - 0.5 * self.bin_spacing
        hi = lo + self.n_bins * self.bin_spacing
        g_lo, g_hi = self._fan_angle(lo), self._fan_angle(hi)
        if g_hi <= -half_fov or g_lo >= half_fov:
            raise ValueError(
                f"the detector covers fan angles [{g_lo:.4g}, {g_hi:.4g}] rad but the image "
                f"spans [{-half_fov:.4g}, {half_fov:.4g}] rad; the detector misses the object"
            )

    @property
    def src_det_distance(self) -> float:
        return self.src_radius + self.det_radius

    def _fan_angle(self, s: float) -> float:
        if self.detector == "curved":
            return s / self.src_det_distance
        return math.atan2(s, self.src_det_distance)

    def _key(self) -> tuple:
        return super()._key() + (self.src_radius, self.det_radius, self.detector)


Geometry = Union[ParallelBeam, FanBeam]


def lodopab(n_angles: int = 1000, n_bins: int = 513, image_size: int = 362) -> ParallelBeam:
    """The LoDoPaB-CT geometry (ODL's ``parallel_beam_geometry`` on ``[-0.13, 0.13]^2``).

    362 x 362 pixels, 1000 angles at the cell midpoints of ``[0, pi)``, 513 bins on
    ``[-rho, rho]`` with ``rho = 0.13 * sqrt(2)`` (the image corners; LoDoPaB rounds it to
    0.1838 m).  Array axes follow ODL, so stored LoDoPaB arrays project onto their
    observations and reconstruct upright.  Smaller ``n_angles``/``n_bins``/``image_size``
    give the same field of view at a coarser sampling.
    """
    grid = ImageGrid((image_size, image_size), (-0.13, -0.13), (0.13, 0.13))
    rho = grid.radius
    return ParallelBeam(grid, uniform_angles(n_angles), n_bins, 2 * rho / n_bins)
