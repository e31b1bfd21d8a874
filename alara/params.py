"""Typed parameters: TOML values checked against a frozen dataclass, with errors that say
where (file, section, key) and what would fit.

A leaf module (it imports nothing from alara), so the registry, the config reader and the
training settings all build their dataclasses the same way without an import cycle.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal, Mapping, Optional, Union

__all__ = ["ConfigError", "close_matches", "make_config", "describe_params", "type_name",
           "params_of"]


def close_matches(name: str, candidates: list[str]) -> str:
    """A "did you mean" suffix for an error message (empty if nothing is close)."""
    matches = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""


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
        # TOML has inf and nan literals; no parameter of alara means them.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
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
                section: Optional[str] = None, table: str = "params") -> Any:
    """Validate ``params`` against the frozen dataclass ``config_cls`` and build it.

    Unknown keys (with close matches), missing required keys and wrong types are
    :class:`ConfigError` naming the file, the section (``[section.table]``: a component's
    ``params``; ``table=""`` for a section whose keys are the parameters) and the key.
    """
    name = ".".join(p for p in (section, table) if p) or None
    where = dict(file=file, section=name)
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
            if isinstance(value, float) and not math.isfinite(value):
                near = "; write a finite number (TOML's inf and nan are not valid here)"
            raise ConfigError(f"expected {type_name(tp)}, got {value!r} ({type(value).__name__}){near}",
                              key=name, **where) from None
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as exc:  # range checks in the Config's __post_init__
        msg = str(exc)
        # The longest key the message names: "realisations" is inside "oracle_realisations".
        named = [k for k in kwargs if re.match(rf"{re.escape(k)}\b", msg) or re.search(rf"(?<![\w]){re.escape(k)}[ ']", msg)]
        key = max(named, key=len, default=None)
        raise ConfigError(msg, key=key, **where) from None


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


def params_of(config: Any) -> dict[str, Any]:
    """A dataclass instance as plain TOML/JSON-able values (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(e) for e in v]
        if isinstance(v, dict):
            return {k: plain(e) for k, e in v.items()}
        return v
    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}
