"""The input guard (alara.guard): the training range, the calibrated distance, the
fallback that never lowers a dose, and `alara train` / `alara evaluate` on patients far
outside the training population."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from alara.guard import FEATURES, GuardedPolicy, InputGuard, fit_guard, prior_features
from alara.interfaces import PriorInfo
from alara.data.synth import small_geometry
from alara.size import MU_WATER


def _features(n, seed=0, wed=(14.0, 24.0)):
    g = torch.Generator().manual_seed(seed)
    w = wed[0] + (wed[1] - wed[0]) * torch.rand(n, generator=g, dtype=torch.float64)
    area = 3.0 * w ** 2 + torch.randn(n, generator=g, dtype=torch.float64)
    density = 0.9 + 0.05 * torch.rand(n, generator=g, dtype=torch.float64)
    log_n0 = 4.0 + 0.2 * (w - 20) + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    return torch.stack([w, area, density, log_n0], 1)


def test_inside_the_range_the_distance_is_zero_and_validation_sets_the_threshold():
    train, val = _features(200), _features(50, seed=1)
    guard = fit_guard(train, val)
    assert guard.features == list(FEATURES)
    assert torch.all(guard.distance(train) == 0)
    assert guard.threshold >= float(guard.distance(val).max()) and guard.threshold >= 0.5
    assert not guard.outside(val).any()                 # validation never falls back, by construction
    far = train[:3].clone()
    far[:, 0] += torch.tensor([10.0, -10.0, 0.0])       # much larger, much smaller, same size
    far[2, 2] = 1.8                                     # same size, bone-dense anatomy
    assert guard.outside(far).tolist() == [True, True, True]
    # Distance in training standard deviations of the feature furthest out.
    sd = train[:, 0].std()
    assert float(guard.distance(far)[0]) == pytest.approx(float((far[0, 0] - train[:, 0].max()) / sd), rel=1e-9)


def test_fallback_dominates_the_policy_on_training_inputs_and_grows_with_size():
    train = _features(300)
    guard = fit_guard(train, None, strength=1.25)
    n0 = torch.exp(train[:, 3]).unsqueeze(-1).expand(-1, 5)
    fb = guard.fallback_n0(n0, train[:, 0])
    assert torch.all(fb >= n0)                           # never lowers a dose
    # The envelope touches the policy somewhere (the smallest constant above it).
    env = guard.envelope_n0 * torch.exp(guard.slope_per_cm * (train[:, 0] - guard.wed_ref_cm))
    assert float((env / n0[:, 0]).min()) == pytest.approx(1.0, rel=1e-9)
    big = guard.fallback_n0(torch.ones(2, 5, dtype=torch.float64), torch.tensor([30.0, 40.0], dtype=torch.float64))
    assert float(big[1, 0] / big[0, 0]) == pytest.approx(math.exp(10 * 1.25 * MU_WATER / 100), rel=1e-9)


def test_bad_guard_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"features \[N >= 2, 4\]"):
        fit_guard(torch.zeros(1, 4), None)
    bad = _features(10)
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite feature"):
        fit_guard(bad, None)
    with pytest.raises(ValueError, match="strength must be >= 1"):
        fit_guard(_features(10), None, strength=0.5)
    path = tmp_path / "guard.json"
    path.write_text('{"low": [0]}')
    with pytest.raises(ValueError, match="not a valid input guard"):
        InputGuard.load(path)
    guard = fit_guard(_features(10), None)
    guard.save(path)
    assert InputGuard.load(path) == guard
    d = guard.to_json()
    for bad in ({"low": d["low"][:2]}, {"scale": [0.0] * 4}, {"threshold": float("nan")}, {"envelope_n0": -1.0}):
        path.write_text(json.dumps({**d, **bad}))
        with pytest.raises(ValueError, match="not a valid input guard"):
            InputGuard.load(path)
    with pytest.raises(ValueError, match=r"guard features must be \[B, 4\]"):
        guard.distance(torch.zeros(3, 2))


def _disc(n, radius_m, density, size=32):
    """Water-like discs of ``density`` times water's attenuation (x units: mu / mu_max)."""
    from alara.geometry import LODOPAB_MU_MAX

    g = small_geometry(size, 12)
    xs, ys = g.grid.coordinates()
    inside = (xs ** 2 + ys ** 2 <= radius_m ** 2).to(torch.float64)
    return (density * MU_WATER / LODOPAB_MU_MAX * inside)[None, None].expand(n, 1, -1, -1).float().contiguous(), g


def test_guarded_policy_falls_back_only_outside():
    from alara_builtin.policies import FixedPolicy

    x_small, g = _disc(4, 0.08, 1.0)
    x_big, _ = _disc(2, 0.125, 1.6)
    base = FixedPolicy.from_params(n0=300.0)
    prior = PriorInfo(image=torch.cat([x_small, x_big]))
    f = prior_features(PriorInfo(image=x_small), base(PriorInfo(image=x_small), g), g)
    f = torch.cat([f, f + torch.tensor([[0.5, 1.0, 0.0, 0.0]], dtype=torch.float64)])
    guard = fit_guard(f, None)
    policy = GuardedPolicy(base, guard)
    n0 = policy(prior, g)
    assert policy.last_fallback.tolist() == [False] * 4 + [True] * 2
    assert torch.all(n0[:4] == 300.0) and torch.all(n0[4:] > 300.0)


CONFIG = """
[data]
root = "{root}"

[prior]
name = "prescan"
params = {{ relative_dose = 0.01, filter = "hann", frequency_scaling = 0.5 }}

[dose_policy]
name = "resnet18"
params = {{ mode = "scalar", input_size = 32, norm = "group", init_n0 = 256.0 }}

# Plain FBP: its quality depends on the dose alone, so "the fallback dose reaches q" is a
# statement about dose, not about a reconstructor trained on other patients.
[reconstructor]
name = "fbp"
params = {{ filter = "hann", frequency_scaling = 0.8 }}

[iq_metric]
name = "psnr"

[objective]
target = 24.0

[train]
warmup_steps = 0
steps = 6
batch_size = 2
checkpoint_every = 8
log_every = 4
"""


def _population(root, scale, density, seed):
    """Synthetic patients ``scale`` times the size (the body truncated by the field of
    view, as real wide patients are) and ``density`` times the attenuation of the built-in
    ones: one training, one validation and two test patients."""
    from alara.data import synth
    from alara.data.synth import generate_dataset

    orig, hu_to_x = synth.sample_patient, synth.hu_to_x

    def patient(seed, pid=0, size=None):
        p = orig(seed, pid, 0.0 if scale < 1 else 1.0)
        return dataclasses.replace(p, half_width=scale * p.half_width, half_depth=scale * p.half_depth,
                                   fat=scale * p.fat)

    mp = pytest.MonkeyPatch()
    mp.setattr(synth, "sample_patient", patient)
    mp.setattr(synth, "hu_to_x", lambda hu: density * hu_to_x(hu))
    try:
        generate_dataset(root, patients=(1, 1, 2), seed=seed, **SMALL)
    finally:
        mp.undo()


SMALL = dict(slices_per_patient=2, geometry=small_geometry(32, 24), observations=False, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small trained run, and patients unlike its training population: small children
    (0.45 times the smallest body) and large patients of bone-like density (1.7 times the
    largest body, 1.8 times the attenuation everywhere)."""
    from alara.cli import main
    from alara.data.synth import generate_dataset

    base = tmp_path_factory.mktemp("guard")
    generate_dataset(base / "data", patients=(6, 3, 2), train_sizes="stratified", **SMALL)
    _population(base / "children", 0.45, 1.0, seed=5)
    _population(base / "giants", 1.7, 1.8, seed=6)
    config = base / "run.toml"
    config.write_text(CONFIG.format(root=base / "data"))
    run = base / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    return run, base


def test_train_writes_the_guard_calibrated_on_validation(trained):
    run, _ = trained
    guard = InputGuard.load(run / "guard.json")
    assert guard.fitted_on["threshold"].startswith("validation split")
    assert guard.threshold >= 0.5 and guard.envelope_n0 > 0


def _evaluate(run, data, out, capsys):
    from alara.cli import main

    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(data), "--split", "test", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    header, *rows = (out / "results.csv").read_text().splitlines()
    cols = header.split(",")
    table = {c: [r.split(",")[i] for r in rows] for i, c in enumerate(cols)}
    return summary, table, text


@pytest.mark.parametrize("population", ["children", "giants"])
def test_evaluate_falls_back_on_patients_far_outside_and_says_so(trained, capsys, population):
    run, base = trained
    summary, table, text = _evaluate(run, base / population, base / f"eval_{population}", capsys)
    g = summary["guard"]
    assert g["images"] == 4 and g["fallback_images"] == 4
    assert "4 of 4 images lie outside the training inputs' range" in text
    assert table["fallback"] == ["1"] * 4 and all(float(d) > g["threshold"] for d in table["ood_distance"])
    # The fallback never lowers a dose: against the same run without its guard.
    (run / "guard.json").rename(run / "guard.off")
    try:
        raw, raw_table, _ = _evaluate(run, base / population, base / f"raw_{population}", capsys)
    finally:
        (run / "guard.off").rename(run / "guard.json")
    assert "guard" not in raw
    dose, raw_dose = (np.array(t["relative_dose"], dtype=float) for t in (table, raw_table))
    assert np.all(dose >= raw_dose * (1 - 1e-6))
    if population == "children":
        # Smaller than any training patient: at least the policy's own dose, and q is met.
        assert g["fallback_share_met"] == 1.0
    else:
        # Larger and denser: far more dose than the policy would have given, and far better
        # images; whether q is reached is reported (the pre-scan is starved of photons
        # behind 9 attenuation lengths, so it under-reads such a patient's size).
        assert dose.mean() > 10 * raw_dose.mean()
        assert summary["metrics"]["psnr"]["mean"] > raw["metrics"]["psnr"]["mean"] + 3
        assert g["fallback_share_met"] is not None and "reach q" in text


def test_evaluate_on_its_own_population_does_not_fall_back(trained):
    from alara.cli import main

    run, base = trained
    assert main(["evaluate", str(run), "--split", "validation", "--out", str(base / "eval_val")]) == 0
    g = json.loads((base / "eval_val" / "summary.json").read_text())["guard"]
    assert g["fallback_images"] == 0 and g["fallback_share_met"] is None
