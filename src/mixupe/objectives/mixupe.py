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
from collections.abc import Iterable
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.distributed as dist
from torch import Tensor, nn

from mixupe import functional as MF
from mixupe._transfer import to_device
from mixupe.errors import ConfigError, InputError
from mixupe.objectives.base import (
    Mixer,
    Objective,
    ObjectiveOutput,
    check_mixing,
    check_probability,
    plan_targets,
    select_samples,
)
from mixupe.objectives.forward_mode import run_double_backward, run_forward_mode
from mixupe.objectives.hooks import INPUT_LAYER, forward_with_transform
from mixupe.objectives.manifold import ManifoldMixup
from mixupe.objectives.mixing import Mixup

__all__ = ["MixupE"]

_VERSIONS = (1, 2, 3, 4)


class MixupE(Objective):
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
        own_generator = generator is not None or seed is not None
        super().__init__(
            num_classes=num_classes,
            label_smoothing=mixing.label_smoothing,
            seed=seed,
            generator=generator,
            validate=validate,
            check_finite=check_finite,
        )
        if not own_generator:
            self.generator = mixing.generator
        if not (
            isinstance(eta, (int, float))
            and not isinstance(eta, bool)
            and math.isfinite(eta)
            and eta >= 0
        ):
            raise ConfigError(
                f"eta={eta!r} is invalid: the weight of the MixupE term must be a finite "
                "value >= 0 (the published setting is 1e-3; 0 gives plain mixing)."
            )
        if not isinstance(version, int) or isinstance(version, bool) or version not in _VERSIONS:
            raise ConfigError(
                f"version={version!r} is unknown: use 1, 2, 3 or 4 (3 is the published one)."
            )
        if threshold is not None and not (
            isinstance(threshold, (int, float))
            and not isinstance(threshold, bool)
            and math.isfinite(threshold)
        ):
            raise ConfigError(
                f"threshold={threshold!r} is invalid: pass a finite float (published: 1.0) or "
                "None to use every sample."
            )
        if fast_sign not in (-1, 1) or isinstance(fast_sign, bool):
            raise ConfigError(
                f"fast_sign={fast_sign!r} is invalid: use -1 (released code) or +1 "
                "(theory-consistent)."
            )
        if clean_pass not in ("separate", "fused"):
            raise ConfigError(
                f"clean_pass={clean_pass!r} is unknown: use 'separate' (released) or 'fused'."
            )
        if derivative not in ("vjp", "jvp"):
            raise ConfigError(
                f"derivative={derivative!r} is unknown: use 'vjp' (double backward, released) "
                "or 'jvp' (forward mode)."
            )
        check_probability(mean_decay, "mean_decay")
        if not (
            isinstance(clean_fraction, (int, float))
            and not isinstance(clean_fraction, bool)
            and 0.0 < clean_fraction <= 1.0
        ):
            raise ConfigError(
                f"clean_fraction={clean_fraction!r} is invalid: pass the fraction of the batch "
                "the clean pass runs on, in (0, 1] (1.0 uses the whole batch, as released; "
                "0.25 a random quarter)."
            )
        if sync_layer_means not in (None, True, False):
            raise ConfigError(
                f"sync_layer_means={sync_layer_means!r} is invalid: use None (all-reduce when "
                "torch.distributed runs more than one process), True or False."
            )
        self.mixing = mixing
        self.alpha = mixing.alpha
        mixing.mixupe_constant()  # refuses a mixer without one, at construction
        self.eta = float(eta)
        self.version = int(version)
        self.threshold = None if threshold is None else float(threshold)
        self.rescale = bool(rescale)
        self.fast_sign = int(fast_sign)
        self.clean_pass = clean_pass
        self.derivative = derivative
        self.mean_decay = float(mean_decay)
        self.clean_fraction = float(clean_fraction)
        self.sync_layer_means = sync_layer_means
        self._data_mean: Tensor | None = None
        self._mean_cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        self.layer_means: dict[str, Tensor] = {}

    @property
    def c(self) -> float:
        """MixupE's constant ``2 E[lam (1 - lam)]`` of the mixing's own lambda, read from the
        mixing every step (it can depend on the batch's shape: ResizeMix, CutMix's minmax)."""
        return self.mixing.mixupe_constant()

    # ----------------------------------------------------------------- data mean
    @property
    def data_mean(self) -> Tensor | None:
        """The data mean ``x_bar`` as set (float64), or None."""
        return self._data_mean

    def set_data_mean(self, mean: Tensor) -> None:
        """Set ``x_bar``: a tensor of the shape of one input, or with a leading 1.

        The shape is matched against the inputs at each call (a leading 1 is dropped there,
        which keeps one-channel images of shape (1, H, W) unambiguous).

        Example:
            >>> obj = MixupE(version=1, num_classes=3)
            >>> obj.set_data_mean(torch.zeros(1, 4))
            >>> tuple(obj.data_mean.shape)
            (1, 4)
        """
        if not isinstance(mean, Tensor) or mean.dim() == 0:
            raise InputError(
                f"data mean {mean!r} is invalid: pass a tensor with the shape of one input "
                "(or with a leading 1), e.g. x_train.mean(0)."
            )
        mean = mean.detach().to(dtype=torch.float64)
        MF.check_finite_tensor(mean, "data mean")
        self._data_mean = mean
        self._mean_cache = {}

    def fit_data_mean(self, batches: Iterable[Any]) -> Tensor:
        """Compute ``x_bar`` in one streaming pass (float64 sums) and set it; returns it.

        Each item is a tensor batch ``(B, ...)`` or a tuple/list whose first element is one.

        Example:
            >>> obj = MixupE(version=1, num_classes=3)
            >>> obj.fit_data_mean([torch.ones(2, 4), (3 * torch.ones(2, 4), None)]).tolist()
            [2.0, 2.0, 2.0, 2.0]
        """
        total: Tensor | None = None
        count = 0
        for item in batches:
            xb = item[0] if isinstance(item, (tuple, list)) else item
            if not isinstance(xb, Tensor) or xb.dim() < 2:
                raise InputError(
                    f"fit_data_mean got a batch of type {type(xb).__name__}: pass an iterable "
                    "of tensor batches (B, ...) or (x, y) pairs."
                )
            part = xb.detach().to(torch.float64).sum(0)
            if total is not None and part.shape != total.shape:
                raise InputError(
                    f"fit_data_mean got batches of different sample shapes {tuple(total.shape)} "
                    f"and {tuple(part.shape)}: pass batches of one dataset."
                )
            total = part if total is None else total + part
            count += xb.shape[0]
        if total is None or count == 0:
            raise InputError(
                "fit_data_mean got no samples: pass an iterable of non-empty training batches."
            )
        mean = (total / count).cpu()
        self.set_data_mean(mean)
        return mean

    def _input_mean(self, x: Tensor) -> Tensor:
        if self._data_mean is None:
            raise ConfigError(
                f"MixupE version {self.version} needs the data mean x_bar: call "
                "set_data_mean(x_train.mean(0)) or fit_data_mean(train_batches) before "
                "training (or use version 3/4)."
            )
        key = (x.device, x.dtype)
        if key in self._mean_cache:
            return self._mean_cache[key]
        mean = self._data_mean
        if tuple(mean.shape) == (1, *x.shape[1:]):
            mean = mean[0]
        if tuple(mean.shape) != tuple(x.shape[1:]):
            raise InputError(
                f"the data mean has shape {tuple(self._data_mean.shape)} but one input has shape "
                f"{tuple(x.shape[1:])}: set a mean of shape {tuple(x.shape[1:])} (or "
                f"(1, {', '.join(str(s) for s in x.shape[1:])}))."
            )
        self._mean_cache[key] = mean.to(device=x.device, dtype=x.dtype)
        return self._mean_cache[key]

    def _distributed(self) -> bool:
        if self.sync_layer_means is False:
            return False
        running = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if self.sync_layer_means and not running:
            raise ConfigError(
                "sync_layer_means=True but no torch.distributed process group of more than one "
                "process is running: start one (torchrun) or leave sync_layer_means=None."
            )
        return running

    def _layer_mean(self, layer: str, h: Tensor) -> Tensor:
        acc_dtype = torch.promote_types(h.dtype, torch.float32)
        if self._distributed():
            # Sums and counts over every rank's batch (no gradient flows through them).
            local = h.detach().to(acc_dtype)
            packed = torch.cat([local.sum(0).reshape(-1), local.new_full((1,), local.shape[0])])
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
            batch_mean = (packed[:-1] / packed[-1]).reshape(local.shape[1:])
        else:
            batch_mean = h.detach().to(acc_dtype).mean(0)
        old = self.layer_means.get(layer)
        if old is None or old.shape != batch_mean.shape:
            new = batch_mean
        else:
            # A mean restored from a checkpoint lives on the CPU: it continues on this device.
            old = old.to(device=batch_mean.device, dtype=acc_dtype)
            new = self.mean_decay * old + (1.0 - self.mean_decay) * batch_mean
        self.layer_means[layer] = new
        return new.to(h.dtype)

    def _direction(self, layer: str, h: Tensor) -> Tensor:
        if layer == INPUT_LAYER and (
            self._data_mean is not None or not isinstance(self.mixing, ManifoldMixup)
        ):
            return (self._input_mean(h) - h).detach()
        return (self._layer_mean(layer, h) - h.detach()).detach()

    def state_dict(self) -> dict[str, Any]:
        """The learned state (data mean, representation means) for checkpoints."""
        return {
            "data_mean": self._data_mean,
            "layer_means": {k: v.detach().cpu() for k, v in self.layer_means.items()},
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state.get("data_mean") is not None:
            self.set_data_mean(state["data_mean"])
        self.layer_means = dict(state.get("layer_means", {}))
        if "generator" in state:
            self.generator.set_state(state["generator"])

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
            if (
                not isinstance(given, Tensor)
                or given.dim() != 1
                or given.dtype not in (torch.int64, torch.int32)
                or not 1 <= given.shape[0] <= batch_size
            ):
                shape = tuple(given.shape) if isinstance(given, Tensor) else type(given).__name__
                raise InputError(
                    f"clean_subset of shape {shape} is invalid: pass a 1-D int64 tensor of 1 to "
                    f"{batch_size} distinct sample indices, e.g. torch.randperm({batch_size})[:8]."
                )
            given = given.to(device=device, dtype=torch.int64)
            if self.validate:
                lo, hi = int(given.min()), int(given.max())
                if lo < 0 or hi >= batch_size:
                    raise InputError(
                        f"clean_subset holds index {lo if lo < 0 else hi}, outside "
                        f"[0, {batch_size - 1}]: pass indices of samples of the batch."
                    )
                if int(torch.bincount(given, minlength=batch_size).max()) > 1:
                    raise InputError(
                        "clean_subset holds an index twice: pass distinct indices (a subset)."
                    )
            return given
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
        fused = self.clean_pass == "fused"
        if fused and not isinstance(x, Tensor):
            raise ConfigError(
                f"clean_pass='fused' needs tensor inputs, got {type(x).__name__}: use "
                "clean_pass='separate' for graph, dict and tuple batches."
            )
        step = self._plan_mixing(self.mixing, model, x, y, lam=lam, perm=perm,
                                 generator=generator, options=options)
        batch_size, device, dtype = step.batch_size, step.device, step.dtype
        clean, plan, gen = step.clean, step.plan, step.generator
        subset = self._subset(clean_subset, batch_size, device, gen)
        x_clean = x if subset is None else select_samples(x, subset, batch_size=batch_size)
        clean_targets = clean if subset is None else clean[subset]
        n_clean = batch_size if subset is None else int(subset.shape[0])
        needs_derivative = self.version in (1, 2)
        use_jvp = needs_derivative and self.derivative == "jvp"
        if needs_derivative and plan.layer == INPUT_LAYER:
            self._check_differentiable_input(x)
        if use_jvp and torch.is_autocast_enabled(device.type):
            raise ConfigError(
                "derivative='jvp' cannot run under torch.autocast (forward-mode AD does not "
                "follow autocast's casts in PyTorch): use derivative='vjp' with mixed "
                "precision, or run this step without autocast."
            )
        captured: dict[str, Tensor] = {}

        def prepare_clean(h: Tensor) -> Tensor:
            if not needs_derivative:
                return h
            direction = self._direction(plan.layer, h)
            captured["direction"] = direction
            if use_jvp:
                return fwAD.make_dual(h, direction)
            h_req = h if h.requires_grad else h.detach().requires_grad_(True)
            captured["h"] = h_req
            return h_req

        def forward_passes() -> tuple[Tensor, Tensor]:
            if fused and plan.layer == INPUT_LAYER:
                logits_all = model(torch.cat([plan.mix(x), prepare_clean(x_clean)]))
                return logits_all[:batch_size], logits_all[batch_size:]
            if fused:

                def mixed_and_clean(t: Tensor) -> Tensor:
                    return torch.cat([plan.mix(t[:batch_size]), prepare_clean(t[batch_size:])])

                both = torch.cat([x, x_clean])
                logits_all = forward_with_transform(model, both, plan.layer, mixed_and_clean)
                return logits_all[:batch_size], logits_all[batch_size:]
            logits_mix = forward_with_transform(model, x, plan.layer, plan.mix)
            if needs_derivative:
                return logits_mix, forward_with_transform(
                    model, x_clean, plan.layer, prepare_clean
                )
            return logits_mix, model(x_clean)

        tangent = None
        if use_jvp:
            with fwAD.dual_level():
                logits_mix, logits_clean = run_forward_mode(forward_passes)
                logits_mix = fwAD.unpack_dual(logits_mix).primal
                logits_clean, tangent = fwAD.unpack_dual(logits_clean)
                if tangent is None:
                    tangent = torch.zeros_like(logits_clean)
        elif needs_derivative:
            logits_mix, logits_clean = run_double_backward(forward_passes)
        else:
            logits_mix, logits_clean = forward_passes()

        self._check_logits(logits_mix, clean)
        targets = plan_targets(plan, clean, label_smoothing=self.label_smoothing, dtype=dtype)
        mixup_loss = MF.soft_cross_entropy(logits_mix, targets)
        eps = self.label_smoothing
        if eps > 0:
            clean_targets = clean_targets * (1.0 - eps) + eps / clean.shape[1]
        if needs_derivative:
            scores = MF.directional_derivative_score(
                logits_clean,
                clean_targets,
                inputs=captured.get("h"),
                direction=captured.get("direction"),
                logits_tangent=tangent,
            )
        else:
            scores = MF.fast_score(logits_clean, clean_targets, detach_probs=self.version == 4)

        if self.version in (1, 3) and self.threshold is not None:
            keep = scores.detach() < self.threshold
            term = torch.where(keep, scores, 0.0).sum()
            selected_fraction = keep.to(scores.dtype).mean()
        else:
            term = scores.abs().sum() if self.version == 2 else scores.sum()
            selected_fraction = torch.ones((), dtype=scores.dtype, device=scores.device)
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

        reg = regulariser.detach()
        stats = {
            "loss": total.detach(),
            "mixup_loss": ml,
            "regulariser": reg,
            "regulariser_ratio": reg.abs() / ml.abs().clamp_min(torch.finfo(ml.dtype).tiny),
            "selected_fraction": selected_fraction,
            "score_mean": scores.detach().mean(),
            "rescale": scale,
            "lam": plan.lam.detach().mean(),
        }
        return ObjectiveOutput(
            loss=total,
            logits=logits_mix,
            lam=plan.lam,
            perm=plan.perm,
            stat_tensors=stats,
            layer=plan.layer,
            targets=targets,
            mask=plan.mask,
            clean_logits=logits_clean,
            scores=scores,
            clean_subset=subset,
        )

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
