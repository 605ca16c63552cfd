"""The scale suite, the equal-compute mechanism, its measurement, and the paper-cifar suite.

Expected schedules are computed here from the suite files read independently (tomllib), not
from the expansion under test; the step-time measurement runs against a fake trainer and a
fake clock whose costs are set here.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from pathlib import Path

import pytest
import tomllib

import mixupe.bench
from mixupe.bench.compute import measure_step_ratio, per_step_seconds
from mixupe.bench.suites import expand, load_suite, manifest, parse_suite, stretch_schedule
from mixupe.engine.config import TrainConfig
from mixupe.engine.naming import current_name
from mixupe.errors import ConfigError

SUITES = Path(mixupe.bench.__file__).parent / "suites"
RESULTS = Path(__file__).resolve().parents[1] / "results"
V3 = "MixupE v3 (sign -1, released)"
EC = "Mixup at equal compute"


def raw(name: str) -> dict:
    return tomllib.loads((SUITES / f"{name}.toml").read_text(encoding="utf-8"))


def schedule_of(data: dict, label: str) -> dict:
    """epochs and warmup_epochs of a dataset label, from [defaults] and the dataset table."""
    ds = next(d for d in data["datasets"] if d.get("label", d["name"]) == label)
    merged = {"epochs": 10, "warmup_epochs": 0, "milestones": [],
              **{k: v for k, v in data["defaults"].items()}, **ds}
    return {"epochs": merged["epochs"], "warmup_epochs": merged["warmup_epochs"],
            "milestones": list(merged["milestones"]), "dataset": ds["name"]}


@pytest.mark.parametrize("name", ["scale", "paper-cifar"])
def test_equal_compute_arm_runs_the_schedule_stretched_by_the_committed_ratio(name):
    data = raw(name)
    arm = next(a for a in data["arms"] if a["label"] == EC)
    ratio = arm["equal_compute"]["ratio"]
    plans = {(p.dataset, p.arm): p for p in expand(load_suite(name))}
    record = {(c["dataset"], c["arm"]): c for c in manifest(load_suite(name), list(
        plans.values()))["cells"]}
    for ds in data["datasets"]:
        label = ds.get("label", ds["name"])
        sched = schedule_of(data, label)
        r = ratio[sched["dataset"]]
        want = {"epochs": int(sched["epochs"] * r + 0.5),
                "warmup_epochs": int(sched["warmup_epochs"] * r + 0.5),
                "milestones": tuple(int(m * r + 0.5) for m in sched["milestones"])}
        ec = plans[(label, EC)].points[0]
        mixup = next(p for p in plans[(label, "Mixup")].points
                     if p.params["alpha"] == ec.params["alpha"])
        for seed, cfg in ec.configs.items():
            got = {k: getattr(cfg, k) for k in want}
            assert got == want, (label, seed)
            # Everything else is the Mixup arm's config at the same alpha and seed.
            base = dataclasses.asdict(mixup.configs[seed])
            diff = {k for k, v in dataclasses.asdict(cfg).items() if base[k] != v}
            assert (diff <= set(want) and "epochs" in diff) or r == 1.0
        cell = record[(label, EC)]["equal_compute"]
        assert cell["of"] == V3 and cell["ratio"] == r
        assert cell["stretched"]["epochs"] == want["epochs"]
        assert cell["schedule"]["epochs"] == sched["epochs"]
        assert cell["measured"]


def test_stretch_schedule_rounds_each_field():
    got = stretch_schedule({"epochs": 200, "warmup_epochs": 0, "milestones": (100, 150),
                            "off_epoch": None}, 1.93)
    assert got == {"epochs": 386, "warmup_epochs": 0, "milestones": (193, 290)}
    assert stretch_schedule({"epochs": 1}, 0.1) == {"epochs": 1}
    assert stretch_schedule({"epochs": 5}, 0.5) == {"epochs": 3}  # halves round up
    with pytest.raises(ConfigError, match="positive number"):
        stretch_schedule({"epochs": 10}, 0.0)


BASE = {
    "name": "ec",
    "seeds": [0, 1],
    "defaults": {"epochs": 10, "warmup_epochs": 2},
    "datasets": [{"name": "digits", "model": "mlp"}],
    "arms": [
        {"label": "Mixup", "method": "mixup", "alpha": 0.5},
        {"label": "v3", "method": "mixupe", "alpha": 0.5},
        {"label": "EC", "method": "mixup", "alpha": 0.5,
         "equal_compute": {"of": "v3", "ratio": {"digits": 1.5}}},
    ],
}


def test_equal_compute_follows_overrides_and_is_recorded():
    plans = {p.arm: p for p in expand(parse_suite(BASE), overrides={"epochs": 4})}
    cfg = plans["EC"].points[0].configs[0]
    assert (cfg.epochs, cfg.warmup_epochs) == (6, 3)  # 4 * 1.5, 2 * 1.5
    assert plans["v3"].points[0].configs[0].epochs == 4
    assert "equal_compute" not in json.dumps(manifest(parse_suite(BASE), [plans["v3"]]))


def _arm(changes: dict) -> dict:
    bad = copy.deepcopy(BASE)
    bad["arms"][2].update(changes)
    return bad


@pytest.mark.parametrize("changes, pattern", [
    ({"equal_compute": {"of": "nobody", "ratio": {"digits": 1.5}}}, "not an arm label"),
    ({"equal_compute": {"of": "v3", "ratio": {"letter": 1.5}}}, r"no ratio for dataset.*digits"),
    ({"equal_compute": {"of": "v3", "ratio": {"digits": -1}}}, "positive number"),
    ({"equal_compute": {"of": "v3", "ratio": {"digits": True}}}, "positive number"),
    ({"equal_compute": {"of": "v3"}}, "must be a table with `of`"),
    ({"equal_compute": {"of": "v3", "ratio": 1.5}}, "ratio = a table"),
    ({"equal_compute": {"of": "v3", "ratio": {"digits": 2}, "why": 1}}, "must be a table"),
    ({"grid": {"epochs": [5, 10]}}, "may not be in the grid"),
    ({"epochs": 20}, "differs from that of 'v3'"),
])
def test_bad_equal_compute_raises_naming_the_problem(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        expand(parse_suite(_arm(changes)))


def test_equal_compute_of_an_arm_absent_from_the_dataset_raises():
    bad = copy.deepcopy(BASE)
    bad["datasets"].append({"name": "satimage", "label": "sat", "model": "mlp"})
    bad["arms"][1]["datasets"] = ["digits"]
    bad["arms"][2]["equal_compute"]["ratio"]["satimage"] = 1.2
    with pytest.raises(ConfigError, match="does not run on this dataset"):
        expand(parse_suite(bad))


def _every_seed_used_elsewhere() -> set[int]:
    used: set[int] = set()
    for path in SUITES.glob("*.toml"):
        if path.stem in ("scale", "paper-cifar"):
            continue
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        used |= set(data.get("seeds", [0])) | set(data.get("selection_seeds", []))
    for path in (RESULTS / "_suites").glob("*.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record["suite"].split("@")[0] in ("scale", "paper-cifar"):
            continue
        used |= {int(s) for c in record["cells"] for p in c["points"] for s in p["runs"]}
    return used


def test_scale_reports_fresh_seeds_and_chooses_on_other_seeds():
    data = raw("scale")
    assert len(data["seeds"]) == 10
    assert not set(data["seeds"]) & _every_seed_used_elsewhere()
    assert not set(data["seeds"]) & set(data["selection_seeds"])


@pytest.mark.skipif(not (RESULTS / "_suites" / "converged.json").is_file(),
                    reason="results/_suites/converged.json is not in this checkout")
def test_scale_2k_selection_runs_are_convergeds_own():
    conv = json.loads((RESULTS / "_suites" / "converged.json").read_text(encoding="utf-8"))
    suite = load_suite("scale")
    record = manifest(suite, expand(suite))
    for label in ("letter-2k", "fashion-mnist-2k"):
        theirs = {(c["arm"], json.dumps(p["params"], sort_keys=True), s): n
                  for c in conv["cells"] if c["dataset"] == label
                  for p in c["points"] for s, n in p["runs"].items()}
        for arm in ("ERM", "Mixup", V3, "MixupE v4", "Mixup + clean CE"):
            cell = next(c for c in record["cells"] if c["dataset"] == label and c["arm"] == arm)
            for p in cell["points"]:
                for s in ("100", "101"):
                    key = (arm, json.dumps(p["params"], sort_keys=True), s)
                    # the same run: converged stored it under the first naming rules
                    assert p["runs"][s] == current_name(theirs[key]), (label, arm, key)


def _fake_trainer(cost_per_step: dict[str, float], setup: float, steps_per_epoch: int,
                  clock: list[float]):
    """A train() stand-in: advances the fake clock by setup + steps x the method's cost and
    writes the result.json the measurement reads."""
    def train(cfg: TrainConfig, *, runs_root, progress):
        steps = steps_per_epoch * cfg.epochs
        clock[0] += setup + steps * cost_per_step[cfg.method]
        run = Path(runs_root) / cfg.run_name()
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"failed": False, "train_steps": steps}))
    return train


def test_measure_step_ratio_cancels_setup_and_takes_the_median():
    clock = [0.0]
    costs = {"mixupe": 0.030, "mixup": 0.012}
    got = measure_step_ratio(TrainConfig(method="mixupe"), TrainConfig(method="mixup"),
                             epochs=(2, 7), repeats=3,
                             train_fn=_fake_trainer(costs, 5.0, 17, clock),
                             clock=lambda: clock[0])
    assert got.ratio == pytest.approx(0.030 / 0.012, rel=1e-9)
    assert got.seconds_a == pytest.approx((0.030,) * 3, rel=1e-9)
    assert per_step_seconds((2.0, 10), (5.0, 40)) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="more epochs"):
        per_step_seconds((2.0, 10), (5.0, 10))
    with pytest.raises(ConfigError, match="short < long"):
        measure_step_ratio(TrainConfig(), TrainConfig(), epochs=(5, 5))


@pytest.mark.skipif(sys.platform != "linux", reason="process CPU time on Linux only")
def test_measure_step_ratio_trains_for_real():
    cfg = TrainConfig(dataset="digits", model="mlp", batch_size=64, data_options=(
        ("subset", 200),))
    got = measure_step_ratio(dataclasses.replace(cfg, method="mixupe"),
                             dataclasses.replace(cfg, method="erm"), epochs=(1, 3), repeats=1)
    assert got.ratio > 0 and len(got.seconds_b) == 1


def write_tiny_cifar10(root: Path, per_class: int = 10, test_per_class: int = 4) -> Path:
    """A CIFAR-10 folder in the official python format (5 train batches and a test batch)."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = np.repeat(np.arange(10), per_class)
    rng.shuffle(labels)
    for i, part in enumerate(np.array_split(labels, 5), start=1):
        entry = {b"data": rng.integers(0, 256, (len(part), 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in part]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(entry))
    test = np.repeat(np.arange(10), test_per_class)
    entry = {b"data": rng.integers(0, 256, (len(test), 3072), dtype=np.uint8),
             b"labels": [int(v) for v in test]}
    (folder / "test_batch").write_bytes(pickle.dumps(entry))
    return root


def test_paper_cifar_trains_two_epochs_on_a_tiny_cifar_folder(tmp_path):
    from mixupe.bench.rundirs import read_run
    from mixupe.engine import train

    data = write_tiny_cifar10(tmp_path / "cifar")
    overrides = {"epochs": 2, "milestones": [1], "batch_size": 16,
                 "data_options": {"root": str(data)}, "model_options": {"width": 4}}
    plans = {(p.dataset, p.arm): p for p in expand(load_suite("paper-cifar"),
                                                   overrides=overrides)}
    runs = tmp_path / "runs"
    picks = [("ERM", 0), ("Mixup", 100), ("MixupE v3 (official setting)", 0), (EC, 0)]
    records = {}
    for arm, seed in picks:
        cfg = plans[("cifar10", arm)].points[0].configs[seed]
        train(cfg, runs_root=runs, progress=False)
        records[arm] = read_run(runs, cfg.run_name())
    for arm, rec in records.items():
        assert rec.status == "complete", arm
        assert 0.0 <= rec.final("test")["acc"] <= 1.0
    official = records["MixupE v3 (official setting)"].config
    assert (official["alpha"], official["eta"], official["threshold"], official["version"],
            official["fast_sign"]) == (2.0, 1e-3, 1.0, 3, -1)
    # Mixup at equal compute: 2 x 2 epochs, the lr drop moved from epoch 1 to epoch 2.
    for arm, epochs, drop in (("ERM", 2, 1), (EC, 4, 2)):
        lrs = [e["lr"] for e in records[arm].epochs]
        assert len(lrs) == epochs
        dropped = [i + 1 for i in range(1, epochs) if lrs[i] < 0.5 * lrs[i - 1]]
        assert dropped == [drop + 1], (arm, lrs)


def test_paper_cifar_dry_run_lists_every_cell(tmp_path, capsys):
    from mixupe.cli import main

    assert main(["bench", "paper-cifar", "--dry-run", "--runs-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    data = raw("paper-cifar")
    cells = len(data["datasets"]) * len(data["arms"])
    assert f"{cells} dataset x arm cells" in out
    # selection runs listed now: Mixup's 3 alphas x 2 seeds per dataset; single-point arms'
    # reported seeds (ERM, the official v3 setting)
    per_dataset = 3 * 2 + 2 * len(data["seeds"])
    assert out.count("[missing ]") == per_dataset * len(data["datasets"])
