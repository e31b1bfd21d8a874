"""The reduced but real experiment (configs/experiment_ci.toml) end to end, as CI runs it:
data, both trainings, calibration, evaluation and the report; report.md's numbers are
metrics.json's; a second run reuses every finished stage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from alara.cli import main

from .conftest import run_experiment_cli

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "experiment_ci.toml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_experiment_cli(CONFIG, tmp_path_factory.mktemp("exp"))


def test_report_files_and_keys(run):
    out, _ = run
    for name in ("report.md", "metrics.json", "results_test.csv", "config.json", "environment.json",
                 "calibration.json", "evaluation.json", "examples.npz"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    for key in ("headline", "policies", "oracle", "slope", "figures", "wall_seconds", "timings", "protocol",
                "dose_units", "tuning", "bootstrap"):
        assert key in m, key
    assert set(m["policies"]) == {"fixed", "tcm", "aec", "size", "aec_adapted", "aec_joint", "learned_joint",
                                  "learned_shared", "learned_tilted", "learned_hinge", "learned_fit",
                                  "learned_warm_start"}
    for p in m["policies"].values():
        assert p["validation_share"] >= 0.85          # the guarantee holds (about) where it was set
        assert 0 < p["test"]["relative_dose"]["mean"] < 50
        assert 0 <= p["test"]["share_met"] <= 1
        assert {"mean", "std", "p5", "min"} <= set(p["test"]["psnr"])
    for fig in m["figures"].values():
        assert (out / fig).is_file() and (out / fig).stat().st_size > 1000
    h = m["headline"]
    assert set(h["dose_ratio_vs"]) == {"fixed", "tcm", "aec", "size", "aec_adapted", "aec_joint"}
    for arm, (lo, hi) in h["dose_ratio_ci95"].items():
        assert lo <= h["dose_ratio_vs"][arm] + 1e-9 and h["dose_ratio_vs"][arm] <= hi + 1e-9
    # Scouts cost dose: tcm, aec and size pay for them, fixed has no prior.
    assert m["policies"]["fixed"]["prior"] == "none"
    assert m["policies"]["tcm"]["prior"] == "scouts"
    # What validation chose is in the record, on the grids the config gave.
    assert m["policies"]["aec"]["tuned"]["strength"] in (0.0, 0.5, 1.0)
    assert m["policies"]["aec"]["tuned"]["scout_n0"] in (128.0, 512.0)
    assert m["policies"]["fixed"]["tuned"] == {}
    # AEC tuned again with End2end-ALARA's joint reconstructor: the same grid, its own choice.
    assert m["policies"]["aec_joint"]["reconstructor"] == "joint" and m["policies"]["aec_joint"]["policy"] == "aec"
    assert m["policies"]["aec_joint"]["tuned"]["strength"] in (0.0, 0.5, 1.0)
    assert m["tuning"]["aec_joint"]["split"] == "validation" and len(m["tuning"]["aec_joint"]["grid"]) == len(
        m["tuning"]["aec"]["grid"])
    # The adapted AEC: the tuned AEC's settings, a reconstructor of its own (the shared one
    # fine-tuned for the joint phase's 10 steps), its own factor and its own oracle.
    p = m["policies"]["aec_adapted"]
    assert p["tuned"] == m["policies"]["aec"]["tuned"] and p["reconstructor"] == "aec_adapted"
    assert p["calibration_factor"] != m["policies"]["aec"]["calibration_factor"]
    assert "aec_adapted" in m["oracle"] and m["timings"]["training_runs"]["aec_adapted"]["training"] > 0
    assert torch.load(sorted((out / "aec_adapted" / "checkpoints").glob("*.pt"))[-1], weights_only=False)["step"] == 10
    assert "slope_per_cm" in m["policies"]["size"]["tuned"]
    assert m["oracle"]["test_clamped"] == 0 and m["oracle"]["test_dose"] > 0
    # End2end-ALARA's size-tilted variant: its tilt from the configured grid, chosen on
    # validation, and its ratios with intervals beside the plain policy's.
    v = h["variants"]["learned_tilted"]
    assert v["tuned"]["tilt_per_cm"] in (0.0, 0.1) and m["tuning"]["learned_tilted"]["split"] == "validation"
    assert set(v["dose_ratio_ci95"]) == {"fixed", "tcm", "aec", "size", "aec_adapted", "aec_joint"}
    # The ablation: a row per learned arm, each with its ratio to the tuned AEC and the size
    # control and an interval around it; the warm-start row was trained in its own folder
    # with its own reconstructor (and its own oracle); the paper row is the default itself.
    rows = {r["arm"]: r for r in m["ablation"]}
    assert set(rows) == {"learned_joint", "learned_shared", "learned_tilted", "learned_hinge", "learned_fit",
                         "learned_warm_start"}
    for r in rows.values():
        assert r["vs_aec_ci95"][0] <= r["vs_aec"] <= r["vs_aec_ci95"][1]
        assert r["vs_size_ci95"][0] <= r["vs_size"] <= r["vs_size_ci95"][1]
    assert rows["learned_warm_start"]["training_seconds"] > rows["learned_fit"]["training_seconds"] > 0
    assert m["policies"]["learned_warm_start"]["reconstructor"] == "warm_start" and "warm_start" in m["oracle"]
    assert (out / "learned_warm_start" / "policy_fit.pt").is_file() and not (out / "learned_paper").exists()
    # The refit (the default): End2end-ALARA's policy refitted after its joint training
    # (saved with the step it followed); the hinge's own policy is the row learned_hinge,
    # with the same joint reconstructor, and it costs the training without the refit.
    refit = torch.load(out / "learned" / "policy_refit.pt", weights_only=True)
    assert refit["after_step"] == 10 and refit["policy"]
    assert m["policies"]["learned_hinge"]["reconstructor"] == "joint"
    assert "refitted" in m["policies"]["learned_joint"]["label"]
    assert 0 < rows["learned_hinge"]["training_seconds"] < rows["learned_joint"]["training_seconds"]
    assert m["policies"]["learned_hinge"]["calibration_factor"] != m["policies"]["learned_joint"]["calibration_factor"]
    # The calibrated oracle of each reconstructor: thresholds from 4 draws of a stream
    # nobody scores, one factor set on validation, scored on the test split's own draws.
    for o in (m["oracle"], m["oracle"]["joint"]):
        c = o["calibrated"]
        assert c["realisations"] == 4 and c["dose"] > 0 and 0 <= c["share_met"] <= 1 and c["factor"] > 0
        assert 0 < c["threshold_noise_sd"] < 1
    assert m["headline"]["ratio_vs_calibrated_oracle"] == pytest.approx(
        m["headline"]["dose"] / m["oracle"]["joint"]["calibrated"]["dose"])
    assert m["validation_images"] == 15 and m["test_images"] == 15
    assert m["validation_patients"] == 5 and m["test_patients"] == 5
    u = m["dose_units"]
    assert u["photons_per_slice_at_relative_dose_1"] == 4096 * 30 * u["bins"]
    assert {r["chosen_on"] for r in m["protocol"]} >= {"validation"}
    assert all("test" not in r["chosen_on"] or "earlier" in r["chosen_on"] for r in m["protocol"])


def test_report_numbers_are_metrics_json(run):
    out, _ = run
    m = json.loads((out / "metrics.json").read_text())
    text = (out / "report.md").read_text()
    h = m["headline"]
    first = text.splitlines()[2]
    assert f"End2end-ALARA uses {h['dose']:.3f} of LoDoPaB's dose" in first
    for arm, ratio in h["dose_ratio_vs"].items():
        assert f"{ratio:.2f}x {arm}" in first
    for arm, p in m["policies"].items():
        d = p["test"]["relative_dose"]
        row = next(line for line in text.splitlines() if line.startswith(f"| {p['label']} |"))
        assert f"| {d['mean']:.3f} | {d['median']:.3f} |" in row
        assert f"{100 * p['test']['share_met']:.1f}% |" in row
    assert re.search(rf"needs {h['oracle_ratio_vs_fixed']:.2f}x the fixed dose", text)
    for r in m["ablation"]:
        row = next(line for line in text.splitlines() if line.startswith(f"| {r['label']} | {r['dose']:.4f} |"))
        assert f"{r['vs_aec']:.2f}" in row and f"{100 * r['test_share']:.1f}%" in row


def test_second_run_reuses_every_stage(run, capsys):
    out, args = run
    before = (out / "metrics.json").read_text()
    capsys.readouterr()
    assert main(args) == 0
    log = capsys.readouterr()
    text = log.out + log.err
    assert "calibration.json: already done" in text and "evaluation.json: already done" in text
    after = json.loads((out / "metrics.json").read_text())
    assert after["headline"] == json.loads(before)["headline"]


def test_refit_as_an_ablation_row(tmp_path):
    """With policy_refit off, the refit is the ablation row learned_refit (a refitted copy,
    End2end-ALARA's own policy left as the hinge trained it); a rerun reuses every stage."""
    folder = tmp_path
    out = folder / "run"
    args = ["experiment", str(CONFIG), "--out", str(out), "-q", "--set", f"experiment.data_cache=\"{folder / 'cache'}\"",
            "--set", "experiment.policy_refit=false", "--set", 'experiment.ablation=["refit"]',
            "--set", 'experiment.baselines=["fixed", "aec"]']
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["policies"]) == {"fixed", "aec", "learned_joint", "learned_shared", "learned_tilted", "learned_refit"}
    joint, refit = m["policies"]["learned_joint"], m["policies"]["learned_refit"]
    assert "refitted" not in joint["label"] and refit["reconstructor"] == "joint"
    assert joint["calibration_factor"] != refit["calibration_factor"]
    rows = {r["arm"]: r for r in m["ablation"]}
    assert rows["learned_refit"]["training_seconds"] > rows["learned_joint"]["training_seconds"] > 0
    assert torch.load(out / "learned" / "policy_refit.pt", weights_only=True)["after_step"] == 10
    assert main(args) == 0
    assert json.loads((out / "metrics.json").read_text())["headline"] == m["headline"]
