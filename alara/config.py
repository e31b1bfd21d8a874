"""TOML configuration of components: each kind is picked by registered name, with a
``params`` table checked against that component's ``Config`` dataclass::

    [reconstructor]
    name = "fbp"
    params = { filter = "hann", frequency_scaling = 0.641 }

    [iq_metric]
    name = "psnr"          # swap for "ssim": one line

Sections of other parts of alara (``[train]``, ``[data]``...) are left alone here.  Every
error is a :class:`ConfigError` that names the file, the section and the key.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from alara.interfaces import KINDS, Component
from alara.params import ConfigError, close_matches, describe_params, make_config, type_name
from alara.registry import Registry, UnknownComponentError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "ComponentSpec",
    "DEFAULT_COMPONENTS",
    "read_toml",
    "parse_component",
    "make_config",
    "build_component",
    "load_components",
    "describe_params",
    "type_name",
]

_COMPONENT_KEYS = ("name", "params")

#: Sections of a run's config besides the component kinds (see alara.run_config).
OTHER_SECTIONS: tuple[str, ...] = ("data", "objective", "train", "eval", "experiment")

#: The component of each kind a pipeline uses when its config has no section for it: the
#: End2end-ALARA setup (a low-dose FBP pre-scan as the prior, the ResNet-18 policy,
#: LoDoPaB's noise, FBP + U-Net, PSNR).  Names only: the core never imports the plugins.
DEFAULT_COMPONENTS: dict[str, str] = {
    "prior": "prescan",
    "dose_policy": "resnet18",
    "simulator": "poisson",
    "reconstructor": "fbp_unet",
    "iq_metric": "psnr",
}


@dataclass(frozen=True)
class ComponentSpec:
    """One component picked in a config: ``kind``, registered ``name``, raw ``params``."""

    kind: str
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    file: Optional[str] = None
    section: Optional[str] = None


def read_toml(path: Union[str, Path]) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the file (and tomllib gives the line)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError("is a directory; pass the path of a TOML config file (e.g. "
                          "configs/experiment.toml)", file=str(path))
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start}); a config must be "
                          "TOML text saved as UTF-8", file=str(path)) from None


# --------------------------------------------------------------------------- components


def parse_component(table: Any, kind: str, *, file: Optional[str] = None,
                    section: Optional[str] = None) -> ComponentSpec:
    """Read a component section (``name`` and optional ``params``) into a spec."""
    section = section or kind
    if isinstance(table, str):  # shorthand: iq_metric = "ssim"
        table = {"name": table}
    if not isinstance(table, dict):
        raise ConfigError(f"must be a table with 'name' and 'params', got {type(table).__name__}",
                          file=file, section=section)
    for key in table:
        if key not in _COMPONENT_KEYS:
            raise ConfigError(f"unknown key{close_matches(key, list(_COMPONENT_KEYS))} "
                              "(a component section has 'name' and 'params')",
                              file=file, section=section, key=key)
    name = table.get("name")
    if not isinstance(name, str):
        raise ConfigError(f"missing or non-string component name (got {name!r}); "
                          f"write name = \"<registered {kind}>\"", file=file, section=section, key="name")
    params = table.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"must be a table, got {type(params).__name__}", file=file,
                          section=section, key="params")
    return ComponentSpec(kind, name, params, file, section)


def _registry(kind: str, registry: Optional[Registry[Any]]) -> Registry[Any]:
    if registry is not None:
        return registry
    from alara.plugins import get_registry

    return get_registry(kind)


def build_component(spec: ComponentSpec, registry: Optional[Registry[Any]] = None) -> Component:
    """Instantiate the component a spec names, its params validated by its ``Config``."""
    reg = _registry(spec.kind, registry)
    try:
        return reg.create(spec.name, spec.params, file=spec.file, section=spec.section)
    except UnknownComponentError as exc:
        raise ConfigError(str(exc), file=spec.file, section=spec.section, key="name") from None


def load_components(
    source: Union[str, Path, Mapping[str, Any]],
    kinds: Iterable[str] = tuple(KINDS),
    required: Iterable[str] = (),
    defaults: Optional[Mapping[str, str]] = None,
) -> dict[str, Component]:
    """Build every component section present in a TOML file (or parsed mapping).

    ``kinds``: sections to read (default: all five kinds); ``required``: sections that
    must be present; ``defaults``: ``{kind: name}`` built with default parameters where a
    section of ``kinds`` is absent (:data:`DEFAULT_COMPONENTS`: the paper's pipeline).
    Returns ``{kind: component}``.
    """
    if isinstance(source, Mapping):
        doc, file = dict(source), None
    else:
        doc, file = read_toml(source), str(source)
    out: dict[str, Component] = {}
    # Settings sections belong to other parts of alara; anything else is a mistake.
    known = list(KINDS) + list(OTHER_SECTIONS)
    for section in doc:
        if section not in known:
            raise ConfigError(f"unknown section{close_matches(section, known)} (sections: "
                              f"{', '.join(known)})", file=file, section=section)
    for kind in required:
        if kind not in doc:
            raise ConfigError(f"missing section [{kind}]", file=file)
    for kind in kinds:
        if kind not in KINDS:
            raise ConfigError(f"unknown component kind{close_matches(kind, list(KINDS))}", file=file,
                              section=kind)
        if kind in doc:
            out[kind] = build_component(parse_component(doc[kind], kind, file=file, section=kind))
        elif defaults and kind in defaults:
            out[kind] = build_component(ComponentSpec(kind, defaults[kind], {}, file, kind))
    return out
