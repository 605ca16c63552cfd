"""Data-parallel set-up: the process group from torchrun's environment, and collective helpers.

``torchrun --nproc-per-node N -m mixupe train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them and starts a
process group (gloo on CPU, NCCL on CUDA). Every helper is a no-op in a single process.

>>> ctx = setup("cpu")   # no torchrun variables: a single process
>>> (ctx.rank, ctx.world_size, ctx.is_main)
(0, 1, True)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mixupe.errors import ConfigError

__all__ = [
    "DistContext",
    "all_gather_objects",
    "all_reduce_sum",
    "broadcast_object",
    "broadcast_tensor",
    "on_main",
    "setup",
    "sync_buffers",
    "teardown",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the world size, its device, and who owns the group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # True when setup() created the process group (and teardown ends it)

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and shows progress (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not an integer; launch with torchrun "
            "or unset it"
        ) from None


DEVICE_ENV = "MIXUPE_DEVICE"


def _requested(device: str) -> str:
    """``device``, with ``"auto"`` replaced by :data:`DEVICE_ENV` where that is set."""
    if device != "auto":
        return device
    chosen = os.environ.get(DEVICE_ENV, "")
    if chosen == "":
        return device
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", chosen):
        raise ConfigError(
            f"environment variable {DEVICE_ENV}={chosen!r} is not a device; set it to 'cpu', "
            f"'cuda' or 'cuda:N', or unset it"
        )
    return chosen


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` picks CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else CPU.

    The environment variable ``MIXUPE_DEVICE`` (``cpu``, ``cuda`` or ``cuda:N``) overrides
    what ``"auto"`` picks; the test suite sets it to ``cpu``. An explicit device is kept.
    """
    device = _requested(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={device!r} but CUDA is not available here; use device='cpu' or 'auto'"
            )
        if device == "cuda":
            return torch.device("cuda", local_rank)
    return torch.device(device)


def setup(device: str = "auto") -> DistContext:
    """Join (or start, from torchrun's variables) the process group and pick this rank's device.

    If a process group already exists (e.g. started by the caller), it is reused.
    """
    device = _requested(device)
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = _env_int("LOCAL_RANK", rank)
        return DistContext(rank, world, local, resolve_device(device, local), owns_group=False)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(0, 1, 0, resolve_device(device, 0), owns_group=False)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if re.fullmatch(r"cuda:\d+", device):
        raise ConfigError(
            f"device={device!r} would put all {world} processes on one GPU; under torchrun use "
            "device='cuda' or 'auto' (each process takes cuda:LOCAL_RANK)"
        )
    dev = resolve_device(device, local)
    if not dist.is_available():
        raise ConfigError(
            f"WORLD_SIZE={world} but this PyTorch build has no torch.distributed; "
            "run a single process or install a PyTorch with distributed support"
        )
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    log.info("starting process group: backend=%s rank=%d world_size=%d", backend, rank, world)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local, dev, owns_group=True)


def teardown(ctx: DistContext) -> None:
    """End the process group if :func:`setup` started it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place, and return it."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_min(value: int, ctx: DistContext) -> int:
    """The smallest ``value`` over all ranks."""
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_comm_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def broadcast_tensor(tensor: torch.Tensor, ctx: DistContext, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s values (in place)."""
    if ctx.distributed:
        dist.broadcast(tensor, src=src)
    return tensor


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device(ctx))
    return box[0]


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def on_main(ctx: DistContext, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only; every rank gets its value, or raises its exception."""
    value, error = None, None
    if ctx.is_main:
        try:
            value = fn()
        except Exception as exc:
            if not ctx.distributed:
                raise
            error = exc
    value, error = broadcast_object((value, error), ctx)
    if error is not None:
        raise error
    return value


def sync_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts them at the start of each forward, so after the last step of an epoch the
    other ranks still hold statistics of their own last batch; evaluation and the checkpoint
    need one model.
    """
    if ctx.distributed:
        for buf in model.buffers():
            broadcast_tensor(buf, ctx)


def _comm_device(ctx: DistContext) -> torch.device:
    return ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
