"""What every objective shares: the base class :class:`Objective` (generator, labels, the call).

An objective is called as ``out = objective(model, x, y, lam=None, perm=None,
generator=None)`` and returns an :class:`ObjectiveOutput`. Objectives own a
:class:`torch.Generator` (``seed=`` or ``generator=``) and never use the global RNGs.

The batch ``x`` is what the model's ``forward`` takes: a tensor ``(B, ...)``, a PyG graph
batch, or a dict / tuple / list whose tensors are all ``(B, ...)`` (the model is called as
``model(x)``). Objectives that mix at the input mix the tensors a dict or tuple names in
``mix_keys``; mixing at a hidden layer needs no names.

The parts live in :mod:`~mixupe.objectives.outputs` (ObjectiveOutput, MixPlan),
:mod:`~mixupe.objectives.targets` (targets and loss of a plan),
:mod:`~mixupe.objectives.batches` (structured batches), :mod:`~mixupe.objectives.arguments`
(argument checks) and :mod:`~mixupe.objectives.mixer` (the mixers' base class); the names
used across the package are importable from here too.

Example:
    >>> import torch
    >>> from mixupe.objectives import Mixup
    >>> net = torch.nn.Linear(4, 3)
    >>> out = Mixup(num_classes=3, seed=0)(net, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    >>> sorted(out.stats)
    ['lam', 'loss']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from mixupe import _checks as check
from mixupe.errors import ConfigError, InputError
from mixupe.objectives.arguments import ArgumentChecks
from mixupe.objectives.batches import (
    input_device,
    input_tensors,
    is_structured,
    map_entries,
    select_samples,
    work_dtype,
)
from mixupe.objectives.hooks import forward_with_transform
from mixupe.objectives.outputs import MixingStep, MixPlan, ObjectiveOutput
from mixupe.objectives.targets import Labels, plan_loss, plan_targets

if TYPE_CHECKING:
    from mixupe.objectives.mixer import Mixer

__all__ = ["Labels", "MixPlan", "MixingStep", "Objective", "ObjectiveOutput", "input_device",
           "input_tensors", "is_structured", "map_entries", "plan_loss", "plan_options",
           "plan_targets", "select_samples", "work_dtype"]


def plan_options(mixer: Any, options: dict[str, Any], clean: Tensor) -> dict[str, Any]:
    """The keyword options of ``mixer.plan``: the caller's, plus ``targets=`` (the clean soft
    targets) for mixers whose plan needs the labels (``needs_targets = True``: saliency from a
    backward pass, as Puzzle Mix and Co-Mixup)."""
    if getattr(mixer, "needs_targets", False):
        return {**options, "targets": clean}
    return options


class Objective(ArgumentChecks):
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
