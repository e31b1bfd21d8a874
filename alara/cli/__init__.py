"""The ``alara`` command line: one module per command group, each with ``register()``."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from typing import Sequence

# Each module defines ``register(subparsers)`` adding its sub-command(s); the parser stores
# the handler in ``args.func``.  Keep the list in the order ``alara --help`` shows it.
COMMAND_MODULES: tuple[str, ...] = (
    "alara.cli.info",
    "alara.cli.demo",
    "alara.cli.plugins",
    "alara.cli.data",
    "alara.cli.train",
    "alara.cli.evaluate",
    "alara.cli.experiment",
    "alara.cli.bench",
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


def whole(minimum: int):
    """argparse type: a whole number >= ``minimum`` (sizes, counts)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def photons(text: str) -> float:
    """argparse type: a positive finite photon count (``float`` accepts 'inf' and 'nan')."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number of photons per "
                                         f"bin (LoDoPaB: 4096), got {text!r}")
    from alara.noise import MIN_COUNT

    if value <= MIN_COUNT:
        raise argparse.ArgumentTypeError(f"must be above the noise model's minimum count {MIN_COUNT:g} "
                                         f"photons per bin (below it every observation is the same "
                                         f"constant; LoDoPaB: 4096), got {text!r}")
    return value


#: Errors a command reports as one line (bad input, missing or unwritable files); any
#: other exception is a bug and keeps its traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, KeyError)


def error_message(exc: BaseException) -> str:
    """One line for an expected error: OS errors as ``path: reason``, the message of the
    others (``KeyError`` without its quotes)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        return f"{where}: {exc.strerror or exc}"
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``alara`` console script: 0 on success, 1 with one error line
    for bad input, 130 when interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    command = " ".join(v for v in (args.command, getattr(args, f"{args.command}_command", None)) if v)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # Output piped into e.g. `head`, which closed early: not an error of ours.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"alara {command}: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as exc:
        print(f"alara {command}: error: {error_message(exc)}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise  # a bug: keep the traceback
        print(f"alara {command}: error: {out_of_memory_message(exc, command)}", file=sys.stderr)
        return 1


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CPU or GPU), which is no bug of ours."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text or "failed to allocate" in text


def out_of_memory_message(exc: BaseException, command: str = "") -> str:
    """One line for an allocation failure: what ran out and what this command can lower
    (only options the command has)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    where = "GPU" if "cuda" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError" else "CPU"
    fix = {"train": "lower the batch size (--set train.batch_size=N; train.grad_accum keeps the effective "
                    "batch) or the image size",
           "experiment": "lower the batch size (--set train.batch_size=N) or [experiment] image_size",
           "evaluate": "lower the batch size (--set eval.batch_size=N)"}.get(
        command, "ask for less at once (a smaller image size, fewer views or samples per file)")
    return f"out of {where} memory ({first[:160]}); {fix}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
