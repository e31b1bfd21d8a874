"""Range checks the built-in components' ``Config`` classes share.

Numbers must be finite as well as in range: ``inf`` passes ``not x > 0`` and NaN fails
every comparison, so a plain range check lets both through.  Messages name the class,
the parameter and what a valid value is.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["positive", "non_negative", "whole"]


def _number(config: object, name: str, need: str, ok, hint: str) -> None:
    value = getattr(config, name)
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or not ok(value)):
        extra = f" ({hint})" if hint else ""
        raise ValueError(f"{type(config).__qualname__}: {name} must be {need}, got "
                         f"{value!r}{extra}")


def positive(config: object, *names: str, hint: str = "") -> None:
    """Each of ``names`` is a finite number > 0."""
    for name in names:
        _number(config, name, "positive and finite", lambda v: v > 0, hint)


def non_negative(config: object, *names: str, hint: str = "") -> None:
    """Each of ``names`` is a finite number >= 0."""
    for name in names:
        _number(config, name, ">= 0 and finite", lambda v: v >= 0, hint)


def whole(config: object, name: str, minimum: int, hint: str = "") -> None:
    """``name`` is an integer >= ``minimum`` (a float such as 2.0 is refused, not cast)."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        extra = f" ({hint})" if hint else ""
        raise ValueError(f"{type(config).__qualname__}: {name} must be >= {minimum} (a whole "
                         f"number), got {value!r}{extra}")
