"""The training engine: config, training loop, metrics, checkpoints, run directories and DDP.

>>> from mixupe.engine import TrainConfig
>>> TrainConfig(method="mixupe", eta=0.1).method
'mixupe'
"""

from __future__ import annotations

from mixupe.engine.config import TrainConfig
from mixupe.engine.metrics import (
    accuracy,
    brier,
    ece,
    fgsm_accuracy,
    mean_ci,
    nll,
    paired_diff_ci,
)
from mixupe.engine.trainer import RunResult, evaluate, train

__all__ = [
    "RunResult",
    "TrainConfig",
    "accuracy",
    "brier",
    "ece",
    "evaluate",
    "fgsm_accuracy",
    "mean_ci",
    "nll",
    "paired_diff_ci",
    "train",
]
