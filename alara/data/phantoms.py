"""Synthetic thorax / upper-abdomen patients in Hounsfield units.

A patient is a set of continuous shapes (metres), so the same slice can be rasterised on
any grid: the ground truth on the data set's grid and, for the observations, on a finer
grid (avoiding the "inverse crime" of simulating data with the reconstruction's own
discretisation).  All randomness comes from explicit ``torch.Generator`` seeds, so a
patient and its slices are reproducible and independent of the grid.

Conventions (LoDoPaB's): LoDoPaB stores ``pixel_array.T`` of each LIDC-IDRI slice, so
array axis 0 (world ``x``) runs along DICOM columns, towards the patient's left, and axis 1
(world ``y``) along DICOM rows, from anterior to posterior; ``imshow(x.T)`` (DIVal's
``plot_image``) shows the slice upright in radiological view.  A :class:`Patient` is
described in anatomical coordinates (``x`` to the patient's left, ``y`` anterior, as on
a display); :func:`render_slice` maps anatomical ``y`` to world ``-y``.  Bodies are wider
laterally (axis 0) than antero-posteriorly (axis 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from alara.data.lung import Capsules, LungShape, capsule_coverage, lung_tree
from alara.data.texture import DEFAULT_TEXTURE, LUNG, SOFT, STRANDS, TRABECULAR, TextureFields, TextureParams
from alara.geometry import ImageGrid

__all__ = ["Lesion", "Patient", "SliceLayers", "sample_patient", "render_slice",
           "render_slice_layers", "lesion_section", "lesion_centre_world", "slice_positions",
           "HU", "TISSUES"]

#: Typical tissue values (HU) used by the generator.
HU = {
    "air": -1000.0, "lung": -850.0, "fat": -100.0, "soft": 40.0, "blood": 45.0,
    "liver": 60.0, "spleen": 50.0, "csf": 15.0, "cancellous": 250.0, "cortical": 1000.0,
    "rib": 750.0, "sternum": 550.0, "gas": -900.0,
}

#: Tissue labels painted with the HU values; texture is added per tissue.
TISSUES = ("air", "fat", "soft", "organ", "blood", "lung", "cancellous", "bone", "other")
_T = {name: k for k, name in enumerate(TISSUES)}
#: Airway wall (HU): bronchial wall with its partial volume of cartilage and mucosa.
_AIRWAY_WALL_HU = 0.0

# Craniocaudal length (m) spanned by slice positions t in [0, 1]; sets how far a lesion
# centred at t0 reaches into neighbouring slices.
_Z_EXTENT = 0.30


@dataclass(frozen=True)
class Lesion:
    """A small spherical lesion: centre ``(x, y)`` in metres (anatomical: ``y`` anterior,
    relative to the body centre), slice position ``t``,
    radius (m) and HU contrast added to the soft tissue (or lung) it lies in."""

    x: float
    y: float
    t: float
    radius: float
    contrast: float
    in_lung: bool = False


@dataclass(frozen=True)
class Patient:
    """Anatomy parameters of one synthetic patient (lengths in metres; anatomical
    coordinates: ``x`` towards the patient's left, ``y`` anterior)."""

    pid: int
    seed: int
    half_width: float           # lateral body semi-axis
    half_depth: float           # antero-posterior body semi-axis (< half_width)
    centre_y: float             # table offset of the body centre
    fat: float                  # subcutaneous fat thickness
    harmonics: tuple[tuple[float, float], ...]  # body-outline (amplitude, phase), k = 2, 3, 4
    lung_width: float           # lung semi-axis as a fraction of the inner body
    lung_depth: float
    lung_hu: float
    heart_size: float
    liver_start: float          # slice position where the liver appears
    rib_count: int
    t_range: tuple[float, float]  # slice positions covered by this patient's scan
    lesions: tuple[Lesion, ...] = field(default_factory=tuple)


def _u(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def sample_patient(seed: int, pid: int = 0, size: Optional[float] = None) -> Patient:
    """Draw a patient from ``seed``: from a small child to a large adult.  ``size`` in
    [0, 1] fixes the body size (0: the smallest child, 1: the largest adult) instead of
    drawing it; every other property is drawn as without it."""
    gen = torch.Generator().manual_seed(int(seed))
    # Body size: lateral semi-axis from 7.5 cm (child) to 15 cm (large adult; the widest
    # are truncated by LoDoPaB's 26 cm field of view, as real LIDC slices often are).
    drawn = _u(gen) ** 0.8
    if size is not None and not (math.isfinite(size) and 0.0 <= size <= 1.0):
        raise ValueError(f"size must be in [0, 1] (0: smallest child, 1: largest adult), got {size!r}")
    size = drawn if size is None else float(size)
    half_width = 0.075 + 0.075 * size
    # Children are rounder; adults flatter (AP / lateral from ~0.9 down to ~0.6).
    ratio = _u(gen, 0.78, 0.92) - 0.18 * size * _u(gen, 0.5, 1.0)
    half_depth = half_width * ratio
    fat = half_width * _u(gen, 0.04, 0.16)
    harmonics = tuple((_u(gen, 0.0, 0.025), _u(gen, 0.0, 2 * math.pi)) for _ in range(3))
    start = _u(gen, 0.0, 0.7)
    span = _u(gen, 0.15, 0.3)
    inner_w, inner_d = half_width - fat, half_depth - fat

    lesions = []
    for _ in range(int(torch.randint(1, 5, (), generator=gen))):
        in_lung = _u(gen) < 0.25
        ang = _u(gen, 0, 2 * math.pi)
        rad = math.sqrt(_u(gen, 0.0, 1.0))
        if in_lung:  # inside a lung: lateral third of the inner body
            side = 1.0 if _u(gen) < 0.5 else -1.0
            cx = side * inner_w * (0.5 + 0.2 * rad * math.cos(ang))
            cy = inner_d * 0.35 * rad * math.sin(ang)
            contrast = _u(gen, 700.0, 880.0)  # a solid nodule against -850 HU lung
        else:
            cx = inner_w * 0.6 * rad * math.cos(ang)
            cy = inner_d * 0.6 * rad * math.sin(ang)
            contrast = (1.0 if _u(gen) < 0.5 else -1.0) * _u(gen, 10.0, 40.0)
        lesions.append(Lesion(cx, cy + 0.0, _u(gen, start, start + span),
                              _u(gen, 0.003, 0.010), contrast, in_lung))
    return Patient(
        pid=int(pid), seed=int(seed), half_width=half_width, half_depth=half_depth,
        centre_y=_u(gen, -0.012, 0.012), fat=fat, harmonics=harmonics,
        lung_width=_u(gen, 0.34, 0.42), lung_depth=_u(gen, 0.62, 0.78),
        lung_hu=_u(gen, -880.0, -800.0), heart_size=_u(gen, 0.8, 1.15),
        liver_start=_u(gen, 0.6, 0.75), rib_count=int(torch.randint(9, 14, (), generator=gen)),
        t_range=(start, min(start + span, 1.0)), lesions=tuple(lesions),
    )


def slice_positions(patient: Patient, n: int, through_lesions: bool = False) -> list[float]:
    """``n`` equally spaced slice positions within the patient's scan range.

    ``through_lesions``: first one slice through each lesion's centre (in the patient's
    lesion order, at most ``n``), then the remaining slices equally spaced; sorted.
    """
    if through_lesions:
        centres = [les.t for les in patient.lesions[:n]]
        rest = n - len(centres)
        return sorted(centres + (slice_positions(patient, rest) if rest else []))
    lo, hi = patient.t_range
    if n == 1:
        return [(lo + hi) / 2]
    return [lo + (hi - lo) * k / (n - 1) for k in range(n)]


class _Canvas:
    """HU image on a grid with shape painting helpers (coordinates in metres)."""

    def __init__(self, grid: ImageGrid) -> None:
        self.xs, self.ys = grid.coordinates(dtype=torch.float64)
        self.X, self.Y = torch.meshgrid(self.xs, self.ys, indexing="ij")
        self.hu = torch.full(grid.shape, HU["air"], dtype=torch.float64)
        self.tissue = torch.zeros(grid.shape, dtype=torch.int8)

    def _window(self, coords: torch.Tensor, lo: float, hi: float) -> slice:
        # Index range of pixel centres in [lo, hi] (coords are sorted ascending).
        return slice(int(torch.searchsorted(coords, lo)), int(torch.searchsorted(coords, hi, right=True)))

    def ellipse(self, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> "_Region":
        # Evaluate only inside the bounding box: most shapes are a few pixels wide.
        r = max(a, b)
        win = (self._window(self.xs, cx - r, cx + r), self._window(self.ys, cy - r, cy + r))
        dx, dy = self.X[win] - cx, self.Y[win] - cy
        c, s = math.cos(angle), math.sin(angle)
        return _Region(win, ((dx * c + dy * s) / a) ** 2 + ((-dx * s + dy * c) / b) ** 2 <= 1.0)

    def paint(self, mask: "torch.Tensor | _Region", value: float, tissue: str) -> None:
        # Regions paint their window only: small tensors, no full-image passes.
        win, m = (mask.win, mask.mask) if isinstance(mask, _Region) else ((slice(None), slice(None)), mask)
        self.hu[win].masked_fill_(m, value)
        self.tissue[win].masked_fill_(m, _T[tissue])


class _Region:
    """A mask that is False outside the window ``win`` (a pair of slices of the canvas);
    ``mask`` holds its values inside the window."""

    def __init__(self, win: tuple[slice, slice], mask: torch.Tensor) -> None:
        self.win, self.mask = win, mask

    def __and__(self, other: torch.Tensor) -> "_Region":
        """Intersection with a mask over this region's window."""
        return _Region(self.win, self.mask & other)

    def __sub__(self, other: "_Region") -> "_Region":
        """This region less ``other``."""
        (a0, b0), (a1, b1) = ((w.start, w.stop) for w in self.win)
        inside = torch.zeros(self.mask.shape, dtype=torch.bool)
        o0, o1 = other.win
        i0, i1 = max(a0, o0.start), min(b0, o0.stop)
        j0, j1 = max(a1, o1.start), min(b1, o1.stop)
        if i1 > i0 and j1 > j0:
            inside[i0 - a0:i1 - a0, j0 - a1:j1 - a1] = other.mask[i0 - o0.start:i1 - o0.start,
                                                                  j0 - o1.start:j1 - o1.start]
        return _Region(self.win, self.mask & ~inside)


def _bump(t: float, lo: float, hi: float) -> float:
    """Smooth 0 -> 1 -> 0 profile over ``[lo, hi]`` (organ size along the body axis)."""
    if t <= lo or t >= hi:
        return 0.0
    return math.sin(math.pi * (t - lo) / (hi - lo)) ** 0.7


def _smooth_field(gen: torch.Generator, canvas: _Canvas, extent: float, cells: int = 12) -> torch.Tensor:
    """A smooth random field in [-1, 1], defined in world coordinates (grid independent)."""
    coarse = torch.rand((1, 1, cells, cells), generator=gen, dtype=torch.float64) * 2 - 1
    # grid_sample's last axis is (width, height) = (axis 1, axis 0) of the coarse field.
    g = torch.stack((canvas.Y / extent, canvas.X / extent), dim=-1).unsqueeze(0)
    return F.grid_sample(coarse, g, mode="bicubic", padding_mode="border",
                         align_corners=False)[0, 0].clamp(-1, 1)


def render_slice(patient: Patient, t: float, grid: ImageGrid,
                 texture: Optional[TextureParams] = DEFAULT_TEXTURE) -> torch.Tensor:
    """Rasterise the patient's slice at position ``t`` in ``[0, 1]`` (apex -> upper
    abdomen) onto ``grid``; returns HU as float32 ``grid.shape``, oriented as LoDoPaB
    (axis 1 from anterior to posterior: world ``y`` is anatomical ``-y``).

    ``texture`` adds tissue texture, lung vessels and airways (:mod:`alara.data.texture`,
    :mod:`alara.data.lung`) to the piecewise-constant anatomy; ``None`` gives the cartoon.
    """
    return render_slice_layers(patient, t, grid, texture, background=False).hu


@dataclass(frozen=True)
class SliceLayers:
    """One rendered slice (HU, float32, LoDoPaB orientation) with its lesion truth."""

    hu: torch.Tensor
    #: The same slice with the lesions left out (``None`` unless asked for).
    background: Optional[torch.Tensor]
    #: Pixels painted per lesion of the patient (0: the lesion is not in this slice).
    painted: tuple[int, ...]


def render_slice_layers(patient: Patient, t: float, grid: ImageGrid,
                        texture: Optional[TextureParams] = DEFAULT_TEXTURE, *,
                        background: bool = True) -> SliceLayers:
    """:func:`render_slice`, plus the lesion-free slice (``background``) and the pixel
    count of each lesion.  Lesions are painted last and draw no random numbers, so the
    background's anatomy and texture are those of the slice, bit for bit."""
    # Paint in anatomical coordinates on the grid mirrored in y, then flip axis 1: pixel
    # j of the result is at world y_j, i.e. at anatomical -y_j.
    mirrored = ImageGrid(grid.shape, (grid.min_pt[0], -grid.max_pt[1]),
                         (grid.max_pt[0], -grid.min_pt[1]))
    c = _render_anatomical(patient, t, mirrored, texture)
    free = c.hu.to(torch.float32).flip(1) if background else None
    painted = _paint_lesions(c, patient, t)
    return SliceLayers(c.hu.to(torch.float32).flip(1), free, painted)


def lesion_section(lesion: Lesion, t: float) -> Optional[float]:
    """Radius (m) of the sphere's cross-section with slice ``t``:
    ``sqrt(r^2 - dz^2)`` with ``dz = (t - t_lesion) * 0.30 m``; ``None`` if it misses."""
    dz = (t - lesion.t) * _Z_EXTENT
    if abs(dz) >= lesion.radius:
        return None
    return math.sqrt(lesion.radius ** 2 - dz ** 2)


def lesion_centre_world(patient: Patient, lesion: Lesion) -> tuple[float, float]:
    """The lesion centre in world coordinates ``(x, y)`` (metres) of the rendered slice:
    anatomical ``y`` (anterior) is world ``-y`` (see :func:`render_slice`)."""
    return lesion.x, -(patient.centre_y + lesion.y)


def _render_anatomical(patient: Patient, t: float, grid: ImageGrid,
                       texture: Optional[TextureParams]) -> "_Canvas":
    # Everything but the lesions (:func:`_paint_lesions`), on the canvas in anatomical
    # coordinates.
    # Slice details (vessels, texture) come from their own generator, seeded by patient
    # and slice only, and are drawn before rasterising: the same on every grid.
    gen = torch.Generator().manual_seed((patient.seed * 1_000_003 + int(round(t * 1e6))) % (2 ** 63 - 1))
    c = _Canvas(grid)
    p = patient
    cy = p.centre_y

    # Body outline with a few low harmonics: not a perfect ellipse.
    theta = torch.atan2((c.Y - cy) / p.half_depth, c.X / p.half_width)
    wobble = 1.0 + sum(amp * torch.cos((k + 2) * theta + ph) for k, (amp, ph) in enumerate(p.harmonics))
    r = torch.sqrt((c.X / p.half_width) ** 2 + ((c.Y - cy) / p.half_depth) ** 2)
    c.paint(r <= wobble, HU["fat"], "fat")
    wi, di = p.half_width - p.fat, p.half_depth - p.fat
    inner = torch.sqrt((c.X / wi) ** 2 + ((c.Y - cy) / di) ** 2) <= wobble
    c.paint(inner, HU["soft"], "soft")
    # Gentle texture in soft tissue (+-8 HU).
    smooth = 8.0 * _smooth_field(gen, c, max(wi, di))
    c.hu[inner] += smooth[inner]

    thorax = t < 0.85
    # Liver (patient's right = -x) and spleen/stomach (patient's left) low in the scan.
    liver = _bump(t, p.liver_start, 1.6)
    if liver > 0:
        c.paint(c.ellipse(-0.25 * wi, cy - 0.05 * di, 0.6 * wi * liver, 0.75 * di * liver, 0.3),
                HU["liver"], "organ")
    if t > 0.75:
        s = _bump(t, 0.75, 1.4)
        c.paint(c.ellipse(0.55 * wi, cy - 0.35 * di, 0.22 * wi * s, 0.3 * di * s, -0.5), HU["spleen"], "organ")
        c.paint(c.ellipse(0.35 * wi, cy + 0.3 * di, 0.22 * wi * s, 0.2 * di * s), HU["gas"], "other")

    # Lungs: small at the apex, largest mid-thorax, pushed up by the diaphragm below.
    lung = _bump(t, -0.15, 0.92)
    lungs: list[LungShape] = []
    if lung > 0.05:
        for side in (-1.0, 1.0):
            shape = LungShape(side * wi * 0.5, cy + 0.05 * di, p.lung_width * wi * lung,
                              p.lung_depth * di * lung, side * 0.15, side)
            lungs.append(shape)
            c.paint(c.ellipse(shape.cx, shape.cy, shape.a, shape.b, shape.angle), p.lung_hu, "lung")
        # Vessels: small soft-tissue dots inside the lungs.
        for _ in range(int(24 * lung)):
            side = 1.0 if _u(gen) < 0.5 else -1.0
            ang, rad = _u(gen, 0, 2 * math.pi), math.sqrt(_u(gen)) * 0.85
            vx = side * wi * 0.5 + rad * p.lung_width * wi * lung * math.cos(ang)
            vy = cy + 0.05 * di + rad * p.lung_depth * di * lung * math.sin(ang)
            vr = _u(gen, 0.0008, 0.0025)
            dot = c.ellipse(vx, vy, vr, vr)
            c.paint(dot & (c.hu[dot.win] < -500), _u(gen, -100.0, 40.0), "other")

    # Mediastinum: heart (patient's left of centre) and aorta.
    heart = _bump(t, 0.3, 0.85) * p.heart_size
    if heart > 0.05:
        c.paint(c.ellipse(0.12 * wi, cy + 0.2 * di, 0.3 * wi * heart, 0.38 * di * heart, 0.5),
                HU["soft"], "soft")
        c.paint(c.ellipse(0.13 * wi, cy + 0.2 * di, 0.2 * wi * heart, 0.26 * di * heart, 0.5),
                HU["blood"], "blood")
    # Descending aorta: left-anterior of the vertebral body (it used to sit inside it).
    aorta_r = 0.06 * di
    c.paint(c.ellipse(0.1 * wi, cy - 0.4 * di, aorta_r, aorta_r), HU["blood"], "blood")
    if 0.2 < t < 0.55:
        c.paint(c.ellipse(-0.03 * wi, cy + 0.15 * di, aorta_r, aorta_r), HU["blood"], "blood")

    # Spine: vertebral body (cortical shell, cancellous core), canal, spinous process.
    vy, vr = cy - di + 0.33 * di, 0.17 * di
    c.paint(c.ellipse(0.0, vy, vr * 1.1, vr), HU["cortical"], "bone")
    c.paint(c.ellipse(0.0, vy, vr * 0.85, vr * 0.78), HU["cancellous"], "cancellous")
    canal_y = vy - vr - 0.07 * di
    c.paint(c.ellipse(0.0, canal_y, 0.09 * di, 0.07 * di) - c.ellipse(0.0, canal_y, 0.06 * di, 0.045 * di),
            HU["cortical"] * 0.8, "bone")
    c.paint(c.ellipse(0.0, canal_y, 0.06 * di, 0.045 * di), HU["csf"], "other")
    c.paint(c.ellipse(0.0, canal_y - 0.16 * di, 0.025 * di, 0.1 * di), HU["cortical"] * 0.8, "bone")
    for side in (-1.0, 1.0):  # transverse processes
        c.paint(c.ellipse(side * 0.16 * di, canal_y, 0.1 * di, 0.025 * di, side * 0.3),
                HU["cortical"] * 0.8, "bone")

    # Ribs along the inner body wall and the sternum (thorax only).
    if thorax:
        for k in range(p.rib_count):
            # Spread over both flanks, leaving the front (sternum) and back (spine) free.
            frac = (k + 0.5) / p.rib_count
            ang = -math.pi / 2 + 0.35 + frac * (2 * math.pi - 0.7)
            ang += _u(gen, -0.05, 0.05)
            rx, ry = 0.93 * wi * math.cos(ang), cy + 0.9 * di * math.sin(ang)
            rr = 0.012 + 0.02 * p.half_width
            c.paint(c.ellipse(rx, ry, rr * 0.45, rr * 0.25, ang), HU["rib"], "bone")
        c.paint(c.ellipse(0.0, cy + 0.9 * di, 0.09 * wi, 0.05 * di), HU["sternum"], "cancellous")

    if texture is not None:
        _add_texture(c, p, t, texture, lungs)

    return c


def _paint_lesions(c: _Canvas, p: Patient, t: float) -> tuple[int, ...]:
    """Add the lesions cut by slice ``t`` to their host tissue; returns the number of
    pixels painted per lesion of ``p`` (0: not in this slice, or no host tissue there)."""
    painted = []
    for les in p.lesions:
        rr = lesion_section(les, t)
        if rr is None:
            painted.append(0)
            continue
        m = c.ellipse(les.x, p.centre_y + les.y, rr, rr)
        hu = c.hu[m.win]
        host = (hu < -500) if les.in_lung else (hu > -200) & (hu < 200)
        where = m.mask & host
        hu[where] += les.contrast
        painted.append(int(where.sum()))
    return tuple(painted)


def _add_texture(c: _Canvas, p: Patient, t: float, params: TextureParams,
                 lungs: list[LungShape]) -> None:
    """Texture per tissue, then lung vessels and airways, onto the painted anatomy."""
    # Its own generator: the cartoon anatomy (and its draws) is the same with or without.
    gen = torch.Generator().manual_seed((p.seed * 999_983 + int(round(t * 1e6)) + 17) % (2 ** 63 - 1))
    fields = TextureFields(gen, params).sample(c.xs, c.ys).to(torch.float64)
    tissue, hu = c.tissue, c.hu
    zero = torch.zeros((), dtype=hu.dtype)
    soft = (tissue == _T["soft"]) | (tissue == _T["organ"])
    hu += torch.where(soft, params.soft_hu * fields[SOFT].clamp(-3, 3), zero)
    hu += torch.where(tissue == _T["fat"], (HU["soft"] - HU["fat"]) * fields[STRANDS], zero)
    hu += torch.where(tissue == _T["cancellous"], params.bone_hu * fields[TRABECULAR].clamp(-3, 3), zero)
    lung = tissue == _T["lung"]
    hu += torch.where(lung, params.lung_hu * fields[LUNG].clamp(-3, 3), zero)
    if not lungs or params.vessels <= 0 or not lung.any():
        return
    parts = [lung_tree(gen, shape, params.vessels) for shape in lungs]
    layers = [Capsules(torch.cat([q[k].p0 for q in parts]), torch.cat([q[k].p1 for q in parts]),
                       torch.cat([q[k].radius for q in parts])) for k in range(3)]
    cover = capsule_coverage(layers, c.xs, c.ys)
    # Vessels, then airway walls over them, then the air lumens inside the walls.
    for k, value in enumerate((HU["blood"], _AIRWAY_WALL_HU, HU["air"])):
        hu += torch.where(lung, (value - hu) * cover[k], zero)
