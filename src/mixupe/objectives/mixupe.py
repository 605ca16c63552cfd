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

Clean pass: ``"separate"`` (released) runs a second forward on the clean batch in the
model's current mode (so train-mode BatchNorm statistics update twice); ``"fused"`` runs one
forward of the concatenated ``[mixed; clean]`` batch (identical results without BatchNorm,
different batch statistics with it). Fusing pays off for versions 3 and 4 on wide devices;
for versions 1 and 2 the double backward then runs over the whole fused batch, so
"separate" is usually cheaper there.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from mixupe import functional as MF
from mixupe.errors import ConfigError, InputError
from mixupe.objectives.base import (
    Mixer,
    Objective,
    ObjectiveOutput,
    check_probability,
    input_device,
    plan_options,
    plan_targets,
    work_dtype,
)
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
        elif not isinstance(mixing, Mixer):
            raise ConfigError(
                f"mixing={mixing!r} is not a mixing objective: pass Mixup(...), CutMix(...) or "
                "ManifoldMixup(...) (ERM does not mix)."
            )
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
        if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta >= 0):
            raise ConfigError(
                f"eta={eta!r} is invalid: the weight of the MixupE term must be a finite "
                "value >= 0 (the published setting is 1e-3; 0 gives plain mixing)."
            )
        if version not in _VERSIONS or isinstance(version, bool):
            raise ConfigError(
                f"version={version!r} is unknown: use 1, 2, 3 or 4 (3 is the published one)."
            )
        if threshold is not None and not (
            isinstance(threshold, (int, float)) and math.isfinite(threshold)
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
        self.mixing = mixing
        self.alpha = mixing.alpha
        self.c = mixing.mixupe_constant()
        self.eta = float(eta)
        self.version = int(version)
        self.threshold = None if threshold is None else float(threshold)
        self.rescale = bool(rescale)
        self.fast_sign = int(fast_sign)
        self.clean_pass = clean_pass
        self.derivative = derivative
        self.mean_decay = float(mean_decay)
        self._data_mean: Tensor | None = None
        self._mean_cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        self.layer_means: dict[str, Tensor] = {}

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

    def _layer_mean(self, layer: str, h: Tensor) -> Tensor:
        acc_dtype = torch.promote_types(h.dtype, torch.float32)
        batch_mean = h.detach().to(acc_dtype).mean(0)
        old = self.layer_means.get(layer)
        if old is None or old.shape != batch_mean.shape or old.device != batch_mean.device:
            new = batch_mean
        else:
            new = self.mean_decay * old.to(acc_dtype) + (1.0 - self.mean_decay) * batch_mean
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
        """One MixupE step; ``options`` go to the mixing objective (e.g. ``layer=``)."""
        batch_size = self._batch_size(x, y)
        device = input_device(x, y)
        dtype = work_dtype(x)
        clean = self._clean_targets(y, dtype)
        self._check_inputs(x)
        fused = self.clean_pass == "fused"
        if fused and not isinstance(x, Tensor):
            raise ConfigError(
                f"clean_pass='fused' needs tensor inputs, got {type(x).__name__}: use "
                "clean_pass='separate' for graph batches."
            )
        plan = self.mixing.plan(
            model,
            x,
            batch_size,
            device=device,
            dtype=dtype,
            lam=lam,
            perm=perm,
            generator=self._gen(generator),
            **plan_options(self.mixing, options, clean),
        )
        needs_derivative = self.version in (1, 2)
        use_jvp = needs_derivative and self.derivative == "jvp"
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

        with fwAD.dual_level() if use_jvp else contextlib.nullcontext():
            if fused and plan.layer == INPUT_LAYER:
                logits_all = model(torch.cat([plan.mix(x), prepare_clean(x)]))
                logits_mix, logits_clean = logits_all[:batch_size], logits_all[batch_size:]
            elif fused:

                def mixed_and_clean(t: Tensor) -> Tensor:
                    return torch.cat([plan.mix(t[:batch_size]), prepare_clean(t[batch_size:])])

                both = torch.cat([x, x])
                logits_all = forward_with_transform(model, both, plan.layer, mixed_and_clean)
                logits_mix, logits_clean = logits_all[:batch_size], logits_all[batch_size:]
            else:
                logits_mix = forward_with_transform(model, x, plan.layer, plan.mix)
                if needs_derivative:
                    logits_clean = forward_with_transform(model, x, plan.layer, prepare_clean)
                else:
                    logits_clean = model(x)
            tangent = None
            if use_jvp:
                logits_mix = fwAD.unpack_dual(logits_mix).primal
                logits_clean, tangent = fwAD.unpack_dual(logits_clean)
                if tangent is None:
                    tangent = torch.zeros_like(logits_clean)

        self._check_logits(logits_mix, clean)
        targets = plan_targets(plan, clean, label_smoothing=self.label_smoothing, dtype=dtype)
        mixup_loss = MF.soft_cross_entropy(logits_mix, targets)
        eps = self.label_smoothing
        clean_smoothed = clean * (1.0 - eps) + eps / clean.shape[1] if eps > 0 else clean
        if needs_derivative:
            scores = MF.directional_derivative_score(
                logits_clean,
                clean_smoothed,
                inputs=captured.get("h"),
                direction=captured.get("direction"),
                logits_tangent=tangent,
            )
        else:
            scores = MF.fast_score(logits_clean, clean_smoothed, detach_probs=self.version == 4)

        if self.version in (1, 3) and self.threshold is not None:
            keep = scores.detach() < self.threshold
            term = torch.where(keep, scores, 0.0).sum()
            selected_fraction = keep.to(scores.dtype).mean()
        else:
            term = scores.abs().sum() if self.version == 2 else scores.sum()
            selected_fraction = torch.ones((), dtype=scores.dtype, device=scores.device)
        sign = 1.0 if self.version in (1, 2) else float(self.fast_sign)
        regulariser = sign * self.eta * self.c * term / batch_size
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
        )

