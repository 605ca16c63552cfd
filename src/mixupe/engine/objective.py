"""The loss objective of a training config: the mixer, its schedule, and MixupE or RegMixup.

>>> import torch
>>> from mixupe.engine.config import TrainConfig
>>> obj = build_objective(TrainConfig(method="mixupe", mixing="fmix"), model=torch.nn.Identity(),
...                       num_classes=3, domain="images", generator=torch.Generator())
>>> type(obj).__name__, type(obj.mixing).__name__
('MixupE', 'FMix')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError

__all__ = ["build_mixer", "build_objective", "set_epoch"]

# mixers that mix raw inputs (refused for graph batches, which mix the pooled embedding)
_INPUT_MIXERS = ("cutmix", "mixup-cutmix", "fmix", "resizemix", "saliencymix", "puzzlemix",
                 "comixup")


@dataclass(frozen=True)
class _MixerArgs:
    """What the mixer builders of :data:`_BUILDERS` take: the config, the shared objective
    options (``common``), those plus the mixing ones (``mix``), ``mixer_options``, the layers
    to mix at and whether the batches are graphs."""

    cfg: TrainConfig
    common: dict[str, Any]
    mix: dict[str, Any]
    extra: dict[str, Any]
    layers: tuple[str, ...]
    graphs: bool


def _mixup(O: Any, a: _MixerArgs) -> Any:
    if a.graphs:  # graphs mix their pooled embedding
        return O.ManifoldMixup(**a.mix, layers=["pool"], **a.extra)
    return O.Mixup(**a.mix, label_alpha=a.cfg.label_alpha, **a.extra)


def _cutmix(O: Any, a: _MixerArgs) -> Any:
    return O.CutMix(**a.mix, minmax=a.cfg.cutmix_minmax, axes=a.cfg.cutmix_axes, **a.extra)


def _mixup_cutmix(O: Any, a: _MixerArgs) -> Any:
    cfg = a.cfg
    if a.extra:
        raise ConfigError("mixer_options do not apply to 'mixup-cutmix'; use its "
                          "own fields (cutmix_alpha, cutmix_minmax, switch_prob)")
    cut_alpha = cfg.alpha if cfg.cutmix_alpha is None else cfg.cutmix_alpha
    return O.Switch(O.Mixup(**a.mix, label_alpha=cfg.label_alpha),
                    O.CutMix(**{**a.mix, "alpha": cut_alpha}, minmax=cfg.cutmix_minmax,
                             axes=cfg.cutmix_axes),
                    switch_prob=cfg.switch_prob)


def _at_layers(cls: str) -> Callable[[Any, _MixerArgs], Any]:
    def build(O: Any, a: _MixerArgs) -> Any:
        layers = ("pool",) if a.graphs and a.cfg.mix_layers is None else a.layers
        return getattr(O, cls)(**a.mix, layers=list(layers) if layers else None, **a.extra)

    return build


def _plain(cls: str) -> Callable[[Any, _MixerArgs], Any]:
    def build(O: Any, a: _MixerArgs) -> Any:
        return getattr(O, cls)(**a.mix, **a.extra)

    return build


# How each mixer name is built from the config (``O`` is mixupe.objectives).
_BUILDERS: dict[str, Callable[[Any, _MixerArgs], Any]] = {
    "mixup": _mixup,
    "cutmix": _cutmix,
    "mixup-cutmix": _mixup_cutmix,
    "manifold": _at_layers("ManifoldMixup"),
    "alignmix": _at_layers("AlignMix"),
    "resizemix": lambda O, a: O.ResizeMix(**a.common, **a.extra),
    "comixup": lambda O, a: O.CoMixup(**a.common, alpha=a.cfg.alpha, **a.extra),
    "fmix": _plain("FMix"),
    "saliencymix": _plain("SaliencyMix"),
    "puzzlemix": _plain("PuzzleMix"),
}


def build_mixer(cfg: TrainConfig, *, model: nn.Module, common: dict[str, Any],
                domain: str) -> Any:
    """The mixer named by ``cfg.mixer_name()`` with its knobs; ``common`` holds the shared
    objective options (classes, generator, smoothing, checks)."""
    import mixupe.objectives as O

    graphs = domain == "graphs"
    name = cfg.mixer_name()
    if name == "auto":
        name = "manifold" if graphs else "mixup"
    if graphs and name in _INPUT_MIXERS:
        raise ConfigError(
            f"{name} cannot mix graphs (dataset={cfg.dataset!r}); use method='mixup' "
            "(mixed at the pooled embedding) or 'manifold'"
        )
    extra = dict(cfg.mixer_options)
    layers = cfg.mix_layers if cfg.mix_layers is not None else tuple(
        getattr(model, "mix_layers", ()) or ())
    args = _MixerArgs(cfg, common, {**common, "alpha": cfg.alpha, "per_sample": cfg.per_sample},
                      extra, layers, graphs)
    try:
        mixer = _BUILDERS[name](O, args)
    except TypeError as exc:  # an unknown mixer option
        raise ConfigError(f"mixer_options {extra} do not fit {name}: {exc}; see the "
                          f"mixer's docstring for its options") from None
    _set_lambda_sampler(mixer, cfg.lambda_sampler)
    if cfg.mix_prob < 1.0 or cfg.off_epoch is not None:
        mixer = O.Scheduled(mixer, prob=cfg.mix_prob, off_epoch=cfg.off_epoch)
    return mixer


def _set_lambda_sampler(mixer: Any, method: str) -> None:
    """Give ``mixer`` and the mixers it wraps (a switch's two) the lambda sampler ``method``."""
    mixer.lambda_sampler = method
    for inner in (getattr(mixer, name, None) for name in ("first", "second", "mixer")):
        if inner is not None:
            _set_lambda_sampler(inner, method)


def build_objective(cfg: TrainConfig, *, model: nn.Module, num_classes: int, domain: str,
                    generator: torch.Generator) -> Any:
    """The loss objective of ``cfg.method``, drawing from ``generator``, for the hot path.

    Input checks and the per-step finiteness check are switched off where the objective
    offers it (the trainer checks finiteness itself without a per-step sync).
    """
    import mixupe.objectives as O

    common: dict[str, Any] = {"num_classes": num_classes, "generator": generator,
                              "label_smoothing": cfg.label_smoothing,
                              "validate": False, "check_finite": False}
    if cfg.method == "erm":
        return O.ERM(**common)
    mixer = build_mixer(cfg, model=model, common=common, domain=domain)
    if cfg.method == "regmixup":
        return O.RegMixup(mixing=mixer, eta=cfg.eta, validate=False, check_finite=False)
    if cfg.method == "mixup-ce":
        return O.MixupCleanCE(mixing=mixer, eta=cfg.eta, validate=False, check_finite=False)
    if cfg.method != "mixupe":
        return mixer
    # MixupE draws from the mixing objective's generator (ours) when given none of its own.
    return O.MixupE(mixing=mixer, eta=cfg.eta, version=cfg.version, threshold=cfg.threshold,
                    fast_sign=cfg.fast_sign, rescale=cfg.rescale, clean_pass=cfg.clean_pass,
                    clean_fraction=cfg.clean_fraction, validate=False, check_finite=False)


def set_epoch(objective: Any, epoch: int) -> int:
    """Call ``set_epoch(epoch)`` (epochs from 1) on every part of ``objective`` that has it
    (a ``Scheduled`` mixer inside MixupE, RegMixup or a ``Switch``, ...); returns how many
    were told.

    Example:
        >>> import mixupe
        >>> sched = mixupe.Scheduled(mixupe.Mixup(num_classes=2), off_epoch=2)
        >>> set_epoch(mixupe.MixupE(version=3, mixing=sched), 2), sched.active()
        (1, False)
    """
    seen: set[int] = set()
    told = 0
    stack = [objective]
    while stack:
        part = stack.pop()
        if part is None or id(part) in seen:
            continue
        seen.add(id(part))
        if callable(getattr(part, "set_epoch", None)):
            part.set_epoch(epoch)
            told += 1
        stack.extend(getattr(part, name, None) for name in ("mixing", "first", "second"))
    return told
