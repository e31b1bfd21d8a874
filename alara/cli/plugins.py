"""``alara plugins``: list the loaded plugins and every registered component with its
origin and parameters (defaults shown); the component a config without that section gets
is marked "the default"."""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from typing import Any

__all__ = ["register", "run", "collect"]


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``plugins`` sub-command."""
    from alara.interfaces import KINDS

    p = subparsers.add_parser(
        "plugins",
        help="list plugins and registered components",
        description="List the loaded plugins (built-in and installed under the 'alara' entry-point "
                    "group) and every registered component: its name, origin and parameters "
                    "with defaults, and which one a config without that section gets (the "
                    "default).  Set ALARA_BLOCK_PLUGINS=name1,name2 to block plugins.",
    )
    p.add_argument("--kind", choices=list(KINDS), help="only this component kind")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _jsonable(value: Any) -> Any:
    if value is dataclasses.MISSING:
        return "<required>"
    if isinstance(value, tuple):
        return list(value)
    return value


def collect(kind: str | None = None) -> dict[str, Any]:
    """Plugins, failures and components as plain data."""
    from alara.config import DEFAULT_COMPONENTS, describe_params
    from alara.interfaces import KINDS
    from alara.plugins import get_manager

    manager = get_manager()
    kinds = [kind] if kind else list(KINDS)
    components: dict[str, list[dict[str, Any]]] = {}
    for k in kinds:
        components[k] = [
            {
                "name": e.cls.name,
                "origin": e.origin,
                "is_default": DEFAULT_COMPONENTS.get(k) == e.cls.name,
                "plugin": e.plugin,
                "class": e.qualname,
                "params": [{"name": n, "type": t, "default": _jsonable(d)}
                           for n, t, d in describe_params(e.cls.Config)],
                **({"higher_is_better": e.cls.higher_is_better} if k == "iq_metric" else {}),
            }
            for e in manager.registry(k).entries()
        ]
    return {
        "plugins": [{"name": p.name, "origin": p.origin, "hooks": list(p.hooks)} for p in manager.plugins()],
        "failed": [dataclasses.asdict(f) for f in manager.failed],
        "blocked": [{"name": p.name, "origin": p.origin} for p in manager.blocked],
        "block_list_unmatched": [{"name": n, "hint": h} for n, h in manager.unmatched_blocks],
        "components": components,
    }


def run(args: argparse.Namespace) -> int:
    """Print the listing; returns 0.  Skipped plugins are listed with their reason, so
    their load warnings are not printed a second time."""
    from alara.plugins import PluginLoadWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        data = collect(getattr(args, "kind", None))
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
        return 0
    print("plugins:")
    for p in data["plugins"]:
        print(f"  {p['name']}  ({p['origin']})")
    for f in data["failed"]:
        print(f"  {f['name']}  ({f['origin']})  SKIPPED: {f['reason']}")
    for b in data["blocked"]:
        print(f"  {b['name']}  ({b['origin']})  BLOCKED by ALARA_BLOCK_PLUGINS")
    for u in data["block_list_unmatched"]:
        # A typo in the block list blocks nothing: say so where the user looks.
        print(f"  {u['name']}  NAMED IN ALARA_BLOCK_PLUGINS, but no installed plugin is called that{u['hint']}")
    for kind, comps in data["components"].items():
        print(f"\n[{kind}]")
        if not comps:
            print("  (none registered)")
        for c in comps:
            extra = ", the default" if c["is_default"] else ""
            if "higher_is_better" in c:
                extra += ", higher is better" if c["higher_is_better"] else ", lower is better"
            print(f"  {c['name']}  ({c['origin']}{extra})  {c['class']}")
            for prm in c["params"]:
                default = prm["default"]
                # TOML spellings; None (no TOML literal) means "leave it out".
                if default == "<required>":
                    shown = default
                elif default is None:
                    shown = "unset"
                else:
                    shown = json.dumps(default)
                print(f"      {prm['name']}: {prm['type']} = {shown}")
    return 0
