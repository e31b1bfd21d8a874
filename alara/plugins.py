"""The plugin manager: loads the ``alara`` entry-point group once, on first use, and fills
one :class:`~alara.registry.Registry` per component kind from the plugins' hooks.

The built-in components are a plugin like any other (entry point ``builtin`` of the
``alara`` distribution); the core never imports them.

- ``ALARA_BLOCK_PLUGINS=name1,name2`` blocks plugins by entry-point name or distribution
  name (spelt as pip accepts it: ``my_dist`` blocks ``My-Dist``).  A name that matches no
  installed plugin is warned about (a typo would otherwise block nothing), and an unknown
  component name lists the blocked plugins it might have come from.
- A plugin that fails to import (an exception, ``sys.exit`` or any ``BaseException``
  other than ``KeyboardInterrupt``), whose hooks do not match the specs, or whose hooks
  fail while registering (a name another plugin registered first, an invalid class, a
  bug) is skipped with a :class:`PluginLoadWarning` naming it and the reason; the others
  still load.  Plugins registered in-process with :meth:`AlaraPluginManager.register`
  raise instead.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Mapping, Optional

import pluggy

from alara import hookspecs
from alara.interfaces import KINDS, Component
from alara.params import close_matches
from alara.registry import Registry, UnknownComponentError

__all__ = [
    "BLOCK_ENV",
    "ENTRY_POINT_GROUP",
    "PluginLoadWarning",
    "PluginError",
    "PluginInfo",
    "FailedPlugin",
    "AlaraPluginManager",
    "get_manager",
    "get_registry",
    "create",
    "reset",
]

#: Environment variable: comma-separated plugin names not to load.
BLOCK_ENV = "ALARA_BLOCK_PLUGINS"
#: Entry-point group third-party plugins publish under.
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
#: Entry-point name of the built-in plugins; loaded first so they own their names.
BUILTIN_PLUGIN = "builtin"


class PluginLoadWarning(UserWarning):
    """A plugin was skipped because it could not be loaded."""


class PluginError(RuntimeError):
    """A plugin registered in-process does not match the hook specs."""


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: its name, origin and the hooks it implements."""

    name: str
    origin: str
    hooks: tuple[str, ...]


@dataclass(frozen=True)
class FailedPlugin:
    """A plugin that was skipped, with the reason."""

    name: str
    origin: str
    reason: str


def _normalise(dist_name: str) -> str:
    """A distribution name as pip compares them (``Foo_Bar.baz`` -> ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", dist_name).lower()


def _blocked_names() -> set[str]:
    return {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}


def _origin_of(dist: Optional[metadata.Distribution]) -> str:
    if dist is None:
        return "unknown distribution"
    name = dist.metadata["Name"] or "?"
    if name.lower() == "alara":
        return "built-in"
    return f"{name} {dist.version}"


class _PluginRegistry(Registry):
    """A registry the manager fills: an unknown name also names the plugins
    ``ALARA_BLOCK_PLUGINS`` kept out, since the name may be one of theirs (a blocked
    plugin is never imported, so which one cannot be known)."""

    def __init__(self, kind: str, base: type, blocked: list[PluginInfo]) -> None:
        super().__init__(kind, base)
        self._blocked = blocked

    def entry(self, name: str):  # type: ignore[override]
        try:
            return super().entry(name)
        except UnknownComponentError as exc:
            if not self._blocked:
                raise
            which = ", ".join(f"{p.name!r} ({p.origin})" for p in self._blocked)
            raise UnknownComponentError(
                f"{exc}; {BLOCK_ENV} blocks plugin(s) {which}: if {name!r} comes from one of "
                f"them, remove it from {BLOCK_ENV}") from None


def _is_fatal(exc: BaseException) -> bool:
    """Exceptions a plugin's failure must not swallow: the user pressing Ctrl-C."""
    return isinstance(exc, KeyboardInterrupt)


class AlaraPluginManager:
    """pluggy manager plus the registries it fills (one instance per process, see
    :func:`get_manager`; tests may build their own)."""

    def __init__(self, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.failed: list[FailedPlugin] = []
        #: Entry-point plugins not loaded because ALARA_BLOCK_PLUGINS names them.
        self.blocked: list[PluginInfo] = []
        #: ALARA_BLOCK_PLUGINS entries that name no installed plugin (typos), with a hint.
        self.unmatched_blocks: list[tuple[str, str]] = []
        self._origins: dict[str, str] = {}
        self._load_entry_points = load_entry_points
        self._loaded = False
        self._registries: Optional[dict[str, Registry[Any]]] = None
        #: In-process plugins: their registration failures raise instead of being skipped.
        self._strict: set[str] = set()

    # ----------------------------------------------------------------------------- loading

    def load(self) -> None:
        """Load the entry-point plugins (once; later calls do nothing)."""
        if self._loaded:
            return
        self._loaded = True
        blocked = _blocked_names()
        blocked_dists = {_normalise(b) for b in blocked}
        for name in blocked:
            self.pm.set_blocked(name)
        if not self._load_entry_points:
            return
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        # Built-ins first so that they own their names; then a stable order.
        eps.sort(key=lambda ep: (ep.name != BUILTIN_PLUGIN, ep.name))
        known: set[str] = set()  # entry-point and distribution names, to check the block list
        for ep in eps:
            dist = getattr(ep, "dist", None)
            origin = _origin_of(dist)
            dist_name = dist.metadata["Name"] if dist is not None else None
            known |= {ep.name} | ({dist_name} if dist_name else set())
            if ep.name in blocked or (dist_name and _normalise(dist_name) in blocked_dists):
                if ep.name not in {p.name for p in self.blocked}:
                    self.blocked.append(PluginInfo(ep.name, origin, ()))
                continue
            if self.pm.get_plugin(ep.name) is not None:
                continue  # the same distribution seen twice on sys.path
            try:
                plugin = ep.load()
            except BaseException as exc:  # third-party code at import: sys.exit() included
                if _is_fatal(exc):
                    raise
                self._skip(ep.name, origin, f"import of {ep.value!r} failed: {type(exc).__name__}: {exc}")
                continue
            try:
                self.pm.register(plugin, name=ep.name)
            except (pluggy.PluginValidationError, ValueError) as exc:  # ValueError: registered twice
                self._skip(ep.name, origin, str(exc))
                continue
            self._origins[ep.name] = origin
        self._warn_unknown_blocked(blocked, known)
        self.check_pending(strict=False)

    def _warn_unknown_blocked(self, blocked: set[str], known: set[str]) -> None:
        """Warn about block-list names no installed plugin has (a typo blocks nothing)."""
        normal = {_normalise(k) for k in known}
        for name in sorted(blocked):
            if name in known or _normalise(name) in normal:
                continue
            hint = close_matches(name, sorted(known))
            self.unmatched_blocks.append((name, hint))
            warnings.warn(f"alara: {BLOCK_ENV} names {name!r}, but no installed alara plugin "
                          f"(entry point or distribution) is called that{hint}; installed: "
                          f"{', '.join(sorted(known)) or 'none'}", PluginLoadWarning, stacklevel=4)

    def check_pending(self, strict: bool = True) -> None:
        """Check that every hook a plugin implements is a known ``alara`` hook.

        A misspelt hook would otherwise never be called.  ``strict``: raise
        :class:`PluginError`; else skip the offending plugin with a warning.
        """
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.pm.get_name(exc.plugin) or repr(exc.plugin)
                self.pm.unregister(exc.plugin)
                origin = self._origins.pop(name, "unknown")
                reason = f"{exc} (known hooks: {', '.join(self.hook_names())})"
                if strict:
                    raise PluginError(f"plugin {name!r}: {reason}") from None
                self._skip(name, origin, reason)

    def _skip(self, name: str, origin: str, reason: str) -> None:
        self.failed.append(FailedPlugin(name, origin, reason))
        warnings.warn(f"alara: skipping plugin {name!r} ({origin}): {reason}", PluginLoadWarning, stacklevel=3)

    def register(self, plugin: object, name: str, origin: Optional[str] = None) -> None:
        """Register an in-process plugin (a module or object with hook implementations),
        e.g. from a test or a notebook.

        Strict, unlike entry-point plugins: a hook that does not match the specs is a
        :class:`PluginError`, and a hook that fails while registering (a duplicate name is a
        :class:`~alara.registry.DuplicateComponentError`) raises here, with the plugin
        removed again.
        """
        self.load()
        if self.pm.is_blocked(name):
            return
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"plugin {name!r}: {exc}") from None
        self._origins[name] = origin or f"plugin {name}"
        self._strict.add(name)
        self.check_pending(strict=True)
        self._registries = None
        self._registries = self._populate()  # now, so that a failing hook raises here

    def unregister(self, name: str) -> None:
        """Remove a plugin by name (registries are rebuilt on next use)."""
        self.pm.unregister(name=name)
        self._origins.pop(name, None)
        self._strict.discard(name)
        self._registries = None

    # -------------------------------------------------------------------------- registries

    @staticmethod
    def hook_names() -> list[str]:
        """The names of the ``alara_register_<kind>`` hooks, one per kind."""
        return [f"alara_register_{kind}" for kind in KINDS]

    def _populate(self) -> dict[str, Registry[Any]]:
        """Fresh registries filled by every plugin's hooks, one plugin at a time (in load
        order, built-ins first), so each class is attributed to its plugin.

        A plugin whose hook raises (a duplicate name, an invalid class, a bug) has all its
        classes taken out again and is skipped with a :class:`PluginLoadWarning`; the
        exception propagates for in-process plugins (see :meth:`register`).
        """
        regs: dict[str, Registry[Any]] = {kind: _PluginRegistry(kind, base, self.blocked)
                                          for kind, base in KINDS.items()}
        for name, plugin in list(self.pm.list_name_plugin()):
            if plugin is None:  # blocked
                continue
            origin = self._origins.get(name, "unknown")
            try:
                for kind, reg in regs.items():
                    for impl in getattr(self.pm.hook, f"alara_register_{kind}").get_hookimpls():
                        if impl.plugin is plugin:
                            with reg.registering_for(name, origin):
                                impl.function(**{arg: reg for arg in impl.argnames})
            except BaseException as exc:  # third-party code: report and skip, the others load
                if _is_fatal(exc):
                    raise
                for reg in regs.values():
                    reg.discard_plugin(name)
                self.pm.unregister(name=name)
                self._origins.pop(name, None)
                if name in self._strict:
                    self._strict.discard(name)
                    raise
                self._skip(name, origin, f"registering its components failed: {type(exc).__name__}: {exc}")
        return regs

    def registry(self, kind: str) -> Registry[Any]:
        """The registry of ``kind`` ("prior", "dose_policy", "simulator", "reconstructor",
        "iq_metric"), loading plugins on first use."""
        if kind not in KINDS:
            from alara.registry import close_matches

            raise ValueError(f"unknown component kind {kind!r}{close_matches(kind, list(KINDS))} "
                             f"(kinds: {', '.join(KINDS)})")
        self.load()
        if self._registries is None:
            self._registries = self._populate()
        return self._registries[kind]

    def plugins(self) -> list[PluginInfo]:
        """The loaded plugins with their origins and implemented hooks."""
        self.load()
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            hooks = tuple(sorted(c.name for c in self.pm.get_hookcallers(plugin) or ()))
            out.append(PluginInfo(name, self._origins.get(name, "unknown"), hooks))
        return sorted(out, key=lambda p: (p.name != BUILTIN_PLUGIN, p.name))


_MANAGER: Optional[AlaraPluginManager] = None


def get_manager() -> AlaraPluginManager:
    """The process-wide plugin manager (created on first use; plugins load lazily)."""
    global _MANAGER
    if _MANAGER is None:
        _MANAGER = AlaraPluginManager()
    return _MANAGER


def reset() -> None:
    """Forget the process-wide manager, so the next use reloads plugins (for tests, or after
    installing a plugin into the running interpreter)."""
    global _MANAGER
    _MANAGER = None


def get_registry(kind: str) -> Registry[Any]:
    """The registry of one component kind, e.g. ``get_registry("iq_metric")``."""
    return get_manager().registry(kind)


def create(kind: str, name: str, params: Optional[Mapping[str, Any]] = None) -> Component:
    """Instantiate the component ``name`` of ``kind`` with keyword ``params``."""
    return get_registry(kind).create(name, params)
