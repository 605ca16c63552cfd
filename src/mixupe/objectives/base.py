"""What every objective shares: the output type, the mixing plan, and argument checks.

An objective is called as ``out = objective(model, x, y, lam=None, perm=None,
generator=None)`` and returns an :class:`ObjectiveOutput`. Objectives own a
:class:`torch.Generator` (``seed=`` or ``generator=``) and never use the global RNGs.

The batch ``x`` is what the model's ``forward`` takes: a tensor ``(B, ...)``, a PyG graph
batch, or a dict / tuple / list whose tensors are all ``(B, ...)`` (the model is called as
``model(x)``). Objectives that mix at the input mix the tensors a dict or tuple names in
``mix_keys``; mixing at a hidden layer needs no names.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mixupe import _checks as check
from mixupe import functional as MF
from mixupe._transfer import to_device
from mixupe.errors import ConfigError, InputError, NonFiniteLossError
from mixupe.objectives.hooks import forward_with_transform

__all__ = ["Labels", "MixPlan", "Objective", "ObjectiveOutput", "plan_loss", "plan_options",
           "plan_targets"]


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


def check_mixing(mixing: Any) -> None:
    """Raise :class:`ConfigError` unless ``mixing`` is a mixing objective (a :class:`Mixer`)."""
    if not isinstance(mixing, Mixer):
        raise ConfigError(
            f"mixing={mixing!r} is not a mixing objective: pass Mixup(...), CutMix(...) or "
            "another mixer (ERM does not mix)."
        )


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


def is_structured(x: Any) -> bool:
    """Whether ``x`` is a dict, tuple or list batch (the model takes it as one argument)."""
    return isinstance(x, (Mapping, tuple, list))


def _entries(x: Any) -> list[tuple[Any, Any]]:
    return list(x.items()) if isinstance(x, Mapping) else list(enumerate(x))


def input_tensors(x: Any) -> list[Tensor]:
    """The tensors of a batch: ``x`` itself, a graph batch's node features, or the tensor
    entries of a dict / tuple."""
    if isinstance(x, Tensor):
        return [x]
    if is_structured(x):
        return [v for _, v in _entries(x) if isinstance(v, Tensor)]
    inner = getattr(x, "x", None)
    return [inner] if isinstance(inner, Tensor) else []


def map_entries(x: Any, keys: Sequence[Any], fn: Callable[[Tensor], Tensor]) -> Any:
    """A copy of the dict / tuple / list ``x`` with ``fn`` applied to the entries ``keys``.

    Example:
        >>> map_entries({"a": torch.ones(1), "b": 2}, ["a"], lambda t: 3 * t)
        {'a': tensor([3.]), 'b': 2}
    """
    if isinstance(x, Mapping):
        out = copy.copy(x) if isinstance(x, MutableMapping) else dict(x)
        for k in keys:
            out[k] = fn(x[k])
        return out
    chosen = set(keys)
    items = [fn(v) if i in chosen else v for i, v in enumerate(x)]
    return type(x)(items) if isinstance(x, list) else tuple(items)


def select_samples(x: Any, index: Tensor, *, batch_size: int | None = None) -> Any:
    """The samples ``index`` of a batch: ``x[index]`` for a tensor, or a new graph batch of
    the chosen graphs (PyG). A dict / tuple gets every tensor entry indexed alike and, with
    ``batch_size``, every list or tuple entry of ``batch_size`` items (per-sample values
    such as strings) too; an entry that looks per-sample but is not (a sequence of another
    length, a tensor of another first size) raises InputError, as it cannot be subset."""
    if isinstance(x, Tensor):
        return x[index]
    if is_structured(x):
        rows = index.tolist()

        def per_sample(v: Any) -> bool:
            return (isinstance(v, Tensor) and v.dim() > 0) or (
                batch_size is not None and isinstance(v, (list, tuple)) and len(v) == batch_size)

        for k, v in _entries(x):
            size = v.shape[0] if isinstance(v, Tensor) and v.dim() else len(v) if isinstance(
                v, (list, tuple)) else None
            if batch_size is not None and size is not None and size != batch_size:
                raise InputError(
                    f"entry {k!r} of the batch has {size} items but the batch has {batch_size} "
                    "samples, so a clean subset cannot be taken of it: give every per-sample "
                    "entry one item per sample, or use clean_fraction=1."
                )
        keys = [k for k, v in _entries(x) if per_sample(v)]
        return map_entries(x, keys, lambda t: t[index] if isinstance(t, Tensor)
                           else type(t)(t[i] for i in rows))
    if hasattr(x, "index_select") and hasattr(type(x), "from_data_list"):
        return type(x).from_data_list(x.index_select(index.cpu()))
    raise InputError(
        f"cannot take a subset of a batch of type {type(x).__name__}: pass a tensor, a dict "
        "or tuple of (B, ...) tensors, or a PyG Batch."
    )


def work_dtype(x: Any) -> torch.dtype:
    """float64 when the inputs are float64, else float32 (the dtype of lambda and targets)."""
    if isinstance(x, Tensor):  # the common case, without building a list
        return torch.float64 if x.dtype == torch.float64 else torch.float32
    if any(t.dtype == torch.float64 for t in input_tensors(x)):
        return torch.float64
    return torch.float32


def input_device(x: Any, y: Tensor) -> torch.device:
    """The device of the inputs (for graph, dict and tuple batches, that of the labels)."""
    return x.device if isinstance(x, Tensor) else y.device


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
        ignore_index: a class-index label value that takes no part in the loss (e.g. 255 for
            unlabelled pixels of segmentation maps); None (default): every label counts.

    Labels are class indices ``(B,)`` or probabilities ``(B, K)`` (one-hot included): both
    give the same loss for the same distribution. Objectives that set ``dense_labels = True``
    (ERM, Mixup, CutMix) also take label maps: indices ``(B, *S)`` or probabilities
    ``(B, K, *S)`` for a model returning ``(B, K, *S)`` (segmentation). Label smoothing maps
    a target ``T`` to ``(1 - eps) T + eps / K`` whether it is one-hot or already soft, so
    smoothed soft targets keep their shape and move ``eps`` of their mass to the uniform.
    """

    dense_labels: bool = False

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
        ignore_index: int | None = None,
    ) -> None:
        self.ignore_index = check.integer(ignore_index, "ignore_index", none=True,
                                          what="the label value to ignore (e.g. 255 or -100)")
        num_classes = check.integer(num_classes, "num_classes", minimum=2, none=True,
                                    what="the number of classes")
        check.interval(label_smoothing, "label_smoothing", 0.0, 1.0, closed="[)")
        check.seed(seed)
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

    def _gen(self, generator: torch.Generator | None) -> torch.Generator:
        return self.generator if generator is None else generator

    def _plan_mixing(self, mixing: Mixer, model: nn.Module, x: Any, y: Tensor, *,
                     lam: Tensor | float | None, perm: Tensor | None,
                     generator: torch.Generator | None,
                     options: dict[str, Any]) -> MixingStep:
        """The shared start of an objective built on a mixing objective (MixupE, RegMixup, the
        control): the batch checked, its clean targets, and the mixing's plan."""
        batch_size = self._batch_size(x, y)
        device = input_device(x, y)
        dtype = work_dtype(x)
        clean = self._clean_targets(y, dtype)
        self._check_inputs(x)
        gen = self._gen(generator)
        plan = mixing.plan(model, x, batch_size, device=device, dtype=dtype, lam=lam, perm=perm,
                           generator=gen, **plan_options(mixing, options, clean))
        return MixingStep(batch_size, device, dtype, clean, plan, gen)

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
        labels = self._labels(y, dtype)
        self._check_inputs(x)
        if labels.dense and getattr(self, "needs_targets", False):
            raise InputError(
                f"{type(self).__name__} computes saliency from per-sample labels and cannot "
                "take dense label maps: use Mixup, CutMix, FMix or SaliencyMix."
            )
        if getattr(self, "needs_targets", False):
            options = plan_options(self, options, labels.soft(dtype))
        plan = self.plan(
            model,
            x,
            batch_size,
            device=device,
            dtype=dtype,
            lam=lam,
            perm=perm,
            generator=self._gen(generator),
            **options,
        )
        logits = forward_with_transform(model, x, plan.layer, plan.mix)
        self._check_logits(logits, labels.logits_shape())
        loss, targets = plan_loss(plan, logits, labels, label_smoothing=self.label_smoothing,
                                  dtype=dtype)
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

    ``mix_keys`` names the entries of a dict batch (keys) or tuple batch (indices) that input
    mixing mixes; the other entries stay with their sample. Tensor batches need no names.

    ``lambda_sampler`` (a class attribute, set on an instance to change it) picks how Beta
    lambdas are drawn: ``"transform"`` (public uniforms only, the default) or
    ``"dirichlet"`` (mixupe 0.1's draws through PyTorch's private Dirichlet sampler, to
    reproduce runs made before; see :func:`mixupe.functional.sample_lambda`).
    """

    model_free: bool = False
    lambda_sampler: str = "transform"

    def __init__(
        self,
        *,
        alpha: float | None,
        per_sample: bool = False,
        mix_keys: Sequence[str | int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if alpha is not None:
            MF.check_alpha(alpha)
        if mix_keys is not None and (
            isinstance(mix_keys, (str, bytes))
            or not isinstance(mix_keys, Sequence)
            or len(mix_keys) == 0
            or not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in mix_keys)
        ):
            raise ConfigError(
                f"mix_keys={mix_keys!r} is invalid: pass a non-empty list of the dict keys (or "
                "tuple indices) of the batch entries to mix, e.g. mix_keys=['pixel_values']."
            )
        self.alpha = None if alpha is None else float(alpha)
        self.per_sample = bool(per_sample)
        self.mix_keys: tuple[str | int, ...] | None = (
            None if mix_keys is None else tuple(mix_keys)
        )

    def input_keys(self, x: Any) -> tuple[str | int, ...]:
        """The entries of a dict / tuple batch that input mixing mixes (checked against ``x``)."""
        name = type(self).__name__
        if self.mix_keys is None:
            present = [k for k, v in _entries(x) if isinstance(v, Tensor)]
            raise ConfigError(
                f"{name} mixes the inputs, and this {type(x).__name__} batch has the tensor "
                f"entries {present}: name those to mix, e.g. {name}(mix_keys=[{present[0]!r}]), "
                "or mix at a hidden layer with ManifoldMixup(layers=[...])."
            )
        keys = dict(_entries(x))
        for key in self.mix_keys:
            if not isinstance(keys.get(key), Tensor):
                raise ConfigError(
                    f"mix_keys names {key!r}, which is not a tensor entry of the batch (entries: "
                    f"{list(keys)}): name entries that exist."
                )
        return self.mix_keys

    def mixed_tensors(self, x: Any) -> list[Tensor]:
        """The tensors that input mixing mixes: ``[x]``, or the ``mix_keys`` entries."""
        if isinstance(x, Tensor):
            if self.mix_keys is not None:
                raise ConfigError(
                    f"mix_keys={list(self.mix_keys)} names entries of a dict or tuple batch, but "
                    "the batch is a tensor: drop mix_keys."
                )
            return [x]
        if is_structured(x):
            entries = dict(_entries(x))
            return [entries[k] for k in self.input_keys(x)]
        raise ConfigError(
            f"{type(self).__name__} cannot mix inputs of type {type(x).__name__} (a graph "
            "batch): use ManifoldMixup(layers=['pool']) to mix the pooled graph embedding "
            "instead."
        )

    def at_input(self, x: Any, fn: Callable[[Tensor], Tensor]) -> Callable[[Any], Any]:
        """A transformation of the whole input batch that applies ``fn`` to what is mixed."""
        if isinstance(x, Tensor) and self.mix_keys is None:
            return fn
        self.mixed_tensors(x)  # refuses what cannot be mixed
        keys = self.input_keys(x)
        return lambda batch: map_entries(batch, keys, fn)

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
            lam_t = to_device(MF.sample_lambda(
                self.alpha,
                batch_size=batch_size,
                per_sample=self.per_sample,
                generator=generator,
                dtype=dtype,
                method=self.lambda_sampler,
            ), device)
        else:
            lam_t = self._given_lam(lam, batch_size, device, dtype)
        if perm is None:
            perm_t = to_device(MF.sample_permutation(batch_size, generator=generator), device)
        else:
            perm_t = self._given_perm(perm, batch_size, device)
        return lam_t, perm_t
