"""The Mixup family through TrainConfig, the objective builder, the trainer and the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import mixupe
import mixupe.models
import mixupe.objectives as O
from mixupe.engine import trainer as trainer_module
from mixupe.engine.config import METHODS, MIXERS, TrainConfig
from mixupe.engine.objective import build_objective, set_epoch

pytest.importorskip("maxflow")
pytest.importorskip("ot")

TINY = {"dataset": "digits", "model": "small-cnn", "epochs": 1, "batch_size": 64,
        "model_options": {"channels": [4, 8]}, "data_options": {"subset": 160},
        "fgsm_eps": 0.0, "data_seed": 0}


def build(cfg: TrainConfig, domain: str = "images"):
    net = mixupe.models.build(cfg.model, input_shape=(1, 8, 8), num_classes=10,
                              **dict(cfg.model_options))
    return build_objective(cfg, model=net, num_classes=10, domain=domain,
                           generator=torch.Generator())


EXPECTED = {
    "mixup": O.Mixup, "cutmix": O.CutMix, "manifold": O.ManifoldMixup, "mixup-cutmix": O.Switch,
    "fmix": O.FMix, "resizemix": O.ResizeMix, "saliencymix": O.SaliencyMix,
    "puzzlemix": O.PuzzleMix, "comixup": O.CoMixup, "alignmix": O.AlignMix,
}


def test_every_mixer_is_a_method_and_a_mixing_of_mixupe_and_regmixup():
    assert set(EXPECTED) == set(MIXERS) and set(MIXERS) <= set(METHODS)
    for name, cls in EXPECTED.items():
        cfg = TrainConfig(**TINY, method=name)
        assert type(build(cfg)) is cls
        wrapped = build(dataclasses.replace(cfg, method="mixupe", mixing=name))
        assert isinstance(wrapped, O.MixupE) and type(wrapped.mixing) is cls
        reg = build(dataclasses.replace(cfg, method="regmixup", mixing=name, eta=0.5))
        assert isinstance(reg, O.RegMixup) and type(reg.mixing) is cls and reg.eta == 0.5


def test_timm_knobs_reach_the_mixers():
    cfg = TrainConfig(**TINY, method="mixup-cutmix", alpha=0.8, cutmix_alpha=1.0,
                      switch_prob=0.3, cutmix_minmax=(0.2, 0.8), label_alpha=0.4,
                      mix_prob=0.6, off_epoch=5)
    obj = build(cfg)
    assert isinstance(obj, O.Scheduled) and obj.prob == 0.6 and obj.off_epoch == 5
    sw = obj.mixing
    assert sw.switch_prob == 0.3 and sw.first.alpha == 0.8 and sw.first.label_alpha == 0.4
    assert sw.second.alpha == 1.0 and sw.second.minmax == (0.2, 0.8)
    pm = build(TrainConfig(**TINY, method="puzzlemix", mixer_options={"grid_sizes": [2, 4],
                                                                       "adv_p": 0.1}))
    assert pm.grid_sizes == (2, 4) and pm.adv_p == 0.1
    with pytest.raises(mixupe.ConfigError, match="mixer_options"):
        build(TrainConfig(**TINY, method="fmix", mixer_options={"no_such": 1}))
    with pytest.raises(mixupe.ConfigError, match="cannot mix graphs"):
        build(TrainConfig(**TINY, method="fmix"), domain="graphs")
    with pytest.raises(mixupe.ConfigError, match="cutmix_minmax"):
        TrainConfig(method="cutmix", cutmix_minmax=(0.8, 0.2))
    with pytest.raises(mixupe.ConfigError, match="mix_prob"):
        TrainConfig(method="mixup", mix_prob=1.5)


def test_set_epoch_reaches_a_schedule_inside_mixupe():
    obj = build(TrainConfig(**TINY, method="mixupe", mixing="fmix", off_epoch=2))
    set_epoch(obj, 2)
    assert obj.mixing.epoch == 2 and not obj.mixing.active()


def test_knobs_that_cannot_apply_do_not_rename_a_run():
    base = TrainConfig(method="fmix")
    for key, value in {"label_alpha": 0.3, "cutmix_minmax": (0.1, 0.5), "switch_prob": 0.1,
                       "cutmix_alpha": 2.0}.items():
        assert dataclasses.replace(base, **{key: value}).run_name() == base.run_name(), key
    assert TrainConfig(method="erm", mix_prob=0.3).run_name() == TrainConfig().run_name()


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"erm"}))
def test_every_method_trains_one_epoch(method, tmp_path: Path):
    cfg = TrainConfig(**TINY, method=method, eta=0.1)
    result = trainer_module.train(cfg, runs_root=tmp_path, progress=False)
    assert result.complete and 0.0 <= result.final["test"]["acc"] <= 1.0


def test_sam_training_repeats_the_step_draws(tmp_path: Path, monkeypatch):
    seen: list[tuple[float, list[int]]] = []
    real = trainer_module.build_objective

    def spy(*args, **kwargs):
        obj = real(*args, **kwargs)

        class Recorder:
            def __getattr__(self, name):
                return getattr(obj, name)

            def __call__(self, *a, **k):
                out = obj(*a, **k)
                seen.append((float(out.lam), out.perm.tolist()))
                return out

        return Recorder()

    monkeypatch.setattr(trainer_module, "build_objective", spy)
    cfg = TrainConfig(**TINY, method="mixup", sam_rho=0.05)
    result = trainer_module.train(cfg, runs_root=tmp_path, progress=False)
    assert result.complete
    assert len(seen) == 2 * 3  # 160 samples, batches of 64: 3 steps, each evaluated twice
    for first, second in zip(seen[::2], seen[1::2], strict=True):
        assert first == second
    assert seen[0] != seen[2]
    assert "sam0.05" in cfg.run_name()
