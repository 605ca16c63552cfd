"""Argument checks shared by the objectives, SAM and MixCollate: one phrasing per mistake.

Each function raises :class:`~mixupe.errors.ConfigError` naming the argument, the bad value
and what to pass instead, and returns the value converted (``float``, ``int``, ...):

- a number: :func:`finite`, :func:`non_negative` (>= 0), :func:`positive` (> 0);
  ``"{name}={value!r} is invalid: pass {what}, a finite number >= 0{hint}."``
- a number in a range: :func:`interval`;
  ``"{name}={value!r} is invalid: use a value in [0, 1){hint}."``
- an integer: :func:`integer` (``"... is invalid: pass {what}, an int >= 1{hint}."``) and
  :func:`among` (one of a few numbers, ``"... is invalid: use {use}."``);
- a named option: :func:`one_of`; ``"{name}={value!r} is unknown: use {options}{hint}."``
- a switch: :func:`flag` (True or False, optionally None).

Booleans are never taken for numbers (``True`` is an ``int`` in Python).

Example:
    >>> non_negative(0.5, "eta", what="the weight of the term")
    0.5
    >>> positive(0, "rho", what="the neighbourhood radius")
    Traceback (most recent call last):
    ...
    mixupe.errors.ConfigError: rho=0 is invalid: pass the neighbourhood radius, a finite number > 0.
    >>> one_of("avg", "mode", ("nearest", "bilinear"))
    Traceback (most recent call last):
    ...
    mixupe.errors.ConfigError: mode='avg' is unknown: use 'nearest' or 'bilinear'.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

from mixupe.errors import ConfigError

__all__ = [
    "among",
    "finite",
    "flag",
    "integer",
    "interval",
    "is_number",
    "non_negative",
    "one_of",
    "positive",
    "seed",
]


def is_number(value: Any) -> bool:
    """True for an ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _invalid(name: str, value: Any, requirement: str, what: str, hint: str) -> ConfigError:
    what = f"{what}, " if what else ""
    return ConfigError(f"{name}={value!r} is invalid: pass {what}{requirement}{hint}.")


def _hint(hint: str) -> str:
    return f" {hint}" if hint else ""


def finite(value: Any, name: str, *, what: str = "", hint: str = "") -> float:
    """``value`` as a float; refuses anything but a finite number."""
    if not (is_number(value) and math.isfinite(value)):
        raise _invalid(name, value, "a finite number", what, _hint(hint))
    return float(value)


def non_negative(value: Any, name: str, *, what: str = "", hint: str = "") -> float:
    """``value`` as a float; refuses anything but a finite number >= 0."""
    if not (is_number(value) and math.isfinite(value) and value >= 0):
        raise _invalid(name, value, "a finite number >= 0", what, _hint(hint))
    return float(value)


def positive(value: Any, name: str, *, what: str = "", hint: str = "") -> float:
    """``value`` as a float; refuses anything but a finite number > 0."""
    if not (is_number(value) and math.isfinite(value) and value > 0):
        raise _invalid(name, value, "a finite number > 0", what, _hint(hint))
    return float(value)


def interval(value: Any, name: str, low: float, high: float, *, closed: str = "[]",
             hint: str = "") -> float:
    """``value`` as a float; refuses anything outside the interval from ``low`` to ``high``.

    ``closed`` gives the brackets: ``"[]"``, ``"[)"``, ``"(]"`` or ``"()"``.

    Example:
        >>> interval(1.0, "clean_fraction", 0.0, 1.0, closed="(]")
        1.0
        >>> interval(1.0, "mean_decay", 0.0, 1.0, closed="[)")
        Traceback (most recent call last):
        ...
        mixupe.errors.ConfigError: mean_decay=1.0 is invalid: use a value in [0, 1).
    """
    inside = is_number(value) and (value >= low if closed[0] == "[" else value > low) and (
        value <= high if closed[1] == "]" else value < high)
    if not inside:
        raise ConfigError(f"{name}={value!r} is invalid: use a value in "
                          f"{closed[0]}{low:g}, {high:g}{closed[1]}{_hint(hint)}.")
    return float(value)


def integer(value: Any, name: str, *, minimum: int | None = None, what: str = "",
            hint: str = "", none: bool | str = False) -> int | None:
    """``value`` as an int; refuses anything but an int (>= ``minimum`` when given).

    ``none`` also takes None: True, or a text saying what None does.

    Example:
        >>> integer(0, "t_size", minimum=1, none="no transport")
        Traceback (most recent call last):
        ...
        mixupe.errors.ConfigError: t_size=0 is invalid: pass an int >= 1 or None (no transport).
    """
    if none is not False and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or (
            minimum is not None and value < minimum):
        requirement = "an int" + ("" if minimum is None else f" >= {minimum}")
        if none is not False:
            requirement += " or None" + ("" if none is True else f" ({none})")
        raise _invalid(name, value, requirement, what, _hint(hint))
    return int(value)


def among(value: Any, name: str, allowed: Sequence[Any], *, use: str) -> Any:
    """``value`` unchanged; refuses anything not in ``allowed`` (numbers: not a bool).

    ``use`` describes the allowed values, e.g. ``"-1 (released code) or +1"``.
    """
    if isinstance(value, bool) or value not in allowed:
        raise ConfigError(f"{name}={value!r} is invalid: use {use}.")
    return value


def _listing(options: Sequence[Any]) -> str:
    names = [repr(o) for o in options]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def one_of(value: Any, name: str, options: Sequence[Any], *, use: str | None = None,
           hint: str = "") -> Any:
    """``value`` unchanged; refuses anything that is not one of the named ``options`` (of
    their type: ``3.0`` is not the option ``3``).

    ``use`` replaces the listing of the options in the message (to say what each one is).
    """
    if isinstance(value, bool) or not any(isinstance(value, type(o)) and value == o
                                          for o in options):
        raise ConfigError(
            f"{name}={value!r} is unknown: use {use or _listing(options)}{_hint(hint)}.")
    return value


def flag(value: Any, name: str, *, none: str | None = None) -> bool | None:
    """``value`` unchanged; refuses anything but True or False (or None, described by
    ``none``, when given)."""
    if value is None and none is not None:
        return None
    if value is not True and value is not False:
        use = f"None ({none}), True or False" if none is not None else "True or False"
        raise ConfigError(f"{name}={value!r} is invalid: use {use}.")
    return value


def seed(value: Any) -> None:
    """Refuses a seed that is neither None nor an integer (numpy's integers too)."""
    if value is None:
        return
    try:
        operator.index(value)
    except TypeError:
        ok = False
    else:
        ok = not isinstance(value, bool)
    if not ok:
        raise ConfigError(
            f"seed={value!r} is invalid: pass an integer (e.g. seed=0), or generator= with a "
            "torch.Generator."
        )
