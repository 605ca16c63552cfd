"""Forward-mode passes for MixupE's ``derivative="jvp"``: correct under a later reverse pass.

PyTorch's forward-mode rule for normalisation with batch statistics (``F.batch_norm`` in
training mode, ``F.instance_norm`` with input statistics) gives the right tangent but wrong
parameter gradients once that tangent is itself differentiated in reverse mode, which is what
a loss built from a JVP does. :func:`run_forward_mode` therefore computes those layers from
elementary operations (mean, variance, scale, shift), whose rules compose correctly; running
statistics are updated as PyTorch does. Operations without any forward-mode rule (e.g. fused
attention kernels) raise :class:`~mixupe.errors.ConfigError` advising ``derivative="vjp"``.
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
from torch.overrides import TorchFunctionMode

from mixupe.errors import ConfigError

__all__ = ["run_forward_mode"]

T = TypeVar("T")


def run_forward_mode(passes: Callable[[], T]) -> T:
    """Run ``passes`` (inside a ``fwAD.dual_level``) with elementary batch-statistics layers.

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


_SIGNATURES = {F.batch_norm: inspect.signature(F.batch_norm),
               F.instance_norm: inspect.signature(F.instance_norm)}


class _ElementaryNormalisation(TorchFunctionMode):
    """Routes batch-statistics normalisation to :func:`_normalise_with_input_statistics`."""

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
            a = bound.arguments
            per_sample = func is F.instance_norm
            if a["use_input_stats"] if per_sample else a["training"]:
                return _normalise_with_input_statistics(
                    a["input"], a["running_mean"], a["running_var"], a["weight"], a["bias"],
                    momentum=a["momentum"], eps=a["eps"], per_sample=per_sample)
        return func(*args, **kwargs)  # running statistics: PyTorch's own rule is right


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
