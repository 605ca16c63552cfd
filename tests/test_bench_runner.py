"""The runner: two-phase selection, skipping, resuming, divergence and interruption.

Most tests replace the engine by a recording fake whose validation accuracy is a known
function of the config, so the expected runs are computed by hand; one test uses the real
engine on digits to check that an interrupted suite resumes to the same numbers.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from mixupe.bench.runner import plan_suite, run_suite
from mixupe.bench.suites import parse_suite, read_manifests
from mixupe.engine import train
from mixupe.engine.config import TrainConfig
from mixupe.errors import NonFiniteLossError

VAL_BY_ETA = {0.01: 0.70, 0.1: 0.90, 1.0: 0.80}


def suite_dict(**changes):
    d = {
        "name": "r",
        "seeds": [0, 1, 2],
        "selection_seeds": [0],
        "defaults": {"epochs": 2},
        "datasets": [{"name": "digits"}, {"name": "satimage"}],
        "arms": [{"label": "ERM", "method": "erm"},
                 {"label": "E", "method": "mixupe", "grid": {"eta": [0.01, 0.1, 1.0]}}],
    }
    d.update(changes)
    return d


class FakeTrain:
    """Records calls and writes result.json with val acc given by the config's eta."""

    def __init__(self, diverge=(), interrupt_at=None):
        self.calls: list[tuple[str, bool]] = []
        self.diverge = set(diverge)
        self.interrupt_at = interrupt_at

    def __call__(self, cfg: TrainConfig, *, runs_root, resume=False, progress=False):
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls.append((cfg.run_name(), resume))
        run = Path(runs_root) / cfg.run_name()
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
        if (cfg.eta, cfg.seed) in self.diverge and cfg.method == "mixupe":
            (run / "failed.json").write_text(json.dumps({"failed": True, "reason": "nan"}))
            raise NonFiniteLossError("the training loss became non-finite (nan)")
        val = VAL_BY_ETA[cfg.eta] if cfg.method == "mixupe" else 0.5
        final = {"val": {"acc": val}, "test": {"acc": 0.1 * cfg.seed}}
        (run / "result.json").write_text(json.dumps({"failed": False, **final}))
        return type("R", (), {"final": final})()


def names(plan, arm, dataset, eta=None, seeds=(0, 1, 2)):
    cell = next(p for p in plan.plans if p.arm == arm and p.dataset == dataset)
    point = next(pt for pt in cell.points if eta is None or pt.params.get("eta") == eta)
    return [point.configs[s].run_name() for s in seeds]


def test_two_phases_run_selection_seeds_then_the_chosen_point(tmp_path: Path):
    suite = parse_suite(suite_dict())
    fake = FakeTrain()
    outcome = run_suite(suite, runs_root=tmp_path, train_fn=fake)
    plan = plan_suite(suite)
    # selection: every eta point with the selection seed 0 (ERM has one point: no selection)
    expected_phase1 = []
    for dataset in ("digits", "satimage"):
        for eta in (0.01, 0.1, 1.0):
            expected_phase1 += names(plan, "E", dataset, eta=eta, seeds=(0,))
    # reporting: ERM over every seed; E at its best point (eta 0.1, val 0.9) without seed 0
    expected_phase2 = []
    for dataset in ("digits", "satimage"):
        expected_phase2 += names(plan, "ERM", dataset, seeds=(0, 1, 2))
        expected_phase2 += names(plan, "E", dataset, eta=0.1, seeds=(1, 2))
    assert [c[0] for c in fake.calls] == expected_phase1 + expected_phase2
    assert not any(resume for _, resume in fake.calls)
    assert outcome.trained == expected_phase1 + expected_phase2
    assert plan.total_runs == len(fake.calls)
    (record,) = read_manifests(tmp_path)
    assert record["suite"] == "r" and record["selection_seeds"] == [0]

    again = FakeTrain()
    outcome = run_suite(suite, runs_root=tmp_path, train_fn=again)
    assert again.calls == []
    assert len(outcome.skipped) == plan.total_runs


def test_selection_seeds_apart_from_the_reported_ones_and_a_followed_alpha(tmp_path: Path):
    # Mixup chooses alpha on seeds 7 and 8; E takes Mixup's alpha and chooses only eta.
    val = {("mixup", 0.2): 0.6, ("mixup", 1.0): 0.7,
           ("mixupe", 0.01): 0.70, ("mixupe", 0.1): 0.90, ("mixupe", 1.0): 0.80}

    class Fake(FakeTrain):
        def __call__(self, cfg, **kw):
            self.calls.append((cfg.run_name(), kw.get("resume", False)))
            run = Path(kw["runs_root"]) / cfg.run_name()
            run.mkdir(parents=True, exist_ok=True)
            key = (cfg.method, cfg.alpha if cfg.method == "mixup" else cfg.eta)
            (run / "result.json").write_text(json.dumps(
                {"failed": False, "val": {"acc": val.get(key, 0.5)}, "test": {"acc": 0.5}}))

    suite = parse_suite(suite_dict(
        seeds=[0, 1], selection_seeds=[7, 8], datasets=[{"name": "digits"}],
        arms=[{"label": "ERM", "method": "erm"},
              {"label": "Mixup", "method": "mixup", "grid": {"alpha": [0.2, 1.0]}},
              {"label": "E", "method": "mixupe", "grid": {"eta": [0.01, 0.1, 1.0]},
               "follow": {"alpha": "Mixup"}}]))
    fake = Fake()
    run_suite(suite, runs_root=tmp_path, train_fn=fake)
    plan = plan_suite(suite)
    mixup = next(p for p in plan.plans if p.arm == "Mixup")
    e = next(p for p in plan.plans if p.arm == "E")
    assert len(e.points) == 6  # eta x Mixup's alpha candidates, in the manifest

    def run_names(cell, seeds, **params):
        point = next(pt for pt in cell.points
                     if all(pt.params[k] == v for k, v in params.items()))
        return [point.configs[s].run_name() for s in seeds]

    expected = (run_names(mixup, (7, 8), alpha=0.2) + run_names(mixup, (7, 8), alpha=1.0)
                + [n for eta in (0.01, 0.1, 1.0)
                   for n in run_names(e, (7, 8), alpha=1.0, eta=eta)]
                + names(plan, "ERM", "digits", seeds=(0, 1))
                + run_names(mixup, (0, 1), alpha=1.0)
                + run_names(e, (0, 1), alpha=1.0, eta=0.1))
    assert [c[0] for c in fake.calls] == expected
    assert plan.total_runs == len(expected)
    (record,) = read_manifests(tmp_path)
    assert next(c for c in record["cells"] if c["arm"] == "E")["follow"] == {"alpha": "Mixup"}


def test_overrides_and_seeds_run_under_their_own_suite_name(tmp_path: Path):
    suite = parse_suite(suite_dict(datasets=[{"name": "digits"}]))
    run_suite(suite, runs_root=tmp_path, train_fn=FakeTrain())
    run_suite(suite, runs_root=tmp_path, train_fn=FakeTrain(), overrides={"epochs": 1},
              seeds=[0, 1])
    names_ = sorted(m["suite"] for m in read_manifests(tmp_path))
    assert names_ == ["r", "r@set:epochs=1@seeds=0,1"]


def test_partial_runs_are_resumed(tmp_path: Path):
    suite = parse_suite(suite_dict(datasets=[{"name": "digits"}]))
    plan = plan_suite(suite)
    (partial,) = names(plan, "E", "digits", eta=0.1, seeds=(0,))
    (tmp_path / partial).mkdir(parents=True)
    (tmp_path / partial / "config.json").write_text("{}")
    fake = FakeTrain()
    run_suite(suite, runs_root=tmp_path, train_fn=fake)
    assert dict(fake.calls)[partial] is True
    assert sum(resume for _, resume in fake.calls) == 1


def test_divergence_is_recorded_the_suite_goes_on_and_it_is_not_retried(tmp_path: Path):
    suite = parse_suite(suite_dict(datasets=[{"name": "digits"}]))
    fake = FakeTrain(diverge={(0.1, 0)})  # the best point's selection run diverges
    outcome = run_suite(suite, runs_root=tmp_path, train_fn=fake)
    plan = plan_suite(suite)
    (bad,) = names(plan, "E", "digits", eta=0.1, seeds=(0,))
    assert [name for name, _ in outcome.failed] == [bad]
    assert "non-finite" in outcome.failed[0][1]
    # The next best point (eta=1.0, val 0.8) is chosen and runs its other seeds.
    ran = [c[0] for c in fake.calls]
    assert names(plan, "E", "digits", eta=1.0, seeds=(1, 2)) == ran[-2:]
    assert not set(names(plan, "E", "digits", eta=0.1, seeds=(1, 2))) & set(ran)

    again = FakeTrain()
    outcome = run_suite(suite, runs_root=tmp_path, train_fn=again)
    assert again.calls == []
    assert [name for name, _ in outcome.failed] == [bad]


def test_cells_without_an_eligible_point_are_reported(tmp_path: Path):
    suite = parse_suite(suite_dict(datasets=[{"name": "digits"}]))
    fake = FakeTrain(diverge={(0.01, 0), (0.1, 0), (1.0, 0)})
    outcome = run_suite(suite, runs_root=tmp_path, train_fn=fake)
    assert outcome.unselected == ["digits / E"]
    assert len(outcome.failed) == 3


def test_interrupted_suite_continues_where_it_stopped(tmp_path: Path):
    suite = parse_suite(suite_dict())
    straight = FakeTrain()
    run_suite(suite, runs_root=tmp_path / "a", train_fn=straight)
    first = FakeTrain(interrupt_at=5)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, runs_root=tmp_path / "b", train_fn=first)
    second = FakeTrain()
    run_suite(suite, runs_root=tmp_path / "b", train_fn=second)
    assert [c[0] for c in first.calls + second.calls] == [c[0] for c in straight.calls]


def test_dataset_and_arm_filters_restrict_runs_but_not_the_manifest(tmp_path: Path):
    suite = parse_suite(suite_dict())
    fake = FakeTrain()
    run_suite(suite, runs_root=tmp_path, train_fn=fake, datasets=["satimage"], arms=["ERM"])
    plan = plan_suite(suite)
    assert [c[0] for c in fake.calls] == names(plan, "ERM", "satimage")
    (record,) = read_manifests(tmp_path)
    assert len(record["cells"]) == 4


def test_real_engine_interrupted_suite_resumes_to_identical_results(tmp_path: Path):
    """Stop every run after one epoch, rerun the suite: same numbers as straight through."""
    suite = parse_suite({
        "name": "real", "seeds": [0, 1],
        "defaults": {"epochs": 2, "batch_size": 64, "optimizer": "adamw", "lr": 3e-3,
                     "device": "cpu"},
        "datasets": [{"name": "digits", "model": "mlp"}],
        "arms": [{"label": "MixupE", "method": "mixupe", "eta": 0.1}],
    })
    run_suite(suite, runs_root=tmp_path / "straight")
    stopped = run_suite(suite, runs_root=tmp_path / "resumed",
                        train_fn=functools.partial(train, max_epochs=1))
    assert len(stopped.trained) == 2
    for seed in (0, 1):
        name = plan_suite(suite).plans[0].points[0].configs[seed].run_name()
        assert not (tmp_path / "resumed" / name / "result.json").exists()
    resumed = run_suite(suite, runs_root=tmp_path / "resumed")
    assert len(resumed.trained) == 2
    for seed in (0, 1):
        name = plan_suite(suite).plans[0].points[0].configs[seed].run_name()
        a = json.loads((tmp_path / "straight" / name / "result.json").read_text())
        b = json.loads((tmp_path / "resumed" / name / "result.json").read_text())
        assert a["val"] == b["val"] and a["test"] == b["test"]
        assert a["train_steps"] == b["train_steps"]


def test_a_single_point_arm_runs_every_seed_even_after_a_divergence(tmp_path: Path):
    suite = parse_suite(suite_dict(datasets=[{"name": "digits"}],
                                   arms=[{"label": "E", "method": "mixupe", "eta": 0.1}]))
    fake = FakeTrain(diverge={(0.1, 0)})
    outcome = run_suite(suite, runs_root=tmp_path, train_fn=fake)
    plan = plan_suite(suite)
    assert [c[0] for c in fake.calls] == names(plan, "E", "digits")
    assert len(outcome.failed) == 1 and outcome.unselected == []
