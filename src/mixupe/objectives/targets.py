"""The targets and the loss of a mixing plan: class indices or soft labels, per sample or
dense (segmentation maps), with label smoothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mixupe import functional as MF
from mixupe.errors import InputError
from mixupe.objectives.outputs import MixPlan

__all__ = ["Labels", "plan_loss", "plan_targets"]


def plan_targets(
    plan: MixPlan, clean: Tensor, *, label_smoothing: float, dtype: torch.dtype
) -> Tensor:
    """The soft targets of a plan: ``lam Y + (1 - lam) Y[perm]``, or ``weights @ Y``."""
    if plan.weights is None:
        return MF.mix_targets(clean, plan.perm, plan.lam, label_smoothing=label_smoothing,
                              dtype=dtype)
    # autocast would lower the matmul to half precision; targets stay in ``dtype``
    with torch.autocast(device_type=clean.device.type, enabled=False):
        mixed = plan.weights.to(dtype) @ clean.to(dtype)
    if label_smoothing > 0:
        mixed = mixed * (1.0 - label_smoothing) + label_smoothing / clean.shape[1]
    return mixed


_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


@dataclass(frozen=True)
class Labels:
    """A batch's labels as an objective reads them.

    ``y`` holds class indices (``index=True``: ``(B,)``, or ``(B, *S)`` label maps) or float
    probabilities (``(B, K)``, or ``(B, K, *S)`` per-pixel maps); ``dense`` says whether there
    are spatial axes ``S``. ``ignore_index`` marks index labels that take no part in the loss.
    """

    y: Tensor
    index: bool
    num_classes: int
    ignore_index: int | None = None

    @property
    def dense(self) -> bool:
        """Whether the labels are per-position maps (segmentation) rather than per sample."""
        return self.y.dim() > (1 if self.index else 2)

    @property
    def spatial(self) -> tuple[int, ...]:
        """The spatial shape ``S`` of dense labels (``()`` for per-sample labels)."""
        return tuple(self.y.shape[1:] if self.index else self.y.shape[2:])

    def logits_shape(self) -> tuple[int, ...]:
        """The shape the model's output must have: ``(B, K)`` or ``(B, K, *S)``."""
        return (self.y.shape[0], self.num_classes, *self.spatial)

    def soft(self, dtype: torch.dtype) -> Tensor:
        """Float targets with the classes on axis 1; an ignored label gives an all-zero row."""
        if not self.index:
            return self.y.to(dtype)
        if not self.dense and self.ignore_index is None:
            return MF.one_hot(self.y, self.num_classes, dtype=dtype)
        classes = torch.arange(self.num_classes, device=self.y.device)
        encoded = (self.y.unsqueeze(-1) == classes).to(dtype)
        return encoded.movedim(-1, 1)


def _lam_view(lam: Tensor, ndim: int) -> Tensor:
    return lam if lam.dim() == 0 else lam.reshape(lam.shape[0], *([1] * (ndim - 1)))


def _smooth(targets: Tensor, eps: float) -> Tensor:
    if eps <= 0:
        return targets
    return targets * (1.0 - eps) + eps / targets.shape[1]


def _dense_mask(plan: MixPlan, labels: Labels) -> Tensor:
    """The plan's paste mask as a bool map over the labels' spatial axes, ``(1 or B, *S)``."""
    mask = plan.mask
    if mask is None or mask.dtype != torch.bool or tuple(mask.shape[1:]) != labels.spatial:
        shape = None if mask is None else (tuple(mask.shape), mask.dtype)
        raise InputError(
            f"dense labels of spatial shape {labels.spatial} need a binary paste mask of that "
            f"shape, but this mixer's mask is {shape}: pass labels at the resolution of the "
            "mixed axes, or use Mixup / CutMix for segmentation."
        )
    return mask


def plan_loss(plan: MixPlan, logits: Tensor, labels: Labels, *, label_smoothing: float,
              dtype: torch.dtype) -> tuple[Tensor, Any]:
    """The mixed cross-entropy of a plan and its targets (a tensor, or a function building
    them on demand).

    Class indices take the index form ``lam CE(y) + (1 - lam) CE(y[perm])``
    (:func:`mixupe.functional.mixed_cross_entropy`; no one-hot is built). Dense label maps
    with a binary paste mask (CutMix, FMix, SaliencyMix) take the partner's label where its
    pixels show, a hard per-pixel label; without a mask (Mixup) they are mixed with lambda.
    Probabilities are mixed as soft targets. Label smoothing applies after mixing.
    """
    eps, ignore = label_smoothing, labels.ignore_index
    perm = plan.perm
    if plan.weights is not None:  # Co-Mixup: several inputs per sample
        if labels.dense:
            raise InputError("dense label maps cannot follow a multi-input mix (Co-Mixup): use "
                             "Mixup, CutMix, FMix or SaliencyMix for segmentation.")
        targets = plan_targets(plan, labels.soft(dtype), label_smoothing=eps, dtype=dtype)
        return MF.soft_cross_entropy(logits, targets), targets
    if labels.dense and plan.mask is not None:
        mask = _dense_mask(plan, labels)
        if labels.index:
            y_mix = torch.where(mask, labels.y[perm], labels.y)
            loss = MF.mixed_cross_entropy(logits, y_mix, None, 1.0, label_smoothing=eps,
                                          ignore_index=ignore)
            pasted = Labels(y_mix, True, labels.num_classes, ignore)
            return loss, lambda: _smooth(pasted.soft(dtype), eps)
        soft = labels.soft(dtype)
        targets = _smooth(torch.where(mask.unsqueeze(1), soft[perm], soft), eps)
        return _dense_soft_ce(logits, targets), targets
    if labels.index:
        y = labels.y
        loss = MF.mixed_cross_entropy(logits, y, y[perm], plan.lam, label_smoothing=eps,
                                      ignore_index=ignore)

        def build() -> Tensor:
            soft = labels.soft(dtype)
            lam = _lam_view(plan.lam.to(dtype), soft.dim())
            return _smooth(soft * lam + soft[perm] * (1 - lam), eps)

        return loss, build
    soft = labels.soft(dtype)
    lam = _lam_view(plan.lam.to(dtype), soft.dim())
    targets = _smooth(soft * lam + soft[perm] * (1 - lam), eps)
    return _dense_soft_ce(logits, targets), targets


def _dense_soft_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Soft cross-entropy with the classes on axis 1, averaged over samples and positions."""
    if logits.dim() == 2:
        return MF.soft_cross_entropy(logits, targets)
    k = logits.shape[1]
    return MF.soft_cross_entropy(logits.movedim(1, -1).reshape(-1, k),
                                 targets.movedim(1, -1).reshape(-1, k))
