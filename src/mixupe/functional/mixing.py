"""Mixed inputs, mixed targets and the losses on them; CutMix's box mask.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mixupe._transfer import to_device
from mixupe.errors import ConfigError, InputError

__all__ = [
    "cutmix_mask",
    "mix_inputs",
    "mix_targets",
    "mixed_cross_entropy",
    "one_hot",
    "soft_cross_entropy",
]


def _per_sample_view(lam: Tensor, ndim: int) -> Tensor:
    """Reshape a (B,) lambda so it broadcasts against a tensor of ``ndim`` dims; 0-d stays 0-d."""
    if lam.dim() == 0:
        return lam
    return lam.reshape(lam.shape[0], *([1] * (ndim - 1)))


def mix_inputs(x: Tensor, perm: Tensor, lam: Tensor | float) -> Tensor:
    """Return ``lam * x + (1 - lam) * x[perm]`` (a new tensor; ``x`` is not modified).

    ``lam`` is a float, a 0-d tensor, or a ``(B,)`` tensor of per-sample lambdas. The result has
    the dtype of ``x`` (lambda is cast to it, which keeps half precision under autocast, and a
    Python float keeps full precision in float64). ``x`` must be floating point: mixing
    integers (uint8 images, token ids) would round lambda away.

    Example:
        >>> x = torch.tensor([[0.0], [1.0]])
        >>> mix_inputs(x, torch.tensor([1, 0]), 0.25).flatten().tolist()
        [0.75, 0.25]
    """
    if not x.is_floating_point():
        raise InputError(
            f"cannot mix inputs of dtype {x.dtype}: a convex combination of integers would "
            "round lambda away. Convert them to floating point first (e.g. x.float() / 255 "
            "for uint8 images); for token ids mix the embeddings instead, e.g. "
            "ManifoldMixup(layers=['<embedding module>'])."
        )
    lam_t = _per_sample_view(_as_dtype(lam, x), x.dim())
    return x * lam_t + x[perm] * (1 - lam_t)


def _as_dtype(lam: Tensor | float, like: Tensor) -> Tensor:
    """``lam`` as a tensor of ``like``'s dtype and device (a Python float without rounding)."""
    if isinstance(lam, Tensor):
        if lam.dtype == like.dtype and lam.device == like.device:
            return lam
        return lam.to(device=like.device, dtype=like.dtype)
    return torch.as_tensor(lam, dtype=like.dtype, device=like.device)


def one_hot(labels: Tensor, num_classes: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot encode integer labels with a comparison mask (no range check, so no sync).

    A label outside ``[0, num_classes)`` gives a row of NaN, so a loss computed from it is
    NaN and a finiteness check stops training (instead of a silent loss of 0); use
    :func:`check_labels` first to name the bad label.

    Example:
        >>> one_hot(torch.tensor([2, 0]), 3).tolist()
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
        >>> one_hot(torch.tensor([3]), 3).isnan().all().item()
        True
    """
    classes = torch.arange(num_classes, device=labels.device)
    encoded = (labels.unsqueeze(-1) == classes).to(dtype)
    # A valid row sums to exactly 1 and stays as it is; an out-of-range row is 0 / 0 = NaN.
    return encoded / encoded.sum(-1, keepdim=True)


def mix_targets(
    y: Tensor,
    perm: Tensor,
    lam: Tensor | float,
    *,
    num_classes: int | None = None,
    label_smoothing: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Soft targets ``lam * Y + (1 - lam) * Y[perm]``, optionally label-smoothed.

    ``y`` is either int64 labels ``(B,)`` (then ``num_classes`` is required) or float soft
    targets ``(B, K)``. Smoothing with ``eps`` maps a target ``T`` to ``(1 - eps) T + eps / K``;
    it commutes with mixing. Rows sum to one whenever the rows of ``Y`` do.

    Example:
        >>> t = mix_targets(torch.tensor([0, 1]), torch.tensor([1, 0]), 0.75, num_classes=3)
        >>> t.tolist()
        [[0.75, 0.25, 0.0], [0.25, 0.75, 0.0]]
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(
            f"label_smoothing={label_smoothing!r} is invalid: use a value in [0, 1) "
            "(0 disables it)."
        )
    if y.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        if num_classes is None:
            raise ConfigError(
                "integer labels need num_classes: pass num_classes=K (the number of classes)."
            )
        targets = one_hot(y, num_classes, dtype=dtype)
    elif y.is_floating_point():
        targets = y.to(dtype)
    else:
        raise InputError(
            f"labels of dtype {y.dtype} are not supported: pass int64 class indices of shape (B,) "
            "or float soft targets of shape (B, K)."
        )
    k = targets.shape[-1]
    lam_t = _per_sample_view(_as_dtype(lam, targets), 2)
    mixed = targets * lam_t + targets[perm] * (1 - lam_t)
    if label_smoothing > 0:
        mixed = mixed * (1.0 - label_smoothing) + label_smoothing / k
    return mixed


def soft_cross_entropy(logits: Tensor, targets: Tensor, *, reduction: str = "mean") -> Tensor:
    """Cross-entropy ``-sum_k T_k log softmax(f)_k`` against soft targets, per row.

    Half-precision logits are promoted to float32 first (and autocast is off inside, so the
    log-probabilities stay float32). ``reduction`` is "mean" (over the
    batch), "sum" or "none" (a ``(B,)`` tensor).

    Example:
        >>> logits = torch.zeros(2, 4)
        >>> round(float(soft_cross_entropy(logits, torch.full((2, 4), 0.25))), 4)
        1.3863
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    with torch.autocast(logits.device.type, enabled=False):  # float32 log-probabilities
        per_row = -(targets.to(logits.dtype) * torch.log_softmax(logits, dim=-1)).sum(-1)
    if reduction == "mean":
        return per_row.mean()
    if reduction == "sum":
        return per_row.sum()
    if reduction == "none":
        return per_row
    raise ConfigError(f"reduction={reduction!r} is unknown: use 'mean', 'sum' or 'none'.")


def mixed_cross_entropy(
    logits: Tensor,
    labels_a: Tensor,
    labels_b: Tensor | None,
    lam: Tensor | float,
    *,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
) -> Tensor:
    """``lam CE(f, y_a) + (1 - lam) CE(f, y_b)`` on class indices, no dense targets built.

    Equals :func:`soft_cross_entropy` against the mixed (and smoothed) one-hot targets, since
    cross-entropy is linear in the target, but gathers two log-probabilities per row instead
    of a ``(B, K)`` product. ``logits`` are ``(B, K)`` or dense ``(B, K, *S)`` with labels
    ``(B,)`` or ``(B, *S)``; ``lam`` is a float, 0-d or ``(B,)``. ``labels_b=None`` means no
    partner (plain CE of ``labels_a``). Computed in float32 (float64 logits stay float64) with
    autocast off. With ``ignore_index``, an ignored label contributes nothing and the mean
    divides by the total weight of the labels kept, ``sum lam [y_a kept] + (1 - lam) [y_b
    kept]`` (PyTorch's rule for ``cross_entropy(..., ignore_index=)`` when ``lam`` is 1). A
    label outside ``[0, K)`` (and not ignored) makes the loss NaN; nothing is read back to the
    host, so this never synchronises.

    Example:
        >>> f, ya, yb = torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 2])
        >>> dense = 0.3 * torch.eye(3)[ya] + 0.7 * torch.eye(3)[yb]
        >>> bool(torch.isclose(mixed_cross_entropy(f, ya, yb, 0.3), soft_cross_entropy(f, dense)))
        True
    """
    with torch.autocast(logits.device.type, enabled=False):
        work = logits if logits.dtype == torch.float64 else logits.float()
        logp = torch.log_softmax(work, dim=1)
        lam_t = _per_sample_view(_as_dtype(lam, work), labels_a.dim())
        pairs = [(labels_a, lam_t)] if labels_b is None else [(labels_a, lam_t),
                                                             (labels_b, 1 - lam_t)]
        total = torch.zeros((), dtype=work.dtype, device=work.device)
        weights = torch.zeros(labels_a.shape, dtype=work.dtype, device=work.device)
        k = logp.shape[1]
        for labels, share in pairs:
            picked = logp.gather(1, labels.clamp(0, k - 1).unsqueeze(1)).squeeze(1)
            # a label out of range gives NaN (as one_hot does), not a silent wrong class
            picked = torch.where((labels >= 0) & (labels < k), picked, torch.nan)
            if ignore_index is None:
                w = share.expand(labels.shape)
            else:
                kept = labels != ignore_index
                w, picked = share * kept.to(work.dtype), torch.where(kept, picked, 0.0)
            total = total - (w * picked).sum()
            weights = weights + w
        if label_smoothing > 0:  # the eps / K share of each kept label: -eps mean_k log p_k
            spread = (weights * logp.mean(1)).sum()
            total = (1.0 - label_smoothing) * total - label_smoothing * spread
        weight = weights.sum()
        return total / weight


def cutmix_mask(
    spatial_shape: tuple[int, ...],
    lam: Tensor,
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    correct_lambda: bool = True,
) -> tuple[Tensor, Tensor]:
    """Sample CutMix boxes and return ``(mask, lam)``.

    ``spatial_shape`` is ``(L,)`` for 1-D signals or ``(H, W)`` for images. ``lam`` is 0-d (one
    box for the whole batch) or ``(B,)`` (one box per sample). The box covers a fraction
    ``1 - lam`` of the area before clipping (side ``sqrt(1 - lam)`` in 2-D, ``1 - lam`` in 1-D)
    and is centred uniformly at random, then clipped at the border. ``mask`` is a bool tensor of
    shape ``(N, *spatial_shape)`` with ``N`` = 1 or B; it is True where the pasted sample shows.
    With ``correct_lambda`` the returned lambda is the exact kept fraction
    ``1 - mask.mean()`` per box, otherwise the input lambda.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> mask, lam = cutmix_mask((6, 10), torch.tensor(0.7), generator=g)
        >>> bool(torch.isclose(lam, 1 - mask.float().mean()))
        True
    """
    if len(spatial_shape) not in (1, 2) or any(s < 1 for s in spatial_shape):
        raise InputError(
            f"CutMix spatial shape {tuple(spatial_shape)} is unsupported: use (L,) for 1-D signals "
            "or (H, W) for images, each at least 1."
        )
    device = torch.device(device) if device is not None else lam.device
    per_batch = lam.dim() == 0
    lam64 = lam.reshape(-1).to(device=device, dtype=torch.float64)
    n = lam64.shape[0]
    ratio = (1.0 - lam64).clamp(0.0, 1.0)
    if len(spatial_shape) == 2:
        ratio = ratio.sqrt()
    lows, highs = [], []
    for size in spatial_shape:
        cut = torch.floor(ratio * size)
        # Centres are drawn on the generator's device and copied over (no device-to-host sync).
        centre = torch.randint(0, size, (n,), generator=generator, device=generator.device)
        centre = to_device(centre, device, torch.float64)
        low = centre - torch.floor(cut / 2)
        lows.append(low.clamp(0, size))
        highs.append((low + cut).clamp(0, size))
    mask = torch.ones((n, *spatial_shape), dtype=torch.bool, device=device)
    for axis, size in enumerate(spatial_shape):
        pos = torch.arange(size, device=device, dtype=torch.float64)
        view = [n] + [1] * len(spatial_shape)
        view[axis + 1] = size
        inside = (pos >= lows[axis].unsqueeze(1)) & (pos < highs[axis].unsqueeze(1))
        mask = mask & inside.reshape(view)
    out_dtype = lam.dtype
    if correct_lambda:
        area = math.prod(spatial_shape)
        pasted = mask.reshape(n, -1).to(torch.float64).sum(1)
        new_lam = (1.0 - pasted / area).to(out_dtype)
    else:
        new_lam = lam.reshape(-1).to(device=device)
    return mask, (new_lam[0] if per_batch else new_lam)
