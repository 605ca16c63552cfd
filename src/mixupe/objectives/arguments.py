"""The checks of an objective call's arguments: the batch and labels, lambda and pairing given
at call time, the model's logits and the loss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mixupe import functional as MF
from mixupe.errors import ConfigError, InputError, NonFiniteLossError
from mixupe.objectives.batches import _entries, input_tensors, is_structured
from mixupe.objectives.targets import _INT_DTYPES, Labels

__all__ = ["ArgumentChecks"]


class ArgumentChecks:
    """The argument checks of :class:`~mixupe.objectives.base.Objective` (a mixin; it reads
    ``num_classes``, ``validate``, ``check_finite``, ``dense_labels`` and ``ignore_index``)."""

    num_classes: int | None
    validate: bool
    check_finite: bool
    dense_labels: bool

    def _batch_size(self, x: Any, y: Tensor) -> int:
        if not isinstance(y, Tensor):
            raise InputError(
                f"labels of type {type(y).__name__} are not supported: pass a tensor of int64 "
                "labels (B,) or float soft targets (B, K)."
            )
        if isinstance(x, Tensor):
            if x.dim() == 0:
                raise InputError("x is a 0-d tensor: pass a batch of shape (B, ...).")
            b = x.shape[0]
        elif hasattr(x, "num_graphs"):
            b = int(x.num_graphs)
        elif is_structured(x):
            b = self._structured_batch_size(x, y)
        else:
            raise InputError(
                f"inputs of type {type(x).__name__} are not supported: pass a tensor (B, ...), "
                "a dict or tuple of (B, ...) tensors, or a PyG Batch."
            )
        if y.shape[:1] != (b,):
            raise InputError(
                f"batch size mismatch: {b} inputs but labels of shape {tuple(y.shape)}; pass "
                f"one label per input, shape ({b},) or ({b}, K)."
            )
        if b == 0:
            raise InputError("the batch is empty (B=0): pass at least one sample.")
        return b

    @staticmethod
    def _structured_batch_size(x: Any, y: Tensor) -> int:
        tensors = [(k, v) for k, v in _entries(x) if isinstance(v, Tensor)]
        if not tensors:
            raise InputError(
                f"the {type(x).__name__} batch holds no tensor: pass a dict or tuple whose "
                "entries include (B, ...) tensors."
            )
        b = y.shape[0] if y.dim() > 0 else tensors[0][1].shape[:1].numel()
        for key, value in tensors:
            if value.dim() == 0 or value.shape[0] != b:
                raise InputError(
                    f"entry {key!r} of the batch has shape {tuple(value.shape)} but the batch has "
                    f"{b} samples: every tensor of a dict or tuple batch must be ({b}, ...) "
                    "(keep constants in the model, not the batch)."
                )
        return b

    def _clean_targets(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        """Un-smoothed float targets (B, K) from integer labels or soft targets."""
        if y.dtype in _INT_DTYPES:
            if y.dim() != 1:
                raise InputError(
                    f"integer labels must have shape (B,), got {tuple(y.shape)}: pass class "
                    "indices, or float soft targets of shape (B, K)."
                )
            if self.num_classes is None:
                raise ConfigError(
                    f"integer labels need num_classes: pass num_classes=K to "
                    f"{type(self).__name__}(...) (no default is assumed)."
                )
            if self.validate:
                MF.check_labels(y, self.num_classes)
            return MF.one_hot(y, self.num_classes, dtype=dtype)
        if y.is_floating_point():
            if y.dim() != 2:
                raise InputError(
                    f"soft targets must have shape (B, K), got {tuple(y.shape)}: pass one "
                    "probability row per sample, or int64 labels (B,)."
                )
            if self.num_classes is not None and y.shape[1] != self.num_classes:
                raise InputError(
                    f"soft targets have {y.shape[1]} classes but num_classes={self.num_classes}: "
                    "make them agree."
                )
            if self.validate:
                MF.check_finite_tensor(y, "soft targets y")
                MF.check_soft_targets(y)
            return y.to(dtype)
        raise InputError(
            f"labels of dtype {y.dtype} are not supported: pass int64 class indices (B,) or float "
            "soft targets (B, K)."
        )

    def _labels(self, y: Tensor, dtype: torch.dtype) -> Labels:
        """The batch's labels checked: class indices or probabilities, per sample or dense."""
        ignore = getattr(self, "ignore_index", None)
        index = y.dtype in _INT_DTYPES
        dense = (index and y.dim() >= 2 and y.shape[1:] != (1,)) or (
            y.is_floating_point() and y.dim() >= 3)
        if not dense and not (index and y.dim() == 1):
            soft = self._clean_targets(y, dtype)  # (B, K) probabilities, or the error
            return Labels(soft, False, soft.shape[1])
        if dense and not self.dense_labels:
            raise InputError(
                f"{type(self).__name__} takes labels (B,) or (B, K), got {tuple(y.shape)}: "
                "dense label maps (segmentation) work with ERM, Mixup and CutMix."
            )
        if y.dtype in _INT_DTYPES:
            if self.num_classes is None:
                raise ConfigError(
                    f"integer labels need num_classes: pass num_classes=K to "
                    f"{type(self).__name__}(...) (no default is assumed)."
                )
            if self.validate:
                kept = y if ignore is None else y[y != ignore]
                MF.check_labels(kept, self.num_classes)
            return Labels(y, True, self.num_classes, ignore)
        k = y.shape[1]
        if self.num_classes is not None and k != self.num_classes:
            raise InputError(
                f"dense soft targets have {k} classes on axis 1 but num_classes="
                f"{self.num_classes}: pass (B, K, *S) probabilities with K = num_classes."
            )
        if self.validate:
            MF.check_finite_tensor(y, "soft targets y")
            MF.check_soft_targets(y.movedim(1, -1).reshape(-1, k))
        return Labels(y.to(dtype), False, k)

    def _check_inputs(self, x: Any) -> None:
        if self.validate and (isinstance(x, Tensor) or is_structured(x)):
            for t in input_tensors(x):
                MF.check_finite_tensor(t, "input batch x")

    def _check_logits(self, logits: Any, targets: Tensor | tuple[int, ...]) -> None:
        expected = tuple(targets.shape) if isinstance(targets, Tensor) else tuple(targets)
        if len(expected) > 2:
            if not isinstance(logits, Tensor) or tuple(logits.shape) != expected:
                shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits)
                raise InputError(
                    f"the model returned {shape} but the dense labels need logits of shape "
                    f"{expected} (B, K, *S): make the model return per-position class scores "
                    "at the labels' resolution (for a classifier, integer labels must have "
                    "shape (B,))."
                )
            return
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise InputError(
                f"the model returned {shape}; objectives need logits of shape (B, K): make the "
                "model return a single (B, K) tensor."
            )
        if tuple(logits.shape) != expected:
            raise InputError(
                f"the model returned logits of shape {tuple(logits.shape)} but the targets have "
                f"shape {expected}: check num_classes and the model's output size."
            )

    def _finite_loss(self, loss: Tensor) -> None:
        if self.check_finite and not bool(torch.isfinite(loss)):
            raise NonFiniteLossError(
                f"{type(self).__name__} loss is {float(loss.detach())}: training diverged. "
                "Lower the learning rate (or eta for MixupE), check the inputs for NaN/inf and "
                "the labels' range (validate=True names a bad label), or use gradient clipping; "
                "do not continue from this step."
            )

    def _given_lam(
        self, lam: Tensor | float, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        if isinstance(lam, (int, float)) and not isinstance(lam, bool):
            if not 0.0 <= float(lam) <= 1.0:
                raise ConfigError(f"lam={lam!r} is invalid: pass a value in [0, 1].")
        elif not isinstance(lam, Tensor) or lam.shape not in ((), (batch_size,)):
            shape = tuple(lam.shape) if isinstance(lam, Tensor) else type(lam).__name__
            raise InputError(
                f"lam of shape {shape} is invalid: pass a float, a 0-d tensor, or a tensor of "
                f"shape ({batch_size},) with one lambda per sample."
            )
        elif not lam.is_floating_point():
            raise InputError(
                f"lam of dtype {lam.dtype} is invalid: lambdas are fractions in [0, 1]; pass a "
                "float or a floating-point tensor."
            )
        elif self.validate and lam.numel() > 0:
            lo, hi = float(lam.min()), float(lam.max())
            if not (lo >= 0.0 and hi <= 1.0):  # also refuses NaN
                bad = lo if not lo >= 0.0 else hi
                raise ConfigError(
                    f"lam holds {bad!r}, outside [0, 1]: pass lambdas in [0, 1] (targets "
                    "with a negative weight are not a mixture)."
                )
        return torch.as_tensor(lam, dtype=dtype).to(device)

    def _given_perm(self, perm: Tensor, batch_size: int, device: torch.device) -> Tensor:
        if not isinstance(perm, Tensor) or perm.shape != (batch_size,) or perm.dtype not in (
            torch.int64,
            torch.int32,
        ):
            shape = tuple(perm.shape) if isinstance(perm, Tensor) else type(perm).__name__
            raise InputError(
                f"perm of shape {shape} is invalid: pass an int64 tensor of shape ({batch_size},), "
                f"e.g. torch.randperm({batch_size})."
            )
        perm = perm.to(device=device, dtype=torch.int64)
        if self.validate and batch_size > 0:
            lo, hi = int(perm.min()), int(perm.max())
            if lo < 0 or hi >= batch_size:
                raise InputError(
                    f"perm holds index {lo if lo < 0 else hi}, outside [0, {batch_size - 1}]: "
                    "pass a permutation of range(B)."
                )
            counts = torch.bincount(perm, minlength=batch_size)
            if int(counts.max()) > 1:
                twice = int(counts.argmax())
                raise InputError(
                    f"perm holds index {twice} {int(counts.max())} times: pass a permutation of "
                    f"range(B) (each index once), e.g. torch.randperm({batch_size})."
                )
        return perm
