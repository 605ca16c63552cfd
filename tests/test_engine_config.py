"""TrainConfig validation, normalisation and naming; optimisers and learning-rate schedules."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from mixupe.engine import config as config_module
from mixupe.engine.config import NAMING_DEFAULTS, TrainConfig
from mixupe.engine.naming import current_name
from mixupe.engine.optim import LRFactor, build_optimizer, build_scheduler
from mixupe.errors import ConfigError


def test_run_name_example_and_round_trip() -> None:
    cfg = TrainConfig(method="mixupe", alpha=2.0, eta=0.01)
    dataset, model, method, tail = cfg.run_name().split("/")
    assert (dataset, model, method) == ("digits", "mlp", "mixupe-v3-a2-eta0.01-t1-sign-1")
    # the split drawn from the run seed is shown (a fixed split was the first scheme's rule)
    assert tail.startswith("splitrun-fevalend-lamtransform-seed0-")
    assert len(tail.split("-")[-1]) == 6
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_every_hyper_parameter_changes_the_name() -> None:
    base = TrainConfig(method="mixupe", schedule="step", milestones=(2,), mixing="manifold")
    changes = {
        "dataset": "wine", "model": "small-cnn", "alpha": 0.5, "per_sample": True,
        "mixing": "cutmix", "mix_layers": ("act",), "label_smoothing": 0.1, "eta": 0.5,
        "version": 1, "threshold": 0.0, "fast_sign": 1, "rescale": False,
        "clean_pass": "fused", "epochs": 3, "batch_size": 32, "optimizer": "adamw",
        "lr": 0.01, "momentum": 0.5, "weight_decay": 0.0, "warmup_epochs": 1,
        "milestones": (3,), "gamma": 0.5, "model_options": {"width": 8},
        "data_options": {"subset": 100}, "fgsm_eps": 0.1, "ece_bins": 10, "seed": 1,
        "amp": True, "data_seed": 0, "full_eval": "each-epoch", "val_every": 2,
        "lambda_sampler": "dirichlet",
        "clean_fraction": 0.25, "augment": "crop-flip",
    }
    # the Mixup family's knobs, varied from a base that uses them all
    family_base = TrainConfig(method="mixupe", mixing="mixup-cutmix")
    family = {
        "mixer_options": {"decay_power": 2.0}, "mix_prob": 0.5, "off_epoch": 3,
        "label_alpha": 0.5, "cutmix_alpha": 0.3, "cutmix_minmax": (0.2, 0.8),
        "switch_prob": 0.2, "sam_rho": 0.05, "cutmix_axes": (3,),
    }
    # every field but the placement options is varied here (method and schedule by the base;
    # amp_dtype below, as it needs amp)
    every = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(changes) | set(family) | {"device", "deterministic", "method", "schedule",
                                         "amp_dtype"} == every
    for start, varied in ((base, changes), (family_base, family)):
        names = {start.run_name()}
        for key, value in varied.items():
            name = dataclasses.replace(start, **{key: value}).run_name()
            assert name not in names, key
            names.add(name)
    amp = {dataclasses.replace(base, amp=True, amp_dtype=d).run_name()
           for d in ("auto", "bf16", "fp16")}
    assert len(amp) == 3 and base.run_name() not in amp
    # device and deterministic say where and how a run executes, not what it computes
    assert dataclasses.replace(base, device="cpu").run_name() == base.run_name()
    assert dataclasses.replace(base, deterministic=True).run_name() == base.run_name()
    assert dataclasses.replace(base, deterministic=True).config_hash() == base.config_hash()
    for cut in (TrainConfig(method="cutmix"), TrainConfig(method="mixupe", mixing="cutmix")):
        axes = dataclasses.replace(cut, cutmix_axes=(3,)).run_name()
        assert axes != cut.run_name() and "-axes3" in axes


def test_clean_fraction_and_cutmix_axes_in_names_and_checks() -> None:
    name = TrainConfig(method="mixupe", clean_fraction=0.25).run_name()
    assert name.split("/")[2] == "mixupe-v3-a1-eta0.001-t1-sign-1-cf0.25"
    # options without effect are reset, so those runs keep their names
    for method in ("erm", "mixup", "cutmix", "manifold"):
        assert TrainConfig(method=method, clean_fraction=0.25).run_name() == \
            TrainConfig(method=method).run_name()
    for cfg in (TrainConfig(method="mixup"), TrainConfig(method="mixupe")):
        assert dataclasses.replace(cfg, cutmix_axes=(1,)).run_name() == cfg.run_name()
    assert TrainConfig(method="cutmix", cutmix_axes=[2, 3]).cutmix_axes == (2, 3)
    assert TrainConfig.from_dict({"method": "cutmix", "cutmix_axes": [1]}).cutmix_axes == (1,)
    for bad in (0.0, 1.5, float("nan"), True):
        with pytest.raises(ConfigError, match=r"clean_fraction=.* (must be|is out of range)"):
            TrainConfig(method="mixupe", clean_fraction=bad)
    for axes in ((0,), (1, 1), (1, 2, 3), ("1",)):
        with pytest.raises(ConfigError, match=r"cutmix_axes=.* must be one or two distinct"):
            TrainConfig(method="cutmix", cutmix_axes=axes)


def test_normalized_merges_equivalent_runs() -> None:
    assert TrainConfig(method="erm", eta=0.5, alpha=3.0).run_name() == TrainConfig().run_name()
    assert TrainConfig(method="mixup", version=1).run_name() == \
        TrainConfig(method="mixup").run_name()
    assert TrainConfig(method="mixupe", version=4, threshold=0.3).run_name() == \
        TrainConfig(method="mixupe", version=4).run_name()
    assert TrainConfig(method="mixupe", version=1, fast_sign=1).run_name() == \
        TrainConfig(method="mixupe", version=1).run_name()
    assert TrainConfig(gamma=0.5).run_name() == TrainConfig().run_name()  # not a step schedule
    # but options that matter are kept
    assert TrainConfig(method="mixupe", version=3, fast_sign=1).run_name() != \
        TrainConfig(method="mixupe", version=3).run_name()


def test_options_accept_dicts_and_sort() -> None:
    a = TrainConfig(model_options={"width": 8, "depth": 2})
    b = TrainConfig(model_options=(("depth", 2), ("width", 8)))
    assert a == b and a.model_options == (("depth", 2), ("width", 8))
    assert a.to_dict()["model_options"] == {"depth": 2, "width": 8}
    c = TrainConfig.from_dict({"milestones": [2, 4], "schedule": "step", "mix_layers": ["act"]})
    assert c.milestones == (2, 4) and c.mix_layers == ("act",)


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"method": "mixout"}, r"method='mixout'.*choose one of"),
        ({"alpha": 0.0}, r"alpha=0.0 is out of range.*> 0.0"),
        ({"version": 5}, r"version=5 is out of range.*<= 4"),
        ({"fast_sign": 0}, r"fast_sign=0 must be -1 or 1"),
        ({"clean_pass": "both"}, r"clean_pass='both'.*'separate', 'fused'"),
        ({"epochs": 0}, r"epochs=0 is out of range.*>= 1"),
        ({"lr": float("nan")}, r"lr=nan must be finite"),
        ({"batch_size": 2.5}, r"batch_size=2.5 must be an integer"),
        ({"warmup_epochs": 20}, r"warmup_epochs=20 exceeds epochs=10.*lower warmup_epochs"),
        ({"schedule": "step"}, r"schedule='step' needs milestones.*milestones=\(30, 60\)"),
        ({"schedule": "step", "milestones": (5, 3)}, r"milestones=\(5, 3\).*increasing"),
        ({"device": "tpu"}, r"device='tpu'.*'cuda:N'"),
        ({"amp": True, "amp_dtype": "fp32"}, r"amp_dtype='fp32' is not supported.*'fp16'"),
        ({"amp_dtype": "fp16"}, r"amp_dtype='fp16' has no effect without amp=True.*--amp"),
        ({"deterministic": 1}, r"deterministic=1 must be True or False"),
        ({"mix_layers": ()}, r"mix_layers=\(\).*submodule names"),
        ({"model_options": [1, 2]}, r"model_options=\[1, 2\] is not a mapping.*dict"),
        ({"label_smoothing": 1.0}, r"label_smoothing=1.0 is out of range"),
    ],
)
def test_bad_options_raise_config_error(options: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig(**options)


# --------------------------------------------------------------------------- naming scheme
RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_every_field_has_a_naming_value_and_a_label() -> None:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(NAMING_DEFAULTS) == fields
    assert set(config_module._SHORT) == fields - {"dataset", "model", "method", "seed", "device",
                                                  "deterministic"}


@pytest.mark.skipif(not RESULTS.is_dir(), reason="no committed run logs in this checkout")
def test_committed_runs_keep_their_names() -> None:
    # The names were written by the naming scheme of their time: an independent record of it.
    from mixupe.bench.rundirs import RunReader

    reader = RunReader(RESULTS)
    names = reader.names()
    assert len(names) > 500
    renamed = 0
    for name in names:
        cfg = TrainConfig.from_stored(reader(name).config)
        # Stored under the current rules' name or an earlier rule's (issue 23: RegMixup and
        # Mixup + clean CE lost their MixupE fields, ResizeMix its alpha).
        assert name in cfg.run_names()
        assert current_name(name) == cfg.run_name()
        renamed += name != cfg.run_name()
    assert renamed > 0  # the study's "Mixup + clean CE" and ResizeMix runs


def _with_new_field(monkeypatch: pytest.MonkeyPatch, legacy: int, default: int) -> type:
    """TrainConfig grown by a field ``gizmo`` added the way the naming table asks."""
    grown = dataclasses.make_dataclass(
        "Grown", [("gizmo", int, dataclasses.field(default=default))],
        bases=(TrainConfig,), frozen=True, kw_only=True)
    monkeypatch.setitem(config_module._NAMING_ADDED, "gizmo", legacy)
    monkeypatch.setitem(config_module.NAMING_DEFAULTS, "gizmo", legacy)
    monkeypatch.setitem(config_module._SHORT, "gizmo", "gz")
    return grown


def test_adding_a_field_renames_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = [TrainConfig(), TrainConfig(method="mixupe", version=1, eta=0.1, data_seed=0),
               TrainConfig(dataset="letter", method="mixup", alpha=0.2, epochs=3, seed=4,
                           data_options={"subset": 100})]
    before = [c.run_name() for c in samples]
    grown = _with_new_field(monkeypatch, legacy=7, default=9)
    at_legacy = [grown(**{f.name: getattr(c, f.name) for f in dataclasses.fields(c)}, gizmo=7)
                 for c in samples]
    assert [c.run_name() for c in at_legacy] == before
    changed = [dataclasses.replace(c, gizmo=8) for c in at_legacy]
    for c, old in zip(changed, before, strict=True):
        name = c.run_name()
        assert name != old and "gz8-" in name
        assert name.rsplit("-", 1)[1] != old.rsplit("-", 1)[1]  # the hash covers it too
    # a new default does not rename either: only the naming value counts
    assert grown(gizmo=7).run_name() == before[0]


def test_stored_configs_read_missing_fields_with_their_legacy_value() -> None:
    old = TrainConfig(dataset="letter", data_seed=0).to_dict()
    del old["data_seed"]  # written before the field existed
    assert TrainConfig.from_stored(old).data_seed == 0
    assert TrainConfig.from_dict(old).data_seed is None  # a user's config: today's default
    assert TrainConfig.from_stored(old).run_name() == TrainConfig(dataset="letter",
                                                                  data_seed=0).run_name()


def test_split_seed_and_its_errors() -> None:
    assert TrainConfig(seed=5).split_seed == 5
    assert TrainConfig(seed=5, data_seed=2).split_seed == 2
    with pytest.raises(ConfigError, match=r"data_options sets 'seed'.*data_seed=N"):
        TrainConfig(data_options={"seed": 1})
    with pytest.raises(ConfigError, match=r"data_seed=-1 is out of range"):
        TrainConfig(data_seed=-1)


def test_from_dict_names_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown config keys \['etaa', 'lrr'\].*remove them"):
        TrainConfig.from_dict({"etaa": 1, "lrr": 2, "lr": 0.1})


# --------------------------------------------------------------------------- schedules
def _factors(cfg: TrainConfig, steps_per_epoch: int) -> list[float]:
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model.parameters(), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=steps_per_epoch)
    out = []
    for _ in range(cfg.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"] / cfg.lr)
        opt.step()
        sched.step()
    return out


def test_cosine_with_warmup_matches_formula() -> None:
    cfg = TrainConfig(epochs=5, warmup_epochs=2, lr=0.2)
    got = _factors(cfg, steps_per_epoch=3)
    warm, total = 6, 15
    expected = [(s + 1) / warm for s in range(warm)]
    expected += [0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))
                 for s in range(warm, total)]
    assert got == pytest.approx(expected, rel=1e-12)
    assert min(got) > 0  # never a zero learning rate while training


def test_step_and_constant_schedules() -> None:
    cfg = TrainConfig(epochs=4, schedule="step", milestones=(1, 3), gamma=0.5)
    assert _factors(cfg, 2) == pytest.approx([1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25])
    assert _factors(TrainConfig(epochs=2, schedule="constant"), 2) == [1.0] * 4


def test_optimisers() -> None:
    model = torch.nn.Linear(2, 2)
    sgd = build_optimizer(model.parameters(), TrainConfig(momentum=0.9, weight_decay=5e-4))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 5e-4
    adamw = build_optimizer(model.parameters(), TrainConfig(optimizer="adamw", lr=1e-3))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 1e-3


def test_sgd_step_matches_nesterov_by_hand() -> None:
    # one parameter, loss = 0.5 * w^2 -> grad = w (+ weight decay wd * w)
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    cfg = TrainConfig(lr=0.1, momentum=0.9, weight_decay=0.01)
    opt = build_optimizer([w], cfg)
    ref_w, buf = 1.0, 0.0
    for _ in range(3):
        opt.zero_grad()
        (0.5 * w**2).sum().backward()
        opt.step()
        g = ref_w + 0.01 * ref_w
        buf = 0.9 * buf + g
        ref_w -= 0.1 * (g + 0.9 * buf)
    assert w.item() == pytest.approx(ref_w, rel=1e-12)


def test_schedule_errors() -> None:
    with pytest.raises(ConfigError, match=r"steps_per_epoch=0.*lower batch_size"):
        LRFactor(schedule="cosine", steps_per_epoch=0, epochs=1)
    with pytest.raises(ConfigError, match=r"schedule='linear'.*'cosine'"):
        LRFactor(schedule="linear", steps_per_epoch=1, epochs=1)


def test_lambda_sampler_reaches_every_mixer_and_keeps_legacy_names() -> None:
    import mixupe.objectives as O
    from mixupe.engine.objective import build_objective

    cfg = TrainConfig(method="mixupe", mixing="mixup-cutmix", lambda_sampler="dirichlet")
    obj = build_objective(cfg, model=torch.nn.Identity(), num_classes=3, domain="images",
                          generator=torch.Generator())
    assert isinstance(obj.mixing, O.Switch)
    assert obj.mixing.first.lambda_sampler == obj.mixing.second.lambda_sampler == "dirichlet"
    # the legacy sampler is the naming value: runs made before keep their names
    assert "lam" not in TrainConfig(method="mixup", lambda_sampler="dirichlet").run_name()
    assert "-lamtransform-" in TrainConfig(method="mixup").run_name()
    assert "lam" not in TrainConfig(method="erm").run_name().split("/")[-1]  # ERM draws none
