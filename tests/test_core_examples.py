"""The runnable examples in the docstrings of every module of ``mixupe`` run and print what
they claim (a module added later is picked up without editing this file)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import mixupe

# Modules whose examples need an optional part (see tests/conftest.py).
NEEDS = {"mixupe.models.gin": "torch_geometric", "mixupe.data.superpixels": "skimage",
         "mixupe.functional.cuts": "maxflow", "mixupe.functional.graph_cuts": "maxflow",
         "mixupe.hf": "transformers"}
# The core library: each of these must carry at least one runnable example.
CORE = {
    "mixupe", "mixupe.functional", "mixupe.objectives.base", "mixupe.objectives.hooks",
    "mixupe.objectives.mixing", "mixupe.objectives.manifold", "mixupe.objectives.mixupe",
    "mixupe.objectives.forward_mode",
}
MODULES = sorted({"mixupe"} | {m.name for m in pkgutil.walk_packages(mixupe.__path__, "mixupe.")})


def test_every_module_is_collected():
    assert set(MODULES) >= CORE
    assert {"mixupe.cli", "mixupe.engine.trainer", "mixupe.data.registry",
            "mixupe.bench.plots"} <= set(MODULES)


@pytest.mark.parametrize(
    "name",
    [pytest.param(m, marks=pytest.mark.needs(NEEDS[m])) if m in NEEDS else m for m in MODULES])
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    monkeypatch.setenv("MIXUPE_CACHE", str(tmp_path / "cache"))
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
    if name in CORE:
        assert result.attempted > 0, f"{name} has no runnable example"
