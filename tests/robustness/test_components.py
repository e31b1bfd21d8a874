"""Policies, priors, simulator, reconstructors and metrics: numbers that pass a range check
but are not finite (inf passes ``not x > 0``, NaN fails every comparison) and physically
meaningless parameters are refused by each built-in ``Config``, directly and from a
config file, with the parameter named and the valid range given."""

from __future__ import annotations

import math

import pytest
import torch

from alara import plugins

INF, NAN = math.inf, math.nan

# (kind, name, params, what the message must say)
CASES = [
    ("dose_policy", "fixed", {"n0": INF}, "n0 must be positive and finite, got inf (photons per bin"),
    ("dose_policy", "fixed", {"budget": INF}, "budget must be a finite positive relative dose"),
    ("dose_policy", "tcm", {"n0_mean": INF}, "n0_mean must be positive and finite"),
    ("dose_policy", "tcm", {"mu_max": -81.35858}, "mu_max must be positive and finite, got -81.35858 (attenuation scale in 1/m; LoDoPaB: 81.35858)"),
    ("dose_policy", "tcm", {"strength": NAN}, "strength must be >= 0 and finite, got nan (0: no modulation"),
    ("dose_policy", "resnet18", {"init_n0": INF}, "init_n0 must be positive and finite"),
    ("dose_policy", "resnet18", {"max_log_change": INF}, "max_log_change must be positive and finite"),
    ("dose_policy", "resnet18", {"harmonics": 2.0}, "harmonics must be >= 0 (a whole number), got 2.0"),
    ("prior", "prescan", {"relative_dose": INF}, "relative_dose must be positive and finite, got inf (1.0 is a full LoDoPaB scan's dose)"),
    ("prior", "prescan", {"view_step": 1.5}, "view_step must be >= 1 (a whole number)"),
    ("prior", "scouts", {"n0": INF}, "n0 must be positive and finite"),
    ("prior", "scouts", {"angles_deg": (0.0, INF)}, "angles_deg must be two finite angles in degrees"),
    ("prior", "prior_exam", {"noise_std": INF}, "noise_std must be >= 0 and finite"),
    ("prior", "prior_exam", {"max_shift_px": NAN}, "max_shift_px must be >= 0 and finite"),
    ("simulator", "poisson", {"mu_max": -1.0}, "mu_max must be a finite positive number, got -1.0"),
    ("simulator", "poisson", {"min_count": INF}, "min_count must be a finite positive number"),
    ("simulator", "poisson", {"electronic_std": NAN}, "electronic_std must be a finite number >= 0"),
    ("iq_metric", "psnr", {"data_range": INF}, "data_range must be a positive number or 'per_image', got inf"),
    ("iq_metric", "ssim", {"sigma": INF}, "sigma must be positive and finite"),
    ("iq_metric", "ssim", {"k2": -0.03}, "k2 must be positive and finite, got -0.03"),
    ("reconstructor", "fbp", {"frequency_scaling": NAN}, "frequency_scaling must be in (0, 1], got nan"),
    ("reconstructor", "fbp_unet", {"scales": 2.0}, "scales must be >= 1 (a whole number), got 2.0"),
]
IDS = [f"{name}-{next(iter(p))}" for _, name, p, _ in CASES]


@pytest.mark.parametrize("kind, name, params, message", CASES, ids=IDS)
def test_config_refuses_non_finite_and_meaningless_values(kind, name, params, message):
    cls = plugins.get_registry(kind).get(name)
    with pytest.raises(ValueError) as info:
        cls.Config(**params)
    assert message in str(info.value)


@pytest.mark.parametrize("kind, name, params, message", CASES, ids=IDS)
def test_config_file_values_are_refused_with_their_location(ws, kind, name, params, message):
    """The same values through a config file: the error names the file, section and key."""
    from alara.config import load_components

    key, value = next(iter(params.items()))
    # TOML writes inf and nan as Python's repr does; tuples are arrays
    text = f"[{', '.join(map(repr, value))}]" if isinstance(value, tuple) else repr(value)
    path = ws.root / "bad.toml"
    ws.allow_changes_under("bad.toml")
    path.write_text(f'[{kind}]\nname = "{name}"\n[{kind}.params]\n{key} = {text}\n')
    with pytest.raises(ValueError) as info:
        load_components(path, kinds=[kind])
    text = str(info.value)
    assert "bad.toml" in text and f"[{kind}" in text and f"key '{key}'" in text


def test_non_finite_dose_reaching_the_simulator_is_refused():
    sim = plugins.create("simulator", "poisson")
    sino = torch.zeros(2, 1, 4, 5)
    for bad in (NAN, INF, -1.0):
        n0 = torch.full((2, 4), 100.0)
        n0[1, 2] = bad
        for training in (True, False):
            sim.train(training)
            with pytest.raises(ValueError, match=r"n0 must be positive and finite on every view "
                                                 r"\(1 of 8 values are not\): check the dose policy"):
                sim(sino, n0)


def test_non_finite_sinogram_reaching_the_simulator_is_refused():
    sim = plugins.create("simulator", "poisson").train()
    sino = torch.zeros(1, 1, 3, 4)
    sino[0, 0, 1, 1] = NAN
    with pytest.raises(ValueError, match="the sinogram has 1 NaN or inf values: check the image"):
        sim(sino, torch.full((1, 3), 10.0))


def test_policy_n0_is_checked_after_its_budget():
    """A proposal that is finite but overflows once scaled to the budget is refused."""
    from alara.geometry import ImageGrid, ParallelBeam, uniform_angles
    from alara.interfaces import PriorInfo

    geom = ParallelBeam(ImageGrid.square(8, 0.26), uniform_angles(4), 12, 0.03)
    policy = plugins.create("dose_policy", "fixed", {"n0": 1e-300, "budget": 1e300})
    prior = PriorInfo(image=torch.zeros(1, 1, 8, 8, dtype=torch.float64),
                      dose=torch.zeros(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="once scaled to its budget .* not positive and finite"):
        policy(prior, geom)
