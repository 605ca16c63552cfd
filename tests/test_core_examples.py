"""The runnable examples in the core library's docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "mixupe",
    "mixupe.functional",
    "mixupe.objectives.base",
    "mixupe.objectives.hooks",
    "mixupe.objectives.mixing",
    "mixupe.objectives.manifold",
    "mixupe.objectives.mixupe",
    "mixupe.collate",
    "mixupe.lightning",
    "mixupe.data.splits",
    "mixupe.data.graphs",
    "mixupe.data.molecules",
    "mixupe.data.speech_commands",
    "mixupe.models.cnn",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
    assert result.attempted > 0, f"{name} has no runnable example"
