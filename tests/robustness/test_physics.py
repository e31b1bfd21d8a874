"""Physical validity in one place (alara.noise, the dose helpers, the data checker):
numbers without physical meaning are refused with the reason, never turned into data."""

from __future__ import annotations

import json
import math

import pytest
import torch

from alara.interfaces import PriorInfo, relative_dose, scale_to_budget
from alara.noise import MIN_COUNT, postlog_noise

SINOGRAM = torch.linspace(0, 0.05, 64, dtype=torch.float32).reshape(1, 1, 8, 8).contiguous()


@pytest.mark.parametrize("n0", ["0.05", "0.1"])
def test_synth_below_the_minimum_count_is_refused(ws, cli, n0):
    r = cli("data", "synth", "out", "-q", "--image-size", "16", "--n-angles", "12", "--n0", n0)
    assert r.rc == 2
    assert f"argument --n0: must be above the noise model's minimum count {MIN_COUNT:g}" in r.line
    assert not (ws.root / "out").exists()


def test_library_writer_below_the_minimum_count_is_refused(tmp_path, write_kwargs):
    from alara.data.synth import generate_dataset

    with pytest.raises(ValueError, match=r"n0 \(--n0\) = 0.01 photons per bin is not above the noise model's "
                                         r"minimum count 0.1"):
        generate_dataset(tmp_path / "d", n0=0.01, **write_kwargs)
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_checker_flags_observations_below_the_minimum_count(ws, cli):
    meta = ws.dataset / "alara_dataset.json"
    doc = json.loads(meta.read_text())
    doc["n0"] = 0.01
    meta.write_text(json.dumps(doc))
    ws.allow_changes_under("dataset/alara_dataset.json")
    r = cli("data", "check", "-q", "dataset")
    assert r.rc == 1
    assert "metadata n0 = 0.01 photons per bin is not above the noise model's minimum count 0.1" in r.out


@pytest.mark.parametrize("n0", [1e19, 1e20, 1e25])
def test_poisson_sampler_is_accurate_at_huge_doses(n0):
    """torch.poisson overflows above 2^63 counts: the sampler must not return a constant."""
    y = postlog_noise(SINOGRAM, torch.full((1, 8), n0), sampler="poisson",
                      generator=torch.Generator().manual_seed(0))
    assert (y - SINOGRAM).abs().max() < 1e-6
    assert y.unique().numel() == SINOGRAM.unique().numel()


def test_poisson_sampler_unchanged_at_ordinary_doses():
    """The normal approximation draws nothing below its threshold: seeded results stay."""
    lam = 4096 * torch.exp(-SINOGRAM.double() * 81.35858)
    want = -torch.log(torch.poisson(lam, generator=torch.Generator().manual_seed(1)).clamp(min=MIN_COUNT) / 4096)
    y = postlog_noise(SINOGRAM, torch.full((1, 8), 4096.0), sampler="poisson",
                      generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(y, (want / 81.35858).float())


@pytest.mark.parametrize("differentiable", [False, True])
def test_negative_line_integrals_are_refused(differentiable):
    bad = SINOGRAM.clone()
    bad[0, 0, 0, 0] = -2.0
    with pytest.raises(ValueError, match=r"1 negative line integrals \(min -2\): attenuation cannot be negative"):
        postlog_noise(bad, torch.full((1, 8), 4096.0), differentiable=differentiable)


def test_budget_of_an_all_zero_shape_is_refused():
    with pytest.raises(ValueError, match="an all-zero angular shape has no dose to scale"):
        scale_to_budget(torch.zeros(2, 4), 1.0)


@pytest.mark.parametrize("budget", [-1.0, 0.0, math.nan, math.inf])
def test_budget_must_be_positive_and_finite(budget):
    with pytest.raises(ValueError, match="dose budget must be a finite relative dose > 0"):
        scale_to_budget(torch.ones(2, 4), budget)


@pytest.mark.parametrize("dose", [-100.0, math.nan])
def test_negative_or_nan_prior_dose_is_refused(dose):
    with pytest.raises(ValueError, match="the prior's dose must be finite and >= 0"):
        relative_dose(torch.full((1, 4), 4096.0), torch.tensor([dose]))
    with pytest.raises(ValueError, match="the prior's dose must be finite and >= 0"):
        PriorInfo(image=torch.zeros(1, 1, 4, 4), dose=torch.tensor([dose]))
