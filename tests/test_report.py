"""The report against a hand-built runs directory: selection, intervals, paired differences.

Every expected number is computed here independently (numpy / scipy), from the same fake
metrics that are written to disk in the engine's run-directory format.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mixupe.bench.report import render_markdown, render_suite, write_report
from mixupe.bench.rundirs import read_run
from mixupe.bench.suites import expand, manifest, parse_suite, write_manifest
from mixupe.bench.summary import summarize
from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError

SUITE = {
    "name": "fake",
    "seeds": [0, 1, 2],
    "selection_seeds": [5, 6],
    "defaults": {"epochs": 3},
    "datasets": [{"name": "digits", "model": "mlp"}, {"name": "satimage", "model": "mlp"}],
    "arms": [
        {"label": "ERM", "method": "erm"},
        {"label": "Mixup", "method": "mixup", "grid": {"alpha": [0.5, 2.0]}},
        {"label": "MixupE", "method": "mixupe", "grid": {"eta": [0.01, 0.1, 1.0]}},
    ],
}
METRICS = ("acc", "nll", "brier", "ece", "fgsm_acc")


def write_run(root: Path, cfg: TrainConfig, *, val_acc: float, test: dict[str, float],
              epochs: int = 3, failed: bool = False, partial: bool = False,
              wall: float = 2.0, reliability: dict | None = None) -> None:
    """A run directory in the engine's format (config.json, metrics.jsonl, result.json)."""
    run = root / cfg.run_name()
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": cfg.to_dict(),
                                                 "run_name": cfg.run_name()}))
    test = dict(test)
    if reliability is not None:
        test["reliability"] = reliability
    rows = []
    for e in range(1, epochs + 1):
        frac = e / epochs
        rows.append({"epoch": e, "lr": 0.1, "time_s": wall / epochs,
                     "train": {"loss": 1.0 / e, "reg_ratio": 0.01, "selected_frac": 0.5},
                     "val": {m: (val_acc * frac if m == "acc" else 0.5) for m in METRICS},
                     "test": test if e == epochs else {m: 0.0 for m in METRICS}})
    if partial:
        rows = rows[:1]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if failed:
        (run / "failed.json").write_text(json.dumps({"failed": True, "reason": "loss nan"}))
    elif not partial:
        (run / "result.json").write_text(json.dumps({
            "failed": False, "val": rows[-1]["val"], "test": test, "train": rows[-1]["train"],
            "wall_time_s": wall}))


def write_suite_runs(root: Path, suite_dict: dict, seed: int, *, wall: float = 2.0):
    """The manifest and every run of a suite, with random final metrics.

    Returns the suite, its plans and the draws: (dataset, arm, point, seed) -> (val acc, test).
    """
    rng = np.random.default_rng(seed)
    suite = parse_suite(suite_dict)
    plans = expand(suite)
    write_manifest(root, manifest(suite, plans))
    draws = {}
    for plan in plans:
        for i, point in enumerate(plan.points):
            for s, cfg in point.configs.items():
                val = float(rng.uniform(0.5, 0.95))
                test = {m: float(rng.uniform(0.1, 0.9)) for m in METRICS}
                write_run(root, cfg, val_acc=val, test=test, wall=wall)
                draws[(plan.dataset, plan.arm, i, s)] = (val, test)
    return suite, plans, draws


@pytest.fixture()
def fake_runs(tmp_path: Path):
    """Random metrics for every run of SUITE, plus the truth to compare against."""
    suite, plans, draws = write_suite_runs(tmp_path, SUITE, 123, wall=1.5)
    truth: dict = {}
    for plan in plans:
        cell = truth.setdefault((plan.dataset, plan.arm), {"val": [], "test": []})
        for i, point in enumerate(plan.points):
            cell["val"].append({s: draws[(plan.dataset, plan.arm, i, s)][0] for s in point.configs})
            cell["test"].append({s: draws[(plan.dataset, plan.arm, i, s)][1]
                                 for s in point.configs})
    return tmp_path, suite, plans, truth


def t_interval(values):
    values = np.asarray(values, dtype=float)
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return values.mean(), half


def test_selection_and_intervals_match_independent_computation(fake_runs):
    root, _suite, _plans, truth = fake_runs
    (summary,) = summarize(root)
    assert summary.name == "fake"
    for (dataset, arm), cell_truth in truth.items():
        cell = summary.cell(dataset, arm)
        means = [np.mean([v[5], v[6]]) for v in cell_truth["val"]]  # selection seeds 5, 6
        chosen = int(np.argmax(means)) if len(means) > 1 else 0
        assert cell.chosen == chosen
        tests = cell_truth["test"][chosen]
        for metric in METRICS:
            mean, half = t_interval([tests[s][metric] for s in (0, 1, 2)])
            assert cell.ci[metric][0] == pytest.approx(mean, rel=1e-9)
            assert cell.ci[metric][1] == pytest.approx(half, rel=1e-9)
        assert cell.runs == 5 * len(cell_truth["val"])  # every run written counts as compute
        assert cell.wall_s == pytest.approx(1.5 * cell.runs)
    # Paired difference MixupE - Mixup over matched seeds, per dataset.
    for dataset in ("digits", "satimage"):
        cells = {arm: summary.cell(dataset, arm) for arm in ("Mixup", "MixupE")}
        diffs = [cells["MixupE"].test["acc"][s] - cells["Mixup"].test["acc"][s] for s in (0, 1, 2)]
        mean, half = t_interval(diffs)
        assert cells["MixupE"].diff[0] == pytest.approx(mean, rel=1e-9)
        assert cells["MixupE"].diff[1] == pytest.approx(half, rel=1e-9)
        assert cells["MixupE"].diff[2] == 3
        assert cells["Mixup"].diff is None  # the baseline itself


def test_selection_never_looks_at_test(fake_runs):
    """Making the best-validation point's test accuracy terrible does not change the choice."""
    root, _suite, plans, truth = fake_runs
    plan = next(p for p in plans if p.dataset == "digits" and p.arm == "MixupE")
    means = [np.mean([v[5], v[6]]) for v in truth[("digits", "MixupE")]["val"]]
    best = int(np.argmax(means))
    for cfg in plan.points[best].configs.values():
        path = root / cfg.run_name() / "result.json"
        result = json.loads(path.read_text())
        result["test"]["acc"] = 0.0
        path.write_text(json.dumps(result))
    (summary,) = summarize(root)
    cell = summary.cell("digits", "MixupE")
    assert cell.chosen == best
    assert cell.ci["acc"][0] == 0.0


def test_failed_selection_run_rules_the_point_out(fake_runs):
    root, _suite, plans, truth = fake_runs
    plan = next(p for p in plans if p.dataset == "satimage" and p.arm == "MixupE")
    means = [np.mean([v[5], v[6]]) for v in truth[("satimage", "MixupE")]["val"]]
    order = list(np.argsort(means)[::-1])
    best, second = int(order[0]), int(order[1])
    cfg = plan.points[best].configs[6]  # a selection seed of the best point diverged
    run = root / cfg.run_name()
    (run / "result.json").unlink()
    (run / "failed.json").write_text(json.dumps({"failed": True, "reason": "loss became nan"}))
    (summary,) = summarize(root)
    cell = summary.cell("satimage", "MixupE")
    assert cell.chosen == second
    assert cell.failed == 1
    assert any("loss became nan" in f for f in cell.failures)
    text = render_markdown([summary])
    assert "loss became nan" in text


def test_missing_runs_are_counted_and_n_shrinks(fake_runs):
    root, _suite, plans, truth = fake_runs
    plan = next(p for p in plans if p.dataset == "digits" and p.arm == "ERM")
    import shutil

    shutil.rmtree(root / plan.points[0].configs[2].run_name())  # a non-selection seed
    (summary,) = summarize(root)
    cell = summary.cell("digits", "ERM")
    assert cell.seeds == [0, 1]
    assert cell.missing == 1
    tests = truth[("digits", "ERM")]["test"][0]
    mean, half = t_interval([tests[s]["acc"] for s in (0, 1)])
    assert cell.ci["acc"] == pytest.approx((mean, half))
    # The paired difference of ERM vs Mixup now uses the two matched seeds only.
    assert cell.diff[2] == 2


def test_markdown_table_shows_the_numbers(fake_runs):
    root, *_ = fake_runs
    (summary,) = summarize(root)
    text = render_markdown([summary])
    cell = summary.cell("digits", "MixupE")
    mean, half = cell.ci["acc"]
    assert f"{mean * 100:.1f} ± {half * 100:.1f}" in text
    assert f"eta={cell.params['eta']:g}" in text
    assert "Δ acc vs Mixup" in text
    assert "validation" in text  # the protocol is written down
    assert "Compute spent" in text
    assert "- digits / MixupE: reg_ratio 0.01, selected_frac 0.5" in text
    assert "- digits / Mixup: reg_ratio" not in text  # diagnostics only for MixupE arms
    mixup = summary.cell("digits", "Mixup")
    alpha = mixup.params["alpha"]
    name = f"digits/mlp/mixup-a{alpha:g}/e3-splitrun-fevalend-lamtransform"
    assert f"- digits / Mixup: `{name}`" in text
    # Two datasets x three arms = six rows in the main table; then a glance row per dataset
    # and a paired row per dataset and non-baseline arm.
    main_table, rest = text.split("### At a glance")
    assert sum(1 for line in main_table.splitlines() if line.startswith("| digits") or
               line.startswith("| satimage")) == 6
    assert sum(1 for line in rest.splitlines() if line.startswith("| digits")) == 1 + 2


def test_reliability_pooled_over_seeds_by_count(tmp_path: Path):
    suite = parse_suite({"name": "rel", "seeds": [0, 1], "datasets": [{"name": "digits"}],
                         "arms": [{"label": "ERM", "method": "erm"}]})
    plans = expand(suite)
    write_manifest(tmp_path, manifest(suite, plans))
    tables = [
        {"conf": [0.2, 0.6, 0.9], "acc": [0.0, 0.5, 1.0], "count": [1, 2, 7]},
        {"conf": [0.3, 0.7, 0.95], "acc": [1.0, 0.25, 0.5], "count": [3, 4, 0]},
    ]
    for seed, table in zip((0, 1), tables, strict=True):
        write_run(tmp_path, plans[0].points[0].configs[seed], val_acc=0.9,
                  test={m: 0.5 for m in METRICS}, reliability=table)
    (summary,) = summarize(tmp_path)
    rel = summary.cells[0].reliability
    assert rel["count"] == [4, 6, 7]
    assert rel["conf"][0] == pytest.approx((0.2 * 1 + 0.3 * 3) / 4)
    assert rel["acc"][1] == pytest.approx((0.5 * 2 + 0.25 * 4) / 6)
    assert rel["acc"][2] == pytest.approx(1.0)
    files = write_report(tmp_path, out=tmp_path / "out")
    assert any("reliability" in p.name for p in files.plots)


def test_report_writes_markdown_and_plots(fake_runs):
    root, *_ = fake_runs
    files = write_report(root)
    assert files.markdown == root / "report" / "report.md"
    assert files.markdown.read_text() == files.text
    names = sorted(p.name for p in files.plots)
    assert names == ["fake-accuracy.png", "fake-cost.png", "fake-differences.png",
                     "fake-learning-curves.png"]  # no reliability data
    for path in files.plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000
    assert "reliability diagrams were skipped" in files.text


def test_runs_outside_suites_are_grouped_by_config(tmp_path: Path):
    for seed, acc in ((0, 0.8), (1, 0.9)):
        cfg = TrainConfig(dataset="digits", method="mixup", alpha=0.4, epochs=2, seed=seed)
        write_run(tmp_path, cfg, val_acc=0.7, test={m: acc for m in METRICS}, epochs=2)
    write_run(tmp_path, TrainConfig(dataset="digits", epochs=2), val_acc=0.5,
              test={m: 0.6 for m in METRICS}, epochs=2)
    (summary,) = summarize(tmp_path)
    assert len(summary.cells) == 2
    mixup = next(c for c in summary.cells if "mixup" in c.arm)
    # the run name without dataset, seed and hash
    assert mixup.arm == "mlp/mixup-a0.4/e2-splitrun-fevalend-lamtransform"
    assert mixup.seeds == [0, 1]
    assert mixup.ci["acc"] == pytest.approx(t_interval([0.8, 0.9]))
    erm = next(c for c in summary.cells if c is not mixup)
    assert erm.ci["acc"][0] == pytest.approx(0.6)
    assert math.isnan(erm.ci["acc"][1])  # one seed: no interval
    assert "| 60.0 |" in render_markdown([summary])  # one seed: the mean without an interval


def test_cost_column_without_a_baseline_is_seconds_under_a_seconds_header(tmp_path: Path):
    """Outside suites there is no baseline: the header says s/run alone (not "x baseline")
    and the cell is the mean wall time in seconds, to a tenth."""
    walls = (2.34, 3.02)
    for seed, wall in enumerate(walls):
        cfg = TrainConfig(dataset="digits", method="mixup", alpha=0.4, epochs=2, seed=seed)
        write_run(tmp_path, cfg, val_acc=0.7, test={m: 0.8 for m in METRICS}, epochs=2,
                  wall=wall)
    (summary,) = summarize(tmp_path)
    text = render_suite(summary)
    header = next(line for line in text.splitlines() if line.startswith("| Dataset |"))
    assert header.endswith("| Failed/runs | s/run |"), header
    row = next(line for line in text.splitlines() if line.startswith("| digits |"))
    assert row.endswith(f"| {sum(walls) / 2:.1f} |"), row


def test_partial_run_is_not_reported_as_complete(tmp_path: Path):
    cfg = TrainConfig(dataset="digits", epochs=3)
    write_run(tmp_path, cfg, val_acc=0.7, test={m: 0.5 for m in METRICS}, partial=True)
    rec = read_run(tmp_path, cfg.run_name())
    assert rec.status == "partial"
    (summary,) = summarize(tmp_path)
    assert summary.cells[0].seeds == [] and "acc" not in summary.cells[0].ci
    assert summary.cells[0].missing == 1


def test_missing_and_empty_runs_dir_give_clear_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"does not exist.*mixupe bench quick"):
        summarize(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"holds no runs.*mixupe bench quick"):
        summarize(tmp_path)


def test_unknown_suite_filter_names_what_exists(fake_runs):
    root, *_ = fake_runs
    with pytest.raises(ConfigError, match=r"no suite 'other'.*\['fake'\].*mixupe bench other"):
        summarize(root, suite="other")


def test_single_point_arm_reports_the_seeds_that_finished(tmp_path: Path):
    suite = parse_suite({"name": "one", "seeds": [0, 1, 2], "datasets": [{"name": "digits"}],
                         "arms": [{"label": "ERM", "method": "erm"}]})
    plans = expand(suite)
    write_manifest(tmp_path, manifest(suite, plans))
    configs = plans[0].points[0].configs
    write_run(tmp_path, configs[0], val_acc=0.9, test={m: 0.7 for m in METRICS})
    write_run(tmp_path, configs[1], val_acc=0.9, test={m: 0.8 for m in METRICS}, failed=True)
    (summary,) = summarize(tmp_path)
    cell = summary.cells[0]
    assert cell.chosen == 0 and cell.seeds == [0]
    assert cell.failed == 1 and cell.missing == 1
    assert cell.ci["acc"][0] == pytest.approx(0.7)


def test_protocol_line_names_selection_seeds_only_where_a_choice_is_made(tmp_path: Path):
    fixed = {"name": "fixed", "seeds": [0, 1], "selection_seeds": [7],
             "datasets": [{"name": "digits"}], "arms": [{"label": "ERM", "method": "erm"}]}
    write_suite_runs(tmp_path / "a", fixed, 1)
    (summary,) = summarize(tmp_path / "a")
    text = render_suite(summary)
    assert "nothing is selected and no seed is set aside" in text
    assert "selection seeds" not in text
    grid = dict(fixed, name="grid", arms=[{"label": "Mixup", "method": "mixup",
                                           "grid": {"alpha": [0.2, 1.0]}}])
    write_suite_runs(tmp_path / "b", grid, 1)
    (summary,) = summarize(tmp_path / "b")
    assert "Reported seeds [0, 1]; selection seeds [7]." in render_suite(summary)


def test_cost_column_is_each_arms_mean_wall_time_over_the_baselines(tmp_path: Path):
    """s/run: the mean of the chosen point's reported runs, and its ratio to the baseline's."""
    suite, plans, _ = write_suite_runs(tmp_path, SUITE, 7, wall=1.0)
    walls: dict[str, float] = {}
    rng = np.random.default_rng(3)
    for plan in plans:
        for point in plan.points:
            for cfg in point.configs.values():
                wall = float(rng.uniform(1.0, 20.0))
                path = tmp_path / cfg.run_name() / "result.json"
                result = json.loads(path.read_text())
                result["wall_time_s"] = wall
                path.write_text(json.dumps(result))
                walls[cfg.run_name()] = wall
    (summary,) = summarize(tmp_path)
    text = render_suite(summary)

    def mean_wall(cell) -> float:  # from the files, over the chosen point's reported seeds
        names = [c.run_name() for p in plans if p.dataset == cell.dataset and p.arm == cell.arm
                 for pt in p.points for s, c in pt.configs.items()
                 if s in suite.seeds and all(c.to_dict().get(k) == v
                                             for k, v in cell.params.items())]
        return float(np.mean([walls[n] for n in names]))

    for dataset in ("digits", "satimage"):
        base = mean_wall(summary.cell(dataset, "Mixup"))
        for arm in ("ERM", "Mixup", "MixupE"):
            own = mean_wall(summary.cell(dataset, arm))
            row = next(line for line in text.splitlines()
                       if line.startswith(f"| {dataset} | {arm} |"))
            assert row.endswith(f"| {own:.0f} ({own / base:.2f}x) |"), row
