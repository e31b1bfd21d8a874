"""Per-image dose response (alara.experiment.response) on a tiny real pipeline: quality
rises with dose under the coupled sampler, the thresholds bracket q, clamping is
reported, the JSON round trip, and the common random numbers the response relies on
(the scan noise does not depend on the policy or on what the prior drew)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from alara.data.synth import small_geometry
from alara.evaluate import PRIOR_STREAM, measure
from alara.experiment.response import Response, flat_shape, measure_response, quality_at_doses
from alara.geometry import LODOPAB_MU_MAX
from alara.pipeline import Pipeline, noise_generator
from alara.plugins import create

SEED = 3


def _pipeline(prior: str = "prior_exam", prior_params=None, policy: str = "fixed", policy_params=None) -> Pipeline:
    if prior == "prior_exam" and prior_params is None:
        prior_params = {"max_shift_px": 0.0, "max_rotation_deg": 0.0}
    return Pipeline(create("prior", prior, prior_params or {}), create("dose_policy", policy, policy_params or {}),
                    create("simulator", "poisson", {}), create("reconstructor", "fbp", {}))


@pytest.fixture(scope="module")
def problem():
    """Four soft-edged discs of different radius and contrast on a 16 x 16 grid, 12 views."""
    g = small_geometry(16, 12)
    xs, ys = g.grid.coordinates(dtype=torch.float32)
    X, Y = torch.meshgrid(xs, ys, indexing="ij")
    R = torch.sqrt(X ** 2 + Y ** 2)
    discs = [(0.04, 0.2), (0.06, 0.3), (0.08, 0.25), (0.10, 0.15)]   # (radius m, x inside)
    x = torch.stack([a * torch.sigmoid((r - R) / 0.01) for r, a in discs])[:, None]
    return _pipeline(), create("iq_metric", "psnr", {}), x, torch.arange(len(discs)), g


def _q(problem, dose, realisations=2):
    pipe, metric, x, index, g = problem
    n = x.shape[0]
    d = torch.as_tensor(dose, dtype=torch.float64).expand(n) if np.ndim(dose) == 0 else torch.as_tensor(dose)
    return quality_at_doses(pipe, metric, x, index, g, flat_shape(n, g.n_views), d.double(), seed=SEED,
                            realisations=realisations)


# ----------------------------------------------------------------------- monotone in dose


def test_counts_rise_with_dose_in_every_bin(problem):
    """What the inverse-CDF sampler guarantees exactly: the same seed at a higher n0 gives
    at least as many counts in every bin (the scan of the pipeline, per-patient streams)."""
    pipe, _, x, index, g = problem
    pipe.eval()
    counts = []
    for n0 in (2.0, 20.0, 200.0, 4096.0):
        gens = [noise_generator(SEED, 0, int(i)) for i in index]
        scan = pipe(x, g, generator=gens, n0=torch.full((x.shape[0], g.n_views), n0, dtype=x.dtype))
        c = n0 * torch.exp(-LODOPAB_MU_MAX * scan.y.double())
        counts.append(c.round())    # min_count (0.1) rounds to 0
    for lo, hi in zip(counts, counts[1:]):
        assert bool((hi >= lo).all())
        assert bool((hi > lo).any())


def test_quality_rises_with_dose(problem):
    """FBP's PSNR is *not* monotone in dose here, even with coupled counts: a count that
    rises in one bin can move the filtered image away from the truth (the ramp filter has
    negative lobes), and at low dose bins leave the zero-count clamp one by one, so the
    curve has small dips (observed up to ~0.6 dB at 12 views on 16 x 16).  So the test
    asserts the trend: a large total rise, a rank correlation near 1 and only small dips."""
    doses = np.geomspace(1e-4, 10.0, 16)
    Q = np.stack([_q(problem, d) for d in doses], axis=1)        # [images, doses]
    assert np.isfinite(Q).all()
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    for qs in Q:
        assert qs[-1] - qs[0] > 5.0                               # dB
        assert qs[-4:].min() > qs[:4].max()
        rho = np.corrcoef(rank(qs), np.arange(len(qs)))[0, 1]     # Spearman
        assert rho > 0.9
        assert np.diff(qs).min() > -1.0
    # The same doses again: the same numbers (seeded, common random numbers across calls).
    np.testing.assert_array_equal(_q(problem, doses[5]), Q[:, 5])


# ------------------------------------------------------------------------------ thresholds


# q from an exploratory run: PSNR runs from ~21-27 dB at dose 1e-4 to 34.4-39 dB at dose 10
# on these images, so 32.5 dB is mid-range and reached by every image within the limits.
Q_MID = 32.5


@pytest.fixture(scope="module")
def response(problem):
    pipe, metric, x, index, g = problem
    return measure_response(pipe, metric, Q_MID, x, index, g, flat_shape(x.shape[0], g.n_views), seed=SEED,
                            realisations=4, refine=2)


def test_thresholds_bracket_q(problem, response):
    r = response
    assert r.q == Q_MID and r.higher_is_better
    assert r.clamped_low == 0 and r.clamped_high == 0          # wide default limits
    assert np.isfinite(r.thresholds).all() and (r.thresholds > 0).all()
    assert len(np.unique(np.round(r.thresholds, 4))) == len(r.thresholds)   # image-specific doses
    above = _q(problem, 1.05 * r.thresholds, realisations=4)
    below = _q(problem, 0.95 * r.thresholds, realisations=4)
    assert (above >= Q_MID).all(), above - Q_MID
    assert (below < Q_MID).all(), below - Q_MID
    # The recorded points are the measured quality (ascending doses), and the threshold
    # sits between a failing and a passing recorded dose.
    for ds, qs, t in zip(r.doses, r.quality, r.thresholds):
        assert (np.diff(ds) > 0).all() and len(ds) == len(qs)
        assert ds[qs < Q_MID].min() < t < ds[qs >= Q_MID].max()


def test_quality_at_interpolates_the_recorded_points(response):
    r = response
    for j in (0, 2):
        d = np.array([ds[j] for ds in r.doses])
        np.testing.assert_allclose(r.quality_at(d), [qs[j] for qs in r.quality], rtol=0, atol=1e-12)
    # Midway in log dose between the first two points: the mean of their Q.
    mid = np.array([math.sqrt(ds[0] * ds[1]) for ds in r.doses])
    np.testing.assert_allclose(r.quality_at(mid), [(qs[0] + qs[1]) / 2 for qs in r.quality], atol=1e-9)
    # Beyond the ends: along the slope (in log dose) of the two outermost points, for at
    # most one doubling, a slope against the metric's direction taken as flat; further out
    # held at that doubling's value.
    for factor, lo_end in ((0.5, True), (1 / 16, True), (2.0, False), (16.0, False)):
        d = np.array([ds[0] * factor if lo_end else ds[-1] * factor for ds in r.doses])
        expect = []
        for di, ds, qs in zip(d, r.doses, r.quality):
            a, b = (0, 1) if lo_end else (-2, -1)
            slope = max((qs[b] - qs[a]) / math.log(ds[b] / ds[a]), 0.0)
            ref = a if lo_end else b
            step = min(max(math.log(di / ds[ref]), -math.log(2)), math.log(2))
            expect.append(qs[ref] + slope * step)
        np.testing.assert_allclose(r.quality_at(d), expect, rtol=1e-12)
    # Far below the data Q never rises (image 3 here scores 32.04 dB at 0.004 and 32.00 at
    # 0.00445: a negative end slope), and far above it stays within one doubling's gain.
    far_low = r.quality_at(np.array([ds[0] / 1000 for ds in r.doses]))
    assert (far_low <= np.array([qs[0] for qs in r.quality]) + 1e-12).all()


def test_clamped_counts(problem):
    pipe, metric, x, index, g = problem
    shape = flat_shape(x.shape[0], g.n_views)
    # At dose 0.004 the images score about 36.6, 31.3, 29.1 and 32.0 dB: with q = 31.5
    # images 0 and 3 already pass at the lowest dose allowed when limits = start.
    q, start = 31.5, (0.004, 0.25)
    narrow = measure_response(pipe, metric, q, x, index, g, shape, seed=SEED, realisations=4, start=start,
                              limits=start)
    assert narrow.clamped_low == 2 and narrow.clamped_high == 0
    assert narrow.thresholds[0] == narrow.thresholds[3] == start[0]
    assert start[0] < narrow.thresholds[1] < start[1] and start[0] < narrow.thresholds[2] < start[1]
    assert narrow.limits == start
    # Wide limits: the search extends downwards and brackets every image.
    wide = measure_response(pipe, metric, q, x, index, g, shape, seed=SEED, realisations=4, start=start)
    assert wide.clamped_low == 0 and wide.clamped_high == 0
    assert wide.thresholds[0] < start[0] and wide.thresholds[3] < start[0]
    assert wide.passes > narrow.passes
    # A q above what images 1 and 2 reach at the upper limit: clamped high, threshold inf.
    high = measure_response(pipe, metric, 36.0, x, index, g, shape, seed=SEED, realisations=4, start=start,
                            limits=start)
    assert high.clamped_high == 2 and high.clamped_low == 1
    assert math.isinf(high.thresholds[1]) and math.isinf(high.thresholds[2])
    assert high.thresholds[0] == start[0] and start[0] < high.thresholds[3] < start[1]


def test_measured_doses_stay_within_limits(problem):
    pipe, metric, x, index, g = problem
    limits = (0.004, 0.25)
    r = measure_response(pipe, metric, 31.5, x, index, g, flat_shape(x.shape[0], g.n_views), seed=SEED,
                         realisations=1, start=limits, limits=limits, refine=0)
    assert max(ds.max() for ds in r.doses) <= limits[1]


def test_refuses_inconsistent_ranges(problem):
    pipe, metric, x, index, g = problem
    shape = flat_shape(x.shape[0], g.n_views)
    for kw in (dict(start=(0.1, 0.05)), dict(start=(0.01, 0.1), limits=(0.02, 1.0)),
               dict(start=(0.01, 0.1), limits=(1e-3, 0.05)), dict(step=1.0)):
        with pytest.raises(ValueError, match="need 0 < limits"):
            measure_response(pipe, metric, 30.0, x, index, g, shape, seed=SEED, realisations=1, **kw)


# ------------------------------------------------------------------------------------ JSON


def _assert_same(a: Response, b: Response) -> None:
    assert (a.q, a.higher_is_better, a.clamped_low, a.clamped_high, a.passes) == \
           (b.q, b.higher_is_better, b.clamped_low, b.clamped_high, b.passes)
    assert tuple(a.limits) == tuple(b.limits)
    np.testing.assert_array_equal(a.thresholds, b.thresholds)
    assert len(a.doses) == len(b.doses) == len(a.quality) == len(b.quality)
    for x, y in zip(a.doses + a.quality, b.doses + b.quality):
        np.testing.assert_array_equal(x, y)


def test_json_round_trip(response):
    r = Response(q=response.q, higher_is_better=response.higher_is_better, doses=response.doses,
                 quality=response.quality, thresholds=response.thresholds.copy(), clamped_low=1, clamped_high=1,
                 passes=response.passes, limits=(1e-5, 1e3))
    r.thresholds[1] = math.inf
    text = json.dumps(r.to_json(), allow_nan=False)      # plain JSON: inf written as null
    assert json.loads(text)["thresholds"][1] is None
    back = Response.from_json(json.loads(text))
    _assert_same(r, back)
    assert math.isinf(back.thresholds[1]) and np.isfinite(np.delete(back.thresholds, 1)).all()
    assert isinstance(back.limits, tuple)
    np.testing.assert_array_equal(back.quality_at(np.full(4, 0.01)), r.quality_at(np.full(4, 0.01)))
    # The measured response itself round-trips too.
    _assert_same(response, Response.from_json(json.loads(json.dumps(response.to_json()))))


# ------------------------------------------------------------------ common random numbers


def test_policy_and_its_n0_give_the_same_scan(problem):
    """``measure`` with a policy and ``measure`` with that policy's n0 given explicitly
    draw the same scan noise: the prior's draws come from a stream of their own."""
    _, metric, x, index, g = problem
    pipe = _pipeline("scouts", {"n0": 256.0}, "tcm", {"n0_mean": 512.0})
    pipe.eval()
    prior_gens = [noise_generator(SEED, PRIOR_STREAM, int(i)) for i in index]
    prior, n0 = pipe.plan(x, g, prior_gens)
    assert float(n0.std(dim=-1).min()) > 0                  # tcm modulates: not a flat n0
    with_policy = measure(pipe, {"psnr": metric}, x, g, index, seed=SEED, realisations=2)
    with_n0 = measure(pipe, {"psnr": metric}, x, g, index, seed=SEED, realisations=2, n0=n0)
    assert torch.equal(with_policy["psnr"], with_n0["psnr"])
    assert torch.equal(with_policy["scan_dose"], with_n0["scan_dose"])
    # The policy's run counts the scouts' dose too; the explicit n0 run acquires no prior.
    assert bool((with_policy["relative_dose"] > with_n0["relative_dose"]).all())
    # Reconstructions, directly from the pipeline.
    gens = lambda: [noise_generator(SEED, 0, int(i)) for i in index]  # noqa: E731
    a = pipe(x, g, generator=gens(), prior_generator=[noise_generator(SEED, PRIOR_STREAM, int(i)) for i in index])
    b = pipe(x, g, generator=gens(), n0=n0)
    assert torch.equal(a.n0, b.n0) and torch.equal(a.y, b.y) and torch.equal(a.x_hat, b.x_hat)
    # Another image index: another draw.
    c = measure(pipe, {"psnr": metric}, x, g, index + 100, seed=SEED, realisations=2, n0=n0)
    assert not torch.equal(c["psnr"], with_n0["psnr"])


def test_noise_draws_are_shared_across_priors(problem):
    """Arms with different priors but the same plan (fixed n0) get identical scans at the
    same dose_scale, whatever and however much their priors drew."""
    _, metric, x, index, g = problem
    arms = {"scouts64": _pipeline("scouts", {"n0": 64.0}), "scouts1024": _pipeline("scouts", {"n0": 1024.0}),
            "prescan": _pipeline("prescan", {"relative_dose": 0.02}), "exam": _pipeline()}
    out = {k: measure(p, {"psnr": metric}, x, g, index, seed=SEED, realisations=2, dose_scale=0.01)
           for k, p in arms.items()}
    ref = out["exam"]
    for k, m in out.items():
        assert torch.equal(m["psnr"], ref["psnr"]), k
        assert torch.equal(m["scan_dose"], ref["scan_dose"]), k
    # The priors did differ: their doses count in the total.
    doses = [float(m["relative_dose"][0, 0]) for m in out.values()]
    assert len(set(doses)) == len(doses)
    # Control: without a prior stream of its own, the prescan prior draws from the scan's
    # generators first and the scans differ, which the shared stream above prevents.
    def recon(p):
        p.eval()
        return p(x, g, generator=[noise_generator(SEED, 0, int(i)) for i in index], dose_scale=0.01).x_hat
    assert not torch.equal(recon(arms["prescan"]), recon(arms["exam"]))
