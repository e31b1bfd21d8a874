"""Run folders (train, train --resume, evaluate, experiment): everything is checked before
anything is written, so a refused command leaves the folder byte-for-byte as it was; a
resume compares the whole configuration and the data geometry; a second writer is refused
by the folder's lock; every option a message names exists."""

from __future__ import annotations

import argparse
import io
import json
import re
import tokenize
from pathlib import Path

import pytest

from alara.atomic import RUN_LOCK_FILE, DirectoryLock
from alara.data.synth import generate_dataset, small_geometry

from .conftest import GEOMETRY, SMALL, snapshot

CONFIG = """
[objective]
target = 20.0

[data]
root = "{root}"

[train]
warmup_steps = 1
steps = 1
batch_size = 2
checkpoint_every = 2
log_every = 1
device = "cpu"
progress = false
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset_template) -> tuple[Path, Path]:
    """``(config, run)``: a finished two-step run (a template: tests copy it)."""
    import shutil

    from alara.cli import main

    root = tmp_path_factory.mktemp("trained")
    config = root / "train.toml"
    config.write_text(CONFIG.format(root=dataset_template))
    assert main(["train", str(config), "--out", str(root / "run")]) == 0
    return config, root / "run"


@pytest.fixture
def run(trained, ws) -> Path:
    """A copy of the finished run inside the workspace (checked unchanged after the test)."""
    import shutil

    from .conftest import snapshot

    shutil.copytree(trained[1], ws.root / "run")
    ws.before = snapshot(ws.root)
    return ws.root / "run"


@pytest.mark.parametrize("override, message", [
    ("objective.target=25.0", "objective.target was 20.0, now 25.0"),
    ("train.batch_size=1", "train.batch_size was 2, now 1"),
    ('iq_metric.name="ssim"', "iq_metric.name was 'psnr', now 'ssim'"),
    ("train.steps=3", "train.steps was 1, now 3; pass --allow-change train.steps to accept that change"),
])
def test_refused_resume_leaves_the_run_byte_for_byte(trained, run, cli, override, message):
    r = cli("train", str(trained[0]), "--out", "run", "--resume", "--set", override)
    assert r.rc == 1
    assert r.line.startswith("alara train: error: cannot resume run (checkpoint of step 2): ")
    assert message in r.line
    # ws checks after the test that config.json, checkpoints and logs are untouched


def test_resume_on_data_of_another_geometry_names_it(trained, run, cli, tmp_path):
    other = tmp_path / "other"
    generate_dataset(other, geometry=small_geometry(16, 8), seed=3, **SMALL)
    r = cli("train", str(trained[0]), "--out", "run", "--resume", "--set", f'data.root="{other}"',
            "--allow-change", "data.root")
    assert r.rc == 1
    assert "geometry.angles was '12 views on" in r.line and "now '8 views on" in r.line


def test_allowed_step_change_is_recorded(trained, run, cli, ws):
    ws.allow_changes_under("run")
    r = cli("train", str(trained[0]), "--out", "run", "--resume", "--set", "train.steps=2",
            "--allow-change", "train.steps")
    assert r.rc == 0, r.err
    changes = json.loads((run / "changes.json").read_text())
    assert changes == [{"step": 2, "key": "train.steps", "was": 1, "now": 2}]
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 2


def test_resume_of_a_folder_that_does_not_exist(trained, ws, cli):
    r = cli("train", str(trained[0]), "--out", "missing", "--resume")
    assert r.rc == 1
    assert "--resume: missing does not exist, so there is nothing to resume" in r.line
    assert not (ws.root / "missing").exists()


def test_folder_with_logs_but_no_checkpoint_needs_overwrite(trained, ws, cli):
    logs = ws.root / "logs"
    logs.mkdir()
    (logs / "config.json").write_text('{"mine": 1}\n')
    (logs / "metrics.jsonl").write_text('{"step": 1}\n')
    (logs / "keep.txt").write_text("not a run file\n")
    ws.before = snapshot(ws.root)
    r = cli("train", str(trained[0]), "--out", "logs")
    assert r.rc == 1
    assert "logs is not empty" in r.line and "--overwrite" in r.line
    ws.assert_unchanged()
    ws.allow_changes_under("logs")
    assert cli("train", str(trained[0]), "--out", "logs", "--overwrite").rc == 0
    assert (logs / "keep.txt").read_text() == "not a run file\n"  # only run files are replaced
    assert json.loads((logs / "config.json").read_text())["objective"]["target"] == 20.0


def test_finished_run_needs_resume_or_overwrite(trained, run, cli):
    r = cli("train", str(trained[0]), "--out", "run")
    assert r.rc == 1
    assert "run already holds a run with checkpoints (up to step 2)" in r.line
    assert "--resume" in r.line and "--overwrite" in r.line


def test_second_writer_is_refused_naming_the_holder(trained, run, cli):
    lock = DirectoryLock(run, RUN_LOCK_FILE)
    lock.acquire()
    try:
        import os

        r = cli("train", str(trained[0]), "--out", "run", "--resume")
        assert r.rc == 1
        assert f"run is being written by another alara process (pid {os.getpid()} holds" in r.line
        r = cli("experiment", str(trained[0]), "--out", "run", "-q")
        assert r.rc == 1 and f"(pid {os.getpid()} holds" in r.line
    finally:
        lock.release()


def test_experiment_rerun_with_another_config_writes_nothing(tmp_path):
    """An experiment's record is checked against the folder before it is written."""
    from alara.runs import RunFolderError, write_run_files

    out = tmp_path / "exp"
    write_run_files(out, {"objective": {"target": 0.9}, "train": {"steps": 4}})
    (out / "calibration.json").write_text("{}\n")
    before = snapshot(out)
    with pytest.raises(RunFolderError, match=r"exp holds a run of another configuration \(objective.target "
                                             r"was 0.9, now 29.5; train.steps was 4, now 8\); nothing was written"):
        write_run_files(out, {"objective": {"target": 29.5}, "train": {"steps": 8}})
    assert snapshot(out) == before


def test_evaluate_on_other_views_names_the_views(trained, run, cli, tmp_path):
    other = tmp_path / "other"
    generate_dataset(other, geometry=small_geometry(16, 8), seed=3, **SMALL)
    r = cli("evaluate", "run", "--data", str(other))
    assert r.rc == 1
    assert "geometry.angles was '12 views on" in r.line
    assert "pixels" not in r.line
    assert "--image-size/--n-angles/--n-bins" in r.line


# Options of other programs that messages quote (pip, torchrun).
FOREIGN = {"--no-build-isolation", "--nproc"}
OPTION = r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]"


def _commands(parser: argparse.ArgumentParser, prefix: str, out: dict) -> dict:
    """``{"data synth": {its options}, ...}`` for every (sub-)command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                key = f"{prefix} {name}".strip()
                out[key] = {o for a in sub._actions for o in a.option_strings}
                _commands(sub, key, out)
    return out


def _message_strings() -> list[tuple[str, str]]:
    """``(file:line, text)`` of every string literal in alara/, adjacent literals joined
    (messages are split over lines)."""
    quote = re.compile(r"^[a-zA-Z]*('\'\'|\"\"\"|'|\")|('\'\'|\"\"\"|'|\")$")
    found = []
    for path in sorted(Path(__file__).resolve().parents[2].joinpath("alara").rglob("*.py")):
        parts, where = [], ""
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if tok.type == tokenize.STRING:
                where = where or f"{path.name}:{tok.start[0]}"
                parts.append(quote.sub("", tok.string))
            elif tok.type not in (tokenize.NL, tokenize.COMMENT) and parts:
                found.append((where, "".join(parts)))
                parts, where = [], ""
    return found


def test_every_option_a_message_names_exists():
    """Any option in a message is one of alara's; after `alara CMD`, one of CMD's."""
    from alara.cli import build_parser

    parser = build_parser()
    commands = _commands(parser, "", {})
    known = set().union(*commands.values(), *(a.option_strings for a in parser._actions)) | FOREIGN
    unknown = []
    for where, text in _message_strings():
        unknown += [f"{where} {o}" for o in re.findall(OPTION, text) if o not in known]
        for m in re.finditer(r"alara ([a-z][a-z-]*(?: [a-z][a-z-]*)?)", text):
            cmd = m.group(1) if m.group(1) in commands else m.group(1).split()[0]
            if cmd in commands:
                # the hint runs to the end of its clause
                clause = re.split(r"[;)`]|, or ", text[m.end():])[0]
                unknown += [f"{where} alara {cmd} {o}" for o in re.findall(OPTION, clause)
                            if o not in commands[cmd]]
    assert not unknown
