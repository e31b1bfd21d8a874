"""Fault tolerance, tested on real processes: ``alara train`` killed with SIGKILL after a
checkpoint, inside a checkpoint write (temporary file written, not yet renamed) and
between checkpoints resumes with ``--resume`` to the weights of a run that never stopped,
bit for bit, leaving no temporary file; a truncated latest checkpoint falls back to the
previous one with a warning naming both; a killed ``alara experiment`` resumes without
training again.

The child runs the real CLI after patching one function to write a marker file and hang
at the chosen point, so the kill lands exactly there (no timing guesses).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alara.data.synth import generate_dataset, small_geometry
from alara.train.checkpoint import list_checkpoints, load_checkpoint

REPO = Path(__file__).resolve().parents[2]

# Runs `alara ARGS` with a hang at ALARA_TEST_STOP = "saved:N" (after the checkpoint of
# step N), "replace:N" (checkpoint N's temporary file is on disk, the rename not done),
# "step:N" (after step N's update), "calibrate" (the experiment's calibration started).
DRIVER = r"""
import os, sys, time
from pathlib import Path

kind, _, n = os.environ["ALARA_TEST_STOP"].partition(":")
marker = Path(os.environ["ALARA_TEST_MARKER"])


def hang():
    marker.write_text(kind)
    time.sleep(600)


if kind == "replace":
    from alara import atomic  # the one writer checkpoints go through
    real = atomic.os.replace

    def replace(src, dst):
        if str(src).endswith(".tmp") and Path(dst).name == f"step_{int(n):07d}.pt":
            assert Path(src).stat().st_size > 0
            hang()
        real(src, dst)

    atomic.os.replace = replace
elif kind in ("saved", "step"):
    from alara.train.loop import Trainer
    name = "save" if kind == "saved" else "train_step"
    real = getattr(Trainer, name)

    def patched(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self.step == int(n):
            hang()
        return out

    setattr(Trainer, name, patched)
elif kind == "calibrate":
    from alara.experiment import runner
    runner._calibrate = lambda *args, **kwargs: hang()

from alara.cli import main
sys.exit(main(sys.argv[1:]))
"""

CONFIG = """
[prior]
name = "prescan"
params = {{ relative_dose = 0.05 }}

[dose_policy]
name = "fixed"
params = {{ n0 = 1024.0 }}

[simulator]
name = "poisson"

[reconstructor]
name = "fbp_unet"
params = {{ scales = 2, channels = [4, 8], skip_channels = 2 }}

[iq_metric]
name = "psnr"

[objective]
target = 20.0

[data]
root = "{root}"

[train]
warmup_steps = 3
steps = 3
batch_size = 2
grad_accum = 2
lr = 1e-2
checkpoint_every = 2
keep_checkpoints = 5
log_every = 1
device = "cpu"
progress = false
"""


def child_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    env.pop("WORLD_SIZE", None)
    return env


def killed_at(stop: str, args: list[str], tmp: Path, timeout: float = 240) -> None:
    """Start ``alara ARGS`` that hangs at ``stop``, wait for it to get there, SIGKILL it."""
    marker = tmp / f"marker_{stop.replace(':', '_')}"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *args], cwd=REPO,
                            env={**child_env(), "ALARA_TEST_STOP": stop, "ALARA_TEST_MARKER": str(marker)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the run ended (rc {proc.returncode}) before {stop}:\n{proc.stdout.read()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the run did not reach {stop} within {timeout} s")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def alara(args: list[str]) -> subprocess.CompletedProcess:
    """``alara ARGS`` in a fresh process (as a user would resume)."""
    proc = subprocess.run([sys.executable, "-m", "alara", *args], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    """A tiny data set, its config and the weights of an uninterrupted run."""
    tmp = tmp_path_factory.mktemp("kill")
    root = tmp / "data"
    generate_dataset(root, patients=(2, 1, 1), slices_per_patient=3, geometry=small_geometry(16, 12),
                     samples_per_file=8, seed=2, progress=False)
    config = tmp / "kill.toml"
    config.write_text(CONFIG.format(root=root.as_posix()))
    # A child process like the others: the thread count changes float sums.
    alara(["train", str(config), "--out", str(tmp / "straight")])
    return config, final_state(tmp / "straight")


def final_state(run: Path) -> dict:
    step, path = list_checkpoints(run)[-1]
    assert step == 6
    return load_checkpoint(path)


def assert_same_as_straight(run: Path, straight: dict) -> None:
    state = final_state(run)
    for key, value in straight["model"].items():
        assert torch.equal(state["model"][key], value), key
    for k, v in straight["optimizer"]["state"].items():
        for name, t in v.items():
            assert torch.equal(torch.as_tensor(state["optimizer"]["state"][k][name]), torch.as_tensor(t)), (k, name)
    assert not list((run / "checkpoints").glob("*.tmp")) and not list((run / "checkpoints").glob(".*"))
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


def test_killed_inside_a_checkpoint_write_resumes_to_the_same_weights(problem, tmp_path):
    config, straight = problem
    run = tmp_path / "run"
    killed_at("replace:4", ["train", str(config), "--out", str(run)], tmp_path)
    # The kill left checkpoint 2 and checkpoint 4's temporary file, never a partial step_4.
    assert [s for s, _ in list_checkpoints(run)] == [2]
    assert len(list((run / "checkpoints").glob(".step_0000004.*.tmp"))) == 1
    alara(["train", str(config), "--out", str(run), "--resume"])
    assert_same_as_straight(run, straight)


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["saved:2", "step:5"])
def test_killed_after_or_between_checkpoints_resumes_to_the_same_weights(problem, tmp_path, stop):
    config, straight = problem
    run = tmp_path / "run"
    killed_at(stop, ["train", str(config), "--out", str(run)], tmp_path)
    assert [s for s, _ in list_checkpoints(run)][-1] == (2 if stop == "saved:2" else 4)
    # Without --resume the run folder is refused, not overwritten.
    refused = subprocess.run([sys.executable, "-m", "alara", "train", str(config), "--out", str(run)],
                             cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "--resume" in refused.stderr
    alara(["train", str(config), "--out", str(run), "--resume"])
    assert_same_as_straight(run, straight)


@pytest.mark.slow
def test_truncated_latest_checkpoint_falls_back_with_a_warning_naming_both(problem, tmp_path):
    config, straight = problem
    run = tmp_path / "run"
    killed_at("step:5", ["train", str(config), "--out", str(run)], tmp_path)
    latest = list_checkpoints(run)[-1][1]
    assert latest.name == "step_0000004.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 3])
    proc = alara(["train", str(config), "--out", str(run), "--resume"])
    warning = next(line for line in proc.stderr.splitlines() if "CheckpointWarning" in line)
    assert "step_0000004.pt: damaged checkpoint" in warning and "resuming from" in warning
    assert warning.index("step_0000004.pt") < warning.index("step_0000002.pt")
    assert_same_as_straight(run, straight)


@pytest.mark.slow
def test_killed_experiment_resumes_without_training_again(tmp_path):
    cache = tmp_path / "cache"
    # (the shared reconstructor trains warmup + steps = 10 steps, End2end-ALARA its 10 joint
    # steps from it: experiment.joint_from_shared; both save at steps 5 and 10)
    sets = [f"experiment.data_cache={json.dumps(cache.as_posix())}", "train.warmup_steps=0", "train.steps=10",
            "train.checkpoint_every=5", "experiment.refine=0"]
    args = [str(REPO / "configs" / "experiment_ci.toml"), "--quiet", *(a for s in sets for a in ("--set", s))]
    alara(["experiment", *args, "--out", str(tmp_path / "straight")])
    out = tmp_path / "killed"
    killed_at("calibrate", ["experiment", *args, "--out", str(out)], tmp_path)
    stages = ("shared_reconstructor", "learned")
    before = {p: p.stat().st_mtime_ns for s in stages for p in (out / s / "checkpoints").iterdir()}
    assert {int(p.stem.split("_")[1]) for p in before if "learned" in str(p)} == {5, 10}
    assert not (out / "calibration.json").exists() and not (out / "metrics.json").exists()
    alara(["experiment", *args, "--out", str(out)])
    after = {p: p.stat().st_mtime_ns for s in stages for p in (out / s / "checkpoints").iterdir()}
    assert after == before                                  # no stage trained again
    for s in stages:
        assert [r["step"] for r in map(json.loads, (out / s / "metrics.jsonl").read_text().splitlines())
                if r["step"] % 5 == 0] == [5, 10]           # each step logged once
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())["headline"]
    b = json.loads((out / "metrics.json").read_text())["headline"]
    assert b == a
