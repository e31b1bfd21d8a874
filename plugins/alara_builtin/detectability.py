"""``detectability``: a model observer's d' for the lesions of each image (task-based IQ).

Needs the lesion truth with each batch (``lesions`` [B, L, 5]: row, col, radius in pixels,
contrast in x units, in lung; zero rows are padding), as ``alara data synth`` records it,
and uses the lesion-free ground truth ``background`` [B, 1, H, W] when given (else the
lesions are modelled as disks of their recorded contrast).  For every lesion:

* the signal ``s`` is ground truth minus lesion-free truth in an ROI around the lesion;
* the observer's template ``w`` comes from ``s`` (:mod:`alara.observers`);
* the response to the lesion is ``t = <w, x_hat - background>`` in that ROI;
* its spread comes from signal-free responses.  ``noise = "paired"`` (the default) reads
  the scans of the lesion-free twin at the same dose (``background_scans``, which the
  pipeline makes when the metric asks): the lesion's response is ``<w, x_hat - twin>`` with
  the same noise draws (the reconstructed signal alone), the spread comes from the
  difference of two twins with independent draws (noise alone), in the ROIs nearest the
  lesion.  Neither sees the reconstructor's structured error of the anatomy: this is the
  known-background (SKE/BKE) d' of TG-233's phantoms, for a patient.  ``"background"``
  reads the error ``x_hat - x`` in lesion-free ROIs of the one image (no twin scans, but the
  structured error counts as noise and biases the response); ``"realisations"`` reads R
  noise realisations ``x_hat`` [B, R, H, W] of the same image (the repeated-scan estimate).

``d' = mean(t) / std(signal-free t)``; an image's value is the minimum (or mean) over its
lesions: "every lesion detectable".  Differentiable in ``x_hat``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from alara.interfaces import IQMetric
from alara.observers import EyeModel, hotelling_template, laguerre_gauss, linear_dprime, npwe_template

from alara_builtin import checks

__all__ = ["Detectability", "lesion_disks"]

#: Columns of the ``lesions`` tensor (alara.data.lesions writes them in this order).
ROW, COL, RADIUS, CONTRAST, IN_LUNG = range(5)


def lesion_disks(lesions: torch.Tensor, shape: tuple[int, int], supersample: int = 4) -> torch.Tensor:
    """Signal images [B, 1, H, W] of disk lesions: each pixel gets the lesion's contrast times
    the fraction of it the disk covers (``supersample``^2 points per pixel)."""
    b = lesions.shape[0]
    h, w = shape
    k = supersample
    off = (torch.arange(k, dtype=torch.float64, device=lesions.device) + 0.5) / k - 0.5
    rows = (torch.arange(h, dtype=torch.float64, device=lesions.device)[:, None] + off).reshape(-1)
    cols = (torch.arange(w, dtype=torch.float64, device=lesions.device)[:, None] + off).reshape(-1)
    les = lesions.double()
    inside = ((rows[None, None, :, None] - les[..., ROW, None, None]) ** 2
              + (cols[None, None, None, :] - les[..., COL, None, None]) ** 2) <= les[..., RADIUS, None, None] ** 2
    fine = (inside.double() * les[..., CONTRAST, None, None]).sum(1)       # [B, H*k, W*k]
    return F.avg_pool2d(fine.view(b, 1, h * k, w * k), k)


class Detectability(IQMetric):
    """Lesion detectability index d' of a model observer (NPWE, NPW or CHO), per image."""

    name = "detectability"
    higher_is_better = True
    unit = ""

    @property
    def requires(self) -> tuple[str, ...]:     # type: ignore[override]
        if self.config.noise == "paired":
            return ("lesions", "background", "background_scans")
        return ("lesions",)

    @property
    def accepts(self) -> tuple[str, ...]:      # type: ignore[override]
        return () if self.config.noise == "paired" else ("background",)

    @dataclass(frozen=True)
    class Config:
        #: Model observer: "npwe" (non-prewhitening with eye filter), "npw", "cho" (Laguerre-Gauss).
        observer: Literal["npwe", "npw", "cho"] = "npwe"
        #: Where the lesion's response and the signal-free spread come from: "paired" scans
        #: of the lesion-free twin (needs the lesion-free truth), "background" ROIs of the
        #: same image, or "realisations" (x_hat [B, R, H, W]: R >= 3 noise realisations).
        noise: Literal["paired", "background", "realisations"] = "paired"
        #: Side of the square ROI in pixels (odd); 0: per lesion, the smallest odd size
        #: >= 4 radii + 1 (at least 7).
        roi_size: int = 0
        #: Lesion-free background ROIs used per lesion (the nearest ones in the body).
        background_rois: int = 16
        #: Fewest background ROIs accepted (else an error says how to loosen the search).
        min_background_rois: int = 6
        #: Background ROIs lie where the reference exceeds this (x units; air is 0).
        body_threshold: float = 0.02
        #: CHO: number of Laguerre-Gauss channels and their width a (pixels; 0: 2 radii, >= 2).
        channels: int = 5
        channel_width: float = 0.0
        #: One value per image from its lesions: "min" (every lesion) or "mean".
        combine: Literal["min", "mean"] = "min"
        #: Images without lesions: "error", or "skip" (value +inf: no task, always met).
        no_lesion: Literal["error", "skip"] = "error"
        #: Lesions smaller than this radius (pixels) are ignored.
        min_radius_px: float = 0.0
        #: Field of view (mm) across the image width: sets the pixel size for the eye filter.
        fov_mm: float = 260.0
        #: NPWE eye filter and viewing conditions (alara.observers.EyeModel).
        eye_exponent: float = 1.3
        eye_peak_cpd: float = 4.0
        viewing_distance_mm: float = 500.0
        display_mm: float = 300.0

        def __post_init__(self) -> None:
            for key, allowed in (("observer", ("npwe", "npw", "cho")),
                                 ("noise", ("paired", "background", "realisations")),
                                 ("combine", ("min", "mean")), ("no_lesion", ("error", "skip"))):
                if getattr(self, key) not in allowed:
                    raise ValueError(f"detectability: {key} must be one of {', '.join(allowed)}, got "
                                     f"{getattr(self, key)!r}")
            checks.whole(self, "roi_size", 0)
            if self.roi_size and (self.roi_size % 2 == 0 or self.roi_size < 3):
                raise ValueError(f"detectability: roi_size must be 0 (automatic) or an odd number >= 3, "
                                 f"got {self.roi_size}")
            checks.whole(self, "channels", 1)
            checks.whole(self, "min_background_rois", 3)
            checks.whole(self, "background_rois", self.min_background_rois,
                         hint="at least min_background_rois")
            if self.observer == "cho" and self.noise != "realisations" and self.background_rois < self.channels + 3:
                raise ValueError(f"detectability: the CHO estimates a {self.channels}x{self.channels} channel "
                                 f"covariance, so background_rois must be >= channels + 3 = "
                                 f"{self.channels + 3}, got {self.background_rois}")
            checks.non_negative(self, "body_threshold", "channel_width", "min_radius_px")
            checks.positive(self, "fov_mm", "eye_exponent", "eye_peak_cpd", "viewing_distance_mm", "display_mm")

    @property
    def eye(self) -> EyeModel:
        c = self.config
        return EyeModel(c.eye_exponent, c.eye_peak_cpd, c.viewing_distance_mm, c.display_mm)

    def compute(self, x_hat: torch.Tensor, x: torch.Tensor, lesions: torch.Tensor = None,
                background: Optional[torch.Tensor] = None,
                background_scans: Optional[torch.Tensor] = None) -> torch.Tensor:
        c = self.config
        b, ch, h, w = x.shape
        if c.noise != "realisations" and ch != 1:
            raise ValueError(f"detectability with noise = {c.noise!r} scores single images [B, 1, H, W], got "
                             f"{ch} channels; for noise realisations [B, R, H, W] set noise = 'realisations'")
        if c.noise == "paired" and (background_scans is None or tuple(background_scans.shape) != (b, 2, h, w)):
            got = None if background_scans is None else tuple(background_scans.shape)
            raise ValueError(f"detectability with noise = 'paired' needs background_scans [B, 2, H, W] = "
                             f"{(b, 2, h, w)} (Pipeline.forward(background=...) makes them), got {got}")
        if c.noise == "realisations" and ch < 3:
            raise ValueError(f"detectability with noise = 'realisations' needs x_hat [B, R, H, W] with R >= 3 "
                             f"noise realisations of each image, got R = {ch}")
        lesions = _check_lesions(lesions, b, (h, w))
        ref = x[:, :1].double()
        if background is None:
            bg = ref - lesion_disks(lesions, (h, w))
        else:
            if tuple(background.shape) != (b, 1, h, w):
                raise ValueError(f"background (lesion-free ground truth) must be [B, 1, H, W] = "
                                 f"{(b, 1, h, w)}, got {tuple(background.shape)}")
            bg = background.to(ref.device).double()
        xh = x_hat.double()
        twins = None if background_scans is None else background_scans.to(xh.device).double()
        out = []
        for i in range(b):
            les = lesions[i][lesions[i, :, RADIUS] > c.min_radius_px]
            if les.shape[0] == 0:
                if c.no_lesion == "skip":
                    out.append(torch.tensor(math.inf, dtype=torch.float64, device=xh.device))
                    continue
                raise ValueError(f"detectability: image {i} of the batch has no lesion (of radius > "
                                 f"{c.min_radius_px} px); use lesion data (alara data synth --lesion-slices), or "
                                 "set no_lesion = 'skip'")
            d = torch.stack([self._lesion_dprime(xh[i], ref[i, 0], bg[i, 0], les, k, c.fov_mm / w,
                                                 None if twins is None else twins[i])
                             for k in range(les.shape[0])])
            out.append(d.min() if c.combine == "min" else d.mean())
        return torch.stack(out).to(x_hat.dtype)

    def applies_to(self, lesions: Optional[torch.Tensor] = None, **truth: torch.Tensor) -> Optional[torch.Tensor]:
        """Images with at least one lesion of radius > ``min_radius_px``."""
        if lesions is None:
            return None
        return (lesions[..., RADIUS] > self.config.min_radius_px).any(-1)

    def _roi_size(self, radius: float) -> int:
        if self.config.roi_size:
            return self.config.roi_size
        return max(7, 2 * math.ceil(2 * radius) + 1)

    def _lesion_dprime(self, xh: torch.Tensor, ref: torch.Tensor, bg: torch.Tensor, les: torch.Tensor,
                       k: int, pixel_mm: float, twins: Optional[torch.Tensor]) -> torch.Tensor:
        """d' of lesion ``k`` of one image: ``xh`` [C, H, W], ``ref``/``bg`` [H, W], the
        twin scans ``twins`` [2, H, W] (paired mode)."""
        c = self.config
        row, col, radius = (float(v) for v in les[k, :3])
        n = self._roi_size(radius)
        half = n // 2
        rc, cc = round(row), round(col)

        def roi(img: torch.Tensor, r: int, q: int) -> torch.Tensor:
            # The image is padded by `half`: the ROI centred at (r, q) starts at (r, q).
            return img[..., r:r + n, q:q + n]

        pad = (half, half, half, half)
        s = roi(F.pad(ref - bg, pad), rc, cc)
        # What the observer reads at the lesion: the reconstruction minus the lesion-free
        # truth, or (paired) minus the twin's reconstruction from the same noise draws.
        g = roi(F.pad(xh - (bg if twins is None else twins[:1]), pad), rc, cc)   # [C, n, n]
        u = None
        if c.observer == "cho":
            width = c.channel_width or max(2.0 * radius, 2.0)
            u = laguerre_gauss(n, c.channels, width, (row - rc, col - cc), device=xh.device)
        if c.noise == "realisations":
            if u is None:
                t = (g * self._template(s, pixel_mm)).flatten(1).sum(1)
                return linear_dprime(t, t)
            return _hotelling_dprime(s, u, g, g)
        if twins is None:
            noise = self._background_rois(F.pad(xh[0] - ref, pad), ref, les, k, n, exclude=True)
        else:
            # Two twins' difference is noise alone (variance doubled), the lesion's place included.
            noise = self._background_rois(F.pad((twins[0] - twins[1]) / math.sqrt(2), pad), ref, les, k, n,
                                          exclude=False)
        if u is None:
            wt = self._template(s, pixel_mm)
            return linear_dprime((g[0] * wt).sum(), (noise * wt).flatten(1).sum(1))
        return _hotelling_dprime(s, u, noise, g[0])

    def _template(self, s: torch.Tensor, pixel_mm: float) -> torch.Tensor:
        if self.config.observer == "npw":
            return s
        return npwe_template(s, pixel_mm, self.config.fov_mm, self.eye)

    def _background_rois(self, err_pad: torch.Tensor, ref: torch.Tensor, les: torch.Tensor, k: int,
                         n: int, exclude: bool) -> torch.Tensor:
        """The error image's ROIs [K, n, n] nearest lesion ``k``, inside the body (and with
        no lesion pixel when ``exclude``)."""
        c = self.config
        h, w = ref.shape
        half = n // 2
        # ROI centres where every pixel of the ROI is body (a min-filter of the reference).
        body = -F.max_pool2d(-ref[None, None], n, stride=1, padding=half)[0, 0] > c.body_threshold
        body[:half], body[h - half:], body[:, :half], body[:, w - half:] = False, False, False, False
        # Quarter-ROI steps: overlapping ROIs are correlated, but small bodies need them.
        stride = max(1, (n + 2) // 4)
        rc, cc = round(float(les[k, ROW])), round(float(les[k, COL]))
        rows = torch.arange(rc % stride, h, stride, device=ref.device)
        cols = torch.arange(cc % stride, w, stride, device=ref.device)
        rr, qq = torch.meshgrid(rows, cols, indexing="ij")
        rr, qq = rr.flatten(), qq.flatten()
        ok = body[rr, qq]
        # Away from every lesion: no lesion pixel inside the square ROI.
        for j in range(les.shape[0] if exclude else 0):
            dist = torch.maximum((rr - les[j, ROW]).abs(), (qq - les[j, COL]).abs())
            ok &= dist > half + les[j, RADIUS] + 0.5
        rr, qq = rr[ok], qq[ok]
        if rr.numel() < c.min_background_rois:
            raise ValueError(
                f"detectability: only {rr.numel()} background ROIs of {n}x{n} pixels fit inside the "
                f"body near the lesion at ({float(les[k, ROW]):.1f}, {float(les[k, COL]):.1f}); "
                f"min_background_rois is {c.min_background_rois}: set a smaller roi_size or min_background_rois, "
                "a lower body_threshold, or noise = 'realisations'")
        dist = (rr - les[k, ROW]) ** 2 + (qq - les[k, COL]) ** 2
        near = torch.argsort(dist)[:c.background_rois]
        t = torch.arange(n, device=ref.device)
        return err_pad[rr[near, None, None] + t[:, None], qq[near, None, None] + t[None, :]]


def _hotelling_dprime(s: torch.Tensor, u: torch.Tensor, samples: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """CHO d' of response ``<w, g>`` (``g`` [n, n] or realisations [R, n, n]: their mean)
    with the template fitted to the spread of ``samples`` [K, n, n].

    The template is fitted to the same K samples that measure its spread, where it looks
    better than it is: with a Wishart covariance estimate E[K_v_hat^-1] = (K-1)/(K-C-2) K_v^-1,
    so d'^2 is scaled back by (K-C-2)/(K-1)."""
    v = samples.flatten(1) @ u.flatten(1).T
    kk, cc = v.shape
    if kk < cc + 3:
        raise ValueError(f"detectability: the CHO with {cc} channels needs at least {cc + 3} noise samples "
                         f"(realisations or background ROIs), got {kk}")
    wt = hotelling_template(s, u, v)
    response = (g * wt).flatten(-2).sum(-1).mean()
    spread = (samples * wt).flatten(1).sum(1).std(correction=1)
    return response / spread * math.sqrt((kk - cc - 2) / (kk - 1))


def _check_lesions(lesions: Optional[torch.Tensor], b: int, shape: tuple[int, int]) -> torch.Tensor:
    """``lesions`` as float64 [B, L, 5], checked."""
    if not isinstance(lesions, torch.Tensor) or lesions.dim() != 3 or lesions.shape[0] != b \
            or lesions.shape[2] != 5:
        got = tuple(lesions.shape) if isinstance(lesions, torch.Tensor) else type(lesions).__name__
        raise ValueError(f"detectability needs lesions [B, L, 5] (row, col, radius_px, contrast, in_lung) for "
                         f"B = {b} images, got {got}")
    les = lesions.double()
    if not bool(torch.isfinite(les).all()):
        raise ValueError("detectability: the lesion truth has NaN or inf values")
    present = les[..., RADIUS] > 0
    inside = (les[..., ROW] >= 0) & (les[..., ROW] <= shape[0] - 1) & (les[..., COL] >= 0) \
        & (les[..., COL] <= shape[1] - 1)
    if bool((present & ~inside).any()):
        raise ValueError(f"detectability: a lesion centre lies outside the {shape[0]}x{shape[1]} image: "
                         "the lesion truth does not belong to these images")
    if bool((les[..., RADIUS] < 0).any()):
        raise ValueError("detectability: a lesion has a negative radius")
    return les
