"""One training step, shared by the engine's loop and the integrations (Lightning, Hugging Face).

:func:`training_step` runs an objective on one batch and returns a :class:`StepResult`: the
loss to back-propagate, the objective's output (lambda, pairing, stats) and the batch size.
The engine's loop, :class:`mixupe.lightning.MixupModule` and :class:`mixupe.hf.MixupTrainer`
all call it. :func:`optimizer_step` is the engine's whole step around it: zero the gradients,
run the objective (under autocast, inside the one DDP forward of :class:`ObjectiveStep`),
back-propagate (through the gradient scaler), step the optimiser (a SAM step repeats the
step's random draws) and the schedule. :class:`EpochStats` sums an epoch's step statistics on
the device and :class:`FiniteCheck` stops a run whose loss became non-finite, both without a
per-step host read.

>>> import mixupe
>>> objective = mixupe.Mixup(num_classes=3, seed=0)
>>> batch = (torch.randn(6, 4), torch.arange(6) % 3)
>>> result = training_step(objective, torch.nn.Linear(4, 3), batch)
>>> result.batch_size, result.loss.requires_grad, "loss" in result.stat_tensors
(6, True, True)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from mixupe.engine import distributed as D
from mixupe.errors import InputError, NonFiniteLossError
from mixupe.sam import SAM

__all__ = [
    "NONFINITE_CHECK_EVERY",
    "EpochStats",
    "FiniteCheck",
    "ObjectiveStep",
    "StepResult",
    "draw_states",
    "optimizer_step",
    "same_draws_closure",
    "split_batch",
    "training_step",
]

NONFINITE_CHECK_EVERY = 50  # steps between (collective) finiteness checks inside an epoch


def split_batch(batch: Any) -> tuple[Any, Tensor]:
    """``(x, y)`` from a ``(x, y)`` pair, or from a PyG graph batch (``x = batch, y = batch.y``).

    Example:
        >>> x, y = split_batch((torch.zeros(2, 3), torch.tensor([0, 1])))
        >>> tuple(x.shape), y.tolist()
        ((2, 3), [0, 1])
    """
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if hasattr(batch, "num_graphs") and isinstance(getattr(batch, "y", None), Tensor):
        return batch, batch.y
    raise InputError(
        f"a batch of type {type(batch).__name__} is not supported: yield (x, y) pairs, or PyG "
        "graph batches with labels in .y"
    )


@dataclass
class StepResult:
    """What one training step computed: the loss (with its graph), the objective's output
    and the number of samples in the batch."""

    loss: Tensor
    output: Any
    batch_size: int

    @property
    def stat_tensors(self) -> dict[str, Tensor]:
        """The objective's detached 0-d statistics (``loss``, ``lam``, MixupE's ...)."""
        return getattr(self.output, "stat_tensors", None) or {}

    def stat(self, *names: str) -> Tensor | None:
        """The first of ``names`` among the statistics, as a float64 0-d tensor (no sync)."""
        stats = self.stat_tensors
        for name in names:
            value = stats.get(name)
            if isinstance(value, Tensor):
                return value.detach().double().reshape(())
        return None


def training_step(objective: Any, model: Any, batch: Any) -> StepResult:
    """Run ``objective`` on ``batch`` (see :func:`split_batch`) with ``model``; no backward."""
    x, y = split_batch(batch)
    out = objective(model, x, y)
    return StepResult(out.loss, out, int(y.shape[0]))


class ObjectiveStep(nn.Module):
    """Runs the whole objective (:func:`training_step`) inside one ``forward``.

    Wrapped in DistributedDataParallel, the objective's extra clean pass and (versions 1/2)
    its input-gradient pass then happen inside a single DDP forward, so the gradients of the
    one backward are all-reduced exactly once. ``last`` holds the last step's result.
    """

    def __init__(self, model: nn.Module, objective: Any) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "objective", objective)  # not a submodule: no state to sync
        object.__setattr__(self, "last", None)

    def forward(self, x: Any, y: torch.Tensor) -> torch.Tensor:
        result = training_step(self.objective, self.model, (x, y))
        object.__setattr__(self, "last", result)
        return result.loss


class StepParts(Protocol):
    """What :func:`optimizer_step` uses of the trainer's parts."""

    step_module: nn.Module  # an ObjectiveStep, possibly wrapped in DDP
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    mix_generator: torch.Generator
    amp_dtype: torch.dtype | None


def draw_states(parts: Any, device: torch.device) -> tuple[Any, ...]:
    """The states a SAM step's second evaluation restores: the mixing generator, the CPU RNG
    and, on CUDA, the device's RNG (dropout draws from it there)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return parts.mix_generator.get_state(), torch.get_rng_state(), cuda


def same_draws_closure(parts: Any, x: Any, y: torch.Tensor, draws: tuple[Any, ...],
                       device: torch.device) -> Callable[[], torch.Tensor]:
    """SAM's second evaluation, at the perturbed weights, with the step's own random draws
    (mixing generator, CPU RNG and the device's RNG restored, so lambda, pairing, masks and
    dropout repeat)."""

    def closure() -> torch.Tensor:
        parts.mix_generator.set_state(draws[0])
        torch.set_rng_state(draws[1])
        if draws[2] is not None:
            torch.cuda.set_rng_state(draws[2], device)
        parts.optimizer.zero_grad(set_to_none=True)
        loss = parts.step_module(x, y)
        loss.backward()
        return loss

    return closure


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def optimizer_step(parts: StepParts, x: Any, y: torch.Tensor,
                   device: torch.device) -> StepResult:
    """One optimisation step of the engine on ``(x, y)``; returns the step's result."""
    step_module = parts.step_module
    inner = step_module.module if isinstance(
        step_module, nn.parallel.DistributedDataParallel) else step_module
    parts.optimizer.zero_grad(set_to_none=True)
    draws = draw_states(parts, device)
    with _autocast(device, parts.amp_dtype):
        loss = step_module(x, y)
    result = StepResult(loss, inner.last.output, inner.last.batch_size)
    if parts.scaler is not None:
        parts.scaler.scale(loss).backward()
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        loss.backward()
        if isinstance(parts.optimizer, SAM):
            parts.optimizer.step(same_draws_closure(parts, x, y, draws, device))
        else:
            parts.optimizer.step()
    parts.scheduler.step()
    return result


def next_batch(batches: Iterator[tuple[Any, torch.Tensor]], i: int, steps: int,
               ctx: D.DistContext) -> tuple[Any, torch.Tensor]:
    """The ``i``-th training batch of this rank's epoch (uneven shards are a bug)."""
    try:
        return next(batches)
    except StopIteration:
        raise InputError(
            f"the training batches of rank {ctx.rank} ran out after {i} of "
            f"{steps} steps; the data shards are uneven, report this bug"
        ) from None


class FiniteCheck:
    """Stops a run whose training loss became non-finite, without a per-step host read.

    The running loss sum is all-reduced and read every ``every`` steps and at the end of the
    epoch. It keeps no state across epochs; :meth:`state_dict` is its checkpoint seam (a
    check that kept history, e.g. of loss spikes, would save it there, per rank).
    """

    def __init__(self, every: int = NONFINITE_CHECK_EVERY) -> None:
        self.every = every

    def after_step(self, i: int, steps: int, stats: EpochStats, ctx: D.DistContext, *,
                   epoch: int, step: int) -> None:
        """The check inside an epoch, after its ``i``-th step (from 0) of ``steps``."""
        if (i + 1) % self.every == 0 and i + 1 < steps:
            self.check(stats.acc[0].clone(), ctx, epoch=epoch, step=step)

    def check(self, total: torch.Tensor, ctx: D.DistContext, *, epoch: int, step: int,
              reduced: bool = False) -> None:
        """Raise :class:`~mixupe.errors.NonFiniteLossError` unless the summed loss is finite."""
        if not reduced:
            total = D.all_reduce_sum(total, ctx)
        if not bool(torch.isfinite(total).item()):
            raise NonFiniteLossError(
                f"the training loss became non-finite ({total.item()}) in epoch {epoch} by step "
                f"{step}; lower lr, raise warmup_epochs or check the data; the checkpoint of the "
                "last finished epoch is kept"
            )

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class EpochStats:
    """An epoch's sums of the step statistics, on the device (no per-step host read).

    Slots: loss, mixup loss, regulariser, its ratio, selected fraction, the count of steps
    with those (MixupE) stats, then the rescale factor's sum and sum of squares.
    """

    def __init__(self, device: torch.device) -> None:
        self.acc = torch.zeros(8, dtype=torch.float64, device=device)

    def add(self, result: StepResult) -> None:
        acc = self.acc
        detached = result.loss.detach().double()
        acc[0] += detached
        mix = result.stat("mixup_loss")
        reg = result.stat("regulariser")
        if mix is None or reg is None:
            acc[1] += detached
            return
        acc[1] += mix  # MixupE
        acc[2] += reg
        ratio = result.stat("regulariser_ratio")
        acc[3] += ratio if ratio is not None else reg.abs() / mix.abs().clamp_min(1e-300)
        sel = result.stat("selected_fraction")
        acc[4] += sel if sel is not None else 1.0
        acc[5] += 1
        scale = result.stat("rescale")
        if scale is not None:
            acc[6] += scale
            acc[7] += scale * scale

    def record(self, ctx: D.DistContext, *, steps: int, finite: FiniteCheck, epoch: int,
               step: int) -> dict[str, Any]:
        """The epoch's training record (means over all ranks' steps), after the final check."""
        totals = D.all_reduce_sum(self.acc, ctx).cpu()
        finite.check(totals[0], ctx, epoch=epoch, step=step, reduced=True)
        n = steps * ctx.world_size
        record: dict[str, Any] = {"loss": totals[0].item() / n,
                                  "mixup_loss": totals[1].item() / n,
                                  "reg": 0.0, "reg_ratio": 0.0, "selected_frac": None}
        if totals[5].item() > 0:
            k = max(totals[5].item(), 1.0)
            record.update(reg=totals[2].item() / k, reg_ratio=totals[3].item() / k,
                          selected_frac=totals[4].item() / k)
            if totals[6].item() > 0:  # the rescale factor |L_mix| / |L| over the epoch's steps
                mean = totals[6].item() / k
                record.update(rescale=mean,
                              rescale_sd=math.sqrt(max(totals[7].item() / k - mean * mean, 0.0)))
        return record
