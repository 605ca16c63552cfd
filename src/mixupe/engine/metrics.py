"""Classification metrics on logits, FGSM robustness, and confidence intervals over seeds.

All metric functions are pure: they take tensors and return Python floats.

>>> import torch
>>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
>>> y = torch.tensor([0, 1, 1])
>>> round(accuracy(logits, y), 4)
0.6667
>>> mean_ci([1.0, 2.0, 3.0])[0]
2.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mixupe.errors import ConfigError, InputError

__all__ = [
    "accuracy",
    "brier",
    "calibration_bins",
    "ece",
    "ece_from_bins",
    "fgsm_accuracy",
    "fgsm_continuous_columns",
    "fgsm_perturb",
    "holm_adjust",
    "mean_ci",
    "nll",
    "paired_diff_ci",
    "paired_t_pvalue",
]


def _check(logits: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
        raise InputError(f"logits of shape {shape} must be a (N, K) tensor; reshape them")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != logits.shape[0]:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y)
        raise InputError(
            f"labels of shape {shape} must be a (N,) tensor with N={logits.shape[0]} "
            "to match the logits"
        )
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise InputError(f"labels have dtype {y.dtype}; pass integer class indices (torch.long)")
    if logits.shape[0] == 0:
        raise InputError("logits are empty (N=0); pass at least one sample")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= logits.shape[1]):
        raise InputError(
            f"labels range over [{int(y.min())}, {int(y.max())}] but there are "
            f"{logits.shape[1]} classes; labels must lie in [0, {logits.shape[1] - 1}]"
        )


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of samples whose arg-max logit is the label."""
    _check(logits, y)
    return (logits.argmax(dim=1) == y).double().mean().item()


def nll(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Mean negative log-likelihood of the labels under the softmax (the cross-entropy)."""
    _check(logits, y)
    return F.cross_entropy(logits.double(), y.long(), reduction="mean").item()


def brier(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Brier score: squared probability error summed over classes, mean over samples."""
    _check(logits, y)
    probs = logits.double().softmax(dim=1)
    onehot = F.one_hot(y.long(), logits.shape[1]).double()
    return (probs - onehot).pow(2).sum(dim=1).mean().item()


def calibration_bins(
    logits: torch.Tensor, y: torch.Tensor, n_bins: int = 15
) -> torch.Tensor:
    """Per-bin sums for the ECE: a (3, n_bins) float64 tensor (count, sum conf, sum correct).

    Bins are equal-width on the confidence (max probability); bin ``b`` holds confidences in
    ``(b/n, (b+1)/n]`` (the first bin also holds 0). Sums from several shards add up, which is
    how the ECE is all-reduced under DDP.
    """
    _check(logits, y)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"n_bins={n_bins!r} must be a positive integer, e.g. 15")
    probs = logits.double().softmax(dim=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == y).double()
    idx = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    out = torch.zeros(3, n_bins, dtype=torch.float64, device=logits.device)
    out[0].index_add_(0, idx, torch.ones_like(conf))
    out[1].index_add_(0, idx, conf)
    out[2].index_add_(0, idx, correct)
    return out


def ece_from_bins(bins: torch.Tensor) -> float:
    """The expected calibration error from :func:`calibration_bins` sums."""
    count, conf_sum, correct_sum = bins.double()
    total = count.sum()
    if total <= 0:
        raise InputError("the calibration bins are empty; pass at least one sample")
    return ((correct_sum - conf_sum).abs().sum() / total).item()


def ece(logits: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> float:
    """Expected calibration error with ``n_bins`` equal-width confidence bins.

    ECE = sum_b (|B_b| / N) * |acc(B_b) - conf(B_b)|.
    """
    return ece_from_bins(calibration_bins(logits, y, n_bins))


def _float_input(x: Any) -> torch.Tensor:
    """The tensor FGSM perturbs: ``x`` itself, or the node features of a graph batch."""
    if isinstance(x, torch.Tensor):
        return x
    feats = getattr(x, "x", None)
    if isinstance(feats, torch.Tensor):
        return feats
    raise InputError(
        f"FGSM needs a tensor batch or a graph batch with node features .x, got {type(x).__name__}"
    )


def fgsm_continuous_columns(x: Any) -> torch.Tensor | None:
    """The node-feature columns of a graph batch FGSM perturbs: those not all 0/1 in the batch.

    One-hot and flag columns (every molecule feature, TU node labels) are categorical: a step
    of ``eps`` "standardised units" off {0, 1} describes no input, so they are left as they
    are. ``None`` for a tensor batch (every entry is perturbed).
    """
    if isinstance(x, torch.Tensor):
        return None
    feats = _float_input(x)
    binary = ((feats == 0) | (feats == 1)).all(0)
    return ~binary


def fgsm_perturb(model: nn.Module, x: Any, y: torch.Tensor, eps: float) -> Any:
    """One signed-gradient step of size ``eps`` on the cross-entropy w.r.t. the (float) input.

    For a graph batch the node features ``x.x`` are perturbed, in their continuous columns
    only (:func:`fgsm_continuous_columns`); a batch without any is refused (there is no attack
    to define). Parameter gradients are left untouched. Returns the perturbed batch (a new
    object; ``x`` is not modified).
    """
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps) \
            or eps < 0:
        raise ConfigError(f"eps={eps!r} must be a finite number >= 0, e.g. 0.03")
    feats = _float_input(x)
    if not feats.is_floating_point():
        raise InputError(
            f"FGSM perturbs float inputs but got dtype {feats.dtype}; convert the input to float"
        )
    columns = fgsm_continuous_columns(x)
    if columns is not None and not bool(columns.any()):
        raise InputError(
            "FGSM is undefined on these graph node features: every column is 0/1 (one-hot or "
            "a flag), so no step off them is an input; evaluate() leaves fgsm_acc out for such "
            "batches, or give the graphs continuous node features"
        )
    if eps == 0:
        return x
    leaf = feats.detach().clone().requires_grad_(True)
    if isinstance(x, torch.Tensor):
        batch = leaf
    else:
        batch = x.clone()
        batch.x = leaf
    with torch.enable_grad():
        loss = F.cross_entropy(model(batch).float(), y.long(), reduction="sum")
        (grad,) = torch.autograd.grad(loss, leaf)
    step = grad.sign() if columns is None else grad.sign() * columns
    adv = (leaf + eps * step).detach()
    if isinstance(x, torch.Tensor):
        return adv
    batch.x = adv
    return batch


def fgsm_accuracy(model: nn.Module, x: Any, y: torch.Tensor, eps: float) -> float:
    """Accuracy on FGSM-perturbed inputs (Goodfellow et al. 2015) at L-infinity radius ``eps``.

    The model is used as it is (call ``model.eval()`` first for evaluation).

    >>> import torch
    >>> model = torch.nn.Linear(4, 3)
    >>> x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(8).long()
    >>> fgsm_accuracy(model, x, y, 0.0) == accuracy(model(x), y)
    True
    """
    adv = fgsm_perturb(model, x, y, eps)
    with torch.no_grad():
        logits = model(adv)
    return accuracy(logits, y)


def _student_t_quantile(p: float, df: int) -> float:
    from scipy import stats  # scipy ships with the bench extra; imported lazily

    return float(stats.t.ppf(p, df))


def mean_ci(values: Sequence[float] | torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval at ``level``.

    With a single value the half-width is NaN (no interval can be estimated).

    >>> m, h = mean_ci([1.0, 2.0, 3.0])
    >>> round(h, 3)   # t_{0.975, 2} * s / sqrt(3) = 4.303 * 1 / 1.732
    2.484
    """
    vals = [float(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
    if not vals:
        raise InputError("mean_ci got no values; pass at least one number")
    if not all(math.isfinite(v) for v in vals):
        raise InputError(f"mean_ci got non-finite values {vals}; drop failed runs first")
    if not 0 < level < 1:
        raise ConfigError(f"level={level!r} must lie strictly between 0 and 1, e.g. 0.95")
    n = len(vals)
    mean = math.fsum(vals) / n
    if n == 1:
        return mean, math.nan
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    return mean, _student_t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)


def _differences(a: Sequence[float] | torch.Tensor, b: Sequence[float] | torch.Tensor,
                 caller: str) -> list[float]:
    av = a.tolist() if isinstance(a, torch.Tensor) else list(a)
    bv = b.tolist() if isinstance(b, torch.Tensor) else list(b)
    if len(av) != len(bv):
        raise InputError(
            f"{caller} needs equally long sequences, got {len(av)} and {len(bv)}; "
            "pair the runs by seed"
        )
    return [float(x) - float(y) for x, y in zip(av, bv, strict=True)]


def paired_diff_ci(
    a: Sequence[float] | torch.Tensor, b: Sequence[float] | torch.Tensor, level: float = 0.95
) -> tuple[float, float]:
    """Mean and Student-t half-width of the paired differences ``a[i] - b[i]`` (e.g. over seeds).

    >>> round(paired_diff_ci([0.9, 0.8, 0.85], [0.8, 0.7, 0.75])[0], 6)
    0.1
    """
    return mean_ci(_differences(a, b, "paired_diff_ci"), level)


def paired_t_pvalue(a: Sequence[float] | torch.Tensor, b: Sequence[float] | torch.Tensor) -> float:
    """Two-sided p-value of the paired Student-t test of ``mean(a - b) == 0``.

    NaN with fewer than two pairs; 1.0 when every difference is zero, 0.0 when the
    differences are all equal and non-zero (no spread).

    >>> round(paired_t_pvalue([1.0, 2.0, 4.0], [0.0, 0.0, 1.0]), 4)   # d = 1, 2, 3: t = 3.464
    0.0742
    """
    d = _differences(a, b, "paired_t_pvalue")
    if not all(math.isfinite(v) for v in d):
        raise InputError(f"paired_t_pvalue got non-finite values {d}; drop failed runs first")
    n = len(d)
    if n < 2:
        return math.nan
    mean = math.fsum(d) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in d) / (n - 1))
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    from scipy import stats  # the bench extra

    t = mean / (sd / math.sqrt(n))
    return float(2.0 * stats.t.sf(abs(t), n - 1))


def holm_adjust(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN.

    Rejecting where the adjusted value is below ``level`` controls the family-wise error
    rate at ``level`` over the finite p-values given.

    >>> [round(p, 6) for p in holm_adjust([0.01, 0.04, 0.03])]  # 3*.01, 2*.03, max(.06, .04)
    [0.03, 0.06, 0.06]
    """
    finite = sorted((p, i) for i, p in enumerate(pvalues) if math.isfinite(p))
    for p, _ in finite:
        if not 0.0 <= p <= 1.0:
            raise InputError(f"holm_adjust got p-value {p}, outside [0, 1]")
    m = len(finite)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
