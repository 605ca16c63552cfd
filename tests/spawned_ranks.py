"""Helpers of the multi-process tests: a free loopback port and spawned ranks."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp

# The variables a rank reads to join a process group; the parent's values are restored.
DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(worker: Callable[..., None], args: tuple[Any, ...], nprocs: int) -> None:
    """Run ``worker(rank, *args)`` in ``nprocs`` spawned processes and wait for all of them."""
    saved = {k: os.environ.get(k) for k in DIST_ENV}
    try:
        mp.start_processes(worker, args=args, nprocs=nprocs, join=True, start_method="spawn")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
