"""Shared test set-up.

Tests run on small tensors on a 2-core machine: one intra-op thread avoids the thread-pool
overhead that dominates tiny operations (and keeps parallel test workers from oversubscribing).

Tests that need an optional part carry ``@pytest.mark.needs("NAME")`` (NAME a key of
``OPTIONAL``). Where the part is missing they are skipped one by one, each with a reason that
names the install command, and the end of the run says how many were skipped for each missing
part, so a run without PyTorch Geometric or the Fashion-MNIST files never looks complete.

The suite runs on the CPU, also on a machine with a GPU: ``MIXUPE_DEVICE=cpu`` is set here
(before any test, so spawned ranks and CLI subprocesses inherit it), and makes the engine's
``device="auto"`` resolve to the CPU. Tests of the CUDA paths carry ``@pytest.mark.cuda``:
they are skipped without a CUDA device, and see no ``MIXUPE_DEVICE``.
"""

from __future__ import annotations

import importlib
import os
from collections import Counter

import pytest
import torch

torch.set_num_threads(1)

# "auto" means the CPU in every test not marked cuda (see the module docstring).
DEVICE_ENV = "MIXUPE_DEVICE"
os.environ[DEVICE_ENV] = "cpu"
CUDA_SKIP = "needs a CUDA device (runs in benchmarks/gpu_check.sh)"


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
    config.addinivalue_line(
        "markers", "cuda: the test runs on a CUDA device (skipped without one; device='auto' "
        "is not pinned to the CPU in it)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda = None  # asked once, and only when a cuda test is collected
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            cuda = torch.cuda.is_available() if cuda is None else cuda
            if not cuda:
                item.add_marker(pytest.mark.skip(reason=CUDA_SKIP))
        for mark in item.iter_markers("needs"):
            for name in mark.args:
                if name not in OPTIONAL:
                    raise pytest.UsageError(f"{item.nodeid}: unknown needs({name!r}); "
                                            f"use one of {sorted(OPTIONAL)}")
                present, reason = OPTIONAL[name]
                if not present:
                    item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _device_for_auto(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep ``MIXUPE_DEVICE=cpu`` for every test, except that cuda tests run without it."""
    if request.node.get_closest_marker("cuda") is not None:
        monkeypatch.delenv(DEVICE_ENV, raising=False)
    else:
        monkeypatch.setenv(DEVICE_ENV, "cpu")  # a test that changed it cannot leak the change


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
