import dataclasses

import pytest
import torch
import torch.nn.functional as F

from alara.data.phantoms import HU, render_slice, sample_patient, slice_positions
from alara.geometry import ImageGrid

GRID = ImageGrid.square(64, 0.26)


def _extent(mask, axis):
    """Width in pixels of the mask along array axis ``axis``."""
    idx = torch.nonzero(mask.any(dim=1 - axis)).flatten()
    return int(idx.max() - idx.min() + 1)


def test_deterministic_from_seed():
    a, b, c = sample_patient(5, 0), sample_patient(5, 0), sample_patient(6, 0)
    assert a == b and a != c
    torch.testing.assert_close(render_slice(a, 0.4, GRID), render_slice(b, 0.4, GRID))
    assert not torch.equal(render_slice(a, 0.4, GRID), render_slice(c, 0.4, GRID))


def test_population_sizes_and_ellipticity():
    patients = [sample_patient(s, s) for s in range(60)]
    widths = [p.half_width for p in patients]
    assert min(widths) < 0.09 and max(widths) > 0.13  # child ... large adult
    assert all(p.half_depth < p.half_width for p in patients)
    for p in patients[:10]:
        body = render_slice(p, sum(p.t_range) / 2, GRID) > -500
        assert _extent(body, 0) > _extent(body, 1)  # lateral (axis 0) wider than AP


def test_anatomy_present():
    p = sample_patient(3, 0)
    hu = render_slice(p, 0.45, ImageGrid.square(128, 0.26))
    body = hu > -950
    assert (hu < -700).sum() > 0.1 * body.sum()      # lungs
    assert (hu > 500).sum() > 20                      # spine and ribs
    assert ((hu > 0) & (hu < 100)).sum() > 0.1 * body.sum()  # soft tissue / organs
    assert hu.min() >= -1000 and hu.max() <= 1100


def test_lesions_are_small_and_low_contrast():
    p = sample_patient(11, 0)
    soft = [l for l in p.lesions if not l.in_lung]
    assert soft, "seed chosen to have a soft-tissue lesion"
    les = soft[0]
    clean = dataclasses.replace(p, lesions=())
    grid = ImageGrid.square(128, 0.26)
    diff = render_slice(p, les.t, grid) - render_slice(clean, les.t, grid)
    xs, ys = grid.coordinates(dtype=torch.float32)
    X, Y = torch.meshgrid(xs, ys, indexing="ij")
    # Anatomical y (anterior) is world -y in the rendered image.
    near = (X - les.x) ** 2 + (-Y - p.centre_y - les.y) ** 2 <= (1.2 * les.radius) ** 2
    assert (diff[near] != 0).sum() > 0                    # visible in its own slice
    assert diff[near].abs().max() <= 40.0 + 1e-3          # low contrast
    assert near.sum() < 400                               # a few mm across
    assert 0.003 <= les.radius <= 0.010 and 10 <= abs(les.contrast) <= 40


def test_rendering_is_grid_independent():
    # The 2x rendering averaged down matches the direct rendering except at edges.
    p = sample_patient(2, 0)
    coarse = render_slice(p, 0.5, GRID)
    fine = render_slice(p, 0.5, ImageGrid.square(128, 0.26))
    pooled = F.avg_pool2d(fine[None, None], 2)[0, 0]
    close = (pooled - coarse).abs() < 50
    assert close.float().mean() > 0.85


def test_slice_positions_within_range():
    p = sample_patient(1, 0)
    ts = slice_positions(p, 5)
    assert ts[0] == pytest.approx(p.t_range[0]) and ts[-1] == pytest.approx(p.t_range[1])
    assert slice_positions(p, 1) == [pytest.approx(sum(p.t_range) / 2)]


def test_lodopab_orientation():
    # LoDoPaB stores DICOM pixel_array.T: axis 0 runs to the patient's left, axis 1 from
    # anterior (sternum, low j) to posterior (spine, high j); imshow(x.T) is upright.
    p = sample_patient(4, 0)
    grid = ImageGrid.square(128, 0.26)
    thorax = render_slice(p, 0.5, grid)
    bone_j = torch.nonzero(thorax > 500)[:, 1].float()
    body_j = torch.nonzero(thorax > -500)[:, 1].float()
    centre_j = (body_j.min() + body_j.max()) / 2
    vertebra = thorax[60:68] > 900                      # cortical bone near the midline
    assert torch.nonzero(vertebra)[:, 1].float().mean() > centre_j + 10  # spine posterior
    assert bone_j.max() > centre_j + 20
    abdomen = render_slice(p, 0.95, grid)
    liver = (abdomen - HU["liver"]).abs() < 1
    i_liver = torch.nonzero(liver)[:, 0].float().mean()
    assert i_liver < 64 - 5                              # liver on the patient's right
    # The y mirror holds on off-centre grids too: shifting the grid by 10 pixels in +y
    # shifts the image by 10 pixels.
    d = 10 * grid.spacing[1]
    shifted = render_slice(p, 0.5, ImageGrid((128, 128), (-0.13, -0.13 + d), (0.13, 0.13 + d)))
    # (up to float32 rounding of the texture's interpolation weights)
    torch.testing.assert_close(shifted[:, :-10], thorax[:, 10:], atol=0.05, rtol=0)
