"""The study's control arm: a mixing loss plus a plain cross-entropy on the clean batch.

MixupE version 4 with the released sign and ``rescale=False`` has exactly the gradient of
``L_mix + eta c CE(clean)`` (its score's gradient with respect to the logits is that of the
clean cross-entropy), and version 3 with that sign approximately so. With the published rescale
(``rescale=True``, MixupE's default) the loss is multiplied by ``|L_mix| / |L|`` (no gradient
through the factor), so v4's gradient is this control's only up to a factor that changes from
step to step. A MixupE gain that this control matches is a gain of "Mixup plus some ERM", not
of the directional-derivative idea; only a gain beyond it is.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(4, 3)
    >>> ctl = MixupCleanCE(eta=0.1, mixing=Mixup(alpha=1.0, num_classes=3, seed=0))
    >>> round(ctl.beta, 6)  # eta * c with c = alpha / (2 alpha + 1)
    0.033333
    >>> out = ctl(net, torch.randn(6, 4), torch.arange(6) % 3)
    >>> sorted(out.stats)
    ['clean_loss', 'lam', 'loss', 'mixup_loss', 'regulariser', 'regulariser_ratio']
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mixupe import _checks as check
from mixupe import functional as MF
from mixupe.errors import ConfigError
from mixupe.objectives.base import Objective, ObjectiveOutput, plan_targets
from mixupe.objectives.hooks import forward_with_transform
from mixupe.objectives.mixer import Mixer, check_mixing
from mixupe.objectives.mixing import Mixup

__all__ = ["MixupCleanCE"]


class MixupCleanCE(Objective):
    """``L = L_mix + beta * CE(f(x), y)``: a mixing loss plus the clean batch's cross-entropy.

    Give ``beta`` directly, or ``eta``: then ``beta = eta * c`` with the mixing's MixupE
    constant ``c`` (``alpha / (2 alpha + 1)`` for Mixup), so that an eta grid shared with
    MixupE puts the control's clean term at the weight MixupE v4 gives its own. The clean
    batch runs as a second forward in training mode after the mixed one, as MixupE's
    ``clean_pass="separate"`` does (BatchNorm statistics update twice). No rescaling.

    ``stats``: ``mixup_loss``, ``clean_loss`` (the unweighted CE), ``regulariser``
    (``beta * clean_loss``) and ``regulariser_ratio`` (its size relative to the mixing loss).
    """

    def __init__(
        self,
        *,
        mixing: Mixer | None = None,
        beta: float | None = None,
        eta: float | None = None,
        num_classes: int | None = None,
        label_smoothing: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
    ) -> None:
        if mixing is None:
            mixing = Mixup(alpha=1.0, num_classes=num_classes,
                           label_smoothing=label_smoothing or 0.0, seed=seed,
                           generator=generator, validate=validate, check_finite=check_finite)
        check_mixing(mixing)
        if (beta is None) == (eta is None):
            raise ConfigError("give exactly one of beta (the clean CE's weight) and eta "
                              "(then beta = eta * c, MixupE's scale), e.g. eta=0.1")
        weight = beta if beta is not None else eta
        name = "beta" if beta is not None else "eta"
        check.non_negative(weight, name, what="a weight")
        if num_classes is None:
            num_classes = mixing.num_classes
        own_generator = generator is not None or seed is not None
        super().__init__(num_classes=num_classes, label_smoothing=mixing.label_smoothing,
                         seed=seed, generator=generator, validate=validate,
                         check_finite=check_finite)
        if not own_generator:
            self.generator = mixing.generator
        self.mixing = mixing
        self.eta = None if eta is None else float(eta)
        self.beta = float(beta) if beta is not None else float(eta) * mixing.mixupe_constant()

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
        """One step; ``options`` go to the mixing objective's plan (e.g. ``layer=``)."""
        step = self._plan_mixing(self.mixing, model, x, y, lam=lam, perm=perm,
                                 generator=generator, options=options)
        plan, clean, dtype = step.plan, step.clean, step.dtype
        logits_mix = forward_with_transform(model, x, plan.layer, plan.mix)
        logits_clean = model(x)
        self._check_logits(logits_mix, clean)
        targets = plan_targets(plan, clean, label_smoothing=self.label_smoothing, dtype=dtype)
        mixup_loss = MF.soft_cross_entropy(logits_mix, targets)
        eps = self.label_smoothing
        clean_targets = clean * (1.0 - eps) + eps / clean.shape[1] if eps > 0 else clean
        clean_loss = MF.soft_cross_entropy(logits_clean, clean_targets)
        regulariser = self.beta * clean_loss
        loss = mixup_loss + regulariser
        self._finite_loss(loss)
        ml, reg = mixup_loss.detach(), regulariser.detach()
        stats = {"loss": loss.detach(), "mixup_loss": ml, "clean_loss": clean_loss.detach(),
                 "regulariser": reg,
                 "regulariser_ratio": reg.abs() / ml.abs().clamp_min(torch.finfo(ml.dtype).tiny),
                 "lam": plan.lam.detach().mean()}
        return ObjectiveOutput(loss=loss, logits=logits_mix, lam=plan.lam, perm=plan.perm,
                               stat_tensors=stats, layer=plan.layer, targets=targets,
                               mask=plan.mask, clean_logits=logits_clean)
