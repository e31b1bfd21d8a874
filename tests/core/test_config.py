"""TOML component configs: selection by name, parameter validation, located errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import pytest
import torch

from alara import plugins
from alara.config import (
    ConfigError,
    ComponentSpec,
    build_component,
    describe_params,
    load_components,
    make_config,
    parse_component,
    read_toml,
)
from alara.interfaces import KINDS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@dataclass(frozen=True)
class Params:
    n: int
    scale: float = 1.0
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)
    pair: tuple[float, float] = (0.0, 1.0)
    limit: Optional[float] = None

    def __post_init__(self):
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")


def test_make_config_coerces_toml_values():
    cfg = make_config(Params, {"n": 3, "scale": 2, "sizes": [4, 5, 6], "pair": [1, 2], "limit": 3,
                               "mode": "b", "flag": True})
    assert cfg == Params(3, 2.0, True, "b", (4, 5, 6), (1.0, 2.0), 3.0)
    assert isinstance(cfg.scale, float) and isinstance(cfg.sizes, tuple)


@pytest.mark.parametrize(
    "params, key, message",
    [
        ({"n": 1, "scael": 2.0}, "scael", "unknown parameter; did you mean 'scale'"),
        ({}, "n", "missing required parameter (int)"),
        ({"n": 1.5}, "n", "expected int, got 1.5 (float)"),
        ({"n": True}, "n", "expected int, got True (bool)"),
        ({"n": 1, "scale": "x"}, "scale", "expected float, got 'x' (str)"),
        ({"n": 1, "flag": 1}, "flag", "expected bool"),
        ({"n": 1, "mode": "c"}, "mode", "expected 'a' | 'b', got 'c' (str)"),
        ({"n": 1, "sizes": [1, "2"]}, "sizes", "expected tuple[int, ...]"),
        ({"n": 1, "pair": [1.0]}, "pair", "expected tuple[float, float]"),
        ({"n": -1}, "n", "n must be >= 0"),
    ],
)
def test_make_config_errors_name_file_section_key(params, key, message):
    with pytest.raises(ConfigError) as info:
        make_config(Params, params, file="exp.toml", section="reconstructor")
    err = info.value
    assert (err.file, err.section, err.key) == ("exp.toml", "reconstructor.params", key)
    assert message in str(err)
    assert str(err).startswith(f"exp.toml [reconstructor.params] key '{key}': ")


def test_load_components_file(tmp_path):
    path = write(tmp_path, """
        [train]            # other sections belong to other parts of alara
        epochs = 3

        [reconstructor]
        name = "fbp"
        params = { filter = "shepp-logan", frequency_scaling = 0.8 }

        [iq_metric]
        name = "psnr"
    """.replace("\n        ", "\n"))
    comps = load_components(path)
    assert set(comps) == {"reconstructor", "iq_metric"}
    assert type(comps["reconstructor"]).name == "fbp"
    assert comps["reconstructor"].config.filter == "shepp-logan"
    assert comps["reconstructor"].config.frequency_scaling == 0.8
    assert comps["iq_metric"].config.data_range == 1.0  # default kept


def test_psnr_to_ssim_is_a_one_line_change(tmp_path):
    text = (REPO / "configs" / "components.toml").read_text()
    lines = text.splitlines()
    swapped = [line.replace('name = "psnr"', 'name = "ssim"') for line in lines]
    assert sum(a != b for a, b in zip(lines, swapped)) == 1
    x = torch.rand(2, 1, 24, 24, dtype=torch.float64)
    x_hat = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    results = {}
    for label, content in (("psnr", text), ("ssim", "\n".join(swapped))):
        metric = load_components(write(tmp_path, content, f"{label}.toml"), kinds=["iq_metric"])["iq_metric"]
        assert type(metric).name == label
        results[label] = metric(x_hat, x)
    from alara_builtin.metrics import PSNR, SSIM

    assert torch.equal(results["psnr"], PSNR()(x_hat, x))
    assert torch.equal(results["ssim"], SSIM()(x_hat, x))
    assert not torch.allclose(results["psnr"], results["ssim"])


def test_shipped_configs_load():
    for path in sorted((REPO / "configs").glob("*.toml")):
        doc = read_toml(path)
        if not any(kind in doc for kind in KINDS):
            continue  # a config of another part of alara
        comps = load_components(path)
        assert comps, path


def test_unknown_component_name(tmp_path):
    path = write(tmp_path, '[iq_metric]\nname = "psrn"\n')
    with pytest.raises(ConfigError) as info:
        load_components(path)
    msg = str(info.value)
    assert str(path) in msg and "[iq_metric]" in msg and "key 'name'" in msg and "did you mean 'psnr'" in msg


def test_unknown_parameter_of_a_plugin(tmp_path):
    path = write(tmp_path, '[reconstructor]\nname = "fbp"\nparams = { filtr = "hann" }\n')
    with pytest.raises(ConfigError, match=r"\[reconstructor.params\] key 'filtr': unknown parameter; did you mean 'filter'"):
        load_components(path)


def test_wrong_type_and_range_of_a_plugin_param(tmp_path):
    path = write(tmp_path, '[reconstructor]\nname = "fbp"\nparams = { filter = "hanning" }\n')
    with pytest.raises(ConfigError, match=r"key 'filter': expected 'ram-lak' \| .*'hann', got 'hanning' "
                                          r"\(str\); did you mean 'hann'"):
        load_components(path)
    path = write(tmp_path, '[reconstructor]\nname = "fbp"\nparams = { frequency_scaling = 1.5 }\n')
    with pytest.raises(ConfigError, match=r"key 'frequency_scaling': frequency_scaling must be in \(0, 1\]"):
        load_components(path)


def test_section_structure_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"\[simulator\] key 'nmae': unknown key; did you mean 'name'"):
        load_components(write(tmp_path, '[simulator]\nnmae = "poisson"\n'))
    with pytest.raises(ConfigError, match=r"\[simulator\] key 'name': missing"):
        load_components(write(tmp_path, '[simulator]\nparams = {}\n'))
    with pytest.raises(ConfigError, match=r"\[simulator\] key 'params': must be a table"):
        load_components(write(tmp_path, '[simulator]\nname = "poisson"\nparams = 3\n'))
    with pytest.raises(ConfigError, match=r"\[iq_metrics\]: unknown section; did you mean 'iq_metric'"):
        load_components(write(tmp_path, '[iq_metrics]\nname = "psnr"\n'))
    # Far from every section: still an error (it used to be ignored silently).
    with pytest.raises(ConfigError, match=r"\[scanner\]: unknown section \(sections: prior, dose_policy"):
        load_components(write(tmp_path, '[scanner]\nkvp = 120\n'))
    assert load_components(write(tmp_path, '[train]\nsteps = 3\n'), kinds=()) == {}
    with pytest.raises(ConfigError, match=r"missing section \[reconstructor\]"):
        load_components(write(tmp_path, '[simulator]\nname = "poisson"\n'), required=["reconstructor"])


def test_shorthand_name_only():
    spec = parse_component("ssim", "iq_metric")
    assert spec == ComponentSpec("iq_metric", "ssim", {}, None, "iq_metric")
    assert type(build_component(spec)).name == "ssim"
    comps = load_components({"iq_metric": "psnr"})
    assert type(comps["iq_metric"]).name == "psnr"


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[iq_metric\nname = 1\n")
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        read_toml(path)
    assert info.value.file == str(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_toml(tmp_path / "missing.toml")


def test_describe_params():
    rows = describe_params(Params)
    assert rows[0][0] == "n" and rows[0][1] == "int"
    assert rows[1] == ("scale", "float", 1.0)
    assert ("limit", "float | None", None) in rows
    import dataclasses

    assert rows[0][2] is dataclasses.MISSING


def test_defaults_fill_missing_sections_only_when_asked(tmp_path):
    from alara.config import DEFAULT_COMPONENTS

    assert DEFAULT_COMPONENTS["prior"] == "prescan"  # the default prior
    assert set(DEFAULT_COMPONENTS) == set(KINDS)
    path = write(tmp_path, '[iq_metric]\nname = "ssim"\n')
    assert set(load_components(path)) == {"iq_metric"}
    comps = load_components(path, kinds=["prior", "simulator", "iq_metric"], defaults=DEFAULT_COMPONENTS)
    assert {k: type(c).name for k, c in comps.items()} == {"prior": "prescan", "simulator": "poisson",
                                                            "iq_metric": "ssim"}  # the file wins
    with pytest.raises(ConfigError, match=r"\[simulator\] key 'name': unknown simulator 'nope'"):
        load_components(path, kinds=["simulator"], defaults={"simulator": "nope"})


def test_a_post_init_error_names_the_longest_key_it_mentions():
    """A key that is part of another's name ("realisations" in "oracle_realisations") does
    not take the blame for the longer one's error."""
    from alara.params import make_config

    @dataclass(frozen=True)
    class Spec:
        realisations: int = 2
        oracle_realisations: int = 4

        def __post_init__(self) -> None:
            if self.oracle_realisations < 0:
                raise ValueError(f"oracle_realisations must be >= 0, got {self.oracle_realisations}")
            if self.realisations < 1:
                raise ValueError(f"realisations must be >= 1, got {self.realisations}")

    with pytest.raises(ConfigError) as info:
        make_config(Spec, {"realisations": 2, "oracle_realisations": -1}, file="exp.toml", section="experiment", table="")
    assert info.value.key == "oracle_realisations"
    with pytest.raises(ConfigError) as info:
        make_config(Spec, {"realisations": 0, "oracle_realisations": 4}, file="exp.toml", section="experiment", table="")
    assert info.value.key == "realisations"
