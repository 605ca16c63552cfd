"""mixupe: Mixup-family objectives for PyTorch, with every MixupE variant.

Example:
    >>> import torch, mixupe
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> objective = mixupe.MixupE(version=3, eta=1e-3, mixing=mixupe.Mixup(alpha=2.0,
    ...                           num_classes=3, seed=0))
    >>> out = objective(net, torch.randn(8, 4), torch.randint(0, 3, (8,)))
    >>> out.loss.backward()
"""

from __future__ import annotations

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
