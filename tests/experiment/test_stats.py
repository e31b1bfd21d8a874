"""The experiment's statistics (alara.experiment.stats) on toys with known answers: the
conformal rank and its coverage, the patient bootstrap of dose ratios, the log-linear fit
of the size-only control, and the doses of an arm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alara.experiment import stats
from alara.experiment.stats import (PolicyDoses, bootstrap_ratios, conformal_factor, conformal_rank,
                                    fit_log_linear, guarantee_dose)


# ---------------------------------------------------------------------------- conformal rank


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 10_000), permille=st.integers(1, 1000))
def test_conformal_rank_is_ceil_of_n_plus_one_times_share(n, permille):
    share = permille / 1000
    exact = -(-(n + 1) * permille // 1000)          # ceil((n + 1) s) in integer arithmetic
    assert conformal_rank(n, share) == exact


def test_conformal_rank_float_products_do_not_round_up():
    # 25 * 0.28 is 7.000000000000001 in floating point: the rank is still 7, not 8.
    assert 25 * 0.28 > 7 and 100 * 0.07 > 7
    assert conformal_rank(24, 0.28) == 7
    assert conformal_rank(99, 0.07) == 7
    assert conformal_rank(74, 0.68) == 51
    assert conformal_rank(9, 0.9) == 9


@pytest.mark.parametrize("n, share", [(0, 0.9), (-3, 0.5), (10, 0.0), (10, -0.1), (10, 1.01), (10, math.nan)])
def test_conformal_rank_refuses_meaningless_inputs(n, share):
    with pytest.raises(ValueError, match="need n >= 1 and share"):
        conformal_rank(n, share)


def test_conformal_factor_is_the_ranked_value_or_inf_past_n():
    f = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 9.0, 7.0, 6.0, 8.0])   # n = 9, unsorted on purpose
    # rank ceil(10 * 0.5) = 5: the 5th smallest.
    assert conformal_factor(f, 0.5) == 5.0
    # rank ceil(10 * 0.9) = 9 = n: the largest.
    assert conformal_factor(f, 0.9) == 9.0
    # rank ceil(10 * 0.95) = 10 > n: no finite factor guarantees the share.
    assert conformal_factor(f, 0.95) == math.inf
    assert conformal_factor(f, 1.0) == math.inf
    # An image that never reached q (inf) is picked up when the rank lands on it.
    g = np.array([1.0, 2.0, 3.0, math.inf])
    assert conformal_factor(g, 0.6) == 3.0     # rank ceil(5 * 0.6) = 3
    assert conformal_factor(g, 0.7) == math.inf  # rank 4


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(1, 40), share=st.floats(0.05, 1.0))
def test_conformal_factor_equals_sorted_value_at_rank(seed, n, share):
    f = np.random.default_rng(seed).lognormal(size=n)
    k = conformal_rank(n, share)
    expect = np.sort(f)[k - 1] if k <= n else math.inf
    assert conformal_factor(f, share) == expect
    # At least k of the n factors are <= it (in-sample share >= k / n).
    if k <= n:
        assert int((f <= conformal_factor(f, share)).sum()) >= k


# -------------------------------------------------------------------------------- coverage


def _coverage(rank_fn, n: int, share: float, reps: int, m: int, seed: int) -> np.ndarray:
    """Per repetition: draw n calibration factors and m test factors (lognormal), take
    the ``rank_fn(n, share)``-th smallest calibration factor, return the test share at or
    below it."""
    rng = np.random.default_rng(seed)
    cal = np.sort(rng.lognormal(0.3, 0.8, size=(reps, n)), axis=1)
    test = rng.lognormal(0.3, 0.8, size=(reps, m))
    k = rank_fn(n, share)
    factor = cal[:, k - 1] if k <= n else np.full(reps, math.inf)
    return (test <= factor[:, None]).mean(axis=1)


N_CAL, SHARE, REPS, M_TEST = 50, 0.9, 20_000, 200


def test_conformal_factor_covers_the_share_out_of_sample():
    """Split conformal: for continuous i.i.d. data the expected test share below the
    ceil((n+1)s)-th of n calibration values is k / (n + 1), which lies in
    [s, s + 1/(n + 1))."""
    cov = _coverage(conformal_rank, N_CAL, SHARE, REPS, M_TEST, seed=11)
    mean, se = float(cov.mean()), float(cov.std(ddof=1)) / math.sqrt(REPS)
    k = conformal_rank(N_CAL, SHARE)
    assert k == 46
    assert se < 0.0005
    assert abs(mean - k / (N_CAL + 1)) < 4 * se          # the exact expectation 46/51
    assert mean >= SHARE - 3 * se
    assert mean <= SHARE + 1 / (N_CAL + 1) + 3 * se
    # The library's function used per repetition gives the same factors as the
    # vectorised sort above (spot check a few repetitions).
    rng = np.random.default_rng(11)
    cal = rng.lognormal(0.3, 0.8, size=(REPS, N_CAL))
    for r in range(0, REPS, 4000):
        assert conformal_factor(cal[r], SHARE) == np.sort(cal[r])[k - 1]


def test_in_sample_quantile_falls_short():
    """The plain ceil(n s)-th value (in-sample quantile) covers about ceil(n s)/(n + 1) <
    s out of sample: why the experiment uses the conformal rank."""
    in_sample = lambda n, s: int(math.ceil(n * s - 1e-9))  # noqa: E731
    cov = _coverage(in_sample, N_CAL, SHARE, REPS, M_TEST, seed=11)
    mean, se = float(cov.mean()), float(cov.std(ddof=1)) / math.sqrt(REPS)
    assert in_sample(N_CAL, SHARE) == 45
    assert abs(mean - 45 / (N_CAL + 1)) < 4 * se
    assert mean < SHARE - 10 * se


# ---------------------------------------------------------------------------- arm doses


def test_policy_doses_scale_the_scan_not_the_prior():
    d = PolicyDoses(val_factor=np.array([2.0, 1.0, 3.0, 4.0]),
                    test_scan=np.array([0.5, 1.0, 2.0]),
                    test_prior=np.array([0.1, 0.0, 0.3]))
    np.testing.assert_allclose(d.test_dose(2.0), [1.1, 2.0, 4.3])
    np.testing.assert_allclose(d.test_dose(0.0), d.test_prior)
    # share 0.6: rank ceil(5 * 0.6) = 3 -> factor 3 (sorted 1, 2, 3, 4).
    assert conformal_factor(d.val_factor, 0.6) == 3.0
    assert guarantee_dose(d, 0.6) == pytest.approx(np.mean(3.0 * d.test_scan + d.test_prior), rel=1e-15)
    assert guarantee_dose(d, 0.6) == pytest.approx((1.6 + 3.0 + 6.3) / 3, rel=1e-12)
    # Unreachable share: infinite dose.
    assert guarantee_dose(d, 0.99) == math.inf
    # The same from thresholds and levels on one split (factor_i = threshold_i / level_i).
    level, prior = np.array([0.5, 1.0, 2.0, 0.25]), np.array([0.1, 0.0, 0.3, 0.2])
    same = PolicyDoses(d.val_factor, level, prior)
    assert stats.guarantee_mean_dose(d.val_factor * level, level, prior, 0.6) == \
        pytest.approx(guarantee_dose(same, 0.6), rel=1e-12)


# ------------------------------------------------------------------------------- bootstrap


def _weighted_reference(factors: np.ndarray, weights: np.ndarray, share: float) -> np.ndarray:
    return np.array([conformal_factor(np.repeat(factors, w), share) for w in weights])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(1, 12), share=st.floats(0.05, 1.0),
       with_inf=st.booleans())
def test_weighted_conformal_equals_conformal_of_the_repeated_sample(seed, n, share, with_inf):
    """A resample counting image i w_i times has the conformal factor of the sample
    with image i repeated w_i times."""
    rng = np.random.default_rng(seed)
    f = rng.lognormal(size=n)
    if with_inf:
        f[rng.integers(n)] = math.inf
    w = rng.integers(0, 4, size=(20, n))
    w[w.sum(axis=1) == 0, 0] = 1
    got = stats._weighted_conformal(f, w, share)
    np.testing.assert_array_equal(got, _weighted_reference(f, w, share))


def _two_arms(rng: np.random.Generator, n_val: int, n_test: int) -> tuple[PolicyDoses, PolicyDoses]:
    val = rng.lognormal(size=n_val)
    base_scan = rng.uniform(0.5, 2.0, size=n_test)
    base = PolicyDoses(val, base_scan, np.zeros(n_test))
    head = PolicyDoses(val.copy(), 0.5 * base_scan, np.zeros(n_test))
    return head, base


def test_bootstrap_of_an_exact_half_is_exactly_half():
    rng = np.random.default_rng(0)
    head, base = _two_arms(rng, 40, 30)
    val_pid, test_pid = np.repeat(np.arange(10), 4), np.repeat(np.arange(10), 3)
    out = bootstrap_ratios({"head": head, "base": base}, "head", val_pid, test_pid, 0.8, resamples=500, seed=1)
    assert out["base"]["finite"] == 1.0
    for key in ("ratio", "low", "high"):
        assert out["base"][key] == pytest.approx(0.5, abs=1e-12)
    # The head against itself: every resample's ratio is 1 (the same draw for every arm).
    for key in ("ratio", "low", "high"):
        assert out["head"][key] == pytest.approx(1.0, abs=1e-12)
    assert set(out) == {"head", "base"}


def _skewed_toy(patients: int = 10, per: int = 5):
    """Test patient 0 carries all of the head arm's dose (its images alike), the others
    almost none; the base arm doses everyone alike."""
    rng = np.random.default_rng(3)
    n = patients * per
    val = rng.lognormal(size=n)
    scan = np.full(n, 1e-6)
    scan[:per] = 1.0
    head = PolicyDoses(val, scan, np.zeros(n))
    base = PolicyDoses(val.copy(), np.ones(n), np.zeros(n))
    pid = np.repeat(np.arange(patients), per)
    return {"head": head, "base": base}, pid


def test_bootstrap_resamples_patients_not_images():
    arms, pid = _skewed_toy()
    by_patient = bootstrap_ratios(arms, "head", pid, pid, 0.8, resamples=2000, seed=5)["base"]
    # The same images, each its own "patient": image-level resampling.
    by_image = bootstrap_ratios(arms, "head", np.arange(len(pid)), np.arange(len(pid)), 0.8,
                                resamples=2000, seed=5)["base"]
    assert by_patient["finite"] == 1.0 and by_image["finite"] == 1.0
    point = (5 * 1.0 + 45 * 1e-6) / 50
    assert by_patient["ratio"] == pytest.approx(point, rel=1e-12) == by_image["ratio"]
    # Patient 0 is left out of 0.9^10 = 35% of patient resamples: the low end is the
    # near-zero dose of the others; image resampling almost always keeps some of its images.
    assert by_patient["low"] < 1e-4
    assert by_image["low"] > 0.02
    assert by_patient["low"] <= by_patient["ratio"] <= by_patient["high"]
    width_p = by_patient["high"] - by_patient["low"]
    width_i = by_image["high"] - by_image["low"]
    assert width_p > 1.5 * width_i
    assert width_p > 0.15     # wide next to the point ratio 0.1


def test_bootstrap_interval_brackets_the_point_and_is_deterministic():
    rng = np.random.default_rng(42)
    n_val, n_test = 60, 45
    arms = {name: PolicyDoses(rng.lognormal(0.0, 0.5, n_val), rng.uniform(0.2, 2.0, n_test),
                              rng.uniform(0.0, 0.05, n_test)) for name in ("head", "a", "b")}
    val_pid, test_pid = rng.integers(0, 15, n_val), rng.integers(0, 12, n_test)
    out = bootstrap_ratios(arms, "head", val_pid, test_pid, 0.8, resamples=1000, seed=7)
    for name, d in arms.items():
        r = out[name]
        assert r["low"] <= r["ratio"] <= r["high"]
        assert r["low"] < r["high"] or name == "head"
        assert r["finite"] == 1.0
        assert r["ratio"] == pytest.approx(guarantee_dose(arms["head"], 0.8) / guarantee_dose(d, 0.8), rel=1e-12)
    again = bootstrap_ratios(arms, "head", val_pid, test_pid, 0.8, resamples=1000, seed=7)
    assert again == out
    other = bootstrap_ratios(arms, "head", val_pid, test_pid, 0.8, resamples=1000, seed=8)
    assert other["a"]["low"] != out["a"]["low"] or other["a"]["high"] != out["a"]["high"]
    assert other["a"]["ratio"] == out["a"]["ratio"]     # the point ratio does not resample


def test_bootstrap_reports_unreachable_resamples():
    """With the share at n/(n+1) only resamples that keep n images' worth of ranks are
    finite: ``finite`` says how many, and inf ratios are not in the interval."""
    rng = np.random.default_rng(9)
    n = 9
    head = PolicyDoses(rng.lognormal(size=n), np.ones(5), np.zeros(5))
    base = PolicyDoses(head.val_factor.copy(), 2 * np.ones(5), np.zeros(5))
    # share 0.95 with 9 validation images: rank 10 > 9, never finite in any resample of 9.
    out = bootstrap_ratios({"head": head, "base": base}, "head", np.arange(n), np.arange(5), 0.95,
                           resamples=200, seed=0)
    assert out["base"]["finite"] == 0.0
    assert math.isnan(out["base"]["low"]) and math.isnan(out["base"]["high"])


# ------------------------------------------------------------------------------ log-linear fit


@settings(max_examples=60, deadline=None)
@given(a=st.floats(-5, 5), b=st.floats(-0.3, 0.3))
def test_fit_log_linear_recovers_noise_free_parameters(a, b):
    x = np.linspace(8.0, 40.0, 25)     # water-equivalent diameters in cm
    a_hat, b_hat = fit_log_linear(x, np.exp(a + b * x))
    assert a_hat == pytest.approx(a, abs=1e-9)
    assert b_hat == pytest.approx(b, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(a=st.floats(-5, 5), b=st.floats(-0.3, 0.3), seed=st.integers(0, 2 ** 32 - 1))
def test_fit_log_linear_with_small_multiplicative_noise(a, b, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(8.0, 40.0, 400)
    y = np.exp(a + b * x) * np.exp(0.02 * rng.standard_normal(400))
    a_hat, b_hat = fit_log_linear(x, y)
    # Standard errors: b about 0.02 / (sd(x) sqrt(n)) = 1e-4, a about 3e-3.
    assert b_hat == pytest.approx(b, abs=1e-3)
    assert a_hat == pytest.approx(a, abs=0.03)


def test_fit_log_linear_ignores_unusable_points():
    x = np.array([10.0, 20.0, 30.0])
    y = np.exp(-1.0 + 0.1 * x)
    clean = fit_log_linear(x, y)
    xj = np.concatenate([x, [15.0, 25.0, 35.0, 12.0, np.nan]])
    yj = np.concatenate([y, [np.inf, 0.0, -2.0, np.nan, 5.0]])
    a, b = fit_log_linear(xj, yj)
    assert (a, b) == pytest.approx(clean, abs=1e-12)
    assert (a, b) == pytest.approx((-1.0, 0.1), abs=1e-12)


@pytest.mark.parametrize("x, y", [
    ([1.0], [2.0]),
    ([1.0, 2.0, 3.0], [2.0, np.inf, 0.0]),          # one usable point
    ([1.0, 2.0, 3.0], [-1.0, 0.0, np.nan]),         # none
    ([4.0, 4.0, 4.0], [1.0, 2.0, 3.0]),             # no spread in x
    ([], []),
])
def test_fit_log_linear_refuses_too_few_points(x, y):
    with pytest.raises(ValueError, match="at least two points"):
        fit_log_linear(np.array(x), np.array(y))
