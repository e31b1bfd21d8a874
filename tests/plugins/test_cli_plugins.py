"""``alara plugins``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings

import pytest

from alara import plugins
from alara.cli import plugins as cli_plugins
from alara.interfaces import KINDS


@pytest.fixture
def parser():
    plugins.reset()
    p = argparse.ArgumentParser(prog="alara")
    cli_plugins.register(p.add_subparsers(dest="command"))
    yield p
    plugins.reset()


def test_help(parser, capsys):
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["plugins", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: alara plugins" in out and "ALARA_BLOCK_PLUGINS" in out and "--kind" in out


def test_lists_every_builtin_with_origin_and_defaults(parser, capsys):
    args = parser.parse_args(["plugins"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "builtin  (built-in)" in out
    for kind in KINDS:
        assert f"[{kind}]" in out
    for name in ("prescan", "scouts", "prior_exam", "fixed", "tcm", "resnet18", "poisson", "fbp",
                 "fbp_unet", "psnr", "ssim"):
        assert f"  {name}  (built-in" in out
    assert "frequency_scaling: float = 0.641" in out
    assert "channels: tuple[int, ...] = [32, 32, 64, 64, 128, 128]" in out
    assert "mode: 'scalar' | 'angular' = \"scalar\"" in out
    assert "budget: float | None = unset" in out
    assert "  prescan  (built-in, the default)" in out and "  scouts  (built-in)" in out
    assert "  psnr  (built-in, the default, higher is better)" in out


def test_json_and_kind_filter(parser, capsys):
    args = parser.parse_args(["plugins", "--kind", "iq_metric", "--json"])
    args.func(args)
    data = json.loads(capsys.readouterr().out)
    assert list(data["components"]) == ["iq_metric"]
    psnr = {c["name"]: c for c in data["components"]["iq_metric"]}["psnr"]
    assert psnr["origin"] == "built-in" and psnr["higher_is_better"] is True and psnr["is_default"] is True
    assert psnr["params"] == [{"name": "data_range", "type": "float | 'per_image'", "default": 1.0}]


def test_failed_plugins_are_shown(parser, capsys, monkeypatch):
    from importlib import metadata

    broken = metadata.EntryPoint(name="broken", value="no_such_module_for_alara", group="alara")
    real = metadata.entry_points
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda **kw: [*real(**kw), broken])
    args = parser.parse_args(["plugins"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # listed as SKIPPED, not warned about a second time
        args.func(args)
    out = capsys.readouterr().out
    assert "broken  (unknown distribution)  SKIPPED: import of 'no_such_module_for_alara' failed" in out
    assert "psnr  (built-in" in out


def test_console_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "alara", "plugins", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "usage: alara plugins" in proc.stdout
