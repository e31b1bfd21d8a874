"""Run configs: every section validated with file/section/key errors, --set overrides."""

from __future__ import annotations

import pytest

from alara.params import ConfigError
from alara.run_config import apply_overrides, load_run_config, parse_override


def write(tmp_path, text: str):
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


def test_sections_and_overrides(tmp_path):
    path = write(tmp_path, '[train]\nsteps = 10\n[data]\nroot = "d"\n[iq_metric]\nname = "psnr"\n')
    rc = load_run_config(path, ["train.steps=3", "train.warmup_dose=[0.1, 1.0]", "iq_metric.name=\"ssim\"",
                                "reconstructor.params.filter=hann", "objective.target=30"])
    assert rc.train.steps == 3 and rc.train.warmup_dose == (0.1, 1.0)
    assert rc.components["iq_metric"].name == "ssim"
    assert rc.components["reconstructor"].params == {"filter": "hann"}
    assert rc.objective.target == 30.0 and rc.data.root == "d"
    resolved = rc.resolved()
    assert resolved["train"]["steps"] == 3 and resolved["eval"]["split"] == "test"
    assert resolved["dose_policy"]["name"] == "resnet18"       # the paper's default


def test_errors_name_file_section_and_key(tmp_path):
    with pytest.raises(ConfigError, match=r"run.toml \[train\] key 'stesp': unknown parameter; did you mean 'steps'"):
        load_run_config(write(tmp_path, "[train]\nstesp = 3\n"))
    with pytest.raises(ConfigError, match=r"\[trian\]: unknown section; did you mean 'train'"):
        load_run_config(write(tmp_path, "[trian]\nsteps = 3\n"))
    with pytest.raises(ConfigError, match=r"\[train\] key 'lr': expected float, got inf .*write a finite number"):
        load_run_config(write(tmp_path, "[train]\nlr = inf\n"))
    with pytest.raises(ConfigError, match=r"\[train\] key 'batch_size': batch_size must be >= 1"):
        load_run_config(write(tmp_path, "[train]\n"), ["train.batch_size=0"])
    with pytest.raises(ConfigError, match=r"--set 'train.steps': expected section.key=value"):
        parse_override("train.steps")
    with pytest.raises(ConfigError, match=r"is a directory; pass the path of a TOML config file"):
        load_run_config(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes("# caf\xe9\n[train]\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not a UTF-8 text file"):
        load_run_config(bad)


def test_override_values_are_toml_or_strings():
    assert parse_override("data.root=/tmp/x") == (["data", "root"], "/tmp/x")
    assert parse_override("train.amp=\"bf16\"") == (["train", "amp"], "bf16")
    assert parse_override("eval.metrics=[\"psnr\"]") == (["eval", "metrics"], ["psnr"])
    assert apply_overrides({"iq_metric": "psnr"}, ["iq_metric.params.data_range=2.0"]) == {
        "iq_metric": {"name": "psnr", "params": {"data_range": 2.0}}}
