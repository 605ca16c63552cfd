"""Checks of user tensors (labels, soft targets, finiteness); they synchronise with the device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mixupe.errors import InputError

__all__ = [
    "check_finite_tensor",
    "check_labels",
    "check_soft_targets",
]


def check_labels(y: Tensor, num_classes: int) -> None:
    """Raise :class:`InputError` unless integer labels lie in ``[0, num_classes)``.

    This reads the tensor's minimum and maximum, so it synchronises with the device.

    Example:
        >>> check_labels(torch.tensor([0, 2]), 3)
    """
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise InputError(
            f"label {bad} is out of range for num_classes={num_classes}: labels must lie in "
            f"[0, {num_classes - 1}]; fix the labels or pass the right num_classes."
        )


def check_soft_targets(targets: Tensor) -> None:
    """Raise :class:`InputError` unless every row of ``targets`` is a probability distribution.

    Entries must be >= 0 and each row must sum to 1 within ``sqrt(eps)`` of the dtype (about
    3e-4 in float32). This reads the tensor, so it synchronises with the device.

    Example:
        >>> check_soft_targets(torch.tensor([[0.25, 0.75], [1.0, 0.0]]))
    """
    if targets.numel() == 0:
        return
    low = float(targets.min())
    if low < 0:
        raise InputError(
            f"soft targets hold a negative entry ({low:g}): each row must be a probability "
            "distribution over the classes (entries >= 0 that sum to 1); pass e.g. "
            "torch.softmax(scores, 1), or int64 class indices."
        )
    tol = math.sqrt(torch.finfo(targets.dtype).eps)
    sums = targets.sum(-1)
    worst = int((sums - 1).abs().argmax())
    if abs(float(sums[worst]) - 1) > tol:
        raise InputError(
            f"soft target row {worst} sums to {float(sums[worst]):.6g}, not 1: each row must be "
            "a probability distribution over the classes; normalise the rows (t / t.sum(1, "
            "keepdim=True)) or pass int64 class indices."
        )


def check_finite_tensor(t: Tensor, name: str) -> None:
    """Raise :class:`InputError` if ``t`` holds NaN or infinite values (synchronises).

    Example:
        >>> check_finite_tensor(torch.ones(2), "x")
    """
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise InputError(
            f"{name} holds {n_bad} non-finite value(s) (NaN or inf): clean or re-normalise the "
            "data before training."
        )
