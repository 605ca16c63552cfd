"""Copies of the random draws between devices without a race.

A draw is made on its generator's device and then moved to the batch's device. Towards an
accelerator, ``non_blocking=True`` is safe: the copy is ordered on the stream before the ops
that read it. Towards the host it is not: ``Tensor.to("cpu", non_blocking=True)`` from a GPU
returns (pinned) memory before the copy has landed, so the host would read lambda, the
pairing or a box before they exist. Those copies block.
"""

from __future__ import annotations

import torch

__all__ = ["to_device"]


def to_device(t: torch.Tensor, device: torch.device | str,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """``t`` on ``device`` (and ``dtype``): asynchronous only where the target is not the host.

    >>> to_device(torch.arange(3), "cpu", torch.float64).tolist()
    [0.0, 1.0, 2.0]
    """
    device = torch.device(device)
    return t.to(device=device, dtype=dtype, non_blocking=device.type != "cpu")
