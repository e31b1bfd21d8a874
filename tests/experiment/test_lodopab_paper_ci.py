"""The paper's configuration (configs/lodopab_paper.toml) cannot rot: the whole
`alara experiment` path (both trainings, baselines tuned, calibration, test scoring,
report) runs at the full LoDoPaB geometry (362 x 362, 1000 views, 513 bins) on a few
synthetic slices written at that geometry, with a couple of training steps; and its data
directory comes from the environment or --set, never from a fixed path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alara.cli import main
from alara.data.synth import generate_dataset
from alara.geometry import lodopab

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "lodopab_paper.toml"

#: A couple of steps at batch 2, one noise realisation, small grids: the path, not the numbers.
REDUCED = ["train.warmup_steps=2", "train.steps=2", "train.batch_size=2", "train.checkpoint_every=2",
           "train.log_every=1", "train.num_workers=0", "experiment.share=0.5", "experiment.scout_n0=[256.0]",
           "experiment.aec_strengths=[0.0, 1.0]", "experiment.bootstrap=50", "experiment.examples=1",
           "experiment.dose_search=[0.0625, 1.0]", "experiment.dose_limits=[0.0625, 4.0]",
           # Four steps leave DIVal's plain U-Net at about 7 dB; its residual form starts as
           # the FBP (34-36 dB noiseless here), so q = 33 dB is reachable and the search,
           # tuning and size fit all run.
           "reconstructor.params.residual=true", "reconstructor.params.use_sigmoid=false",
           "objective.target=33.0",
           # The calibrated oracle and aec_joint are covered by the 64-pixel CI run; here they
           # would triple the full-geometry responses.
           "experiment.oracle_realisations=0", "experiment.policy_fit_steps=2", "experiment.policy_fit_batch=2",
           'experiment.baselines=["fixed", "tcm", "aec", "size", "aec_adapted"]']


@pytest.fixture(scope="module")
def lodopab_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("lodopab")
    generate_dataset(root, patients=(2, 3, 3), slices_per_patient=1, geometry=lodopab(), observations=False,
                     overwrite=True, progress=False, seed=3)
    return root


def test_paper_config_runs_end_to_end_at_full_geometry(lodopab_like, tmp_path, monkeypatch):
    monkeypatch.setenv("ALARA_LODOPAB", str(lodopab_like))
    out = tmp_path / "run"
    args = ["experiment", str(CONFIG), "--out", str(out), "-q"]
    for o in REDUCED:
        args += ["--set", o]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"] == str(lodopab_like)
    assert m["validation_images"] == 3 and m["test_images"] == 3
    assert m["dose_units"]["views"] == 1000 and m["dose_units"]["bins"] == 513
    # Relative dose 1 is a full LoDoPaB slice here.
    assert m["dose_units"]["fraction_of_a_lodopab_slice_at_relative_dose_1"] == pytest.approx(1.0)
    assert set(m["policies"]) == {"fixed", "tcm", "aec", "size", "aec_adapted", "learned_joint", "learned_shared",
                                  "learned_tilted"}
    for p in m["policies"].values():
        assert p["test"]["relative_dose"]["mean"] > 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["reconstructor"]["params"]["channels"] == [32, 32, 64, 64, 128]   # DIVal's U-Net ran
    assert (out / "report.md").read_text().startswith("# End2end-ALARA")


def test_missing_data_root_says_how_to_fetch(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ALARA_LODOPAB", raising=False)
    assert main(["experiment", str(CONFIG), "--out", str(tmp_path / "run"), "-q"]) != 0
    err = capsys.readouterr().err
    assert "alara data fetch lodopab" in err and "ALARA_LODOPAB" in err
    monkeypatch.setenv("ALARA_LODOPAB", str(tmp_path / "nowhere"))
    assert main(["experiment", str(CONFIG), "--out", str(tmp_path / "run2"), "-q"]) != 0
    err = capsys.readouterr().err
    assert "nowhere: data directory not found" in err and "alara data fetch lodopab" in err
