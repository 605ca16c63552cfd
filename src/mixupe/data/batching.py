"""In-memory batching: tensor splits are sliced by a permuted index, graphs become PyG batches.

No per-sample Python collate for tensors: one ``index_select`` per batch. Under data
parallelism (``world_size > 1``) every rank draws the same permutation from an identically
seeded generator and takes the strided shard ``perm[rank::world_size]``, as
``DistributedSampler`` does. With ``drop_last=False`` the permutation is padded by wrapping
around to a multiple of ``world_size`` (a few samples appear twice in the epoch); with
``drop_last=True`` the remainder is dropped instead, and the last partial batch of each rank
is dropped too. Batches are always copies, never views of the split. A CPU split sent to a
CUDA device is gathered into pinned memory and copied asynchronously.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from mixupe.data.splits import GraphSplit, TensorSplit
from mixupe.errors import ConfigError

__all__ = ["batches", "num_batches"]


def _check(batch_size: int, rank: int, world_size: int) -> None:
    for label, value in (("batch_size", batch_size), ("world_size", world_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{label}={value!r} must be a positive integer")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < world_size:
        raise ConfigError(f"rank={rank!r} must be an integer in 0..world_size-1 ({world_size - 1})")


def _samples_per_rank(n: int, world_size: int, drop_last: bool) -> int:
    return n // world_size if drop_last else math.ceil(n / world_size)


def num_batches(
    split: TensorSplit | GraphSplit | int,
    *,
    batch_size: int,
    drop_last: bool = False,
    world_size: int = 1,
) -> int:
    """Number of batches one rank gets per epoch from :func:`batches` (for progress bars).

    Example:
        >>> num_batches(10, batch_size=4), num_batches(10, batch_size=4, drop_last=True)
        (3, 2)
    """
    _check(batch_size, 0, world_size)
    n = split if isinstance(split, int) else len(split)
    per_rank = _samples_per_rank(n, world_size, drop_last)
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


def _epoch_indices(
    n: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    drop_last: bool,
    rank: int,
    world_size: int,
) -> torch.Tensor | None:
    """This rank's sample order, or None for the identity order (then batches are views)."""
    if shuffle:
        if generator is None:
            raise ConfigError(
                "shuffle=True needs an explicit generator (no global RNG is used); pass e.g. "
                "generator=torch.Generator().manual_seed(seed), seeded identically on every rank"
            )
        order = torch.randperm(n, generator=generator)
    elif world_size == 1:
        return None
    else:
        order = torch.arange(n)
    if world_size == 1:
        return order
    per_rank = _samples_per_rank(n, world_size, drop_last)
    total = per_rank * world_size
    if total > n:  # pad by wrapping around
        order = torch.cat([order, order[: total - n]]) if n else order
        while order.numel() < total:  # only when n < world_size
            order = torch.cat([order, order[: total - order.numel()]])
    return order[:total][rank::world_size]


def _take(t: torch.Tensor, start: int, end: int, index: torch.Tensor | None, *,
          pin: bool) -> torch.Tensor:
    """Rows ``start:end`` of ``t`` (or rows ``index``) as a copy, in page-locked memory when
    ``pin``: the gather writes straight into it, so pinning costs no second host copy.

    PyTorch's pinned-memory pool hands a block out again only after the copies that read it
    have finished, so a batch's memory is never overwritten while it is still being sent.
    """
    if not pin:
        # Copies, not views: a caller that edits a batch in place must not edit the data.
        return t[start:end].clone() if index is None else t.index_select(0, index)
    out = torch.empty((end - start, *t.shape[1:]), dtype=t.dtype, pin_memory=True)
    if index is None:
        return out.copy_(t[start:end])
    return torch.index_select(t, 0, index, out=out)


def batches(
    split: TensorSplit | GraphSplit,
    *,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    device: str | torch.device = "cpu",
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[Any, torch.Tensor]]:
    """Yield ``(x, y)`` batches of a split: tensors sliced in memory, or a PyG ``Batch`` for graphs.

    Example:
        >>> s = TensorSplit(torch.arange(10.0).reshape(5, 2), torch.arange(5))
        >>> [y.tolist() for _, y in batches(s, batch_size=2, shuffle=False)]
        [[0, 1], [2, 3], [4]]
    """
    _check(batch_size, rank, world_size)
    n = len(split)
    order = _epoch_indices(
        n, shuffle=shuffle, generator=generator, drop_last=drop_last, rank=rank,
        world_size=world_size,
    )
    count = n if order is None else int(order.numel())
    stop = count - count % batch_size if drop_last else count
    device = torch.device(device)
    if isinstance(split, TensorSplit):
        x_all, y_all = split.x, split.y
        if order is not None:
            order = order.to(x_all.device)
        # Slice where the split lives (a split already on the GPU stays there), then move.
        pin = x_all.device.type == "cpu" and device.type == "cuda"
        for start in range(0, stop, batch_size):
            end = min(start + batch_size, stop)
            index = None if order is None else order[start:end]
            x, y = (_take(t, start, end, index, pin=pin) for t in (x_all, y_all))
            if x.device != device:
                # From pinned memory (pin) the copy is asynchronous for real; from pageable
                # memory non_blocking would give no overlap, so the copy just blocks.
                x = x.to(device, non_blocking=pin)
                y = y.to(device, non_blocking=pin)
            yield x, y
        return
    if isinstance(split, GraphSplit):
        try:
            from torch_geometric.data import Batch
        except ImportError as exc:
            raise ConfigError(
                "graph batches need PyTorch Geometric; install it with "
                "`pip install torch_geometric`"
            ) from exc
        for start in range(0, stop, batch_size):
            end = min(start + batch_size, stop)
            picked = range(start, end) if order is None else order[start:end].tolist()
            batch = Batch.from_data_list([split.graphs[i] for i in picked]).to(device)
            yield batch, batch.y
        return
    raise ConfigError(
        f"batches() takes a TensorSplit or GraphSplit, got {type(split).__name__}; "
        "pass ds.train / ds.val / ds.test of a loaded dataset"
    )
