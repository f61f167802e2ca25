"""Argument checks whose errors teach (after MNE's ``_check.py``).

Each helper raises with what was expected and what came, e.g.
``Invalid value for the 'output_type' parameter. Allowed values are 'pil', 'np' and 'pt', but got 'png' instead.``
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _fmt_options(options: Iterable[Any]) -> str:
    opts = [repr(o) for o in options]
    if len(opts) == 1:
        return opts[0]
    return ", ".join(opts[:-1]) + " and " + opts[-1]


def check_option(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``; return it."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(
            f"Invalid value for the {name!r} parameter. Allowed values are {_fmt_options(allowed)}, "
            f"but got {value!r} instead."
        )
    return value


def validate_type(name: str, value: Any, types: type | tuple[type, ...], type_name: str | None = None) -> Any:
    """Raise ``TypeError`` unless ``value`` is an instance of ``types``; return it."""
    if not isinstance(value, types):
        if type_name is None:
            tt = types if isinstance(types, tuple) else (types,)
            type_name = " or ".join(t.__name__ for t in tt)
        raise TypeError(f"{name} must be an instance of {type_name}, got {type(value).__name__} instead.")
    return value


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Raise ``ValueError`` unless ``low <= value <= high`` (bounds optional, inclusivity per side)."""
    ok = True
    if low is not None:
        ok &= value >= low if low_inclusive else value > low
    if high is not None:
        ok &= value <= high if high_inclusive else value < high
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'[' if low_inclusive else '('}{lo}, {hi}{']' if high_inclusive else ')'}"
        raise ValueError(f"Invalid value for the {name!r} parameter: expected a number in {interval}, got {value!r}.")
    return value
