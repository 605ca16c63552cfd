"""The types an objective step produces: :class:`ObjectiveOutput` (the result of a call),
:class:`MixPlan` (how a step mixes) and :class:`MixingStep` (a mixing step prepared).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["MixPlan", "MixingStep", "ObjectiveOutput"]


class _Deferred:
    """A dataclass field that may hold a tensor or a zero-argument function computing it; the
    function runs on first access (so hard-label losses build no dense targets unless asked)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}_value"

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return None  # the dataclass default
        value = obj.__dict__.get(self.slot)
        if callable(value) and not isinstance(value, Tensor):
            value = value()
            obj.__dict__[self.slot] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.slot] = value


@dataclass
class ObjectiveOutput:
    """The result of one objective call.

    Attributes:
        loss: scalar tensor to back-propagate.
        logits: the model's outputs on the (mixed) batch.
        lam: the lambda used for the targets: 0-d, or ``(B,)`` with per-sample lambdas (for
            CutMix the exact kept fraction when ``correct_lambda=True``).
        perm: the pairing permutation, ``(B,)`` int64.
        stat_tensors: detached 0-d tensors for logging, on the model's device (no sync).
        layer: the layer that was mixed (``"input"`` for input-space mixing).
        targets: the soft targets of the mixed batch, ``(B, K)`` (``(B, K, *S)`` for dense
            label maps); with class-index labels they are built only when first read (the loss
            itself is computed on the indices).
        mask: CutMix's paste mask (True where the partner sample shows), else None.
        clean_logits: MixupE's outputs on the clean batch, else None.
        scores: MixupE's per-sample scores ``s_i`` (with their graph), else None.
        clean_subset: the indices of MixupE's clean pass when it ran on part of the batch
            (``clean_logits`` and ``scores`` then follow it), else None.

    ``stats`` turns ``stat_tensors`` into floats on first access (this synchronises once).

    Example:
        >>> out = ObjectiveOutput(torch.tensor(1.0), torch.zeros(2, 3), torch.tensor(1.0),
        ...                       torch.arange(2), {"loss": torch.tensor(1.0)})
        >>> out.stats
        {'loss': 1.0}
    """

    loss: Tensor
    logits: Tensor
    lam: Tensor
    perm: Tensor
    stat_tensors: dict[str, Tensor]
    layer: str | None = None
    targets: Tensor | None = _Deferred()  # type: ignore[assignment]
    mask: Tensor | None = None
    clean_logits: Tensor | None = None
    scores: Tensor | None = None
    clean_subset: Tensor | None = None
    _stats: dict[str, float] | None = field(default=None, repr=False, compare=False)

    @property
    def stats(self) -> dict[str, float]:
        """Logging values as floats, computed from ``stat_tensors`` on first access."""
        if self._stats is None:
            self._stats = {k: float(v) for k, v in self.stat_tensors.items()}
        return self._stats


@dataclass
class MixPlan:
    """How one step mixes: the lambda for the targets, the pairing, where and how to mix.

    ``weights`` (B, B), when set, replaces ``lam``/``perm`` for the targets: row j holds the
    share of each input in mixed sample j (Co-Mixup mixes more than two inputs).
    """

    lam: Tensor
    perm: Tensor
    layer: str
    mix: Callable[[Tensor], Tensor]
    mask: Tensor | None = None
    weights: Tensor | None = None


@dataclass(frozen=True)
class MixingStep:
    """What :meth:`Objective._plan_mixing` prepares for one step."""

    batch_size: int
    device: torch.device
    dtype: torch.dtype
    clean: Tensor  # the clean (unsmoothed) soft targets, (B, K)
    plan: Any  # the mixing's MixPlan
    generator: torch.Generator
