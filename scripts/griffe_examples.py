"""A griffe extension for the documentation site (mkdocs.yml loads it from this path).

The docstrings of mixupe head their doctests ``Example:``; griffe's Google-style parser
knows only ``Examples:`` as the examples section and would render ``Example:`` as an
admonition whose ``>>>`` lines become Markdown text. This reads the singular heading as the
plural one, so the site shows every doctest as a code block. Nothing else is changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.M)


class ExampleSections(griffe.Extension):
    """Rename a docstring's ``Example:`` section heading to ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\g<indent>Examples:", obj.docstring.value)
