"""MixupE (Zou et al., UAI 2023): Mixup plus a weighted first-order directional-derivative term.

Each step runs the mixing objective's step (Mixup, CutMix or Manifold Mixup), a pass of the
model on the clean batch, computes a per-sample score ``s_i`` on that clean pass and combines:

- version 1: ``s_i = (p_i - Y_i)_det^T J(x_i) (x_bar - x_i)``, samples with ``s_i < tau``,
  ``L = L_mix + eta c sum_sel s_i / B``.
- version 2: the version-1 score, all samples, ``L = L_mix + eta c sum |s_i| / B``.
- version 3: ``s_i = (Y_i - p_i)^T f(x_i)`` (p not detached), samples with ``s_i < tau``,
  ``L = L_mix + sign eta c sum_sel s_i / B``.
- version 4: ``s_i = (Y_i - p_i)_det^T f(x_i)``, all samples,
  ``L = L_mix + sign eta c sum s_i / B``.

with ``c = alpha / (2 alpha + 1)``, ``sign = fast_sign`` (-1 as released, +1 theory-consistent),
selection on the detached score, sums divided by the full batch size B (selection is a float
mask, so nothing synchronises). ``threshold`` (tau) only affects versions 1 and 3; versions 2
and 4 use every sample, as released. With ``rescale`` the loss becomes
``(|L_mix| / |L|) * L`` with both magnitudes detached (a scale of 1 where ``L == 0``).

The clean targets ``Y`` carry the mixing objective's label smoothing (0 by default), so the
score stays the derivative of the loss actually trained.

Version 1/2 direction and derivative:

- input-space mixing (Mixup, CutMix): ``x_bar`` is the data mean given with
  :meth:`MixupE.set_data_mean` or :meth:`MixupE.fit_data_mean`.
- manifold mixing: the derivative is taken with respect to the representation ``h`` at the
  layer mixed this step, towards an exponential moving average of its batch mean (decay
  ``mean_decay``, started at the first batch's mean, updated with the current clean batch
  before use). At ``"input"`` the data mean is used when one was set.
- ``derivative="vjp"`` (released): gradient of ``sum_i r_i^T f_i`` (``r = p - Y`` detached)
  with respect to the batch, with a graph, dotted with the detached direction per sample.
  ``derivative="jvp"``: forward-mode product of the logits with the batch of directions, then
  ``s_i = r_i^T (J d)_i``. They agree when samples do not interact; with train-mode BatchNorm
  the per-sample VJP score also collects other samples' terms through the batch statistics
  while the JVP score of sample i collects every sample's direction; the VJP form is the
  released reference. Their sums over the batch agree.

Forward mode and normalisation/attention layers: PyTorch's forward-mode rules for batch
statistics (train-mode BatchNorm, InstanceNorm) and LayerNorm give wrong parameter gradients
when differentiated in reverse mode, and those of softmax, log_softmax, logsumexp and the
fused attention kernels fail there. During the ``"jvp"`` clean pass these are computed from
elementary operations (same values, running statistics updated alike, correct gradients;
:mod:`mixupe.objectives.forward_mode`); operations without a forward-mode rule (e.g.
``torch.cdist``) raise :class:`~mixupe.errors.ConfigError` advising ``derivative="vjp"``,
whose passes run attention on PyTorch's math kernel (the fused kernels have no double
backward).

Under ``torch.distributed`` the representation mean of manifold versions 1/2 is the mean over
every rank's batch (an all-reduce per step), as the data mean is.

Clean subset: with ``clean_fraction=f < 1`` the clean pass runs on ``round(f B)`` samples
drawn without replacement from the objective's generator (after lambda and the pairing), and
the sums above are divided by that number instead of B: the term is the subset's mean, an
unbiased estimate of the full batch's term (exactly so when samples do not interact in the
network; with train-mode BatchNorm the clean pass normalises with the subset's statistics).
``clean_subset=`` at call time gives the subset explicitly. At 1.0 nothing is drawn and the
step is the released one.

Clean pass: ``"separate"`` (released) runs a second forward on the clean batch in the
model's current mode (so train-mode BatchNorm statistics update twice); ``"fused"`` runs one
forward of the concatenated ``[mixed; clean]`` batch (identical results without BatchNorm,
different batch statistics with it). Fusing pays off for versions 3 and 4 on wide devices;
for versions 1 and 2 the double backward then runs over the whole fused batch, so
"separate" is usually cheaper there.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from mixupe import _checks as check
from mixupe import functional as MF
from mixupe._transfer import to_device
from mixupe.errors import ConfigError
from mixupe.objectives.base import (
    MixingStep,
    Objective,
    ObjectiveOutput,
    plan_targets,
    select_samples,
)
from mixupe.objectives.hooks import INPUT_LAYER
from mixupe.objectives.mixer import Mixer, check_mixing
from mixupe.objectives.mixing import Mixup
from mixupe.objectives.mixupe_clean import CleanBatch, CleanPass, given_subset, run_passes
from mixupe.objectives.mixupe_means import DirectionMeans

__all__ = ["MixupE"]

_VERSIONS = (1, 2, 3, 4)


def _agreeing_num_classes(mixing: Mixer, alpha: float | None, num_classes: int | None,
                          label_smoothing: float | None) -> int | None:
    """Refuse MixupE options that contradict the mixing objective's; the classes to use."""
    if alpha is not None and float(alpha) != mixing.alpha:
        raise ConfigError(
            f"MixupE(alpha={alpha}) differs from the mixing objective's alpha={mixing.alpha}: "
            "c = alpha / (2 alpha + 1) must use the alpha the mixing draws from; pass the "
            "same alpha to both or leave MixupE's alpha unset."
        )
    if num_classes is None:
        num_classes = mixing.num_classes
    elif mixing.num_classes is not None and num_classes != mixing.num_classes:
        raise ConfigError(
            f"MixupE(num_classes={num_classes}) differs from the mixing objective's "
            f"num_classes={mixing.num_classes}: pass the same value to both."
        )
    if label_smoothing is not None and float(label_smoothing) != mixing.label_smoothing:
        raise ConfigError(
            f"MixupE(label_smoothing={label_smoothing}) differs from the mixing objective's "
            f"label_smoothing={mixing.label_smoothing}: set it on the mixing objective only."
        )
    return num_classes


class MixupE(DirectionMeans, Objective):
    """MixupE, every released version; see the module docstring for the exact formulas.

    Args:
        alpha: Beta parameter; defaults to the mixing objective's alpha, or 2.0 when
            ``mixing`` is not given (then a ``Mixup(alpha=alpha)`` is built). Must agree with
            the mixing objective's alpha, since ``c = alpha / (2 alpha + 1)`` depends on it.
        eta: weight of the extra term, >= 0.
        version: 1, 2, 3 or 4.
        threshold: tau of versions 1 and 3 (samples with ``s_i < tau`` count); None disables
            the selection.
        rescale: rescale the loss to the size of the Mixup loss.
        mixing: a :class:`Mixup`, :class:`CutMix` or :class:`ManifoldMixup`.
        fast_sign: sign of the version-3/4 term: -1 as released, +1 theory-consistent.
        clean_pass: "separate" (released) or "fused".
        derivative: "vjp" (released, double backward) or "jvp" (forward mode), versions 1/2.
        mean_decay: EMA decay of the representation mean for manifold versions 1/2.
        clean_fraction: fraction of the batch the clean pass runs on, in (0, 1]; the term is
            the mean over that random subset (1.0, the default, is the released step).
        sync_layer_means: all-reduce the representation mean of manifold versions 1/2 over
            the processes of ``torch.distributed``; None (default) does so whenever a process
            group of more than one process is initialised.
        num_classes, label_smoothing: taken from ``mixing`` when not given.
        seed, generator: override the mixing objective's generator.
        validate, check_finite: see :class:`mixupe.objectives.base.Objective`.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> obj = MixupE(version=3, eta=0.1, num_classes=3, seed=0)
        >>> out = obj(net, torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))
        >>> out.loss.backward()
        >>> sorted(out.stats)[:3]
        ['lam', 'loss', 'mixup_loss']
        >>> quarter = MixupE(version=3, eta=0.1, num_classes=3, clean_fraction=0.25, seed=0)
        >>> out = quarter(net, torch.randn(8, 4), torch.arange(8) % 3)   # clean pass on 2 of 8
        >>> tuple(out.clean_logits.shape)
        (2, 3)
    """

    def __init__(
        self,
        *,
        alpha: float | None = None,
        eta: float = 1e-3,
        version: int = 3,
        threshold: float | None = 1.0,
        rescale: bool = True,
        mixing: Mixer | None = None,
        fast_sign: int = -1,
        clean_pass: str = "separate",
        derivative: str = "vjp",
        mean_decay: float = 0.99,
        clean_fraction: float = 1.0,
        sync_layer_means: bool | None = None,
        num_classes: int | None = None,
        label_smoothing: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
    ) -> None:
        if mixing is None:
            mixing = Mixup(
                alpha=2.0 if alpha is None else alpha,
                num_classes=num_classes,
                label_smoothing=0.0 if label_smoothing is None else label_smoothing,
                seed=seed,
                generator=generator,
                validate=validate,
                check_finite=check_finite,
            )
        check_mixing(mixing)
        num_classes = _agreeing_num_classes(mixing, alpha, num_classes, label_smoothing)
        super().__init__(num_classes=num_classes, label_smoothing=mixing.label_smoothing,
                         seed=seed, generator=generator, validate=validate,
                         check_finite=check_finite)
        if generator is None and seed is None:
            self.generator = mixing.generator
        self.eta = check.non_negative(eta, "eta", what="the weight of the MixupE term",
                                      hint="(the published setting is 1e-3; 0 gives plain mixing)")
        self.version = check.one_of(version, "version", _VERSIONS, use="1, 2, 3 or 4",
                                    hint="(3 is the published one)")
        self.threshold = None if threshold is None else check.finite(
            threshold, "threshold", what="tau (published: 1.0)", hint="or None to use every sample")
        self.fast_sign = int(check.among(fast_sign, "fast_sign", (-1, 1),
                                         use="-1 (released code) or +1 (theory-consistent)"))
        self.clean_pass = check.one_of(clean_pass, "clean_pass", ("separate", "fused"),
                                       use="'separate' (released) or 'fused'")
        self.derivative = check.one_of(derivative, "derivative", ("vjp", "jvp"),
                                       use="'vjp' (double backward, released) or 'jvp' "
                                           "(forward mode)")
        self.mean_decay = check.interval(mean_decay, "mean_decay", 0.0, 1.0, closed="[)")
        self.clean_fraction = check.interval(
            clean_fraction, "clean_fraction", 0.0, 1.0, closed="(]",
            hint="for the fraction of the batch the clean pass runs on (1.0 uses the whole "
                 "batch, as released; 0.25 a random quarter)")
        self.sync_layer_means = check.flag(
            sync_layer_means, "sync_layer_means",
            none="all-reduce when torch.distributed runs more than one process")
        self.mixing = mixing
        self.alpha = mixing.alpha
        mixing.mixupe_constant()  # refuses a mixer without one, at construction
        self.rescale = bool(rescale)
        self._init_means()

    @property
    def c(self) -> float:
        """MixupE's constant ``2 E[lam (1 - lam)]`` of the mixing's own lambda, read from the
        mixing every step (it can depend on the batch's shape: ResizeMix, CutMix's minmax)."""
        return self.mixing.mixupe_constant()

    # ----------------------------------------------------------------- the step
    def clean_size(self, batch_size: int) -> int:
        """How many samples the clean pass of a batch of ``batch_size`` runs on.

        Example:
            >>> MixupE(num_classes=3, clean_fraction=0.25).clean_size(128)
            32
        """
        return max(1, min(batch_size, math.floor(self.clean_fraction * batch_size + 0.5)))

    def _subset(
        self, given: Tensor | None, batch_size: int, device: torch.device, g: torch.Generator
    ) -> Tensor | None:
        """The clean subset's indices, or None for the whole batch (nothing is drawn then)."""
        if given is not None:
            return given_subset(given, batch_size, device, validate=self.validate)
        size = self.clean_size(batch_size)
        if size == batch_size:
            return None
        drawn = torch.randperm(batch_size, generator=g, device=g.device)[:size]
        return to_device(drawn, device)

    def __call__(
        self,
        model: nn.Module,
        x: Any,
        y: Tensor,
        *,
        lam: Tensor | float | None = None,
        perm: Tensor | None = None,
        generator: torch.Generator | None = None,
        clean_subset: Tensor | None = None,
        **options: Any,
    ) -> ObjectiveOutput:
        """One MixupE step; ``options`` go to the mixing objective (e.g. ``layer=``).

        ``clean_subset`` (indices into the batch) fixes the samples of the clean pass, which
        with ``lam`` and ``perm`` makes a step with ``clean_fraction < 1`` deterministic.
        """
        fused = self._check_fused(x)
        step = self._plan_mixing(self.mixing, model, x, y, lam=lam, perm=perm,
                                 generator=generator, options=options)
        clean = self._clean_batch(x, step, clean_subset)
        passes = run_passes(model, x, step.plan, clean, batch_size=step.batch_size,
                            mode=self._pass_mode(x, step), fused=fused,
                            direction=self._direction)
        self._check_logits(passes.logits_mix, step.clean)
        targets = plan_targets(step.plan, step.clean, label_smoothing=self.label_smoothing,
                               dtype=step.dtype)
        mixup_loss = MF.soft_cross_entropy(passes.logits_mix, targets)
        scores = self._scores(passes, clean.targets)
        term, selected_fraction = self._select(scores)
        total, regulariser, scale = self._combine(mixup_loss, term, clean.size)
        stats = self._stats(total, mixup_loss, regulariser, scale, scores, selected_fraction,
                            step.plan.lam)
        return ObjectiveOutput(
            loss=total, logits=passes.logits_mix, lam=step.plan.lam, perm=step.plan.perm,
            stat_tensors=stats, layer=step.plan.layer, targets=targets, mask=step.plan.mask,
            clean_logits=passes.logits_clean, scores=scores, clean_subset=clean.subset,
        )

    # -- the steps of a call, in order
    def _check_fused(self, x: Any) -> bool:
        """Whether the clean pass is fused; refuses fusing a batch that is not a tensor."""
        fused = self.clean_pass == "fused"
        if fused and not isinstance(x, Tensor):
            raise ConfigError(
                f"clean_pass='fused' needs tensor inputs, got {type(x).__name__}: use "
                "clean_pass='separate' for graph, dict and tuple batches."
            )
        return fused

    def _clean_batch(self, x: Any, step: MixingStep, given: Tensor | None) -> CleanBatch:
        """The samples of the clean pass and their targets (with the label smoothing)."""
        batch_size, clean = step.batch_size, step.clean
        subset = self._subset(given, batch_size, step.device, step.generator)
        x_clean = x if subset is None else select_samples(x, subset, batch_size=batch_size)
        targets = clean if subset is None else clean[subset]
        eps = self.label_smoothing
        if eps > 0:
            targets = targets * (1.0 - eps) + eps / clean.shape[1]
        size = batch_size if subset is None else int(subset.shape[0])
        return CleanBatch(x_clean, targets, subset, size)

    def _pass_mode(self, x: Any, step: MixingStep) -> str:
        """"plain" (versions 3/4), "vjp" or "jvp" (versions 1/2), checked against the batch."""
        if self.version not in (1, 2):
            return "plain"
        if step.plan.layer == INPUT_LAYER:
            self._check_differentiable_input(x)
        if self.derivative == "jvp" and torch.is_autocast_enabled(step.device.type):
            raise ConfigError(
                "derivative='jvp' cannot run under torch.autocast (forward-mode AD does not "
                "follow autocast's casts in PyTorch): use derivative='vjp' with mixed "
                "precision, or run this step without autocast."
            )
        return self.derivative

    def _scores(self, passes: CleanPass, targets: Tensor) -> Tensor:
        """The per-sample scores of the clean pass (directional derivative or fast score)."""
        if self.version in (1, 2):
            return MF.directional_derivative_score(
                passes.logits_clean, targets, inputs=passes.inputs,
                direction=passes.direction, logits_tangent=passes.tangent)
        return MF.fast_score(passes.logits_clean, targets, detach_probs=self.version == 4)

    def _select(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """The summed term over the selected samples, and the fraction selected."""
        if self.version in (1, 3) and self.threshold is not None:
            keep = scores.detach() < self.threshold
            return torch.where(keep, scores, 0.0).sum(), keep.to(scores.dtype).mean()
        term = scores.abs().sum() if self.version == 2 else scores.sum()
        return term, torch.ones((), dtype=scores.dtype, device=scores.device)

    def _combine(self, mixup_loss: Tensor, term: Tensor, n_clean: int
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """The loss ``L_mix + sign eta c term / n``, rescaled; with the term and the scale."""
        sign = 1.0 if self.version in (1, 2) else float(self.fast_sign)
        regulariser = sign * self.eta * self.c * term / n_clean
        total = mixup_loss + regulariser
        ml = mixup_loss.detach()
        if self.rescale:
            mag = total.detach().abs()
            scale = torch.where(mag > 0, ml.abs() / mag, 1.0)
            total = scale * total
        else:
            scale = torch.ones_like(ml)
        self._finite_loss(total)
        return total, regulariser, scale

    @staticmethod
    def _stats(total: Tensor, mixup_loss: Tensor, regulariser: Tensor, scale: Tensor,
               scores: Tensor, selected_fraction: Tensor, lam: Tensor) -> dict[str, Tensor]:
        """The step's reported figures (detached tensors)."""
        ml, reg = mixup_loss.detach(), regulariser.detach()
        return {
            "loss": total.detach(),
            "mixup_loss": ml,
            "regulariser": reg,
            "regulariser_ratio": reg.abs() / ml.abs().clamp_min(torch.finfo(ml.dtype).tiny),
            "selected_fraction": selected_fraction,
            "score_mean": scores.detach().mean(),
            "rescale": scale,
            "lam": lam.detach().mean(),
        }

    def _check_differentiable_input(self, x: Any) -> None:
        """Versions 1/2 at the input differentiate the model with respect to ``x``."""
        if not isinstance(x, Tensor):
            raise ConfigError(
                f"MixupE version {self.version} differentiates with respect to the mixed "
                f"input, which a {type(x).__name__} batch does not offer: mix at a hidden layer "
                "(mixing=ManifoldMixup(layers=[...]); the derivative is then taken there) or "
                "use version 3 or 4."
            )
        if not x.is_floating_point():
            raise ConfigError(
                f"MixupE version {self.version} differentiates with respect to the inputs, "
                f"which needs floating-point inputs, got {x.dtype}: convert them (e.g. "
                "x.float() / 255), mix at a hidden layer with ManifoldMixup, or use version 3/4."
            )
