"""Shared test set-up.

Tests run on small tensors on a 2-core machine: one intra-op thread avoids the thread-pool
overhead that dominates tiny operations (and keeps parallel test workers from oversubscribing).

Tests that need an optional part carry ``@pytest.mark.needs("NAME")`` (NAME a key of
``OPTIONAL``). Where the part is missing they are skipped one by one, each with a reason that
names the install command, and the end of the run says how many were skipped for each missing
part, so a run without PyTorch Geometric or the Fashion-MNIST files never looks complete.
"""

from __future__ import annotations

import importlib
from collections import Counter

import pytest
import torch

torch.set_num_threads(1)



def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _fashion_mnist_installed() -> bool:
    from mixupe.data import images

    return all(images._find_idx(images.FASHION_MNIST_DIR, stem) is not None
               for stem in images.FASHION_MNIST_FILES.values())


# name -> (is it here?, why a test is skipped without it)
OPTIONAL = {
    "torch_geometric": (
        _importable("torch_geometric"),
        "PyTorch Geometric is not installed; `pip install torch_geometric` "
        "(scripts/setup.sh installs it)",
    ),
    "fashion-mnist": (
        _fashion_mnist_installed(),
        "the Fashion-MNIST files are not installed; `sudo apt-get install "
        "dataset-fashion-mnist` (scripts/setup.sh does it when run as root)",
    ),
    "skimage": (
        _importable("skimage"),
        "scikit-image is not installed; `pip install scikit-image` (the bench extra)",
    ),
    "maxflow": (
        _importable("maxflow"),
        "PyMaxflow is not installed; `pip install PyMaxflow` (the family extra)",
    ),
    "transformers": (
        _importable("transformers") and _importable("accelerate"),
        "Hugging Face transformers is not installed; `pip install transformers accelerate "
        "\"torch==<your torch>\"` (the transformers extra)",
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"needs(name): the test needs an optional part, one of {sorted(OPTIONAL)}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for mark in item.iter_markers("needs"):
            for name in mark.args:
                if name not in OPTIONAL:
                    raise pytest.UsageError(f"{item.nodeid}: unknown needs({name!r}); "
                                            f"use one of {sorted(OPTIONAL)}")
                present, reason = OPTIONAL[name]
                if not present:
                    item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    reasons = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        if isinstance(report.longrepr, tuple):
            reasons[report.longrepr[2].removeprefix("Skipped: ")] += 1
    missing = [(reason, reasons[reason]) for present, reason in OPTIONAL.values()
               if not present and reasons[reason]]
    if missing:
        terminalreporter.section("optional parts missing: these tests did not run")
        for reason, count in missing:
            terminalreporter.line(f"{count} test(s) skipped: {reason}")
