"""The registry and the plugin manager: names, duplicates, origins, entry points,
blocking, broken plugins and check_pending."""

from __future__ import annotations

import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from alara import plugins
from alara.hookspecs import hookimpl
from alara.interfaces import KINDS, IQMetric, Reconstructor
from alara.registry import DuplicateComponentError, Registry, RegistryError, UnknownComponentError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def manager():
    """A fresh process-wide manager (plugins reload), forgotten afterwards."""
    plugins.reset()
    yield plugins.get_manager()
    plugins.reset()


class MAE(IQMetric):
    name = "mae"
    higher_is_better = False

    @dataclass(frozen=True)
    class Config:
        scale: float = 1.0

    def forward(self, x_hat, x):
        return self.config.scale * (x_hat - x).abs().flatten(1).mean(1)


# ---------------------------------------------------------------------------- Registry


def test_add_get_create():
    reg = Registry("iq_metric", IQMetric)
    assert reg.add(MAE) is MAE
    assert "mae" in reg and reg.names() == ["mae"] and len(reg) == 1
    assert reg.get("mae") is MAE
    metric = reg.create("mae", {"scale": 2.0})
    assert metric.config.scale == 2.0
    assert torch.allclose(metric(torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)), torch.full((2,), 2.0))
    with pytest.raises(ValueError, match=r"\[iq_metric 'mae'.params\] key 'scael': unknown parameter; did you mean 'scale'"):
        reg.create("mae", {"scael": 2.0})


def test_duplicate_names_who_was_first():
    reg = Registry("iq_metric", IQMetric)
    with reg.registering_for("first_plugin", "first-dist 1.0"):
        reg.add(MAE)

    class OtherMAE(MAE):
        name = "mae"

    with reg.registering_for("second_plugin", "second-dist 2.0"):
        with pytest.raises(DuplicateComponentError) as info:
            reg.add(OtherMAE)
    msg = str(info.value)
    assert "'first_plugin'" in msg and "first-dist 1.0" in msg and "second_plugin" in msg
    assert reg.get("mae") is MAE  # the first one stays


def test_unknown_name_suggests_close_matches():
    reg = Registry("iq_metric", IQMetric)
    reg.add(MAE)
    with pytest.raises(UnknownComponentError, match=r"unknown iq_metric 'mea'.*did you mean 'mae'"):
        reg.get("mea")
    with pytest.raises(UnknownComponentError, match=r"registered: mae") as info:
        reg.get("zzzzz")
    assert "did you mean" not in str(info.value)


def test_registry_validates_classes():
    reg = Registry("reconstructor", Reconstructor)
    with pytest.raises(RegistryError, match="subclass of alara.interfaces.Reconstructor"):
        reg.add(MAE)

    class NoName(Reconstructor):
        pass

    with pytest.raises(RegistryError, match="class attribute 'name'"):
        reg.add(NoName)

    class BadName(Reconstructor):
        name = "has space"

    with pytest.raises(RegistryError, match="'name'"):
        reg.add(BadName)

    class MutableConfig(Reconstructor):
        name = "mutable"

        @dataclass
        class Config:
            a: int = 1

    with pytest.raises(RegistryError, match="frozen"):
        reg.add(MutableConfig)


# -------------------------------------------------------------------------- the manager


def test_builtins_come_through_the_entry_point(manager):
    names = {kind: manager.registry(kind).names() for kind in KINDS}
    # Installed third-party plugins (the example reconstructor) may add more.
    assert {"prescan", "prior_exam", "scouts"} <= set(names["prior"])
    assert {"fixed", "resnet18", "tcm"} <= set(names["dose_policy"])
    assert {"poisson"} <= set(names["simulator"])
    assert {"fbp", "fbp_unet"} <= set(names["reconstructor"])
    assert {"psnr", "ssim"} <= set(names["iq_metric"])
    entry = manager.registry("iq_metric").entry("psnr")
    assert entry.origin == "built-in" and entry.plugin == "builtin"
    assert entry.cls.__module__.startswith("alara_builtin")
    assert [p.name for p in manager.plugins()][0] == "builtin"


def test_core_never_imports_the_builtins():
    """No module of the core imports a plugin package (checked on the source, every file),
    and importing the plugin machinery loads none (checked at run time)."""
    import ast
    import subprocess

    plugin_packages = {p.name for p in (REPO / "plugins").iterdir() if (p / "__init__.py").exists()}
    plugin_packages |= {p.name for p in (REPO / "plugins").glob("*/*") if (p / "__init__.py").exists()}
    assert "alara_builtin" in plugin_packages and "alara_example_reconstructor" in plugin_packages
    for path in (REPO / "alara").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & plugin_packages, f"{path} imports {names}"
    code = ("import sys, alara, alara.interfaces, alara.registry, alara.plugins, alara.config, "
            "alara.hookspecs, alara.cli; assert 'alara_builtin' not in sys.modules, 'core imported builtins'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_loads_lazily_and_once(manager, monkeypatch):
    assert manager.pm.get_plugin("builtin") is None  # nothing loaded before first use
    calls = []
    real = plugins.metadata.entry_points
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda **kw: calls.append(kw) or real(**kw))
    manager.registry("simulator")
    manager.registry("iq_metric")
    manager.load()
    assert calls == [{"group": "alara"}]
    assert manager.pm.get_plugin("builtin") is not None


def test_unknown_kind(manager):
    with pytest.raises(ValueError, match="did you mean 'iq_metric'"):
        manager.registry("iq_metrics")


def test_block_plugins_env(manager, monkeypatch):
    monkeypatch.setenv(plugins.BLOCK_ENV, " other , builtin")
    with pytest.warns(plugins.PluginLoadWarning, match=r"names 'other', but no installed alara plugin"):
        assert len(manager.registry("iq_metric")) == 0
    assert manager.pm.is_blocked("builtin")
    assert "builtin" not in [p.name for p in manager.plugins()]


def _make_distribution(root: Path, dist: str, module: str, source: str, ep_name: str) -> None:
    """An installed distribution on ``root`` (a dist-info folder and a module)."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[alara]\n{ep_name} = {module}\n")


GOOD_PLUGIN = """
    from dataclasses import dataclass
    from alara.hookspecs import hookimpl
    from alara.interfaces import IQMetric

    class L1(IQMetric):
        name = "l1"
        higher_is_better = False

        @dataclass(frozen=True)
        class Config:
            pass

        def forward(self, x_hat, x):
            return (x_hat - x).abs().flatten(1).mean(1)

    @hookimpl
    def alara_register_iq_metric(registry):
        registry.add(L1)
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path acting as extra site-packages."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for mod in ("good_alara_plugin", "broken_alara_plugin", "typo_alara_plugin", "dup_alara_plugin"):
        sys.modules.pop(mod, None)


def test_third_party_distribution_is_loaded_with_origin(manager, site):
    _make_distribution(site, "good-alara-plugin", "good_alara_plugin", GOOD_PLUGIN, "good")
    entry = manager.registry("iq_metric").entry("l1")
    assert entry.origin == "good-alara-plugin 0.3" and entry.plugin == "good"
    assert "psnr" in manager.registry("iq_metric")


def test_block_by_distribution_name(manager, site, monkeypatch):
    _make_distribution(site, "good-alara-plugin", "good_alara_plugin", GOOD_PLUGIN, "good")
    monkeypatch.setenv(plugins.BLOCK_ENV, "Good_Alara.Plugin")  # pip's spelling rules
    assert "l1" not in manager.registry("iq_metric")
    assert "psnr" in manager.registry("iq_metric")


def test_broken_plugin_is_reported_and_skipped(manager, site):
    _make_distribution(site, "good-alara-plugin", "good_alara_plugin", GOOD_PLUGIN, "good")
    _make_distribution(site, "broken-alara-plugin", "broken_alara_plugin",
                       "import numpy\nraise ImportError('needs libfoo >= 2')\n", "broken")
    with pytest.warns(plugins.PluginLoadWarning, match=r"'broken'.*broken-alara-plugin 0.3.*needs libfoo >= 2"):
        reg = manager.registry("iq_metric")
    assert {"l1", "psnr", "ssim"} <= set(reg.names())
    assert [f.name for f in manager.failed] == ["broken"]
    assert "ImportError" in manager.failed[0].reason


DUP_PLUGIN = GOOD_PLUGIN.replace('name = "l1"', 'name = "psnr"').replace(
    "registry.add(L1)", "registry.add(L1)\n\n    @hookimpl\n    def alara_register_simulator(registry):\n"
    "        registry.add(Sim)\n").replace("class L1(IQMetric):", """class Sim(Simulator):
        name = "dup_sim"

        def forward(self, sinogram, n0, generator=None):
            return sinogram

    class L1(IQMetric):""").replace("from alara.interfaces import IQMetric",
                                     "from alara.interfaces import IQMetric, Simulator")


def test_duplicate_from_a_distribution_is_reported_and_skipped(manager, site):
    """A third-party name clash says who was first; that plugin is skipped as a whole (its
    other components too) and everything else still loads."""
    _make_distribution(site, "dup-alara-plugin", "dup_alara_plugin", DUP_PLUGIN, "dup")
    _make_distribution(site, "good-alara-plugin", "good_alara_plugin", GOOD_PLUGIN, "good")
    with pytest.warns(plugins.PluginLoadWarning,
                      match=r"'dup' \(dup-alara-plugin 0.3\).*'psnr' is already registered by plugin "
                            r"'builtin' \(built-in"):
        metrics = manager.registry("iq_metric")
    assert metrics.get("psnr").__module__ == "alara_builtin.metrics"
    assert "l1" in metrics  # the good plugin loaded
    assert manager.registry("simulator").names() == ["poisson"]  # dup's simulator rolled back
    assert [f.name for f in manager.failed] == ["dup"]
    assert "dup" not in [p.name for p in manager.plugins()]


def test_a_hook_that_raises_is_reported_and_skipped(manager, site):
    source = GOOD_PLUGIN.replace("registry.add(L1)", "registry.add(L1)\n        raise KeyError('oops')")
    _make_distribution(site, "broken-alara-plugin", "broken_alara_plugin", source, "broken")
    with pytest.warns(plugins.PluginLoadWarning, match=r"'broken'.*registering its components failed: KeyError"):
        reg = manager.registry("iq_metric")
    assert "l1" not in reg and {"psnr", "ssim"} <= set(reg.names())


def test_check_pending_skips_a_misspelt_hook(manager, site):
    source = GOOD_PLUGIN.replace("def alara_register_iq_metric", "def alara_register_iq_metrc")
    _make_distribution(site, "typo-alara-plugin", "typo_alara_plugin", source, "typo")
    with pytest.warns(plugins.PluginLoadWarning, match=r"'typo'.*alara_register_iq_metrc"):
        reg = manager.registry("iq_metric")
    assert "l1" not in reg and "psnr" in reg
    assert manager.pm.get_plugin("typo") is None


def test_check_pending_strict_for_in_process_plugins(manager):
    class Typo:
        @hookimpl
        def alara_register_reconstuctor(self, registry):  # misspelt on purpose
            pass

    with pytest.raises(plugins.PluginError, match=r"'typo'.*alara_register_reconstuctor.*known hooks"):
        manager.register(Typo(), name="typo")
    assert manager.pm.get_plugin("typo") is None


def test_in_process_plugin_and_duplicate_with_builtin(manager):
    class Mine:
        @hookimpl
        def alara_register_iq_metric(self, registry):
            registry.add(MAE)

    manager.register(Mine(), name="mine")
    entry = manager.registry("iq_metric").entry("mae")
    assert entry.cls is MAE and entry.origin == "plugin mine"
    manager.unregister("mine")
    assert "mae" not in manager.registry("iq_metric")

    class Clash(IQMetric):
        name = "psnr"

        def forward(self, x_hat, x):
            return x.flatten(1).mean(1)

    class Clashing:
        @hookimpl
        def alara_register_iq_metric(self, registry):
            registry.add(Clash)

    with pytest.raises(DuplicateComponentError, match=r"'psnr' is already registered by plugin 'builtin' \(built-in"):
        manager.register(Clashing(), name="clashing")
    assert manager.pm.get_plugin("clashing") is None
    assert manager.registry("iq_metric").get("psnr").__module__ == "alara_builtin.metrics"


def test_hook_without_registry_argument_is_allowed(manager):
    called = []

    class NoArgs:
        @hookimpl
        def alara_register_simulator(self):
            called.append(True)

    manager.register(NoArgs(), name="noargs")
    assert manager.registry("simulator").names() == ["poisson"]
    assert called == [True]


def test_module_level_helpers(manager):
    assert plugins.get_registry("simulator") is manager.registry("simulator")
    metric = plugins.create("iq_metric", "psnr", {"data_range": 2.0})
    assert type(metric).name == "psnr" and metric.config.data_range == 2.0


def test_no_warnings_with_only_builtins(manager):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manager.registry("prior")
