"""Pure tensor functions of Mixup-family training.

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

import math

import torch
from torch import Tensor

from mixupe._transfer import to_device
from mixupe.errors import ConfigError, InputError

__all__ = [
    "LAMBDA_SAMPLERS",
    "check_alpha",
    "check_finite_tensor",
    "check_labels",
    "check_soft_targets",
    "cutmix_mask",
    "directional_derivative_score",
    "fast_score",
    "mix_inputs",
    "mix_targets",
    "mixed_cross_entropy",
    "mixupe_constant",
    "one_hot",
    "sample_lambda",
    "sample_permutation",
    "soft_cross_entropy",
]


def check_alpha(alpha: float) -> None:
    """Raise :class:`ConfigError` unless ``alpha`` is a finite number > 0 (not a bool).

    Example:
        >>> check_alpha(0.2)
    """
    if not (
        isinstance(alpha, (int, float))
        and not isinstance(alpha, bool)
        and math.isfinite(alpha)
        and alpha > 0
    ):
        raise ConfigError(
            f"alpha={alpha!r} is invalid: the Beta(alpha, alpha) mixing distribution needs a "
            "finite alpha > 0 (alpha=0 would silently disable mixing). Use e.g. alpha=1.0, or "
            "the ERM objective for no mixing."
        )


# Candidates per draw in Johnk's rejection sampler (alpha <= 1/2). Each is accepted with
# probability Gamma(alpha + 1)^2 / Gamma(2 alpha + 1) >= pi / 4 > 0.785, so all 32 are
# rejected with probability below 0.215 ** 32 < 1e-21; the first candidate is then used.
_JOHNK_CANDIDATES = 32


LAMBDA_SAMPLERS = ("transform", "dirichlet")


def sample_lambda(
    alpha: float,
    *,
    batch_size: int = 1,
    per_sample: bool = False,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    method: str = "transform",
) -> Tensor:
    """Draw lambda ~ Beta(alpha, alpha) on the generator's device.

    Returns a 0-d tensor (one lambda for the batch) or, with ``per_sample=True``, a tensor of
    shape ``(batch_size,)``. Sampled in float64 from uniforms of ``generator`` alone (public
    ``torch.rand``), so a seed fixes every draw, and without any branch on drawn values (no
    host read, no device synchronisation):

    - ``alpha > 1/2``: Ulrich's (1984) exact transformation of two uniforms ``U, V``,
      ``lambda = (1 + sqrt(1 - U^(2 / (2 alpha - 1))) cos(2 pi V)) / 2`` (the first coordinate
      of a point of the unit disc whose radial density is ``(1 - r^2)^(alpha - 3/2)``);
    - ``alpha <= 1/2``: Johnk's (1964) method, ``X = U^(1/alpha)``, ``Y = V^(1/alpha)``,
      ``lambda = X / (X + Y)`` given ``X + Y <= 1``, with a fixed number of candidates (the
      first accepted one is kept; computed in logs, so tiny alphas do not underflow).

    ``method="dirichlet"`` draws as mixupe 0.1 did, through PyTorch's private
    ``torch._sample_dirichlet`` (the first coordinate of a Dirichlet(alpha, alpha)); it exists
    only to reproduce runs made with that version, since a private function may change or
    vanish between PyTorch releases.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sample_lambda(2.0, generator=g).shape
        torch.Size([])
        >>> sample_lambda(2.0, batch_size=5, per_sample=True, generator=g).shape
        torch.Size([5])
    """
    check_alpha(alpha)
    n = batch_size if per_sample else 1
    if method == "dirichlet":
        sample_dirichlet = getattr(torch, "_sample_dirichlet", None)
        if sample_dirichlet is None:
            raise ConfigError(
                f"method='dirichlet' needs torch._sample_dirichlet, which torch "
                f"{torch.__version__} lacks; use method='transform' (runs made with the old "
                "sampler cannot be reproduced bit for bit on this PyTorch)"
            )
        conc = torch.full((n, 2), float(alpha), dtype=torch.float64, device=generator.device)
        draw = sample_dirichlet(conc, generator=generator)
        return draw[:, 0].to(dtype) if per_sample else draw[0, 0].to(dtype)
    if method != "transform":
        raise ConfigError(f"method={method!r} is not a lambda sampler; choose one of "
                          f"{LAMBDA_SAMPLERS}")
    opts = {"generator": generator, "device": generator.device, "dtype": torch.float64}
    if alpha > 0.5:
        u = torch.rand((2, n), **opts)
        # In float64, 1 - U^k keeps about 16 + log10(k) significant digits even for a tiny
        # k (a large alpha), far more than the float32 lambda needs.
        half_radius = u[0].pow_(2.0 / (2.0 * alpha - 1.0)).neg_().add_(1.0).sqrt_().mul_(0.5)
        lam = u[1].mul_(2.0 * math.pi).cos_().mul_(half_radius).add_(0.5)
    else:
        logs = (1.0 - torch.rand((2, n, _JOHNK_CANDIDATES), **opts)).log() / alpha
        accept = torch.logaddexp(logs[0], logs[1]) <= 0  # X + Y <= 1
        first = accept.to(torch.int8).argmax(dim=-1, keepdim=True)  # the first True (0 if none)
        lam = torch.sigmoid((logs[0] - logs[1]).gather(-1, first)).squeeze(-1)  # X / (X + Y)
    return lam.to(dtype) if per_sample else lam[0].to(dtype)


def sample_permutation(batch_size: int, *, generator: torch.Generator) -> Tensor:
    """A uniformly random permutation of ``range(batch_size)`` on the generator's device.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sorted(sample_permutation(4, generator=g).tolist())
        [0, 1, 2, 3]
    """
    return torch.randperm(batch_size, generator=generator, device=generator.device)


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


def mixupe_constant(alpha: float) -> float:
    """``c = alpha / (2 alpha + 1)``: one minus the mean of Beta(alpha + 1, alpha).

    Example:
        >>> mixupe_constant(2.0)
        0.4
    """
    check_alpha(alpha)
    return alpha / (2.0 * alpha + 1.0)


def fast_score(logits: Tensor, targets: Tensor, *, detach_probs: bool) -> Tensor:
    """Per-sample fast MixupE score ``s_i = (Y_i - p_i)^T f_i`` with ``p = softmax(f)``.

    ``detach_probs=False`` is version 3 (the gradient flows through the softmax),
    ``detach_probs=True`` is version 4. Half-precision logits are promoted to float32.

    Example:
        >>> fast_score(torch.zeros(2, 3), torch.eye(3)[:2], detach_probs=False).tolist()
        [0.0, 0.0]
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    if detach_probs:
        probs = probs.detach()
    return ((targets.to(logits.dtype) - probs) * logits).sum(-1)


def directional_derivative_score(
    logits: Tensor,
    targets: Tensor,
    *,
    inputs: Tensor | None = None,
    direction: Tensor | None = None,
    logits_tangent: Tensor | None = None,
) -> Tensor:
    """Per-sample version-1 score ``s_i = (p_i - Y_i)_detached^T J(x_i) d_i``.

    Two ways to give the Jacobian-direction product:

    - reverse mode (the released code): ``inputs`` (requiring grad, with ``logits`` computed
      from them) and ``direction``; the gradient of ``sum_i r_i^T f_i`` with respect to the
      inputs is taken with ``create_graph=True`` and dotted with the detached direction per
      sample. With train-mode BatchNorm the gradient at sample ``j`` also collects the terms
      of other samples ``i`` through the batch statistics.
    - forward mode: ``logits_tangent`` = ``J d`` from a JVP of the logits along the batch of
      directions; then ``s_i = r_i^T (J d)_i``.

    Both give the same scores when samples do not interact inside the network. Under float16
    autocast the reverse-mode gradient is taken of the residual term times 1024 and divided
    back, so per-pixel values do not underflow to zero.

    Example:
        >>> x = torch.randn(3, 2, requires_grad=True)
        >>> w = torch.randn(2, 4)
        >>> s = directional_derivative_score(x @ w, torch.eye(4)[:3], inputs=x,
        ...                                  direction=-x.detach())
        >>> s.shape
        torch.Size([3])
    """
    work = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    residual = (torch.softmax(work, dim=-1) - targets.to(work.dtype)).detach()
    if logits_tangent is not None:
        return (residual * logits_tangent.to(work.dtype)).sum(-1)
    if inputs is None or direction is None:
        raise ConfigError(
            "directional_derivative_score needs either logits_tangent=, or inputs= and "
            "direction= (reverse mode)."
        )
    # under float16 autocast the input gradient underflows; scale it up inside the backward
    # (a power of two, so the unscaling is exact), as a GradScaler does for the outer loss
    scale = _FP16_INNER_SCALE if _fp16_autocast(inputs.device) else 1.0
    (grad,) = torch.autograd.grad((residual * work).sum() * scale, inputs, create_graph=True)
    if scale != 1.0:
        grad = grad / scale
    return (grad * direction.detach()).reshape(grad.shape[0], -1).sum(-1)


_FP16_INNER_SCALE = 1024.0


def _fp16_autocast(device: torch.device) -> bool:
    try:
        return torch.is_autocast_enabled(device.type) and (
            torch.get_autocast_dtype(device.type) == torch.float16
        )
    except (RuntimeError, TypeError):  # pragma: no cover - a device autocast does not know
        return False


def check_labels(y: Tensor, num_classes: int) -> None:
    """Raise :class:`InputError` unless integer labels lie in ``[0, num_classes)``.

    This reads the tensor's minimum and maximum, so it synchronises with the device.

    Example:
        >>> check_labels(torch.tensor([0, 2]), 3)
    """
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise InputError(
            f"label {bad} is out of range for num_classes={num_classes}: labels must lie in "
            f"[0, {num_classes - 1}]; fix the labels or pass the right num_classes."
        )


def check_soft_targets(targets: Tensor) -> None:
    """Raise :class:`InputError` unless every row of ``targets`` is a probability distribution.

    Entries must be >= 0 and each row must sum to 1 within ``sqrt(eps)`` of the dtype (about
    3e-4 in float32). This reads the tensor, so it synchronises with the device.

    Example:
        >>> check_soft_targets(torch.tensor([[0.25, 0.75], [1.0, 0.0]]))
    """
    if targets.numel() == 0:
        return
    low = float(targets.min())
    if low < 0:
        raise InputError(
            f"soft targets hold a negative entry ({low:g}): each row must be a probability "
            "distribution over the classes (entries >= 0 that sum to 1); pass e.g. "
            "torch.softmax(scores, 1), or int64 class indices."
        )
    tol = math.sqrt(torch.finfo(targets.dtype).eps)
    sums = targets.sum(-1)
    worst = int((sums - 1).abs().argmax())
    if abs(float(sums[worst]) - 1) > tol:
        raise InputError(
            f"soft target row {worst} sums to {float(sums[worst]):.6g}, not 1: each row must be "
            "a probability distribution over the classes; normalise the rows (t / t.sum(1, "
            "keepdim=True)) or pass int64 class indices."
        )


def check_finite_tensor(t: Tensor, name: str) -> None:
    """Raise :class:`InputError` if ``t`` holds NaN or infinite values (synchronises).

    Example:
        >>> check_finite_tensor(torch.ones(2), "x")
    """
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise InputError(
            f"{name} holds {n_bad} non-finite value(s) (NaN or inf): clean or re-normalise the "
            "data before training."
        )
