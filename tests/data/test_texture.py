import dataclasses

import pytest
import torch
import torch.nn.functional as F

from alara.data.lung import Capsules, LungShape, capsule_coverage, lung_tree
from alara.data.phantoms import HU, render_slice, sample_patient
from alara.data.texture import DEFAULT_TEXTURE, SOFT, TextureFields, TextureParams, box_coverage
from alara.geometry import ImageGrid

FOV = 0.26
NONE = TextureParams(soft_hu=0.0, lung_hu=0.0, bone_hu=0.0, fat_strands=0.0, vessels=0.0)


def _grid(n):
    return ImageGrid.square(n, FOV)


def _mid(p):
    return sum(p.t_range) / 2


def test_zero_amplitudes_give_the_cartoon():
    # The texture only adds to the cartoon anatomy: with every amplitude at zero the
    # rendering is the cartoon, bit for bit (the cartoon's own draws are untouched).
    p = sample_patient(3, 0)
    for t in (0.3, 0.9):
        assert torch.equal(render_slice(p, t, _grid(96), NONE), render_slice(p, t, _grid(96), None))


def test_cartoon_is_piecewise_constant_and_texture_is_not():
    p = sample_patient(8, 0)
    cartoon = render_slice(p, 0.45, _grid(128), None)
    textured = render_slice(p, 0.45, _grid(128))
    # Lung, fat and bone pixels of the cartoon take a handful of values (plus partial
    # volume nowhere: point-sampled shapes); the textured ones are continuous.
    for lo, hi in ((-950, -500), (-150, -50), (150, 400)):   # lung, fat, cancellous bone
        m = (cartoon > lo) & (cartoon < hi)
        assert m.sum() > 50
        assert len(torch.unique(cartoon[m])) <= 30
        assert len(torch.unique(textured[m])) > 0.5 * int(m.sum())
    # Neighbour differences inside soft tissue: smooth (< 1 HU) in the cartoon.
    soft = (cartoon > 25) & (cartoon < 55)
    both = soft[1:] & soft[:-1]
    flat = (cartoon[1:] - cartoon[:-1])[both].abs()
    assert flat.quantile(0.75) < 1.0
    assert (textured[1:] - textured[:-1])[both].abs().median() > 3 * flat.median()


def test_texture_amplitude_within_configured_range():
    p = sample_patient(4, 0)
    t = 0.95  # abdomen: large soft-tissue and organ areas
    cartoon = render_slice(p, t, _grid(128), None)
    for soft_hu in (10.0, 25.0):
        params = dataclasses.replace(NONE, soft_hu=soft_hu)
        diff = render_slice(p, t, _grid(128), params) - cartoon
        tex = diff[diff != 0]
        assert tex.numel() > 2000
        assert tex.abs().max() <= 3 * soft_hu + 1e-3        # clipped at 3 std
        assert 0.5 * soft_hu < tex.std() < 1.5 * soft_hu    # std as configured
    # Texture only where the cartoon is soft tissue or organ (30..75 HU with its smooth field).
    assert ((cartoon[diff != 0] > 25) & (cartoon[diff != 0] < 75)).all()


def test_same_patient_on_every_grid():
    # Rendered at 256 and averaged down to 128 ~ rendered at 128 directly.
    p = sample_patient(2, 0)
    for t in (0.4, 0.95):
        coarse = render_slice(p, t, _grid(128))
        pooled = F.avg_pool2d(render_slice(p, t, _grid(256))[None, None], 2)[0, 0]
        close = (pooled - coarse).abs() < 50
        assert close.float().mean() > 0.9
        # The texture itself (textured - cartoon) is the same field on both grids.
        tex_c = coarse - render_slice(p, t, _grid(128), None)
        tex_f = pooled - F.avg_pool2d(render_slice(p, t, _grid(256), None)[None, None], 2)[0, 0]
        # In soft tissue away from other tissues (partial volume differs at edges).
        soft = ((render_slice(p, t, _grid(128), None) - HU["soft"]).abs() < 9).float()
        inner = -F.max_pool2d(-soft[None, None], 3, 1, 1)[0, 0] > 0.5
        a, b = tex_c[inner], tex_f[inner]
        corr = ((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std())
        assert corr > 0.98, corr
        assert 0.9 < a.std() / b.std() < 1.1


def test_deterministic_and_seed_dependent():
    a = render_slice(sample_patient(5, 0), 0.5, _grid(64))
    b = render_slice(sample_patient(5, 0), 0.5, _grid(64))
    c = render_slice(sample_patient(6, 0), 0.5, _grid(64))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Different slices of the same patient have different texture.
    p = sample_patient(5, 0)
    d = render_slice(p, 0.5, _grid(64)) - render_slice(p, 0.5, _grid(64), None)
    e = render_slice(p, 0.52, _grid(64)) - render_slice(p, 0.52, _grid(64), None)
    assert not torch.allclose(d, e)


def test_lung_has_vessels_and_airways():
    p = sample_patient(3, 0)
    g = _grid(256)
    no_vessels = render_slice(p, 0.45, g, dataclasses.replace(DEFAULT_TEXTURE, vessels=0.0))
    hu = render_slice(p, 0.45, g)
    lung = no_vessels < -600
    changed = (hu - no_vessels).abs() > 1
    assert changed.any()
    assert (changed & ~lung).sum() == 0                   # drawn inside the lungs only
    assert (hu[lung] > -300).sum() > 100                  # vessels: soft-tissue density
    assert (hu[lung] < -990).sum() > 0                    # airway lumens: air
    assert hu.min() >= -1000 and hu.max() <= 1100


def test_texture_fields_unit_std_and_mip_map():
    gen = torch.Generator().manual_seed(0)
    f = TextureFields(gen, DEFAULT_TEXTURE)
    assert torch.allclose(f.lattice.flatten(2)[0, SOFT].std(), torch.tensor(1.0), atol=0.05)
    fine = f.sample(*_grid(512).coordinates(dtype=torch.float64))
    coarse = f.sample(*_grid(64).coordinates(dtype=torch.float64))
    pooled = F.avg_pool2d(fine[None], 8)[0]
    # The coarse grid samples a box-averaged lattice: close to the pooled fine sampling.
    assert (coarse - pooled).abs().mean() < 0.15 * pooled.abs().mean()


def test_box_coverage_is_partial_volume():
    d = torch.tensor([0.0, 0.5, 1.0, 5.0])
    r = torch.tensor(0.25)
    cov = box_coverage(d, r, 1.0)
    assert cov[0] == pytest.approx(0.5)        # a bar half a pixel wide, centred
    assert cov[1] == pytest.approx(0.25) and cov[3] == 0


def test_capsule_coverage_conserves_area():
    g = _grid(128)
    xs, ys = g.coordinates(dtype=torch.float64)
    h = g.spacing[0]
    for r in (0.3 * h, 2.5 * h):
        caps = Capsules(torch.tensor([[-0.05, 0.0101]]), torch.tensor([[0.05, 0.0101]]), torch.tensor([r]))
        cov = capsule_coverage([caps], xs, ys)[0]
        # Area covered ~ the capsule's area (length 2 r + 0.1 m), in pixels.
        area = (0.1 * 2 * r + torch.pi * r ** 2) / h ** 2
        assert float(cov.sum()) == pytest.approx(float(area), rel=0.1)
        assert cov.max() <= 1.0 and (r < h or cov.max() == 1.0)


def test_lung_tree_is_inside_its_lung_and_grid_free():
    lung = LungShape(0.05, 0.0, 0.04, 0.07, 0.15, 1.0)
    v1, w1, l1 = lung_tree(torch.Generator().manual_seed(1), lung)
    v2, _, _ = lung_tree(torch.Generator().manual_seed(1), lung)
    assert torch.equal(v1.p0, v2.p0) and len(v1.radius) > 50 and len(l1.radius) > 0
    assert (w1.radius > l1.radius).all()                  # airway walls around the lumens
    for pts in (v1.p0, v1.p1):
        # In the lung's own frame, every point lies inside the ellipse.
        dx, dy = pts[:, 0] - lung.cx, pts[:, 1] - lung.cy
        c, s = torch.cos(torch.tensor(lung.angle)), torch.sin(torch.tensor(lung.angle))
        u, v = (dx * c + dy * s) / lung.a, (-dx * s + dy * c) / lung.b
        assert (u ** 2 + v ** 2 <= 1.0 + 1e-6).all()


@pytest.mark.parametrize("bad", [dict(soft_hu=-1.0), dict(fat_strands=1.0), dict(beta=0.0),
                                 dict(cell=0.0), dict(vessels=-0.5)])
def test_texture_params_refuse_bad_values(bad):
    with pytest.raises(ValueError, match="TextureParams"):
        TextureParams(**bad)
