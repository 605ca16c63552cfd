"""How a run executes: derived seeds, mixed precision, deterministic kernels, the environment.

>>> derive_seed(0, "mix", 0) == derive_seed(0, "mix", 0)
True
>>> amp_setup(TrainConfig(), torch.device("cpu"))
(None, None)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import socket
import time
from collections.abc import Iterator
from typing import Any

import torch

from mixupe.engine import distributed as D
from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError

__all__ = ["CUBLAS_ENV", "amp_setup", "derive_seed", "deterministic_kernels", "environment"]

CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
_CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from ``seed`` and a purpose (e.g. ``"mix", rank``).

    >>> derive_seed(0, "mix", 0) != derive_seed(0, "mix", 1)
    True
    """
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def amp_setup(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, Any]:
    """The autocast dtype of ``cfg.amp``/``cfg.amp_dtype`` on ``device`` and, for float16,
    the gradient scaler (its state is checkpointed); ``(None, None)`` without amp."""
    if not cfg.amp:
        return None, None
    if device.type != "cuda":
        raise ConfigError(
            f"amp=True needs a CUDA device but the run is on {device}; "
            "drop --amp or use device='cuda'"
        )
    bf16 = torch.cuda.is_bf16_supported()
    if cfg.amp_dtype == "bf16" and not bf16:
        raise ConfigError(
            f"amp_dtype='bf16' but {device} ({torch.cuda.get_device_name(device)}) does not "
            "support bfloat16; use --amp-dtype fp16 or auto"
        )
    if cfg.amp_dtype == "bf16" or (cfg.amp_dtype == "auto" and bf16):
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler(device.type)


@contextlib.contextmanager
def deterministic_kernels(enabled: bool) -> Iterator[None]:
    """With ``enabled``, PyTorch's deterministic algorithms (an op without one raises), cuDNN's
    deterministic mode without benchmarking, and cuBLAS's fixed workspace
    (``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless set to ``:16:8``); all restored afterwards.

    cuBLAS reads its workspace setting when a process first uses it: set the variable in
    the environment before then if the process used CUDA matrix products before training.
    """
    if not enabled:
        yield
        return
    workspace = os.environ.get(CUBLAS_ENV)
    if workspace not in (None, "", *_CUBLAS_DETERMINISTIC):
        raise ConfigError(
            f"deterministic=True needs {CUBLAS_ENV} unset or one of {_CUBLAS_DETERMINISTIC}, "
            f"but it is {workspace!r}; unset it or export {CUBLAS_ENV}=:4096:8"
        )
    cudnn = torch.backends.cudnn
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.deterministic, cudnn.benchmark)
    os.environ[CUBLAS_ENV] = workspace or _CUBLAS_DETERMINISTIC[0]
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]
        if workspace is None:
            os.environ.pop(CUBLAS_ENV, None)


def environment(ctx: D.DistContext, amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """What ``config.json`` records of where the run started (versions, host, device)."""
    import mixupe

    return {
        "torch": torch.__version__, "mixupe": mixupe.__version__,
        "python": platform.python_version(), "host": socket.gethostname(),
        "device": str(ctx.device), "world_size": ctx.world_size,
        "amp_dtype": str(amp_dtype) if amp_dtype else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
