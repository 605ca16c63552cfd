"""MixupE's per-sample scores: the fast score (versions 3/4) and the directional derivative
(versions 1/2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mixupe.errors import ConfigError

__all__ = [
    "directional_derivative_score",
    "fast_score",
]


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
