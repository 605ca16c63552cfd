"""The batches objectives take: tensors, PyG graph batches, and dict / tuple / list batches of
``(B, ...)`` tensors (their entries, sample selection, dtype and device).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mixupe.errors import InputError

__all__ = ["input_device", "input_tensors", "is_structured", "map_entries", "select_samples",
           "work_dtype"]


def is_structured(x: Any) -> bool:
    """Whether ``x`` is a dict, tuple or list batch (the model takes it as one argument)."""
    return isinstance(x, (Mapping, tuple, list))


def _entries(x: Any) -> list[tuple[Any, Any]]:
    return list(x.items()) if isinstance(x, Mapping) else list(enumerate(x))


def input_tensors(x: Any) -> list[Tensor]:
    """The tensors of a batch: ``x`` itself, a graph batch's node features, or the tensor
    entries of a dict / tuple."""
    if isinstance(x, Tensor):
        return [x]
    if is_structured(x):
        return [v for _, v in _entries(x) if isinstance(v, Tensor)]
    inner = getattr(x, "x", None)
    return [inner] if isinstance(inner, Tensor) else []


def map_entries(x: Any, keys: Sequence[Any], fn: Callable[[Tensor], Tensor]) -> Any:
    """A copy of the dict / tuple / list ``x`` with ``fn`` applied to the entries ``keys``.

    Example:
        >>> map_entries({"a": torch.ones(1), "b": 2}, ["a"], lambda t: 3 * t)
        {'a': tensor([3.]), 'b': 2}
    """
    if isinstance(x, Mapping):
        out = copy.copy(x) if isinstance(x, MutableMapping) else dict(x)
        for k in keys:
            out[k] = fn(x[k])
        return out
    chosen = set(keys)
    items = [fn(v) if i in chosen else v for i, v in enumerate(x)]
    return type(x)(items) if isinstance(x, list) else tuple(items)


def select_samples(x: Any, index: Tensor, *, batch_size: int | None = None) -> Any:
    """The samples ``index`` of a batch: ``x[index]`` for a tensor, or a new graph batch of
    the chosen graphs (PyG). A dict / tuple gets every tensor entry indexed alike and, with
    ``batch_size``, every list or tuple entry of ``batch_size`` items (per-sample values
    such as strings) too; an entry that looks per-sample but is not (a sequence of another
    length, a tensor of another first size) raises InputError, as it cannot be subset."""
    if isinstance(x, Tensor):
        return x[index]
    if is_structured(x):
        rows = index.tolist()

        def per_sample(v: Any) -> bool:
            return (isinstance(v, Tensor) and v.dim() > 0) or (
                batch_size is not None and isinstance(v, (list, tuple)) and len(v) == batch_size)

        for k, v in _entries(x):
            size = v.shape[0] if isinstance(v, Tensor) and v.dim() else len(v) if isinstance(
                v, (list, tuple)) else None
            if batch_size is not None and size is not None and size != batch_size:
                raise InputError(
                    f"entry {k!r} of the batch has {size} items but the batch has {batch_size} "
                    "samples, so a clean subset cannot be taken of it: give every per-sample "
                    "entry one item per sample, or use clean_fraction=1."
                )
        keys = [k for k, v in _entries(x) if per_sample(v)]
        return map_entries(x, keys, lambda t: t[index] if isinstance(t, Tensor)
                           else type(t)(t[i] for i in rows))
    if hasattr(x, "index_select") and hasattr(type(x), "from_data_list"):
        return type(x).from_data_list(x.index_select(index.cpu()))
    raise InputError(
        f"cannot take a subset of a batch of type {type(x).__name__}: pass a tensor, a dict "
        "or tuple of (B, ...) tensors, or a PyG Batch."
    )


def work_dtype(x: Any) -> torch.dtype:
    """float64 when the inputs are float64, else float32 (the dtype of lambda and targets)."""
    if isinstance(x, Tensor):  # the common case, without building a list
        return torch.float64 if x.dtype == torch.float64 else torch.float32
    if any(t.dtype == torch.float64 for t in input_tensors(x)):
        return torch.float64
    return torch.float32


def input_device(x: Any, y: Tensor) -> torch.device:
    """The device of the inputs (for graph, dict and tuple batches, that of the labels)."""
    return x.device if isinstance(x, Tensor) else y.device
