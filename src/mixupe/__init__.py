"""mixupe: Mixup-family objectives for PyTorch, with every MixupE variant.

The objectives and errors are imported with the package; the subpackages ``data``,
``models``, ``engine`` and ``bench`` are imported on first use (``mixupe.data.load(...)``
works after a plain ``import mixupe``), so ``import mixupe`` stays light.

Example:
    >>> import torch, mixupe
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> objective = mixupe.MixupE(version=3, eta=1e-3, mixing=mixupe.Mixup(alpha=2.0,
    ...                           num_classes=3, seed=0))
    >>> out = objective(net, torch.randn(8, 4), torch.randint(0, 3, (8,)))
    >>> out.loss.backward()
    >>> mixupe.data.names()[:2]
    ['breast-cancer', 'cifar10']
"""

from __future__ import annotations

import importlib
from typing import Any

from mixupe import functional
from mixupe.collate import MixCollate
from mixupe.errors import (
    ConfigError,
    CorruptDataError,
    DataUnavailableError,
    InputError,
    MixupeError,
    NonFiniteLossError,
)
from mixupe.objectives import (
    ERM,
    AlignMix,
    CoMixup,
    CutMix,
    FMix,
    ManifoldMixup,
    Mixup,
    MixupCleanCE,
    MixupE,
    ObjectiveOutput,
    PuzzleMix,
    RegMixup,
    ResizeMix,
    SaliencyMix,
    Scheduled,
    Switch,
)
from mixupe.sam import SAM

__version__ = "0.1.0"

# Imported on first attribute access (PEP 562).
_LAZY_SUBMODULES = ("atomic", "bench", "cli", "data", "engine", "models", "objectives", "errors")

__all__ = [
    "ERM",
    "SAM",
    "AlignMix",
    "CoMixup",
    "ConfigError",
    "CorruptDataError",
    "CutMix",
    "DataUnavailableError",
    "FMix",
    "InputError",
    "ManifoldMixup",
    "MixCollate",
    "Mixup",
    "MixupCleanCE",
    "MixupE",
    "MixupeError",
    "NonFiniteLossError",
    "ObjectiveOutput",
    "PuzzleMix",
    "RegMixup",
    "ResizeMix",
    "SaliencyMix",
    "Scheduled",
    "Switch",
    "__version__",
    "functional",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"mixupe.{name}")
    raise AttributeError(f"module 'mixupe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
