"""Sharpness-aware minimisation (Foret et al., ICLR 2021) as a wrapper of any optimiser.

SAM minimises ``max_{||e|| <= rho} L(w + e)``: at each step it moves the weights to the
first-order worst case ``w + e(w)``, ``e(w) = rho g / ||g||`` (``g`` the gradient at ``w``,
``||.||`` the norm over all parameters together), takes the gradient there, moves back to
``w`` and lets the base optimiser step with that gradient. With ``adaptive=True`` (ASAM,
Kwon et al. 2021) the perturbation is scaled per weight: ``e = rho w^2 g / ||w g||``.

It works with every objective of this package: the closure re-evaluates the loss. Random
draws of the objective (lambda, pairing, masks) should be the same in both evaluations; the
training engine restores the objective's generator before the second one.

G-Mix (Li & Tang, 2023) trains Mixup with SAM; its BG-Mix and DG-Mix variants split the
samples by sharpness sensitivity, but their definitions could not be obtained when this was
written (only the abstract was accessible), so this package offers the documented baseline:
``Mixup`` (or any mixer) trained with ``SAM``.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(3, 1)
    >>> opt = SAM(torch.optim.SGD(net.parameters(), lr=0.1), rho=0.05)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = torch.nn.functional.mse_loss(net(x), y)
    ...     loss.backward()
    ...     return loss
    >>> loss = opt.step(closure)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from mixupe import _checks as check
from mixupe.errors import ConfigError

__all__ = ["SAM"]


class SAM(torch.optim.Optimizer):
    """Wrap ``base_optimizer`` (an optimiser instance) with sharpness-aware steps.

    ``step(closure)`` needs a closure that computes the loss, calls ``backward()`` and returns
    the loss (zeroing the gradients in it is allowed, not needed). It evaluates the closure at
    ``w`` (gradients zeroed first, so stale or zeroed ``.grad`` from an earlier step never set
    the perturbation), moves to ``w + e(w)``, evaluates it again with the *same* random draws,
    returns to ``w`` and lets the base optimiser step; it returns the first loss.

    The draws repeated are those of the global CPU generator, of the CUDA generator of every
    device holding a parameter (dropout), and of the ``generators`` given (an objective's:
    lambda, pairing, masks), whose states are restored before the second evaluation.

    When fresh gradients at ``w`` already exist (``loss.backward()`` ran after the last
    ``step`` or ``zero_grad``, the usual ``loss.backward(); opt.step(closure)``), they are
    used and the closure runs once, at ``w + e``; replaying that step's draws is then the
    closure's job. The learning rate and the schedule live in the base optimiser's
    ``param_groups``, which this wrapper shares, so a scheduler may be attached to either.

    Args:
        base_optimizer: e.g. ``torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)``.
        rho: radius of the neighbourhood, > 0 (0.05 in the paper).
        adaptive: ASAM's per-weight scaling.
        generators: generators whose draws the second evaluation must repeat (e.g.
            ``[objective.generator]``); :meth:`replay` adds more.
    """

    def __init__(self, base_optimizer: torch.optim.Optimizer, *, rho: float = 0.05,
                 adaptive: bool = False,
                 generators: Sequence[torch.Generator] = ()) -> None:
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise ConfigError(
                f"base_optimizer={base_optimizer!r} is not an optimiser instance: pass e.g. "
                "SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05)."
            )
        check.positive(rho, "rho", what="the neighbourhood radius")
        self.base_optimizer = base_optimizer
        self.rho = float(rho)
        self.adaptive = bool(adaptive)
        super().__init__(base_optimizer.param_groups, dict(base_optimizer.defaults))
        # share the base optimiser's groups and state: one learning rate, one momentum buffer
        self.param_groups = base_optimizer.param_groups
        self.state = base_optimizer.state
        self._backup: dict[torch.Tensor, torch.Tensor] = {}
        self.generators: list[torch.Generator] = []
        for g in generators:
            self.replay(g)
        self.second_pass = False  # True while the closure runs at the perturbed weights
        self._fresh: set[torch.Tensor] = set()
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    p.register_post_accumulate_grad_hook(self._fresh.add)

    def replay(self, generator: torch.Generator) -> None:
        """Also restore ``generator`` before the second evaluation of each step."""
        if not isinstance(generator, torch.Generator):
            raise ConfigError(
                f"generator={generator!r} is not a torch.Generator: pass e.g. "
                "objective.generator."
            )
        if all(g is not generator for g in self.generators):
            self.generators.append(generator)

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def perturbation(self) -> dict[torch.Tensor, torch.Tensor]:
        """``e(w)`` for every parameter with a gradient, from the current gradients."""
        params = self._params()
        if not params:
            return {}
        scaled = [(p.abs() * p.grad) if self.adaptive else p.grad for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
        factor = self.rho / norm.clamp_min(1e-12)
        return {p: (p * p if self.adaptive else 1.0) * p.grad * factor for p in params}

    @torch.no_grad()
    def first_step(self) -> None:
        """Move to ``w + e(w)`` (remembering ``w``)."""
        self._backup = {}
        for p, e in self.perturbation().items():
            self._backup[p] = p.detach().clone()
            p.add_(e)

    @torch.no_grad()
    def second_step(self) -> None:
        """Return to ``w`` and step the base optimiser with the gradient taken at ``w + e``."""
        for p, w in self._backup.items():
            p.copy_(w)
        self._backup = {}
        self.base_optimizer.step()

    def _has_fresh_gradients(self) -> bool:
        params = self._params()
        return bool(params) and all(p in self._fresh for p in params)

    def _devices(self) -> list[torch.device]:
        return sorted({p.device for g in self.param_groups for p in g["params"]
                       if p.device.type == "cuda"}, key=str)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One SAM step; see the class docstring."""
        if closure is None:
            raise ConfigError(
                "SAM.step needs a closure that re-computes the loss and calls backward(): "
                "opt.step(lambda: (opt.zero_grad(), loss_fn().backward())) or see the docs."
            )
        loss = None
        if not self._has_fresh_gradients():
            devices = self._devices()
            states = [g.get_state() for g in self.generators]
            cpu, cuda = torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]
            self.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss = closure()
            for g, state in zip(self.generators, states, strict=True):
                g.set_state(state)
            torch.set_rng_state(cpu)
            for d, state in zip(devices, cuda, strict=True):
                torch.cuda.set_rng_state(state, d)
        self.first_step()
        self.zero_grad(set_to_none=True)
        self.second_pass = True
        try:
            with torch.enable_grad():
                closure()
        finally:
            self.second_pass = False
        self.second_step()
        self._fresh.clear()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._fresh.clear()
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
