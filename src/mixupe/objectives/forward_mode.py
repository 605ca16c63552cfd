"""Forward-mode passes for MixupE's ``derivative="jvp"``: correct under a later reverse pass.

A loss built from a JVP differentiates PyTorch's forward-mode rules in reverse mode, and some
of those rules break there: batch-statistics normalisation (``F.batch_norm`` in training mode,
``F.instance_norm``) and ``F.layer_norm`` give the right tangent but wrong parameter
gradients; softmax, log_softmax and logsumexp write in place into a tensor the reverse pass
needs; the fused attention kernels have no rule. :func:`run_forward_mode` therefore computes
these operations (also ``softmin``, ``glu``, ``F.scaled_dot_product_attention`` and
``nn.MultiheadAttention``'s functional form) from elementary operations, whose rules compose
correctly; running statistics are updated as PyTorch does. Operations without any
forward-mode rule (e.g. ``torch.cdist``) raise :class:`~mixupe.errors.ConfigError` advising
``derivative="vjp"``, which :func:`run_double_backward` runs on the math attention kernel
(the fused ones have no double backward).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from mixupe.errors import ConfigError

__all__ = ["run_double_backward", "run_forward_mode"]

T = TypeVar("T")


def run_forward_mode(passes: Callable[[], T]) -> T:
    """Run ``passes`` (inside a ``fwAD.dual_level``) with the elementary operations above.

    Example:
        >>> import torch.autograd.forward_ad as fwAD
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
        >>> x = torch.randn(5, 3)
        >>> with fwAD.dual_level():
        ...     out = run_forward_mode(lambda: net(fwAD.make_dual(x, torch.ones_like(x))))
        ...     tangent = fwAD.unpack_dual(out).tangent
        >>> tuple(tangent.shape)
        (5, 4)
    """
    try:
        with _ElementaryNormalisation():
            return passes()
    except (NotImplementedError, RuntimeError) as err:
        if "forward AD" not in str(err) and "forward-mode" not in str(err):
            raise
        raise ConfigError(
            "derivative='jvp' needs forward-mode AD through every operation of the model, and "
            f"PyTorch has none for one of them ({str(err).splitlines()[0]}): use "
            "derivative='vjp' (the released double-backward form)."
        ) from err


def run_double_backward(passes: Callable[[], T]) -> T:
    """Run ``passes`` with attention on PyTorch's math kernel: the fused kernels (flash,
    memory-efficient) have no double backward, which ``derivative="vjp"`` needs."""
    with sdpa_kernel(SDPBackend.MATH):
        return passes()


_SIGNATURES = {f: inspect.signature(f) for f in (
    F.batch_norm, F.instance_norm, F.layer_norm, F.softmax, F.log_softmax, F.softmin, F.glu,
    F.multi_head_attention_forward)}


class _ElementaryNormalisation(TorchFunctionMode):
    """Routes the operations whose forward-mode rule is wrong or missing under a later reverse
    pass (batch statistics, layer norm, softmax, attention, ...) to elementary operations."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        signature = _SIGNATURES.get(func)
        if signature is not None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            routed = _route_python(func, bound.arguments)
            if routed is not _NOT_ROUTED:
                return routed
        elif func in _BUILTINS:
            return _BUILTINS[func](*args, **kwargs)
        return func(*args, **kwargs)  # e.g. running statistics: PyTorch's own rule is right


_NOT_ROUTED = object()


def _route_python(func: Callable[..., Any], a: dict[str, Any]) -> Any:
    """The elementary form of a ``torch.nn.functional`` call (arguments bound by name)."""
    if func in (F.batch_norm, F.instance_norm):
        per_sample = func is F.instance_norm
        if not (a["use_input_stats"] if per_sample else a["training"]):
            return _NOT_ROUTED
        return _normalise_with_input_statistics(
            a["input"], a["running_mean"], a["running_var"], a["weight"], a["bias"],
            momentum=a["momentum"], eps=a["eps"], per_sample=per_sample)
    if func is F.layer_norm:
        return _layer_norm(a["input"], a["normalized_shape"], a["weight"], a["bias"], a["eps"])
    if func in (F.softmax, F.log_softmax, F.softmin):
        x = -a["input"] if func is F.softmin else a["input"]
        dim = a["dim"] if a["dim"] is not None else (0 if x.dim() in (0, 1, 3) else 1)
        return _softmax(x, dim, a["dtype"], log=func is F.log_softmax)
    if func is F.glu:
        first, second = a["input"].chunk(2, dim=a["dim"])
        return first * torch.sigmoid(second)
    return _multi_head_attention(a)


def _normalise_with_input_statistics(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    momentum: float,
    eps: float,
    per_sample: bool,
) -> Tensor:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` with statistics over the batch and the
    spatial axes (BatchNorm) or over the spatial axes of each sample (InstanceNorm)."""
    dims = list(range(2, x.dim())) if per_sample else [0, *range(2, x.dim())]
    mean = x.mean(dims, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dims, keepdim=True)
    out = centred * torch.rsqrt(var + eps)
    view = [1, x.shape[1]] + [1] * (x.dim() - 2)
    if weight is not None:
        out = out * weight.reshape(view)
    if bias is not None:
        out = out + bias.reshape(view)
    n = math.prod(x.shape[d] for d in dims)
    if per_sample:  # PyTorch averages the instance statistics over the batch
        mean, var = mean.mean(0), var.mean(0)
    _update_running(running_mean, mean.reshape(-1), momentum, 1.0)
    _update_running(running_var, var.reshape(-1), momentum, n / max(n - 1, 1))  # unbiased
    return out


def _update_running(
    running: Tensor | None, value: Tensor, momentum: float, correction: float
) -> None:
    """``running = (1 - momentum) running + momentum * value * correction``, without tangents."""
    if running is None:
        return
    with torch.no_grad():
        plain = fwAD.unpack_dual(value).primal.detach().to(running.dtype)
        running.mul_(1.0 - momentum).add_(plain * (momentum * correction))


def _plain(x: Tensor) -> Tensor:
    """``x`` without its tangent or graph (for shifts a result does not depend on)."""
    return fwAD.unpack_dual(x).primal.detach()


def _softmax(x: Tensor, dim: int, dtype: torch.dtype | None = None, *, log: bool = False
             ) -> Tensor:
    """(Log-)softmax from ``exp``, ``sum`` and ``log``: PyTorch's forward-mode rule for
    softmax, log_softmax and logsumexp writes into a tensor the reverse pass needs."""
    if dtype is not None:
        x = x.to(dtype)
    peak = _plain(x).amax(dim, keepdim=True)
    shifted = x - torch.where(peak.isinf(), 0.0, peak)  # the result does not depend on it
    exp = shifted.exp()
    total = exp.sum(dim, keepdim=True)
    return shifted - total.log() if log else exp / total


def _logsumexp(input: Tensor, dim: int | tuple[int, ...], keepdim: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` over ``dim`` from elementary operations."""
    peak = _plain(input).amax(dim, keepdim=True)
    peak = torch.where(peak.isinf(), 0.0, peak)
    out = (input - peak).exp().sum(dim, keepdim=True).log() + peak
    return out if keepdim else out.squeeze(dim)


def _layer_norm(
    x: Tensor, shape: Any, weight: Tensor | None, bias: Tensor | None, eps: float
) -> Tensor:
    """Layer norm over the trailing ``shape`` axes: PyTorch's forward-mode rule gives wrong
    parameter gradients once its tangent is differentiated in reverse mode."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    dims = list(range(x.dim() - len(shape), x.dim()))
    centred = x - x.mean(dims, keepdim=True)
    out = centred * torch.rsqrt((centred * centred).mean(dims, keepdim=True) + eps)
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


def _attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """``F.scaled_dot_product_attention`` from matrix products and :func:`_softmax` (the fused
    kernels have no forward-mode rule, and the math kernel's softmax has a wrong one)."""
    if enable_gqa:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query * scale) @ key.transpose(-2, -1)
    if is_causal:
        allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~allowed, -math.inf)
    if attn_mask is not None:
        scores = (scores.masked_fill(~attn_mask, -math.inf) if attn_mask.dtype == torch.bool
                  else scores + attn_mask)
    weights = _softmax(scores, -1)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return weights @ value


def _float_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A boolean "may not attend" mask of ``nn.MultiheadAttention`` as ``-inf``/0 terms."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, -math.inf)


def _multi_head_attention(a: dict[str, Any]) -> tuple[Tensor, Tensor | None]:
    """``F.multi_head_attention_forward`` (as ``nn.MultiheadAttention`` calls it) from
    elementary operations; the options it does not cover are refused."""
    unsupported = [name for name in ("bias_k", "bias_v", "static_k", "static_v")
                   if a[name] is not None] + (["add_zero_attn"] if a["add_zero_attn"] else [])
    if unsupported:
        raise ConfigError(
            f"derivative='jvp' does not cover nn.MultiheadAttention with {', '.join(unsupported)}:"
            " use derivative='vjp' (the released double-backward form)."
        )
    query, key, value = a["query"], a["key"], a["value"]
    batched = query.dim() == 3
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
    heads, (length, batch, embed) = a["num_heads"], query.shape
    if a["use_separate_proj_weight"]:
        weights = (a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"])
    else:
        weights = a["in_proj_weight"].chunk(3)
    biases = (None,) * 3 if a["in_proj_bias"] is None else a["in_proj_bias"].chunk(3)
    q, k, v = (F.linear(t, w, b).reshape(t.shape[0], batch, heads, -1).permute(1, 2, 0, 3)
               for t, w, b in zip((query, key, value), weights, biases, strict=True))
    mask = _float_mask(a["attn_mask"], q.dtype)
    if mask is not None and mask.dim() == 3:
        mask = mask.reshape(batch, heads, *mask.shape[1:])
    padding = a["key_padding_mask"]
    if padding is not None:
        padding = _float_mask(padding if batched else padding.unsqueeze(0), q.dtype)
        padding = padding.reshape(batch, 1, 1, -1)
        mask = padding if mask is None else mask + padding
    scores = (q / math.sqrt(q.shape[-1])) @ k.transpose(-2, -1)
    attn = _softmax(scores if mask is None else scores + mask, -1)
    if a["training"] and a["dropout_p"] > 0:
        attn = F.dropout(attn, a["dropout_p"])
    out = (attn @ v).permute(2, 0, 1, 3).reshape(length, batch, embed)
    out = F.linear(out, a["out_proj_weight"], a["out_proj_bias"])
    attn_out = (attn.mean(1) if a["average_attn_weights"] else attn) if a["need_weights"] else None
    if not batched:
        out = out.squeeze(1)
        attn_out = None if attn_out is None else attn_out.squeeze(0)
    return out, attn_out


def _builtin_softmax(log: bool) -> Callable[..., Tensor]:
    def call(input: Tensor, dim: int, dtype: torch.dtype | None = None) -> Tensor:
        return _softmax(input, dim, dtype, log=log)

    return call


def _builtin_layer_norm(input: Tensor, normalized_shape: Any, weight: Tensor | None = None,
                        bias: Tensor | None = None, eps: float = 1e-5, *_: Any) -> Tensor:
    return _layer_norm(input, normalized_shape, weight, bias, eps)


_BUILTINS: dict[Callable[..., Any], Callable[..., Any]] = {
    **{f: _builtin_softmax(False) for f in (torch.softmax, Tensor.softmax, torch.special.softmax)},
    **{f: _builtin_softmax(True)
       for f in (torch.log_softmax, Tensor.log_softmax, torch.special.log_softmax)},
    **{f: _logsumexp for f in (torch.logsumexp, Tensor.logsumexp, torch.special.logsumexp)},
    torch.layer_norm: _builtin_layer_norm,
    F.scaled_dot_product_attention: _attention,
}
