"""AlignMix (Venkataramanan et al., CVPR 2022): align feature maps by optimal transport, then mix.

At a layer drawn per step (as in Manifold Mixup), the feature map ``h`` ``(B, C, *positions)``
of each sample and that of its partner ``h[perm]`` are seen as sets of C-vectors; an
entropic optimal-transport plan (Sinkhorn, :func:`mixupe.functional.transport.sinkhorn`) on
their squared distances re-arranges one onto the other's positions. As released, a fair coin
picks which: the partner onto the sample (``lam h + (1 - lam) aligned(h[perm])``) or the
sample onto the partner (``lam aligned(h) + (1 - lam) h[perm]``); the targets are mixed by
the same lambda either way. At the ``"input"`` layer the authors do plain Mixup, and so does
this.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mixupe import _checks as check
from mixupe import functional as MF
from mixupe.errors import InputError
from mixupe.functional import transport as MT
from mixupe.objectives.base import MixPlan
from mixupe.objectives.hooks import INPUT_LAYER
from mixupe.objectives.manifold import ManifoldMixup

__all__ = ["AlignMix"]

SIDES = ("partner", "sample")


class AlignMix(ManifoldMixup):
    """Manifold mixing of optimally aligned feature maps.

    Args:
        alpha: lambda ~ Beta(alpha, alpha).
        layers: names to draw the mixing layer from (``model.mix_layers`` by default); each
            must output a map with positions, ``(B, C, H, W)`` or ``(B, C, L)``, or be
            ``"input"`` (plain Mixup there, as released). The authors draw between the input
            and the last feature map. The cost grows with the square of the number of
            positions: align at a deep, low-resolution layer.
        eps: entropic weight of Sinkhorn on the raw squared-distance cost (the authors' 0.1,
            which gives close to a permutation for typical feature scales).
        n_iter: Sinkhorn iterations (the authors' 100; they may stop earlier, see
            docs/FIDELITY.md).
        scale_cost: divide the cost by its per-sample maximum first (``eps`` becomes
            scale-free; much blurrier plans at eps = 0.1; not the authors' choice).
        per_sample, num_classes, label_smoothing, seed, generator, validate, check_finite: see
            :class:`ManifoldMixup`.

    ``side="partner"`` or ``"sample"`` on a call fixes which map is aligned (drawn from the
    generator otherwise, after the layer, lambda and pairing).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 36, 3))
        >>> am = AlignMix(layers=["1"], num_classes=3, seed=0)
        >>> out = am(net, torch.randn(5, 1, 6, 6), torch.tensor([0, 1, 2, 0, 1]))
        >>> out.layer
        '1'
    """

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        layers: Sequence[str] | None = None,
        eps: float = 0.1,
        n_iter: int = 100,
        scale_cost: bool = False,
        per_sample: bool = False,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
    ) -> None:
        super().__init__(alpha=alpha, layers=layers, per_sample=per_sample,
                         num_classes=num_classes, label_smoothing=label_smoothing, seed=seed,
                         generator=generator, validate=validate, check_finite=check_finite)
        self.eps = check.positive(eps, "eps", what="the Sinkhorn weight", hint="(e.g. 0.1)")
        self.n_iter = check.integer(n_iter, "n_iter", minimum=1,
                                    what="the number of Sinkhorn iterations")
        self.scale_cost = bool(scale_cost)

    def plan(self, model: nn.Module, x: Any, batch_size: int, *, device: torch.device,
             dtype: torch.dtype, lam: Tensor | float | None, perm: Tensor | None,
             generator: torch.Generator, layer: str | None = None,
             side: str | None = None) -> MixPlan:
        """Manifold Mixup's plan, with the aligned side drawn (or ``side=``) off the input."""
        if side is not None:
            check.one_of(side, "side", SIDES)
        plan = super().plan(model, x, batch_size, device=device, dtype=dtype, lam=lam,
                            perm=perm, generator=generator, layer=layer)
        if plan.layer == INPUT_LAYER:
            return plan
        if side is None:  # drawn where the generator lives, read on the host (free on CPU)
            side = SIDES[int(torch.randint(2, (1,), generator=generator,
                                           device=generator.device))]
        perm_t, lam_t, name = plan.perm, plan.lam, plan.layer

        def mix(h: Tensor) -> Tensor:
            if h.shape[0] != batch_size:
                raise InputError(
                    f"layer {name!r} output has leading size {h.shape[0]} but the batch has "
                    f"{batch_size} samples: mix at a layer whose output is (B, ...)."
                )
            return self.mix_representation(h, perm_t, lam_t, name, side=side)

        plan.mix = mix
        return plan

    def mix_representation(self, h: Tensor, perm: Tensor, lam: Tensor, layer: str,
                           side: str = "partner") -> Tensor:
        """Plain Mixup at the input; elsewhere ``lam h + (1 - lam) align(h[perm] -> h)``
        (``side="partner"``) or ``lam align(h -> h[perm]) + (1 - lam) h[perm]``."""
        if layer == INPUT_LAYER:
            return MF.mix_inputs(h, perm, lam)
        if h.dim() < 3:
            raise InputError(
                f"AlignMix aligns feature maps with positions, but layer {layer!r} outputs shape "
                f"{tuple(h.shape)}: choose a convolutional layer, (B, C, H, W) or (B, C, L), or "
                "use ManifoldMixup for vector representations."
            )
        partner = h[perm]
        plan = MT.alignment_plan(h, partner, eps=self.eps, n_iter=self.n_iter,
                                 scale_cost=self.scale_cost)
        lam_t = lam if lam.dim() == 0 else lam.reshape(-1, *([1] * (h.dim() - 1)))
        lam_t = lam_t.to(h.dtype)
        if side == "partner":
            return h * lam_t + MT.align_features(h, partner, plan=plan) * (1 - lam_t)
        moved = MT.align_features(partner, h, plan=plan.transpose(1, 2))
        return moved * lam_t + partner * (1 - lam_t)
