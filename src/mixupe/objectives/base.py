"""What every objective shares: the output type, the mixing plan, and argument checks.

An objective is called as ``out = objective(model, x, y, lam=None, perm=None,
generator=None)`` and returns an :class:`ObjectiveOutput`. Objectives own a
:class:`torch.Generator` (``seed=`` or ``generator=``) and never use the global RNGs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mixupe import functional as MF
from mixupe.errors import ConfigError, InputError, NonFiniteLossError
from mixupe.objectives.hooks import forward_with_transform

__all__ = ["MixPlan", "Objective", "ObjectiveOutput", "plan_options", "plan_targets"]


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
        targets: the soft targets of the mixed batch, ``(B, K)``.
        mask: CutMix's paste mask (True where the partner sample shows), else None.
        clean_logits: MixupE's outputs on the clean batch, else None.
        scores: MixupE's per-sample scores ``s_i`` (with their graph), else None.

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
    targets: Tensor | None = None
    mask: Tensor | None = None
    clean_logits: Tensor | None = None
    scores: Tensor | None = None
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


def plan_options(mixer: Any, options: dict[str, Any], clean: Tensor) -> dict[str, Any]:
    """The keyword options of ``mixer.plan``: the caller's, plus ``targets=`` (the clean soft
    targets) for mixers whose plan needs the labels (``needs_targets = True``: saliency from a
    backward pass, as Puzzle Mix and Co-Mixup)."""
    if getattr(mixer, "needs_targets", False):
        return {**options, "targets": clean}
    return options


def plan_targets(
    plan: MixPlan, clean: Tensor, *, label_smoothing: float, dtype: torch.dtype
) -> Tensor:
    """The soft targets of a plan: ``lam Y + (1 - lam) Y[perm]``, or ``weights @ Y``."""
    if plan.weights is None:
        return MF.mix_targets(clean, plan.perm, plan.lam, label_smoothing=label_smoothing,
                              dtype=dtype)
    mixed = plan.weights.to(dtype) @ clean.to(dtype)
    if label_smoothing > 0:
        mixed = mixed * (1.0 - label_smoothing) + label_smoothing / clean.shape[1]
    return mixed


_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def work_dtype(x: Any) -> torch.dtype:
    """float64 when the inputs are float64, else float32 (the dtype of lambda and targets)."""
    if isinstance(x, Tensor) and x.dtype == torch.float64:
        return torch.float64
    inner = getattr(x, "x", None)
    if isinstance(inner, Tensor) and inner.dtype == torch.float64:
        return torch.float64
    return torch.float32


def input_device(x: Any, y: Tensor) -> torch.device:
    """The device of the inputs (for graph batches, that of the labels)."""
    return x.device if isinstance(x, Tensor) else y.device


def check_probability(value: float, name: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a float in [0, 1)."""
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ConfigError(f"{name}={value!r} is invalid: use a value in [0, 1).")


class Objective:
    """Base class: generator ownership, label handling, validation and the finite check.

    Args:
        num_classes: number of classes; required when labels are integers.
        label_smoothing: smoothing ``eps`` of the (mixed) targets, default 0.
        seed: seed of the objective's own CPU generator (default 0).
        generator: an explicit generator instead of ``seed``. A CPU generator (the default)
            costs two tiny host-to-device copies per step; a GPU generator avoids them, but
            :class:`ManifoldMixup` then waits on the device once per step to read the layer
            index it drew.
        validate: check label range and finite inputs (synchronises with the device; turn it
            off in a hot training loop once the data are trusted). Shape and dtype checks
            always run, they cost nothing.
        check_finite: raise :class:`NonFiniteLossError` when the loss is NaN/inf (also
            synchronises; a training engine may check at logging time instead).
    """

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
    ) -> None:
        if num_classes is not None and not (
            isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 2
        ):
            raise ConfigError(
                f"num_classes={num_classes!r} is invalid: pass the number of classes, an int >= 2."
            )
        check_probability(label_smoothing, "label_smoothing")
        if seed is not None and generator is not None:
            raise ConfigError(
                f"both seed={seed!r} and generator= were given: pass only one of them."
            )
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(0 if seed is None else int(seed))
        elif not isinstance(generator, torch.Generator):
            raise ConfigError(
                f"generator={generator!r} is not a torch.Generator: pass "
                "torch.Generator().manual_seed(seed) or use seed=."
            )
        self.num_classes = num_classes
        self.label_smoothing = float(label_smoothing)
        self.generator = generator
        self.validate = bool(validate)
        self.check_finite = bool(check_finite)

    # ----------------------------------------------------------------- argument checks
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
        else:
            raise InputError(
                f"inputs of type {type(x).__name__} are not supported: pass a tensor (B, ...) "
                "or a PyG Batch."
            )
        if y.shape[:1] != (b,):
            raise InputError(
                f"batch size mismatch: {b} inputs but labels of shape {tuple(y.shape)}; pass "
                f"one label per input, shape ({b},) or ({b}, K)."
            )
        if b == 0:
            raise InputError("the batch is empty (B=0): pass at least one sample.")
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
            return y.to(dtype)
        raise InputError(
            f"labels of dtype {y.dtype} are not supported: pass int64 class indices (B,) or float "
            "soft targets (B, K)."
        )

    def _check_inputs(self, x: Any) -> None:
        if self.validate and isinstance(x, Tensor):
            MF.check_finite_tensor(x, "input batch x")

    def _check_logits(self, logits: Any, targets: Tensor) -> None:
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise InputError(
                f"the model returned {shape}; objectives need logits of shape (B, K): make the "
                "model return a single (B, K) tensor."
            )
        if logits.shape != targets.shape:
            raise InputError(
                f"the model returned logits of shape {tuple(logits.shape)} but the targets have "
                f"shape {tuple(targets.shape)}: check num_classes and the model's output size."
            )

    def _finite_loss(self, loss: Tensor) -> None:
        if self.check_finite and not bool(torch.isfinite(loss)):
            raise NonFiniteLossError(
                f"{type(self).__name__} loss is {float(loss.detach())}: training diverged. "
                "Lower the learning rate (or eta for MixupE), check the inputs for NaN/inf, or use "
                "gradient clipping; do not continue from this step."
            )

    def _gen(self, generator: torch.Generator | None) -> torch.Generator:
        return self.generator if generator is None else generator

    @staticmethod
    def _given_lam(
        lam: Tensor | float, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        if isinstance(lam, (int, float)):
            if not 0.0 <= float(lam) <= 1.0:
                raise ConfigError(f"lam={lam!r} is invalid: pass a value in [0, 1].")
        elif not isinstance(lam, Tensor) or lam.shape not in ((), (batch_size,)):
            shape = tuple(lam.shape) if isinstance(lam, Tensor) else type(lam).__name__
            raise InputError(
                f"lam of shape {shape} is invalid: pass a float, a 0-d tensor, or a tensor of "
                f"shape ({batch_size},) with one lambda per sample."
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
        return perm

    # ----------------------------------------------------------------- the call
    def plan(
        self,
        model: nn.Module,
        x: Any,
        batch_size: int,
        *,
        device: torch.device,
        dtype: torch.dtype,
        lam: Tensor | float | None,
        perm: Tensor | None,
        generator: torch.Generator,
        **options: Any,
    ) -> MixPlan:
        """Decide lambda, the pairing and where to mix (subclasses override)."""
        raise NotImplementedError

    def __call__(
        self,
        model: nn.Module,
        x: Any,
        y: Tensor,
        *,
        lam: Tensor | float | None = None,
        perm: Tensor | None = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> ObjectiveOutput:
        """One training step's loss on a batch; see the class docstring."""
        batch_size = self._batch_size(x, y)
        device = input_device(x, y)
        dtype = work_dtype(x)
        clean = self._clean_targets(y, dtype)
        self._check_inputs(x)
        plan = self.plan(
            model,
            x,
            batch_size,
            device=device,
            dtype=dtype,
            lam=lam,
            perm=perm,
            generator=self._gen(generator),
            **plan_options(self, options, clean),
        )
        logits = forward_with_transform(model, x, plan.layer, plan.mix)
        self._check_logits(logits, clean)
        targets = plan_targets(plan, clean, label_smoothing=self.label_smoothing, dtype=dtype)
        loss = MF.soft_cross_entropy(logits, targets)
        self._finite_loss(loss)
        stats = {"loss": loss.detach(), "lam": plan.lam.detach().mean()}
        return ObjectiveOutput(
            loss=loss,
            logits=logits,
            lam=plan.lam,
            perm=plan.perm,
            stat_tensors=stats,
            layer=plan.layer,
            targets=targets,
            mask=plan.mask,
        )


class Mixer(Objective):
    """Base of the objectives that mix (Mixup, CutMix, ManifoldMixup, ...): alpha and lambda draws.

    A subclass whose ``plan`` never reads the model and mixes at the input sets
    ``model_free = True``; it then also works as a collate function (:mod:`mixupe.collate`).

    ``alpha=None`` is for mixers whose lambda is not a Beta(alpha, alpha) draw (ResizeMix);
    they override :meth:`mixupe_constant`.
    """

    model_free: bool = False

    def __init__(self, *, alpha: float | None, per_sample: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if alpha is not None and not (
            isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0
        ):
            raise ConfigError(
                f"alpha={alpha!r} is invalid: the Beta(alpha, alpha) mixing distribution needs a "
                "finite alpha > 0 (alpha=0 would silently disable mixing). Use e.g. alpha=1.0, "
                "or the ERM objective for no mixing."
            )
        self.alpha = None if alpha is None else float(alpha)
        self.per_sample = bool(per_sample)

    def mixupe_constant(self) -> float:
        """MixupE's ``c = 2 E[lam (1 - lam)]`` for this mixer's lambda distribution.

        For Beta(alpha, alpha) this is ``alpha / (2 alpha + 1)``, one minus the mean of the
        re-weighted Beta(alpha + 1, alpha) of the paper.
        """
        if self.alpha is None:
            raise ConfigError(
                f"{type(self).__name__} draws no Beta(alpha, alpha) lambda and defines no "
                "MixupE constant: override mixupe_constant()."
            )
        return MF.mixupe_constant(self.alpha)

    def _lam_perm(
        self,
        batch_size: int,
        *,
        device: torch.device,
        dtype: torch.dtype,
        lam: Tensor | float | None,
        perm: Tensor | None,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor]:
        if lam is None:
            lam_t = MF.sample_lambda(
                self.alpha,
                batch_size=batch_size,
                per_sample=self.per_sample,
                generator=generator,
                dtype=dtype,
            ).to(device, non_blocking=True)
        else:
            lam_t = self._given_lam(lam, batch_size, device, dtype)
        if perm is None:
            perm_t = MF.sample_permutation(batch_size, generator=generator).to(
                device, non_blocking=True
            )
        else:
            perm_t = self._given_perm(perm, batch_size, device)
        return lam_t, perm_t
