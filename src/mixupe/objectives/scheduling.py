"""When and which to mix: timm's knobs as mixers that wrap other mixers.

- :class:`Switch`: each step, one of two mixers, the second with probability ``switch_prob``
  (timm's Mixup-or-CutMix switch).
- :class:`Scheduled`: mix a batch only with probability ``prob``, and not at all from epoch
  ``off_epoch`` on (call :meth:`Scheduled.set_epoch`). Liu et al. (ICLR 2023) report that
  late-training Mixup can hurt; Zou et al. (ICML 2023) propose stopping Mixup early.

Both are mixers themselves, so they compose with :class:`~mixupe.objectives.mixupe.MixupE`,
:class:`~mixupe.objectives.regmixup.RegMixup` and each other. The choices are drawn from the
objective's generator and read on the host (free for the default CPU generator).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from mixupe import _checks as check
from mixupe.errors import ConfigError
from mixupe.objectives.base import MixPlan
from mixupe.objectives.hooks import INPUT_LAYER
from mixupe.objectives.mixer import Mixer

__all__ = ["Scheduled", "Switch"]


def _check_mixer(mixer: Any, name: str) -> Mixer:
    if not isinstance(mixer, Mixer):
        raise ConfigError(
            f"{name}={mixer!r} is not a mixing objective: pass Mixup(...), CutMix(...) or "
            "another mixer."
        )
    return mixer


def _coin(p: float, generator: torch.Generator) -> bool:
    """True with probability ``p`` (a draw on the generator's device, read on the host)."""
    if p <= 0.0:
        return False
    if p >= 1.0:
        return True
    return bool(torch.rand((), generator=generator, device=generator.device) < p)


def _plan_options(mixer: Mixer) -> set[str] | None:
    """The keyword options ``mixer.plan`` takes beyond the common ones (None: any)."""
    params = inspect.signature(mixer.plan).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    common = {"model", "x", "batch_size", "device", "dtype", "lam", "perm", "generator"}
    return {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY} - common


class _Wrapper(Mixer):
    """A mixer that delegates to others and shares their generator and label settings."""

    wrapped: tuple[Mixer, ...] = ()

    @property
    def model_free(self) -> bool:  # type: ignore[override]
        """Model-free (usable in MixCollate) when every wrapped mixer is."""
        return all(getattr(m, "model_free", False) for m in self.wrapped)

    def __init__(self, first: Mixer, validate: bool | None, check_finite: bool | None) -> None:
        super().__init__(
            alpha=first.alpha,
            per_sample=first.per_sample,
            num_classes=first.num_classes,
            label_smoothing=first.label_smoothing,
            generator=first.generator,
            validate=first.validate if validate is None else validate,
            check_finite=first.check_finite if check_finite is None else check_finite,
        )


class Switch(_Wrapper):
    """Use ``second`` with probability ``switch_prob``, else ``first`` (per batch).

    timm's Mixup-or-CutMix switch is ``Switch(Mixup(alpha=0.8), CutMix(alpha=1.0),
    switch_prob=0.5)``. Both mixers must agree on ``num_classes`` and ``label_smoothing``;
    the draws use ``first``'s generator. MixupE's constant is the switch-weighted mean of
    the two mixers' constants.

    Example:
        >>> import torch
        >>> from mixupe import CutMix, Mixup
        >>> sw = Switch(Mixup(num_classes=2, seed=0), CutMix(num_classes=2), switch_prob=1.0)
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> sw(net, torch.randn(3, 1, 4, 4), torch.tensor([0, 1, 1])).mask is not None
        True
    """

    def __init__(
        self,
        first: Mixer,
        second: Mixer,
        *,
        switch_prob: float = 0.5,
        validate: bool | None = None,
        check_finite: bool | None = None,
    ) -> None:
        first = _check_mixer(first, "first")
        second = _check_mixer(second, "second")
        if first.num_classes != second.num_classes or (
            first.label_smoothing != second.label_smoothing
        ):
            raise ConfigError(
                "Switch's two mixers must share num_classes and label_smoothing: construct "
                "both with the same values."
            )
        super().__init__(first, validate, check_finite)
        self.first, self.second = first, second
        self.wrapped = (first, second)
        self.switch_prob = check.interval(switch_prob, "switch_prob", 0.0, 1.0)
        self.needs_targets = bool(getattr(first, "needs_targets", False)
                                  or getattr(second, "needs_targets", False))

    def mixupe_constant(self) -> float:
        """``(1 - p) c_first + p c_second``."""
        p = self.switch_prob
        return (1 - p) * self.first.mixupe_constant() + p * self.second.mixupe_constant()

    def plan(self, model: nn.Module, x: Any, batch_size: int, *, device: torch.device,
             dtype: torch.dtype, lam: Tensor | float | None, perm: Tensor | None,
             generator: torch.Generator, use_second: bool | None = None,
             **options: Any) -> MixPlan:
        """Pick a mixer (``use_second=`` fixes the choice) and return its plan.

        An option that only one of the two mixers takes (``mask=`` for FMix, ``box=`` for
        ResizeMix) is refused unless ``use_second=`` picks that mixer, whichever way the coin
        would fall."""
        given = set(options) - {"targets"}
        if given:
            self._check_options(given, use_second)
        if use_second is None:
            use_second = _coin(self.switch_prob, generator)
        mixer = self.second if use_second else self.first
        if not getattr(mixer, "needs_targets", False):
            options.pop("targets", None)
        return mixer.plan(model, x, batch_size, device=device, dtype=dtype, lam=lam,
                          perm=perm, generator=generator, **options)


    def _check_options(self, given: set[str], use_second: bool | None) -> None:
        chosen = (self.first, self.second) if use_second is None else (
            (self.second,) if use_second else (self.first,))
        for mixer in chosen:
            takes = _plan_options(mixer)
            if takes is not None and not given <= takes:
                names = ", ".join(f"{k}=" for k in sorted(given - takes))
                raise ConfigError(
                    f"{type(mixer).__name__} takes no {names}, and Switch may pick it: pass "
                    f"use_second={mixer is self.first} to always use "
                    f"{type(self.second if mixer is self.first else self.first).__name__}, "
                    f"or drop {names}."
                )


class Scheduled(_Wrapper):
    """Mix with probability ``prob`` per batch, and never from epoch ``off_epoch`` on.

    A batch that is not mixed is passed through unchanged with ``lam = 1`` and the identity
    pairing, so its loss is the plain cross-entropy (and, under MixupE, only the MixupE term
    is added). Epochs count from 1 as in the training engine; call ``set_epoch(epoch)`` at
    the start of each epoch (the engine does). ``mix=`` on a call forces the choice.

    Example:
        >>> import torch
        >>> from mixupe import Mixup
        >>> sched = Scheduled(Mixup(num_classes=2, seed=0), off_epoch=3)
        >>> sched.set_epoch(3)
        >>> out = sched(torch.nn.Linear(2, 2), torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))
        >>> float(out.lam)
        1.0
    """

    def __init__(
        self,
        mixing: Mixer,
        *,
        prob: float = 1.0,
        off_epoch: int | None = None,
        validate: bool | None = None,
        check_finite: bool | None = None,
    ) -> None:
        mixing = _check_mixer(mixing, "mixing")
        super().__init__(mixing, validate, check_finite)
        self.wrapped = (mixing,)
        check.integer(off_epoch, "off_epoch", minimum=1, what="the first epoch without mixing",
                      none="to mix throughout")
        self.mixing = mixing
        self.prob = check.interval(prob, "prob", 0.0, 1.0)
        self.off_epoch = off_epoch
        self.epoch = 1
        self.needs_targets = bool(getattr(mixing, "needs_targets", False))

    def mixupe_constant(self) -> float:
        """The wrapped mixer's constant (MixupE's term is on the clean batch either way)."""
        return self.mixing.mixupe_constant()

    def set_epoch(self, epoch: int) -> None:
        """Tell the schedule which epoch (from 1) is starting."""
        self.epoch = int(epoch)

    def active(self) -> bool:
        """Whether mixing is still on at the current epoch."""
        return self.off_epoch is None or self.epoch < self.off_epoch

    def plan(self, model: nn.Module, x: Any, batch_size: int, *, device: torch.device,
             dtype: torch.dtype, lam: Tensor | float | None, perm: Tensor | None,
             generator: torch.Generator, mix: bool | None = None,
             **options: Any) -> MixPlan:
        """The wrapped mixer's plan, or the identity plan when this batch is not mixed."""
        if mix is None:
            mix = self.active() and _coin(self.prob, generator)
        if mix:
            if not getattr(self.mixing, "needs_targets", False):
                options.pop("targets", None)
            return self.mixing.plan(model, x, batch_size, device=device, dtype=dtype, lam=lam,
                                    perm=perm, generator=generator, **options)
        return MixPlan(lam=torch.ones((), dtype=dtype, device=device),
                       perm=torch.arange(batch_size, device=device), layer=INPUT_LAYER,
                       mix=lambda t: t)
