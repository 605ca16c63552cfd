"""AlignMix (Venkataramanan et al., CVPR 2022): align feature maps by optimal transport, then mix.

At a layer drawn per step (as in Manifold Mixup), the feature map ``h`` ``(B, C, *positions)``
of each sample and that of its partner ``h[perm]`` are seen as sets of C-vectors; an
entropic optimal-transport plan (Sinkhorn, :func:`mixupe.functional_transport.sinkhorn`)
between them re-arranges the partner onto the sample's positions, and the result is
``lam h + (1 - lam) aligned(h[perm])`` with targets mixed by the same lambda.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mixupe import functional_transport as MT
from mixupe.errors import ConfigError, InputError
from mixupe.objectives.manifold import ManifoldMixup

__all__ = ["AlignMix"]


class AlignMix(ManifoldMixup):
    """Manifold mixing of optimally aligned feature maps.

    Args:
        alpha: lambda ~ Beta(alpha, alpha).
        layers: names to draw the mixing layer from (``model.mix_layers`` by default); each
            must output a map with positions, ``(B, C, H, W)`` or ``(B, C, L)`` (``"input"``
            aligns pixels, with the channels as the vectors).
        eps: entropic weight of Sinkhorn on the cost scaled to [0, 1] (small: close to a
            permutation; large: towards the average of the partner).

    The cost grows with the square of the number of positions: align at a deep,
    low-resolution layer (the last feature map), as the paper does for its networks.
        n_iter: Sinkhorn iterations.
        per_sample, num_classes, label_smoothing, seed, generator, validate, check_finite: see
            :class:`ManifoldMixup`.

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
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ConfigError(f"eps={eps!r} is invalid: pass the Sinkhorn weight, > 0 (e.g. 0.1).")
        if not (isinstance(n_iter, int) and n_iter >= 1):
            raise ConfigError(f"n_iter={n_iter!r} is invalid: pass an int >= 1.")
        self.eps = float(eps)
        self.n_iter = n_iter

    def mix_representation(self, h: Tensor, perm: Tensor, lam: Tensor, layer: str) -> Tensor:
        """``lam h + (1 - lam) align(h, h[perm])``."""
        if h.dim() < 3:
            raise InputError(
                f"AlignMix aligns feature maps with positions, but layer {layer!r} outputs shape "
                f"{tuple(h.shape)}: choose a convolutional layer, (B, C, H, W) or (B, C, L), or "
                "use ManifoldMixup for vector representations."
            )
        aligned = MT.align_features(h, h[perm], eps=self.eps, n_iter=self.n_iter)
        lam_t = lam if lam.dim() == 0 else lam.reshape(-1, *([1] * (h.dim() - 1)))
        lam_t = lam_t.to(h.dtype)
        return h * lam_t + aligned * (1 - lam_t)
