"""The loss objective of a training config: the mixer, its schedule, and MixupE or RegMixup.

>>> import torch
>>> from mixupe.engine.config import TrainConfig
>>> obj = build_objective(TrainConfig(method="mixupe", mixing="fmix"), model=torch.nn.Identity(),
...                       num_classes=3, domain="images", generator=torch.Generator())
>>> type(obj).__name__, type(obj.mixing).__name__
('MixupE', 'FMix')
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError

__all__ = ["build_mixer", "build_objective", "set_epoch"]

# mixers that mix raw inputs (refused for graph batches, which mix the pooled embedding)
_INPUT_MIXERS = ("cutmix", "mixup-cutmix", "fmix", "resizemix", "saliencymix", "puzzlemix",
                 "comixup")


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
    mix = {**common, "alpha": cfg.alpha, "per_sample": cfg.per_sample}
    layers = cfg.mix_layers if cfg.mix_layers is not None else tuple(
        getattr(model, "mix_layers", ()) or ())
    try:
        if name == "mixup" and graphs:
            mixer = O.ManifoldMixup(**mix, layers=["pool"], **extra)
        elif name == "mixup":
            mixer = O.Mixup(**mix, label_alpha=cfg.label_alpha, **extra)
        elif name == "cutmix":
            mixer = O.CutMix(**mix, minmax=cfg.cutmix_minmax, axes=cfg.cutmix_axes, **extra)
        elif name == "mixup-cutmix":
            if extra:
                raise ConfigError("mixer_options do not apply to 'mixup-cutmix'; use its "
                                  "own fields (cutmix_alpha, cutmix_minmax, switch_prob)")
            cut_alpha = cfg.alpha if cfg.cutmix_alpha is None else cfg.cutmix_alpha
            mixer = O.Switch(O.Mixup(**mix, label_alpha=cfg.label_alpha),
                             O.CutMix(**{**mix, "alpha": cut_alpha}, minmax=cfg.cutmix_minmax,
                                      axes=cfg.cutmix_axes),
                             switch_prob=cfg.switch_prob)
        elif name in ("manifold", "alignmix"):
            if graphs and cfg.mix_layers is None:
                layers = ("pool",)
            cls = O.ManifoldMixup if name == "manifold" else O.AlignMix
            mixer = cls(**mix, layers=list(layers) if layers else None, **extra)
        elif name == "resizemix":
            mixer = O.ResizeMix(**common, **extra)
        elif name == "comixup":
            mixer = O.CoMixup(**common, alpha=cfg.alpha, **extra)
        else:
            cls = {"fmix": O.FMix, "saliencymix": O.SaliencyMix, "puzzlemix": O.PuzzleMix}[name]
            mixer = cls(**mix, **extra)
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


def set_epoch(objective: Any, epoch: int) -> None:
    """Tell every schedule inside ``objective`` (e.g. :class:`~mixupe.objectives.Scheduled`,
    possibly wrapped by MixupE or RegMixup) that ``epoch`` (from 1) starts."""
    seen = 0
    while objective is not None and seen < 8:
        if callable(getattr(objective, "set_epoch", None)):
            objective.set_epoch(epoch)
        objective = getattr(objective, "mixing", None)
        seen += 1
