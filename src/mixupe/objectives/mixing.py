"""Input-space objectives: ERM (no mixing), Mixup and CutMix.

Batches of odd size work as any other. A batch of one is paired with itself (the only
permutation of one element), so mixing returns the sample unchanged and the loss equals the
ERM loss on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mixupe import _checks as check
from mixupe import functional as MF
from mixupe._transfer import to_device
from mixupe.errors import ConfigError, InputError
from mixupe.functional import masks as MM
from mixupe.objectives.base import MixPlan, Objective
from mixupe.objectives.hooks import INPUT_LAYER
from mixupe.objectives.mixer import Mixer

__all__ = ["ERM", "CutMix", "Mixup"]


class ERM(Objective):
    """Plain cross-entropy on the clean batch (optionally label-smoothed).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 3)
        >>> out = ERM(num_classes=3)(model, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
        >>> out.loss.shape, out.logits.shape
        (torch.Size([]), torch.Size([5, 3]))
    """

    dense_labels = True

    def __init__(
        self,
        *,
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            label_smoothing=label_smoothing,
            seed=seed,
            generator=generator,
            validate=validate,
            check_finite=check_finite,
            ignore_index=ignore_index,
        )

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
    ) -> MixPlan:
        """No mixing: lambda is 1 and the pairing is the identity."""
        if lam is not None or perm is not None:
            raise ConfigError("ERM does not mix: drop lam= and perm=, or use Mixup.")
        return MixPlan(
            lam=torch.ones((), dtype=dtype, device=device),
            perm=torch.arange(batch_size, device=device),
            layer=INPUT_LAYER,
            mix=lambda t: t,
        )


class Mixup(Mixer):
    """Mixup (Zhang et al. 2018): ``x_mix = lam x + (1 - lam) x[perm]``, soft targets alike.

    Args:
        alpha: lambda ~ Beta(alpha, alpha); must be > 0.
        per_sample: one lambda per sample instead of one per batch.
        label_alpha: decoupled lambdas (Zou et al., ICML 2023): the targets are mixed with
            their own ``lam_y ~ Beta(label_alpha, label_alpha)``, drawn independently of the
            inputs' lambda (``label_lam=`` on a call fixes it). None (default): one lambda.
        mix_keys: for dict / tuple batches, the entries to mix (keys or indices).
        num_classes, label_smoothing, seed, generator, validate, check_finite, ignore_index: see
            :class:`mixupe.objectives.base.Objective`.

    Inputs must be floating point (integer inputs are refused: lambda would be rounded).
    Label maps ``(B, *S)`` (segmentation) are mixed per position with the same lambda.

    Example:
        >>> import torch
        >>> mix = Mixup(alpha=1.0, num_classes=3, seed=0)
        >>> out = mix(torch.nn.Linear(4, 3), torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))
        >>> out.targets.sum(1).allclose(torch.ones(6))
        True
    """

    model_free = True  # plan() ignores the model and mixes inputs: usable in MixCollate
    dense_labels = True  # label maps (B, *S) mix with the same lambda / box as the inputs

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        per_sample: bool = False,
        label_alpha: float | None = None,
        mix_keys: Sequence[str | int] | None = None,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(
            alpha=alpha,
            per_sample=per_sample,
            mix_keys=mix_keys,
            num_classes=num_classes,
            label_smoothing=label_smoothing,
            seed=seed,
            generator=generator,
            validate=validate,
            check_finite=check_finite,
            ignore_index=ignore_index,
        )
        if label_alpha is not None:
            MF.sample_lambda(label_alpha, generator=torch.Generator())  # validates it
        self.label_alpha = None if label_alpha is None else float(label_alpha)

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
        label_lam: Tensor | float | None = None,
    ) -> MixPlan:
        """Draw (or take) lambda and the permutation; mix at the input."""
        lam_t, perm_t = self._lam_perm(
            batch_size, device=device, dtype=dtype, lam=lam, perm=perm, generator=generator
        )
        lam_y = lam_t
        if label_lam is not None:
            lam_y = self._given_lam(label_lam, batch_size, device, dtype)
        elif self.label_alpha is not None:
            lam_y = to_device(MF.sample_lambda(
                self.label_alpha, batch_size=batch_size, per_sample=self.per_sample,
                generator=generator, dtype=dtype, method=self.lambda_sampler,
            ), device)
        return MixPlan(
            lam=lam_y,
            perm=perm_t,
            layer=INPUT_LAYER,
            mix=self.at_input(x, lambda t: MF.mix_inputs(t, perm_t, lam_t)),
        )


class CutMix(Mixer):
    """CutMix (Yun et al. 2019): paste a random box of ``x[perm]`` into ``x``.

    The box spans one or two axes of the batch (``axes``, counted with the batch axis as 0).
    The default depends on the input's rank:

    - ``(B, F)`` tabular features: axis 1;
    - ``(B, C, L)`` channel-first signals: axis 2, the last;
    - ``(B, C, H, W)`` images: axes 2 and 3;
    - any other rank: pass ``axes``.

    Batch-first sequences ``(B, L, D)`` need ``axes=(1,)`` to cut time steps (the default
    would cut the feature axis ``D``); ``axes=(3,)`` cuts only time in ``(B, 1, F, T)``
    spectrograms. ``spatial_dims=N`` is short for the last N axes. With
    ``correct_lambda=True`` (default) lambda is the exact kept fraction after clipping the box
    at the border; with ``per_sample=True`` each sample gets its own box and lambda.
    ``minmax=(lo, hi)`` (timm's ``cutmix_minmax``) draws each box side uniformly between
    ``lo`` and ``hi`` times the side instead of from lambda; the label weight is then the
    exact kept area (``lam=`` on a call still fixes the box by lambda, as without
    ``minmax``). For dict or tuple batches every ``mix_keys`` entry gets the same box
    (their box axes must agree). Label maps ``(B, H, W)`` (segmentation, with a model
    returning ``(B, K, H, W)``) get the same box: each pixel keeps the label of the sample
    that shows there.

    Example:
        >>> import torch
        >>> cut = CutMix(alpha=1.0, num_classes=2, seed=0)
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(30, 2))
        >>> out = cut(net, torch.randn(3, 1, 5, 6), torch.tensor([0, 1, 1]))
        >>> bool(torch.isclose(out.lam, 1 - out.mask.float().mean()))
        True
        >>> seq = CutMix(alpha=1.0, num_classes=2, axes=(1,), seed=0)   # (B, L, D): cut time
        >>> out = seq(net, torch.randn(3, 5, 6), torch.tensor([0, 1, 1]))
        >>> tuple(out.mask.shape)   # one box over the 5 time steps
        (1, 5)
    """

    model_free = True  # plan() ignores the model and mixes inputs: usable in MixCollate
    dense_labels = True  # label maps (B, *S) mix with the same lambda / box as the inputs

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        correct_lambda: bool = True,
        per_sample: bool = False,
        axes: Sequence[int] | None = None,
        spatial_dims: int | None = None,
        minmax: tuple[float, float] | None = None,
        mix_keys: Sequence[str | int] | None = None,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(
            alpha=alpha,
            per_sample=per_sample,
            mix_keys=mix_keys,
            num_classes=num_classes,
            label_smoothing=label_smoothing,
            seed=seed,
            generator=generator,
            validate=validate,
            check_finite=check_finite,
            ignore_index=ignore_index,
        )
        check.among(spatial_dims, "spatial_dims", (None, 1, 2),
                    use="1 (signals, features), 2 (images) or None to infer it from the batch")
        if axes is not None:
            if spatial_dims is not None:
                raise ConfigError(
                    f"both axes={axes!r} and spatial_dims={spatial_dims} were given: pass only "
                    "axes (spatial_dims=N means the last N axes)."
                )
            if (
                isinstance(axes, (str, bytes))
                or not isinstance(axes, Sequence)
                or len(axes) not in (1, 2)
                or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes)
                or 0 in axes
                or len(set(axes)) != len(axes)
            ):
                raise ConfigError(
                    f"axes={axes!r} is invalid: pass one or two distinct axes of the batch other "
                    "than the batch axis 0, e.g. axes=(1,) for (B, L, D) sequences or "
                    "axes=(2, 3) for (B, C, H, W) images."
                )
            axes = tuple(axes)
        self.correct_lambda = bool(correct_lambda)
        self.spatial_dims = spatial_dims
        self.axes: tuple[int, ...] | None = axes
        if minmax is not None and (isinstance(minmax, (str, bytes)) or not hasattr(
                minmax, "__len__") or len(minmax) != 2):
            raise ConfigError(
                f"minmax={minmax!r} must be a pair (lo, hi) of fractions of the side length "
                "with 0 < lo < hi <= 1, e.g. minmax=(0.2, 0.8); or None to draw boxes from lam"
            )
        if minmax is not None:
            MM.minmax_box((10,), 1, tuple(minmax), generator=torch.Generator())  # validates it
            minmax = (float(minmax[0]), float(minmax[1]))
        self.minmax = minmax

    def mixupe_constant(self) -> float:
        """MixupE's ``c = 2 E[lam (1 - lam)]`` of this mixer's own lambda.

        Beta(alpha, alpha): ``alpha / (2 alpha + 1)``. With ``minmax``, lambda is the kept area
        of boxes whose sides are uniform integers, so ``c`` is the closed form of
        :func:`mixupe.functional.masks.minmax_constant` for the spatial shape of the batch
        last planned (MixupE reads it every step, after the plan), and its continuous limit
        for 2-D boxes before the first batch; ``alpha`` plays no part.
        """
        if self.minmax is None:
            return super().mixupe_constant()
        spatial = getattr(self, "_seen_spatial", None)
        return MM.minmax_constant(spatial, self.minmax)

    def box_axes(self, x: Tensor) -> tuple[int, ...]:
        """The (sorted, non-negative) axes of ``x`` that the box spans."""
        nd = x.dim()
        if self.axes is not None:
            axes = tuple(sorted(a + nd if a < 0 else a for a in self.axes))
            if any(not 1 <= a < nd for a in axes) or len(set(axes)) != len(axes):
                raise ConfigError(
                    f"axes={self.axes} do not fit inputs of shape {tuple(x.shape)}: pass axes "
                    f"between 1 and {nd - 1} (0 is the batch axis)."
                )
            return axes
        if self.spatial_dims is not None:
            if nd < self.spatial_dims + 1:
                raise ConfigError(
                    f"spatial_dims={self.spatial_dims} needs inputs with at least "
                    f"{self.spatial_dims + 1} dims, got shape {tuple(x.shape)}: lower spatial_dims."
                )
            return tuple(range(nd - self.spatial_dims, nd))
        inferred = {2: (1,), 3: (2,), 4: (2, 3)}.get(nd)
        if inferred is None:
            raise ConfigError(
                f"cannot infer the CutMix box axes for inputs of shape {tuple(x.shape)}: pass "
                "CutMix(axes=...), e.g. axes=(1,) or axes=(2, 3) (spatial_dims=1 or 2 takes "
                "the last axes)."
            )
        return inferred

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
    ) -> MixPlan:
        """Draw lambda, the permutation and the box; the target lambda is the kept fraction."""
        tensors = self.mixed_tensors(x)
        spatial = tuple(tensors[0].shape[a] for a in self.box_axes(tensors[0]))
        for t in tensors[1:]:
            other = tuple(t.shape[a] for a in self.box_axes(t))
            if other != spatial:
                raise InputError(
                    f"the mixed entries need one box, but their box axes have sizes {spatial} "
                    f"and {other}: mix entries of the same spatial size, or fewer mix_keys."
                )
        lam_t, perm_t = self._lam_perm(
            batch_size, device=device, dtype=dtype, lam=lam, perm=perm, generator=generator
        )
        self._seen_spatial = spatial
        if self.minmax is None or lam is not None:
            mask, lam_eff = MF.cutmix_mask(spatial, lam_t, generator=generator, device=device,
                                           correct_lambda=self.correct_lambda)
        else:
            starts, sizes = MM.minmax_box(spatial, lam_t.reshape(-1).shape[0], self.minmax,
                                          generator=generator)
            mask = MM.box_mask(spatial, to_device(starts, device), to_device(sizes, device))
            lam_eff = MM.kept_fraction(mask, dtype)
            lam_eff = lam_eff[0] if lam_t.dim() == 0 else lam_eff

        def paste(t: Tensor) -> Tensor:
            axes = self.box_axes(t)
            view = mask.reshape(
                mask.shape[0], *(t.shape[a] if a in axes else 1 for a in range(1, t.dim()))
            )
            return torch.where(view, t[perm_t], t)

        return MixPlan(
            lam=lam_eff, perm=perm_t, layer=INPUT_LAYER, mix=self.at_input(x, paste), mask=mask
        )
