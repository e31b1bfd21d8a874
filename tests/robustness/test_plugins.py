"""Plugins: one that exits or raises BaseException on import is skipped like any broken
plugin; a misspelt ALARA_BLOCK_PLUGINS name warns; a blocked plugin a config needs is named."""

from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from alara import plugins
from alara.registry import UnknownComponentError

MODULES = ("exiting_alara_plugin", "base_alara_plugin", "interrupt_alara_plugin",
           "hook_exit_alara_plugin")


@pytest.fixture
def manager():
    plugins.reset()
    yield plugins.get_manager()
    plugins.reset()


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path acting as extra site-packages."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield root
    for mod in MODULES:
        sys.modules.pop(mod, None)


def install(root: Path, dist: str, module: str, source: str) -> None:
    """An installed distribution ``dist`` whose entry point ``module`` runs ``source``."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[alara]\n{module} = {module}\n")


@pytest.mark.parametrize("source, reason", [
    ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    ("class Fatal(BaseException):\n    pass\nraise Fatal('no GPU found')\n", "Fatal: no GPU found"),
])
def test_plugin_exiting_on_import_is_skipped(manager, site, source, reason):
    install(site, "bad-plugin", "exiting_alara_plugin", source)
    with pytest.warns(plugins.PluginLoadWarning,
                      match=rf"skipping plugin 'exiting_alara_plugin' \(bad-plugin 1.0\): import "
                            rf"of 'exiting_alara_plugin' failed: {reason}"):
        reg = manager.registry("iq_metric")
    assert {"psnr", "ssim"} <= set(reg.names())  # the process lives on, the rest loads
    assert [f.name for f in manager.failed] == ["exiting_alara_plugin"]


def test_keyboard_interrupt_in_a_plugin_still_interrupts(manager, site):
    install(site, "slow-plugin", "interrupt_alara_plugin", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        manager.registry("iq_metric")


def test_plugin_exiting_while_registering_is_skipped(manager, site):
    install(site, "hook-plugin", "hook_exit_alara_plugin", """
        import sys
        from alara.hookspecs import hookimpl

        @hookimpl
        def alara_register_iq_metric(registry):
            sys.exit("licence server unreachable")
    """)
    with pytest.warns(plugins.PluginLoadWarning,
                      match=r"'hook_exit_alara_plugin'.*registering its components failed: "
                            r"SystemExit: licence server unreachable"):
        reg = manager.registry("iq_metric")
    assert "psnr" in reg


def test_misspelt_block_name_warns_with_a_suggestion(manager, monkeypatch):
    monkeypatch.setenv(plugins.BLOCK_ENV, "biultin")
    with pytest.warns(plugins.PluginLoadWarning,
                      match=r"ALARA_BLOCK_PLUGINS names 'biultin', but no installed alara plugin "
                            r"\(entry point or distribution\) is called that; did you mean 'builtin'"):
        reg = manager.registry("iq_metric")
    assert "psnr" in reg  # nothing was blocked


def test_block_names_that_match_raise_no_warning(manager, monkeypatch):
    monkeypatch.setenv(plugins.BLOCK_ENV, "Alara_Example.Reconstructor")  # pip's spelling rules
    with warnings.catch_warnings():
        warnings.simplefilter("error", plugins.PluginLoadWarning)
        manager.registry("iq_metric")


def test_blocked_plugin_a_config_needs_is_named(ws, manager, monkeypatch):
    from alara.config import load_components

    monkeypatch.setenv(plugins.BLOCK_ENV, "builtin")
    with pytest.raises(ValueError) as info:
        load_components(ws.config, kinds=["iq_metric"])
    text = str(info.value)
    assert "config.toml" in text and "unknown iq_metric 'psnr'" in text
    assert "ALARA_BLOCK_PLUGINS blocks plugin(s) 'builtin' (built-in): if 'psnr' comes from " \
           "one of them, remove it from ALARA_BLOCK_PLUGINS" in text
    with pytest.raises(UnknownComponentError, match="ALARA_BLOCK_PLUGINS blocks plugin"):
        plugins.create("simulator", "poisson")


def test_unknown_component_without_blocking_says_nothing_of_blocks(manager):
    with pytest.raises(UnknownComponentError) as info:
        plugins.create("iq_metric", "psnrr")
    assert "did you mean 'psnr'" in str(info.value) and "BLOCK" not in str(info.value)
