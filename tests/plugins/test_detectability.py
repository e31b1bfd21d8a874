"""``detectability``: d' against known answers (white noise, stationary correlated noise,
the square-root dose law of FBP), its gradient, and its errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from alara.geometry import lodopab
from alara.noise import postlog_noise
from alara.observers import ideal_dprime, npwe_template
from alara.ops import fbp, project
from alara.plugins import create
from alara_builtin.detectability import lesion_disks

H = W = 64
LESION = torch.tensor([[[30.3, 33.6, 2.5, 0.05, 0.0]]])   # row, col, radius px, contrast, in lung


def phantom(lesions: torch.Tensor = LESION, level: float = 0.25) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x with lesions, lesion-free x, signal) of a uniform field."""
    bg = torch.full((lesions.shape[0], 1, H, W), level)
    s = lesion_disks(lesions, (H, W)).float()
    return bg + s, bg, s


def roi(img: torch.Tensor, n: int = 11) -> torch.Tensor:
    r, c = round(float(LESION[0, 0, 0])), round(float(LESION[0, 0, 1]))
    return img[r - n // 2:r + n // 2 + 1, c - n // 2:c + n // 2 + 1].double()


def mean_dprime(params: dict, images: int, sigma: float, seed: int = 0) -> torch.Tensor:
    x, bg, _ = phantom()
    m = create("iq_metric", "detectability", params)
    g = torch.Generator().manual_seed(seed)
    d = torch.stack([m(x + sigma * torch.randn(x.shape, generator=g), x, lesions=LESION, background=bg)[0]
                     for _ in range(images)])
    return d


def test_npw_in_white_noise_is_the_closed_form():
    """Known signal in white Gaussian noise: d'_NPW = ||s|| / sigma (= the ideal observer's)."""
    sigma = 0.02
    _, _, s = phantom()
    d = mean_dprime({"observer": "npw", "noise": "background"}, 150, sigma)
    expected = float(s.double().norm()) / sigma
    se = float(d.std()) / math.sqrt(len(d))
    assert abs(float(d.mean()) - expected) < max(3 * se, 0.02 * expected), (float(d.mean()), expected, se)


def test_npwe_in_white_noise_is_the_closed_form():
    """NPWE in white noise: d' = <w, s> / (sigma ||w||) with w the eye-filtered signal."""
    sigma = 0.01
    _, _, s = phantom()
    d = mean_dprime({"observer": "npwe", "noise": "background"}, 150, sigma, seed=1)
    sr = roi(s[0, 0])
    w = npwe_template(sr, 260.0 / W, 260.0)
    expected = float((w * sr).sum() / (sigma * w.norm()))
    se = float(d.std()) / math.sqrt(len(d))
    assert abs(float(d.mean()) - expected) < max(3 * se, 0.02 * expected), (float(d.mean()), expected, se)
    # The eye filter discards the low frequencies that carry most of a disk's energy.
    assert expected < 0.6 * float(s.double().norm()) / sigma


@pytest.mark.parametrize("observer", ["npw", "npwe"])
def test_realisations_estimate_agrees_with_background_estimate(observer):
    sigma = 0.02
    x, bg, _ = phantom()
    g = torch.Generator().manual_seed(3)
    reps = x + sigma * torch.randn((1, 400, H, W), generator=g)
    real = create("iq_metric", "detectability", {"observer": observer, "noise": "realisations"})
    d_real = float(real(reps, x.expand_as(reps), lesions=LESION, background=bg)[0])
    d_bg = float(mean_dprime({"observer": observer, "noise": "background"}, 150, sigma, seed=4).mean())
    assert d_real == pytest.approx(d_bg, rel=0.08)


def _correlated_noise(shape: tuple[int, ...], sigma: float, generator: torch.Generator) -> torch.Tensor:
    """White noise (sigma) plus white noise (2 sigma) blurred by a 3x3 binomial kernel."""
    k = torch.tensor([0.25, 0.5, 0.25])
    kernel = (k[:, None] * k[None, :])[None, None]
    blurred = F.conv2d(torch.randn(shape, generator=generator).view(-1, 1, H + 2, W + 2), kernel)
    return sigma * torch.randn(blurred.shape, generator=generator).view(*shape[:-2], H, W) \
        + 2 * sigma * blurred.view(*shape[:-2], H, W)


def test_cho_is_never_above_the_ideal_observer_in_stationary_noise():
    """Correlated stationary noise (white plus blurred white noise): the ideal
    observer prewhitens, d'^2 = s^T K^-1 s over the ROI; the CHO, restricted to 5
    Laguerre-Gauss channels of the same ROI, cannot do better, nor can NPW."""
    sigma, n = 0.03, 17
    x, bg, s = phantom()
    # Exact covariance of the ROI's pixels: K = sigma^2 (I + 4 A^T A), A the blur for the ROI.
    eye = torch.eye((H + 2) * (W + 2), dtype=torch.float64).view(-1, 1, H + 2, W + 2)
    k = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    a = F.conv2d(eye, (k[:, None] * k[None, :])[None, None])[:, 0]           # [(H+2)(W+2), H, W]
    r, c = round(float(LESION[0, 0, 0])), round(float(LESION[0, 0, 1]))
    a = a[:, r - n // 2:r + n // 2 + 1, c - n // 2:c + n // 2 + 1].reshape(a.shape[0], -1)
    ideal = float(ideal_dprime(roi(s[0, 0], n), sigma**2 * (torch.eye(n * n, dtype=torch.float64) + 4 * a.T @ a)))

    g = torch.Generator().manual_seed(5)
    est = {}
    for observer in ("cho", "npw"):
        m = create("iq_metric", "detectability", {"observer": observer, "noise": "realisations", "roi_size": n})
        vals = []
        for _ in range(6):
            reps = x + _correlated_noise((1, 300, H + 2, W + 2), sigma, g)
            vals.append(float(m(reps, x.expand_as(reps), lesions=LESION, background=bg)[0]))
        est[observer] = torch.tensor(vals)
    cho, npw = est["cho"], est["npw"]
    se = float(cho.std()) / math.sqrt(len(cho))
    assert float(cho.mean()) <= ideal + 2 * se, (float(cho.mean()), ideal, se)
    assert float(cho.mean()) > 0.7 * ideal            # the channels capture most of the disk
    assert float(npw.mean()) <= ideal + 2 * float(npw.std()) / math.sqrt(len(npw))


def test_dprime_rises_as_the_square_root_of_dose_for_fbp():
    """Quantum-limited FBP: the noise variance is ~ 1/dose, so d' ~ sqrt(dose) (slope 1/2
    of log d' against log dose)."""
    geometry = lodopab(n_angles=90, n_bins=91, image_size=H)
    yy, xx = torch.meshgrid(torch.arange(H) - 31.5, torch.arange(W) - 31.5, indexing="ij")
    body = ((yy / 26) ** 2 + (xx / 29) ** 2 <= 1).float() * 0.25
    les = torch.tensor([[[30.0, 36.0, 3.0, 0.03, 0.0]]])
    bg = body[None, None]
    x = bg + lesion_disks(les, (H, W)).float()
    line = project(x.double(), geometry)
    m = create("iq_metric", "detectability", {"observer": "npw", "noise": "background"})
    doses = [4e3, 1e4, 2.5e4, 6.25e4]
    means = []
    for n0 in doses:
        g = torch.Generator().manual_seed(7)
        vals = []
        for _ in range(80):
            y = postlog_noise(line, torch.full((1, geometry.n_views), n0, dtype=torch.float64), generator=g,
                              sampler="poisson")
            x_hat = fbp(y, geometry).float()
            vals.append(float(m(x_hat, x, lesions=les, background=bg)[0]))
        means.append(sum(vals) / len(vals))
    lx, ly = torch.tensor(doses).log(), torch.tensor(means).log()
    slope = float(((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum())
    assert 0.44 < slope < 0.56, (means, slope)


def test_gradient_flows_to_the_reconstruction():
    x, bg, _ = phantom()
    x_hat = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).requires_grad_()
    for observer in ("npwe", "cho"):
        d = create("iq_metric", "detectability", {"observer": observer, "noise": "background"})(
            x_hat, x, lesions=LESION, background=bg)
        (g,) = torch.autograd.grad(d.sum(), x_hat)
        assert torch.isfinite(g).all() and float(g.abs().max()) > 0
        # Raising the lesion's contrast in the reconstruction raises d'.
        bump = lesion_disks(LESION, (H, W)).float()
        assert float((g * bump).sum()) > 0


def test_disk_model_stands_in_for_the_missing_lesion_free_truth():
    x, bg, _ = phantom()
    x_hat = x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    m = create("iq_metric", "detectability", {"noise": "background"})
    assert float(m(x_hat, x, lesions=LESION)[0]) == pytest.approx(float(m(x_hat, x, lesions=LESION,
                                                                          background=bg)[0]), rel=1e-5)


@settings(max_examples=15, deadline=None)
@given(scale=st.floats(0.1, 10.0), observer=st.sampled_from(["npw", "npwe", "cho"]))
def test_dprime_is_invariant_to_the_units_of_the_image(scale, observer):
    """A linear observer's d' is a ratio: scaling the images, the contrast and the noise together
    leaves it unchanged."""
    x, bg, _ = phantom()
    noisy = x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    m = create("iq_metric", "detectability", {"observer": observer, "noise": "background"})
    les2 = LESION.clone()
    les2[..., 3] *= scale
    a = float(m(noisy, x, lesions=LESION, background=bg)[0])
    b = float(m(noisy.double() * scale, x.double() * scale, lesions=les2, background=bg.double() * scale)[0])
    assert b == pytest.approx(a, rel=1e-4)


def test_min_over_lesions_is_the_faintest():
    two = torch.tensor([[[20.0, 20.0, 2.5, 0.05, 0.0], [44.0, 44.0, 2.5, 0.01, 0.0]]])
    x, bg, _ = phantom(two)
    noisy = x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    def d(params, lesions):
        return float(create("iq_metric", "detectability", {"noise": "background", **params})(
            noisy, x, lesions=lesions, background=bg)[0])

    lo, mean, single = d({"combine": "min"}, two), d({"combine": "mean"}, two), d({}, two[:, 1:])
    assert lo < mean and lo == pytest.approx(single, rel=0.25)


def test_errors_say_what_is_missing():
    x, bg, _ = phantom()
    m = create("iq_metric", "detectability", {"noise": "background"})
    with pytest.raises(ValueError, match="needs lesions"):
        m(x, x)
    none = torch.zeros(1, 2, 5)
    with pytest.raises(ValueError, match="no lesion"):
        m(x, x, lesions=none)
    assert math.isinf(float(create("iq_metric", "detectability", {"no_lesion": "skip", "noise": "background"})(
        x, x, lesions=none)[0]))
    with pytest.raises(ValueError, match="needs background, background_scans"):
        create("iq_metric", "detectability", {})(x, x, lesions=LESION)
    outside = LESION.clone()
    outside[0, 0, 0] = 80.0
    with pytest.raises(ValueError, match="outside"):
        m(x, x, lesions=outside)
    with pytest.raises(ValueError, match="realisations"):
        create("iq_metric", "detectability", {"noise": "realisations"})(x, x, lesions=LESION)
    with pytest.raises(ValueError, match="background_rois must be"):
        create("iq_metric", "detectability", {"observer": "cho", "channels": 15})
    with pytest.raises(ValueError, match="background ROIs"):
        # A tiny body leaves no room for background ROIs.
        small = torch.zeros_like(x)
        small[..., 25:38, 28:41] = 0.25
        m(small + 0.01, small, lesions=LESION)


# ----------------------------------------------------------------------------- paired


def test_paired_npw_in_white_noise_is_the_closed_form():
    """Paired scans of an identity 'reconstructor' with white noise: the response is the
    signal itself and the twins' difference is the noise, so d' = ||s|| / sigma with only
    the spread's sampling error."""
    sigma = 0.02
    x, bg, s = phantom()
    g = torch.Generator().manual_seed(11)
    m = create("iq_metric", "detectability", {"observer": "npw"})
    vals = []
    for _ in range(60):
        n1, n2 = (sigma * torch.randn(x.shape, generator=g) for _ in range(2))
        twins = torch.cat([bg + n1, bg + n2], dim=1)
        vals.append(float(m(x + n1, x, lesions=LESION, background=bg, background_scans=twins)[0]))
    d = torch.tensor(vals)
    expected = float(s.double().norm()) / sigma
    se = float(d.std()) / math.sqrt(len(d))
    assert abs(float(d.mean()) - expected) < max(3 * se, 0.02 * expected), (float(d.mean()), expected, se)
    # The response has no noise in it: the spread of d' is the spread's alone (~20% for 16 ROIs).
    assert float(d.std()) < 0.3 * expected


def _fbp_pipeline():
    from alara.pipeline import Pipeline

    return Pipeline(create("prior", "prior_exam", {"max_shift_px": 0.0, "max_rotation_deg": 0.0}),
                    create("dose_policy", "fixed", {}), create("simulator", "poisson", {}),
                    create("reconstructor", "fbp", {"filter": "ram-lak"})).eval()


def _ellipse_with_lesion(contrast: float = 0.03) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(H) - 31.5, torch.arange(W) - 31.5, indexing="ij")
    bg = (((yy / 26) ** 2 + (xx / 29) ** 2 <= 1).float() * 0.25)[None, None]
    les = torch.tensor([[[30.0, 36.0, 3.0, contrast, 0.0]]])
    return bg + lesion_disks(les, (H, W)).float(), bg, les


def test_pipeline_scans_the_twin_with_the_same_draws_then_fresh_ones():
    from alara.pipeline import noise_generator

    geometry = lodopab(n_angles=60, n_bins=91, image_size=H)
    x, bg, _ = _ellipse_with_lesion()
    pipe = _fbp_pipeline()
    n0 = torch.full((1, geometry.n_views), 2000.0, dtype=torch.float64)
    scan = pipe(x, geometry, generator=[noise_generator(1, 0)], n0=n0, background=bg)
    alone = pipe(bg, geometry, generator=[noise_generator(1, 0)], n0=n0)
    again = pipe(x, geometry, generator=[noise_generator(1, 0)], n0=n0)
    assert scan.background_scans.shape == (1, 2, H, W)
    assert torch.equal(scan.x_hat, again.x_hat)                          # x's scan is unchanged
    assert torch.allclose(scan.background_scans[:, :1], alone.x_hat)    # the same draws as x's
    noise_same = (scan.x_hat - scan.background_scans[:, :1]) - (x - bg)
    noise_new = scan.background_scans[:, 1:] - scan.background_scans[:, :1]
    assert float(noise_new.std()) > 5 * float(noise_same.std())          # fresh draws: independent noise


def test_paired_dprime_rises_as_the_square_root_of_dose_through_the_pipeline():
    """FBP is linear: with the twin's scans the response is the reconstructed lesion and
    the spread the quantum noise, so log d' against log dose has slope 1/2."""
    from alara.pipeline import noise_generator, scan_truth

    geometry = lodopab(n_angles=90, n_bins=91, image_size=H)
    x, bg, les = _ellipse_with_lesion()
    pipe, m = _fbp_pipeline(), create("iq_metric", "detectability", {"observer": "npw"})
    doses = [4e3, 1e4, 2.5e4, 6.25e4]
    means = []
    for n0 in doses:
        vals = []
        for r in range(24):
            scan = pipe(x, geometry, generator=[noise_generator(5, r)], background=bg,
                        n0=torch.full((1, geometry.n_views), n0, dtype=torch.float64))
            vals.append(float(m(scan.x_hat, x, **scan_truth(scan, {"lesions": les, "background": bg}))[0]))
        means.append(sum(vals) / len(vals))
    lx, ly = torch.tensor(doses).log(), torch.tensor(means).log()
    slope = float(((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum())
    assert 0.45 < slope < 0.55, (means, slope)
