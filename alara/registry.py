"""A typed registry of component classes, one per kind (tox's ``ToxEnvRegister`` idea).

Plugins add classes from their ``alara_register_<kind>`` hook; config files then pick them
by name.  The registry remembers which plugin added each class so that a duplicate name
can say who was first, and ``alara plugins`` can show where a component comes from.
"""

from __future__ import annotations

import dataclasses
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Iterator, Mapping, Optional, TypeVar

from alara.interfaces import Component
from alara.params import close_matches, make_config

__all__ = ["Registry", "RegistryEntry", "RegistryError", "UnknownComponentError", "DuplicateComponentError"]

T = TypeVar("T", bound=Component)

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")


class RegistryError(ValueError):
    """A component class cannot be registered or found."""


class UnknownComponentError(RegistryError):
    """No component of that kind has the requested name."""


class DuplicateComponentError(RegistryError):
    """Two plugins registered the same name for one kind."""


@dataclass(frozen=True)
class RegistryEntry:
    """A registered class and where it came from."""

    cls: type
    #: "built-in", "<distribution> <version>", or "plugin <name>" for in-process plugins.
    origin: str
    #: Name of the plugin (entry-point name) that registered it.
    plugin: str

    @property
    def qualname(self) -> str:
        """``module.Class`` of the registered class."""
        return f"{self.cls.__module__}.{self.cls.__qualname__}"


class Registry(Generic[T]):
    """Component classes of one ``kind`` (e.g. ``"reconstructor"``) by registered name."""

    def __init__(self, kind: str, base: type[T]) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, RegistryEntry] = {}
        self._origin = "in-process"
        self._plugin = "<direct>"

    @contextmanager
    def registering_for(self, plugin: str, origin: str) -> Iterator[None]:
        """Attribute every :meth:`add` inside the block to ``plugin`` (used by the manager)."""
        saved = self._plugin, self._origin
        self._plugin, self._origin = plugin, origin
        try:
            yield
        finally:
            self._plugin, self._origin = saved

    def add(self, cls: type[T]) -> type[T]:
        """Register ``cls`` under ``cls.name``; returns ``cls`` so it works as a decorator.

        Raises :class:`RegistryError` if ``cls`` is not a subclass of this kind's base class,
        has no valid ``name``, or its ``Config`` is not a frozen dataclass, and
        :class:`DuplicateComponentError` if the name is taken.
        """
        self._validate(cls)
        name = cls.name
        if name in self._entries:
            first = self._entries[name]
            raise DuplicateComponentError(
                f"{self.kind} {name!r} is already registered by plugin {first.plugin!r} "
                f"({first.origin}, class {first.qualname}); plugin {self._plugin!r} "
                f"({self._origin}) tried to register {cls.__module__}.{cls.__qualname__} "
                "under the same name: rename one of them or block a plugin with "
                "ALARA_BLOCK_PLUGINS"
            )
        self._entries[name] = RegistryEntry(cls, self._origin, self._plugin)
        return cls

    def _validate(self, cls: Any) -> None:
        what = f"{self.kind} class {getattr(cls, '__qualname__', cls)!r} (plugin {self._plugin!r})"
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise RegistryError(f"{what} must be a subclass of {self.base.__module__}.{self.base.__name__}")
        name = cls.__dict__.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise RegistryError(
                f"{what} needs its own class attribute 'name', a string of letters, digits, "
                f"'_', '-' or '.' starting with a letter; got {name!r}"
            )
        cfg = getattr(cls, "Config", None)
        if not (isinstance(cfg, type) and dataclasses.is_dataclass(cfg)
                and cfg.__dataclass_params__.frozen):  # type: ignore[attr-defined]
            raise RegistryError(
                f"{what} needs a nested 'Config' that is a @dataclass(frozen=True) "
                "of its parameters (with defaults)"
            )

    def discard_plugin(self, plugin: str) -> None:
        """Remove every class ``plugin`` registered (when the manager skips a failing plugin)."""
        self._entries = {n: e for n, e in self._entries.items() if e.plugin != plugin}

    # ------------------------------------------------------------------------------ lookup

    def entry(self, name: str) -> RegistryEntry:
        """The entry registered as ``name``; an unknown name suggests close matches."""
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}{close_matches(str(name), known)} "
                f"(registered: {', '.join(known) or 'none'})"
            ) from None

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``."""
        return self.entry(name).cls

    def create(self, name: str, params: Optional[Mapping[str, Any]] = None, *,
               file: Optional[str] = None, section: Optional[str] = None) -> T:
        """Instantiate ``name`` with keyword ``params``, validated like a config file's
        (unknown or missing keys and wrong types are :class:`alara.params.ConfigError`
        located by ``file`` and ``section``).  The one way a component is built by name."""
        cls = self.get(name)
        config = make_config(cls.Config, dict(params or {}), file=file,
                             section=section or f"{self.kind} {name!r}")
        return cls(config)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[RegistryEntry]:
        """The entries, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
