"""End to end: pip-install the example third-party reconstructor, pick it in a TOML config,
run it, and see it in ``alara plugins``."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from alara import ops, plugins
from alara.config import load_components
from alara_builtin.metrics import PSNR

EXAMPLE = Path(__file__).resolve().parents[2] / "plugins" / "alara-example-reconstructor"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Install the example from a copy (the build leaves the source tree clean); repeated
    runs reinstall, so the test is idempotent.  It stays installed afterwards."""
    src = tmp_path_factory.mktemp("example") / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps",
         "--force-reinstall", "--no-cache-dir", str(src)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, f"pip install of the example plugin failed:\n{proc.stderr}"
    importlib.invalidate_caches()
    plugins.reset()
    yield metadata.distribution("alara-example-reconstructor")
    plugins.reset()


def test_the_installed_plugin_is_registered(installed):
    entry = plugins.get_registry("reconstructor").entry("landweber")
    assert entry.origin == f"alara-example-reconstructor {installed.version}"
    assert entry.plugin == "example_reconstructor"
    assert "fbp" in plugins.get_registry("reconstructor")  # built-ins still there


def test_pick_it_in_a_config_and_run_it(installed, tmp_path, geom, shepp):
    cfg = tmp_path / "experiment.toml"
    cfg.write_text('[reconstructor]\nname = "landweber"\nparams = { iterations = 30, relaxation = 0.9 }\n')
    rec = load_components(cfg)["reconstructor"]
    assert type(rec).name == "landweber" and rec.config.iterations == 30
    y = ops.project(shepp, geom)
    x_hat = rec(y, geom)
    assert x_hat.shape == shepp.shape
    few = load_components({"reconstructor": {"name": "landweber", "params": {"iterations": 2}}})["reconstructor"]
    # Landweber converges: more iterations, smaller data residual and better image.
    res = lambda img: (ops.project(img, geom) - y).norm()  # noqa: E731
    assert res(x_hat) < 0.5 * res(few(y, geom))
    assert bool((PSNR()(x_hat, shepp) > PSNR()(few(y, geom), shepp)).all())
    bad = tmp_path / "bad.toml"
    bad.write_text('[reconstructor]\nname = "landweber"\nparams = { iteration = 3 }\n')
    with pytest.raises(ValueError, match=r"key 'iteration': unknown parameter; did you mean 'iterations'"):
        load_components(bad)


def test_alara_plugins_shows_it(installed):
    out = subprocess.run([sys.executable, "-m", "alara", "plugins", "--json"], check=True,
                         capture_output=True, text=True).stdout
    data = json.loads(out)
    names = {p["name"]: p["origin"] for p in data["plugins"]}
    assert names["builtin"] == "built-in"
    assert names["example_reconstructor"] == f"alara-example-reconstructor {installed.version}"
    recs = {c["name"]: c for c in data["components"]["reconstructor"]}
    assert recs["landweber"]["params"][0] == {"name": "iterations", "type": "int", "default": 10}


def test_blocking_it(installed, monkeypatch):
    monkeypatch.setenv(plugins.BLOCK_ENV, "example_reconstructor")
    plugins.reset()
    assert "landweber" not in plugins.get_registry("reconstructor")
    out = subprocess.run([sys.executable, "-m", "alara", "plugins", "--kind", "reconstructor"], check=True,
                         capture_output=True, text=True).stdout
    assert (f"  example_reconstructor  (alara-example-reconstructor {installed.version})  "
            "BLOCKED by ALARA_BLOCK_PLUGINS") in out
    assert "landweber" not in out and "  fbp  (built-in" in out
    plugins.reset()
