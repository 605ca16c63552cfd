"""Optimisers (SGD with Nesterov momentum, AdamW) and learning-rate schedules with warm-up.

The schedule is a per-step multiplier of the base learning rate, so it resumes exactly from
the step count stored in a checkpoint.

>>> import torch
>>> from mixupe.engine.config import TrainConfig
>>> model = torch.nn.Linear(2, 2)
>>> cfg = TrainConfig(epochs=4, warmup_epochs=1, lr=0.1)
>>> opt = build_optimizer(model.parameters(), cfg)
>>> sched = build_scheduler(opt, cfg, steps_per_epoch=10)
>>> round(opt.param_groups[0]["lr"], 4)   # first warm-up step
0.01
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError
from mixupe.sam import SAM

__all__ = ["LRFactor", "build_optimizer", "build_scheduler"]


def build_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: TrainConfig
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (``optimizer="sgd"``) or AdamW, with ``cfg.weight_decay``;
    wrapped in :class:`~mixupe.sam.SAM` when ``cfg.sam_rho`` is set."""
    params = list(params)
    if cfg.optimizer == "sgd":
        base: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            nesterov=cfg.momentum > 0,
        )
    elif cfg.optimizer == "adamw":
        base = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ConfigError(f"optimizer={cfg.optimizer!r} is not supported; use 'sgd' or 'adamw'")
    if cfg.sam_rho is not None:
        return SAM(base, rho=cfg.sam_rho)
    return base


class LRFactor:
    """The learning-rate multiplier after ``step`` optimiser steps.

    Warm-up: linear from ``1/W`` to 1 over the first ``W = warmup_epochs * steps_per_epoch``
    steps. Then ``cosine`` decays to 0 at the last step following
    ``0.5 * (1 + cos(pi * t))`` with ``t`` the fraction of post-warm-up steps done; ``step``
    multiplies by ``gamma`` at each milestone epoch; ``constant`` keeps 1.

    >>> f = LRFactor(schedule="step", steps_per_epoch=2, epochs=4, milestones=(2,), gamma=0.1)
    >>> [round(f(s), 3) for s in range(8)]
    [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1]
    """

    def __init__(self, *, schedule: str, steps_per_epoch: int, epochs: int,
                 warmup_epochs: int = 0, milestones: tuple[int, ...] = (),
                 gamma: float = 0.1) -> None:
        if steps_per_epoch < 1:
            raise ConfigError(
                f"steps_per_epoch={steps_per_epoch} must be >= 1; the training split is "
                "smaller than one batch per process, lower batch_size"
            )
        if schedule not in ("cosine", "step", "constant"):
            raise ConfigError(
                f"schedule={schedule!r} is not supported; use 'cosine', 'step' or 'constant'"
            )
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.total = epochs * steps_per_epoch
        self.warmup = warmup_epochs * steps_per_epoch
        self.milestones = tuple(milestones)
        self.gamma = gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == "cosine":
            span = max(self.total - self.warmup, 1)
            done = min(step - self.warmup, span) / span
            return 0.5 * (1.0 + math.cos(math.pi * done))
        if self.schedule == "step":
            epoch = step // self.steps_per_epoch
            return self.gamma ** sum(1 for m in self.milestones if epoch >= m)
        return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, *,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step :class:`~torch.optim.lr_scheduler.LambdaLR` driven by :class:`LRFactor`.

    Call ``scheduler.step()`` after every optimiser step.
    """
    factor = LRFactor(
        schedule=cfg.schedule, steps_per_epoch=steps_per_epoch, epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs, milestones=cfg.milestones, gamma=cfg.gamma,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
