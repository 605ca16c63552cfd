"""Option helpers of the ``mixupe`` commands: value parsers, the help formatter, and the
options several commands share (``--runs-root``, ``KEY=VALUE`` lists, plain flags)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true/false, lists), the plain string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (KEY, parsed VALUE)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE; write e.g. subset=5000")
    return key.strip(), parse_value(value.strip())


def key_values(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1[,V2...]`` -> (KEY, [parsed V1, ...])."""
    key, sep, values = text.partition("=")
    if not sep or not key or not values.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=V1[,V2...]; write e.g. alpha=0.2")
    return key.strip(), [parse_value(v.strip()) for v in values.split(",") if v.strip()]


def none_or(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for an optional field: the word ``none`` gives None."""

    def parse_optional(text: str) -> Any:
        return None if text.lower() == "none" else parse(text)

    parse_optional.__name__ = getattr(parse, "__name__", "value")  # argparse's error message
    return parse_optional


def tuple_of(element: type, length: int | None) -> Callable[[str], tuple[Any, ...]]:
    """A parser of comma-separated values of ``element``: ``length`` of them, or any number."""
    shown = ",".join([element.__name__.upper()] * (length or 2)) + ("" if length else "...")
    example = ",".join(({int: ["2", "4"], float: ["0.2", "0.8"]}.get(element, ["a", "b"]) * 4)
                       [: length or 2])

    def parse_tuple(text: str) -> tuple[Any, ...]:
        try:
            values = tuple(element(s.strip()) for s in text.split(",") if s.strip())
        except ValueError:
            values = None
        if values is None or (length is not None and len(values) != length):
            raise argparse.ArgumentTypeError(f"{text!r} is not {shown}; write e.g. {example}")
        return values

    parse_tuple.__name__ = f"{element.__name__} tuple"
    return parse_tuple


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows an option's default, unless it is None/False or the help text already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False) or "default" in text:
            return text
        return super()._get_help_string(action) or text


def add_runs_root(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--runs-root DIR`` (default ./runs)."""
    parser.add_argument("--runs-root", type=Path, default=Path("runs"), help=help_text)


def add_pairs(parser: argparse.ArgumentParser, flag: str, dest: str, metavar: str,
              help_text: str, parse: Callable[[str], Any] = key_value) -> None:
    """A repeatable ``KEY=VALUE`` option collected into a list (empty when not given)."""
    parser.add_argument(flag, dest=dest, action="append", type=parse, default=[],
                        metavar=metavar, help=help_text)


def add_flags(parser: Any, flags: dict[str, str]) -> None:
    """``store_true`` options, ``{flag: help}``."""
    for flag, help_text in flags.items():
        parser.add_argument(flag, action="store_true", help=help_text)
