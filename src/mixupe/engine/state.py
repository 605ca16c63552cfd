"""The state a run checkpoints, held by small parts that each have ``state_dict()`` and
``load_state_dict()``.

A checkpoint dict is the union of its parts' ``state_dict()``: each part returns the keys it
owns (no two parts share one) and on loading reads those keys from the whole dict, so state
added later is saved and restored by adding one part to the trainer's list, and a checkpoint
written before that part existed still loads (the part finds none of its keys). The
per-process state (generators, RNG, the objective's state) is a second list, gathered from
every rank into the checkpoint's ``rank_states``.

>>> gen = torch.Generator().manual_seed(1)
>>> parts = [Progress(epoch=3, global_step=30), ObjectiveState(None, gen)]
>>> state = gather(parts)
>>> sorted(state)
['config_hash', 'epoch', 'global_step', 'mix_generator', 'world_size']
>>> later = Progress()
>>> restore([later], state); later.epoch
3
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from mixupe.errors import ConfigError

__all__ = [
    "BestEpoch",
    "Entry",
    "ModelDigest",
    "ObjectiveState",
    "Progress",
    "RngState",
    "Stateful",
    "gather",
    "improves",
    "load_objective_state",
    "model_digest",
    "objective_state",
    "restore",
]

log = logging.getLogger("mixupe.engine.trainer")  # the training loop's logger (in run logs)


class Stateful(Protocol):
    """A part of the checkpointed state: the keys it owns, and how it reads them back."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def gather(parts: Sequence[Stateful]) -> dict[str, Any]:
    """The union of the parts' ``state_dict()``; a key owned by two parts is a bug."""
    out: dict[str, Any] = {}
    for part in parts:
        state = part.state_dict()
        shared = out.keys() & state.keys()
        if shared:
            raise RuntimeError(f"checkpoint parts share the keys {sorted(shared)}")
        out.update(state)
    return out


def restore(parts: Sequence[Stateful], state: dict[str, Any]) -> None:
    """Hand ``state`` to every part, in order."""
    for part in parts:
        part.load_state_dict(state)


@dataclass
class Progress:
    """Where the run is (epoch, optimiser step) and what wrote the checkpoint (the number of
    processes, the config hash); loading refuses another number of processes."""

    epoch: int = 0
    global_step: int = 0
    world_size: int = 1
    config_hash: str | None = None
    where: str = "the run directory"

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "global_step": self.global_step,
                "world_size": self.world_size, "config_hash": self.config_hash}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("world_size") != self.world_size:
            raise ConfigError(
                f"checkpoint in {self.where} was written by {state.get('world_size')} "
                f"process(es) but this run has {self.world_size}; resume with the same number "
                "of processes or pass --overwrite"
            )
        self.epoch, self.global_step = state["epoch"], state["global_step"]


class Entry:
    """An object with its own ``state_dict()``/``load_state_dict()`` (model, optimiser,
    schedule, gradient scaler) stored under one key. ``optional``: the object may be None
    (stored as None), and a missing or None entry is not loaded."""

    def __init__(self, key: str, obj: Any, *, optional: bool = False) -> None:
        self.key, self.obj, self.optional = key, obj, optional

    def state_dict(self) -> dict[str, Any]:
        return {self.key: self.obj.state_dict() if self.obj is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        present = self.obj is not None and state.get(self.key) is not None
        if present or not self.optional:
            self.obj.load_state_dict(state[self.key])


def improves(best: dict[str, Any] | None, val: dict[str, Any]) -> bool:
    """Whether this epoch's validation accuracy beats the best record so far (ties keep the
    earlier epoch)."""
    return best is None or val["acc"] > best["val_acc"]


class BestEpoch:
    """The best-validation epoch so far: ``record`` is ``{"epoch", "val_acc", "model"}`` or
    None; ``model`` is a CPU copy of the model's state (``full_eval="end"``, to evaluate it
    at the end), or None. The caller decides what is better (:func:`improves`)."""

    def __init__(self) -> None:
        self.record: dict[str, Any] | None = None

    def keep(self, epoch: int, val: dict[str, Any], model: nn.Module | None) -> None:
        """Make ``epoch`` (and a copy of ``model``'s state) the best."""
        state = None
        if model is not None:
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.record = {"epoch": epoch, "val_acc": val["acc"], "model": state}

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.record}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.record = state.get("best")


def objective_state(objective: Any) -> dict[str, Any]:
    """The objective's ``state_dict()`` (MixupE: data mean, representation means, generator),
    or its generator's state when it has none (the integrations' checkpoint entry)."""
    state_dict = getattr(objective, "state_dict", None)
    if callable(state_dict):
        return state_dict()
    return {"generator": objective.generator.get_state()}


def load_objective_state(objective: Any, state: dict[str, Any]) -> None:
    """Restore what :func:`objective_state` returned."""
    if hasattr(objective, "load_state_dict"):
        objective.load_state_dict(state)
    else:
        objective.generator.set_state(state["generator"])


class ObjectiveState:
    """The engine's per-rank objective state: the mixing generator (``mix_generator``) and,
    for objectives with a ``state_dict`` (MixupE), that state (``objective``)."""

    def __init__(self, objective: Any, generator: torch.Generator) -> None:
        self.objective, self.generator = objective, generator

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"mix_generator": self.generator.get_state()}
        objective_state = getattr(self.objective, "state_dict", None)
        if callable(objective_state):
            state["objective"] = objective_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "objective" in state:
            self.objective.load_state_dict(state["objective"])
        self.generator.set_state(state["mix_generator"])


class RngState:
    """The global CPU generator (dropout on the CPU) and, on CUDA, the device's generator.

    A checkpoint written on another kind of device cannot continue the CUDA stream: loading
    it warns, and on CUDA seeds the device's generator from ``resume_seed()``.
    """

    def __init__(self, device: torch.device, *, resume_seed: Callable[[], int] | None = None,
                 where: Any = "the run directory") -> None:
        self.device, self.resume_seed, self.where = device, resume_seed, where

    def state_dict(self) -> dict[str, Any]:
        state = {"cpu_rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["cpu_rng"])
        cuda = self.device.type == "cuda"
        if cuda and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        elif cuda or "cuda_rng" in state:
            # Written on another kind of device: the CUDA random state (dropout on the GPU)
            # cannot continue, so it restarts from a seed of its own for this epoch.
            log.warning("checkpoint in %s was written on %s and resumes on %s: the run "
                        "continues, but not bit-identically to one that never changed device",
                        self.where, "CUDA" if "cuda_rng" in state else "the CPU", self.device)
            if cuda and self.resume_seed is not None:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(self.resume_seed())


def model_digest(model: nn.Module) -> str:
    """A SHA-256 of every parameter and buffer's bytes: equal digests mean identical models."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ModelDigest:
    """Each rank's :func:`model_digest` (``model_digest``), to tell ranks that drifted apart;
    nothing to load."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return {"model_digest": model_digest(self.model)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
