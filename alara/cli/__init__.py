"""The ``alara`` command line: one module per command group, each with ``register()``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# Each module defines ``register(subparsers)`` adding its sub-command(s); the parser stores
# the handler in ``args.func``.  Keep the list in the order ``alara --help`` shows it.
COMMAND_MODULES: tuple[str, ...] = (
    "alara.cli.info",
    "alara.cli.demo",
    "alara.cli.plugins",
    "alara.cli.data",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered sub-command."""
    from alara import __version__

    parser = argparse.ArgumentParser(
        prog="alara",
        description="End-to-end learned CT dose modulation (End2end-ALARA).",
    )
    parser.add_argument("--version", action="version", version=f"alara {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``alara`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # Output piped into e.g. `head`, which closed early: not an error of ours.
        sys.stderr.close()
        return 0
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"alara {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
