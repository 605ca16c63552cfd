"""Pure tensor functions of Mixup-family training (the tensor layer).

Modules: :mod:`~mixupe.functional.lambdas` (lambda, pairing, MixupE's constant),
:mod:`~mixupe.functional.mixing` (mixed inputs and targets, the losses, CutMix's mask),
:mod:`~mixupe.functional.scores` (MixupE's per-sample scores),
:mod:`~mixupe.functional.checks` (checks of user tensors), and for the mixers of the family
:mod:`~mixupe.functional.masks` (FMix, ResizeMix, SaliencyMix masks and boxes, with the maps
of :mod:`~mixupe.functional.saliency`), :mod:`~mixupe.functional.cuts` (graph-cut labelings
of Puzzle Mix and Co-Mixup, with the solvers of :mod:`~mixupe.functional.graph_cuts`) and
:mod:`~mixupe.functional.transport` (Sinkhorn and block transport). The names of the first
four are exported here.

No hidden state: every random draw takes an explicit :class:`torch.Generator`, and no function
touches the global random number generators. Nothing here synchronises with the device (no
``.item()``, no boolean-mask indexing, no branching on tensor values); the functions that check
user input say so and are only called when the caller asks for validation.

Example:
    >>> import torch
    >>> from mixupe import functional as MF
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    >>> lam = MF.sample_lambda(1.0, batch_size=4, generator=g)
    >>> perm = MF.sample_permutation(4, generator=g)
    >>> x_mix = MF.mix_inputs(x, perm, lam)
    >>> targets = MF.mix_targets(y, perm, lam, num_classes=3)
    >>> loss = MF.soft_cross_entropy(torch.randn(4, 3), targets)
    >>> bool(torch.allclose(targets.sum(1), torch.ones(4)))
    True
"""

from __future__ import annotations

from mixupe.functional import cuts, masks, transport  # public submodules (their own pages)
from mixupe.functional.checks import check_finite_tensor, check_labels, check_soft_targets
from mixupe.functional.lambdas import (
    LAMBDA_SAMPLERS,
    check_alpha,
    mixupe_constant,
    sample_lambda,
    sample_permutation,
)
from mixupe.functional.mixing import (
    cutmix_mask,
    mix_inputs,
    mix_targets,
    mixed_cross_entropy,
    one_hot,
    soft_cross_entropy,
)
from mixupe.functional.scores import directional_derivative_score, fast_score

__all__ = [
    "LAMBDA_SAMPLERS",
    "check_alpha",
    "check_finite_tensor",
    "check_labels",
    "check_soft_targets",
    "cutmix_mask",
    "cuts",
    "directional_derivative_score",
    "fast_score",
    "masks",
    "mix_inputs",
    "mix_targets",
    "mixed_cross_entropy",
    "mixupe_constant",
    "one_hot",
    "sample_lambda",
    "sample_permutation",
    "soft_cross_entropy",
    "transport",
]
