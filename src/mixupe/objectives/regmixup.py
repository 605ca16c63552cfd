"""RegMixup (Pinto et al., NeurIPS 2022): cross-entropy on the clean batch plus eta times a
mixing loss, the mixed samples serving as a regulariser rather than as the training data.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mixupe import _checks as check
from mixupe import functional as MF
from mixupe.objectives.base import Objective, ObjectiveOutput, plan_targets
from mixupe.objectives.hooks import INPUT_LAYER, forward_with_transform
from mixupe.objectives.mixer import Mixer, check_mixing
from mixupe.objectives.mixing import Mixup

__all__ = ["RegMixup"]


class RegMixup(Objective):
    """``L = CE(f(x), y) + eta * L_mix``, with ``L_mix`` the loss of any mixing objective.

    The clean and mixed batches run through the model in one forward of their concatenation
    (as the paper does; BatchNorm then sees both); graph and dict batches, which cannot be
    concatenated, run as two forward passes, mixed then clean. The default mixing is
    ``Mixup(alpha=10)``, the paper's choice for CIFAR; ``eta = 1``.

    RegMixup is a loss, not a way of mixing, so it is not a ``mixing=`` of :class:`MixupE`;
    note that MixupE version 4 with the released sign already adds a clean cross-entropy
    term to the mixing loss (its gradient is that of ``eta c CE`` on the clean batch).

    ``logits`` of the output are those of the mixed batch, ``clean_logits`` those of the
    clean batch; ``stats`` hold ``clean_loss`` and ``mixup_loss``.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(4, 3)
        >>> out = RegMixup(num_classes=3, seed=0)(net, torch.randn(6, 4), torch.arange(6) % 3)
        >>> sorted(out.stats)
        ['clean_loss', 'lam', 'loss', 'mixup_loss']
    """

    def __init__(
        self,
        *,
        eta: float = 1.0,
        mixing: Mixer | None = None,
        num_classes: int | None = None,
        label_smoothing: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
    ) -> None:
        if mixing is None:
            mixing = Mixup(alpha=10.0, num_classes=num_classes,
                           label_smoothing=label_smoothing or 0.0, seed=seed,
                           generator=generator, validate=validate, check_finite=check_finite)
        check_mixing(mixing)
        check.non_negative(eta, "eta", what="the weight of the mixing loss")
        if num_classes is None:
            num_classes = mixing.num_classes
        own_generator = generator is not None or seed is not None
        super().__init__(num_classes=num_classes, label_smoothing=mixing.label_smoothing,
                         seed=seed, generator=generator, validate=validate,
                         check_finite=check_finite)
        if not own_generator:
            self.generator = mixing.generator
        self.mixing = mixing
        self.eta = float(eta)

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
        """One RegMixup step; ``options`` go to the mixing objective's plan."""
        step = self._plan_mixing(self.mixing, model, x, y, lam=lam, perm=perm,
                                 generator=generator, options=options)
        batch_size, plan, clean, dtype = step.batch_size, step.plan, step.clean, step.dtype
        if not isinstance(x, Tensor):
            # A graph or dict batch cannot be concatenated with itself: two forward passes.
            logits_all = torch.cat([forward_with_transform(model, x, plan.layer, plan.mix),
                                    model(x)])
        elif plan.layer == INPUT_LAYER:
            logits_all = model(torch.cat([plan.mix(x), x]))
        else:
            def mixed_and_clean(t: Tensor) -> Tensor:
                return torch.cat([plan.mix(t[:batch_size]), t[batch_size:]])

            logits_all = forward_with_transform(model, torch.cat([x, x]), plan.layer,
                                                mixed_and_clean)
        logits_mix, logits_clean = logits_all[:batch_size], logits_all[batch_size:]
        self._check_logits(logits_mix, clean)
        targets = plan_targets(plan, clean, label_smoothing=self.label_smoothing, dtype=dtype)
        eps = self.label_smoothing
        clean_targets = clean * (1.0 - eps) + eps / clean.shape[1] if eps > 0 else clean
        clean_loss = MF.soft_cross_entropy(logits_clean, clean_targets)
        mixup_loss = MF.soft_cross_entropy(logits_mix, targets)
        loss = clean_loss + self.eta * mixup_loss
        self._finite_loss(loss)
        stats = {"loss": loss.detach(), "clean_loss": clean_loss.detach(),
                 "mixup_loss": mixup_loss.detach(), "lam": plan.lam.detach().mean()}
        return ObjectiveOutput(loss=loss, logits=logits_mix, lam=plan.lam, perm=plan.perm,
                               stat_tensors=stats, layer=plan.layer, targets=targets,
                               mask=plan.mask, clean_logits=logits_clean)
