"""MixupE's clean pass: the clean subset, and the forward passes (separate, fused, forward-mode).

:func:`run_passes` runs the mixed batch and the clean batch through the model in one of three
modes: ``"plain"`` (versions 3/4: no derivative), ``"vjp"`` (versions 1/2, the released double
backward: the clean representation at the mixed layer requires grad) and ``"jvp"`` (versions
1/2 in forward mode: the clean representation carries the direction as its tangent). With
``fused`` both batches go through one forward of ``[mixed; clean]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from mixupe.errors import InputError
from mixupe.objectives.forward_mode import run_double_backward, run_forward_mode
from mixupe.objectives.hooks import INPUT_LAYER, forward_with_transform

__all__ = ["CleanBatch", "CleanPass", "given_subset", "run_passes"]

PASS_MODES = ("plain", "vjp", "jvp")


@dataclass(frozen=True)
class CleanBatch:
    """The samples of the clean pass: inputs, (smoothed) clean targets, subset and size."""

    x: Any
    targets: Tensor
    subset: Tensor | None  # indices into the batch; None: the whole batch
    size: int


@dataclass(frozen=True)
class CleanPass:
    """What the passes return: both logits, and what the version-1/2 score needs."""

    logits_mix: Tensor
    logits_clean: Tensor
    inputs: Tensor | None = None  # "vjp": the clean representation that requires grad
    direction: Tensor | None = None  # "vjp" and "jvp": the detached direction
    tangent: Tensor | None = None  # "jvp": J d of the clean logits


def given_subset(given: Any, batch_size: int, device: torch.device, *, validate: bool) -> Tensor:
    """A clean subset passed at call time, checked (range and distinctness when ``validate``)."""
    if (
        not isinstance(given, Tensor)
        or given.dim() != 1
        or given.dtype not in (torch.int64, torch.int32)
        or not 1 <= given.shape[0] <= batch_size
    ):
        shape = tuple(given.shape) if isinstance(given, Tensor) else type(given).__name__
        raise InputError(
            f"clean_subset of shape {shape} is invalid: pass a 1-D int64 tensor of 1 to "
            f"{batch_size} distinct sample indices, e.g. torch.randperm({batch_size})[:8]."
        )
    given = given.to(device=device, dtype=torch.int64)
    if validate:
        lo, hi = int(given.min()), int(given.max())
        if lo < 0 or hi >= batch_size:
            raise InputError(
                f"clean_subset holds index {lo if lo < 0 else hi}, outside "
                f"[0, {batch_size - 1}]: pass indices of samples of the batch."
            )
        if int(torch.bincount(given, minlength=batch_size).max()) > 1:
            raise InputError(
                "clean_subset holds an index twice: pass distinct indices (a subset)."
            )
    return given


Direction = Callable[[str, Tensor], Tensor]


def _preparation(mode: str, layer: str, direction: Direction,
                 captured: dict[str, Tensor]) -> Callable[[Tensor], Tensor]:
    """What the clean representation ``h`` at ``layer`` becomes in the clean pass."""

    def prepare(h: Tensor) -> Tensor:
        if mode == "plain":
            return h
        d = direction(layer, h)
        captured["direction"] = d
        if mode == "jvp":
            return fwAD.make_dual(h, d)
        h_req = h if h.requires_grad else h.detach().requires_grad_(True)
        captured["h"] = h_req
        return h_req

    return prepare


def _fused(model: nn.Module, x: Tensor, plan: Any, x_clean: Tensor, batch_size: int,
           prepare: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """One forward of ``[mixed; clean]``, split back into the two logits."""
    if plan.layer == INPUT_LAYER:
        logits_all = model(torch.cat([plan.mix(x), prepare(x_clean)]))
        return logits_all[:batch_size], logits_all[batch_size:]

    def mixed_and_clean(t: Tensor) -> Tensor:
        return torch.cat([plan.mix(t[:batch_size]), prepare(t[batch_size:])])

    both = torch.cat([x, x_clean])
    logits_all = forward_with_transform(model, both, plan.layer, mixed_and_clean)
    return logits_all[:batch_size], logits_all[batch_size:]


def _separate(model: nn.Module, x: Any, plan: Any, x_clean: Any, mode: str,
              prepare: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """A forward of the mixed batch, then one of the clean batch (released)."""
    logits_mix = forward_with_transform(model, x, plan.layer, plan.mix)
    if mode != "plain":
        return logits_mix, forward_with_transform(model, x_clean, plan.layer, prepare)
    return logits_mix, model(x_clean)


def run_passes(model: nn.Module, x: Any, plan: Any, clean: CleanBatch, *, batch_size: int,
               mode: str, fused: bool, direction: Direction) -> CleanPass:
    """The mixed and the clean forward passes of one MixupE step.

    ``direction(layer, h)`` gives the detached direction of the clean representation ``h``
    (modes "vjp" and "jvp"). ``fused`` needs tensor inputs.
    """
    captured: dict[str, Tensor] = {}
    prepare = _preparation(mode, plan.layer, direction, captured)

    def passes() -> tuple[Tensor, Tensor]:
        if fused:
            return _fused(model, x, plan, clean.x, batch_size, prepare)
        return _separate(model, x, plan, clean.x, mode, prepare)

    if mode == "jvp":
        with fwAD.dual_level():
            logits_mix, logits_clean = run_forward_mode(passes)
            logits_mix = fwAD.unpack_dual(logits_mix).primal
            logits_clean, tangent = fwAD.unpack_dual(logits_clean)
            if tangent is None:
                tangent = torch.zeros_like(logits_clean)
        return CleanPass(logits_mix, logits_clean, direction=captured.get("direction"),
                         tangent=tangent)
    if mode == "vjp":
        logits_mix, logits_clean = run_double_backward(passes)
    else:
        logits_mix, logits_clean = passes()
    return CleanPass(logits_mix, logits_clean, inputs=captured.get("h"),
                     direction=captured.get("direction"))
