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

import dataclasses
import difflib
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Optional, Union

from alara.interfaces import KINDS, Component
from alara.registry import Registry, UnknownComponentError, close_matches

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


class ConfigError(ValueError):
    """A configuration problem, located by ``file``, ``section`` and ``key``."""

    def __init__(self, message: str, file: Optional[str] = None, section: Optional[str] = None,
                 key: Optional[str] = None) -> None:
        self.message, self.file, self.section, self.key = message, file, section, key
        where = [f"{file or '<config>'}"]
        if section:
            where.append(f"[{section}]")
        if key:
            where.append(f"key {key!r}")
        super().__init__(f"{' '.join(where)}: {message}")


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
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=str(path)) from None


# ------------------------------------------------------------------------------ type checks


def type_name(tp: Any) -> str:
    """A readable name of a type annotation (``float | None``, ``tuple[int, ...]``)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join("..." if a is Ellipsis else type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` converted to annotation ``tp`` (TOML lists become tuples, ints floats);
    raises :class:`_Mismatch` if it does not fit."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        # Compare types too: TOML true must not match Literal[1].
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise _Mismatch
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if args and len(args) != len(value):
            raise _Mismatch
        return tuple(_coerce(v, a) for v, a in zip(value, args)) if args else tuple(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return [_coerce(v, args[0]) for v in value] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value  # an annotation we cannot check (a TypeVar...): let Config validate it


def _string_choices(tp: Any) -> list[str]:
    """The string values a ``Literal`` annotation (or a union holding one) allows."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return [a for a in args if isinstance(a, str)]
    if origin in (Union, types.UnionType):
        return [c for a in args for c in _string_choices(a)]
    return []


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]


def make_config(config_cls: type, params: Mapping[str, Any], *, file: Optional[str] = None,
                section: Optional[str] = None) -> Any:
    """Validate ``params`` against the frozen dataclass ``config_cls`` and build it.

    Unknown keys (with close matches), missing required keys and wrong types are
    :class:`ConfigError` naming the file, the section and the key.
    """
    where = dict(file=file, section=f"{section}.params" if section else "params")
    hints = typing.get_type_hints(config_cls)
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    for key in params:
        if key not in fields:
            valid = ", ".join(fields) or "none"
            raise ConfigError(
                f"unknown parameter{close_matches(key, list(fields))} (valid parameters: {valid})",
                key=key, **where)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in params:
            if _required(f):
                raise ConfigError(f"missing required parameter ({type_name(hints.get(name, Any))})",
                                  key=name, **where)
            continue
        value = params[name]
        try:
            kwargs[name] = _coerce(value, hints.get(name, Any))
        except _Mismatch:
            tp = hints.get(name, Any)
            near = close_matches(value, _string_choices(tp)) if isinstance(value, str) else ""
            raise ConfigError(f"expected {type_name(tp)}, got {value!r} ({type(value).__name__}){near}",
                              key=name, **where) from None
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as exc:  # range checks in the Config's __post_init__
        msg = str(exc)
        key = next((k for k in kwargs if msg.startswith(k) or f"{k} " in msg or f"'{k}'" in msg), None)
        raise ConfigError(msg, key=key, **where) from None


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
        cls = reg.get(spec.name)
    except UnknownComponentError as exc:
        raise ConfigError(str(exc), file=spec.file, section=spec.section, key="name") from None
    config = make_config(cls.Config, spec.params, file=spec.file, section=spec.section)
    return cls(config)


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
    # Other sections belong to other parts of alara, but a near miss of a kind is a typo.
    for section in doc:
        if section not in KINDS:
            near = difflib.get_close_matches(section, list(KINDS), n=1, cutoff=0.85)
            if near:
                raise ConfigError(f"unknown section; did you mean [{near[0]}]?", file=file, section=section)
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


def describe_params(config_cls: type) -> list[tuple[str, str, Any]]:
    """``(name, type, default)`` of each parameter; default is ``dataclasses.MISSING`` when
    the parameter is required."""
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = dataclasses.MISSING
        out.append((f.name, type_name(hints.get(f.name, Any)), default))
    return out
