"""Suite parsing, expansion (merge order, grids, seeds), validation errors and the manifest."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

import mixupe.bench
from mixupe.bench.suites import (
    builtin_suites,
    expand,
    load_suite,
    manifest,
    parse_suite,
    read_manifests,
    write_manifest,
)
from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError, CorruptDataError


def base_suite(**changes):
    suite = {
        "name": "t",
        "seeds": [3, 5],
        "selection_seeds": [1],
        "defaults": {"epochs": 4, "lr": 0.5, "batch_size": 32},
        "datasets": [{"name": "digits", "model": "mlp", "lr": 0.2},
                     {"name": "satimage", "label": "sat", "model": "mlp"}],
        "arms": [
            {"label": "ERM", "method": "erm"},
            {"label": "Mixup", "method": "mixup", "lr": 0.3, "grid": {"alpha": [0.5, 2.0]}},
            {"label": "E", "method": "mixupe", "grid": {"eta": [0.1, 1.0], "version": [3, 4]}},
        ],
    }
    suite.update(changes)
    return suite


def test_expansion_is_the_full_product_with_the_documented_merge_order():
    suite = parse_suite(base_suite())
    plans = expand(suite)
    assert [(p.dataset, p.arm) for p in plans] == list(
        itertools.product(["digits", "sat"], ["ERM", "Mixup", "E"]))
    sizes = {p.arm: len(p.points) for p in plans}
    assert sizes == {"ERM": 1, "Mixup": 2, "E": 4}
    for plan in plans:
        for point in plan.points:
            assert sorted(point.configs) == [1, 3, 5]  # reported and selection seeds
            for seed, cfg in point.configs.items():
                assert cfg.seed == seed
                assert cfg.epochs == 4 and cfg.batch_size == 32  # [defaults]
                # lr: defaults 0.5 < dataset 0.2 (digits) < arm 0.3 (Mixup)
                expected_lr = 0.3 if plan.arm == "Mixup" else (0.2 if plan.dataset == "digits"
                                                               else 0.5)
                assert cfg.lr == expected_lr
                assert cfg.dataset == ("digits" if plan.dataset == "digits" else "satimage")
                for key, value in point.params.items():
                    assert getattr(cfg, key) == value
    e_points = next(p for p in plans if p.arm == "E").points
    assert [dict(p.params) for p in e_points] == [
        {"eta": 0.1, "version": 3}, {"eta": 0.1, "version": 4},
        {"eta": 1.0, "version": 3}, {"eta": 1.0, "version": 4}]
    names = [cfg.run_name() for p in plans for pt in p.points for cfg in pt.configs.values()]
    assert len(names) == len(set(names)) == 2 * 3 * (1 + 2 + 4)


def test_overrides_win_and_replace_grid_entries_and_seeds_can_be_replaced():
    suite = parse_suite(base_suite())
    plans = expand(suite, overrides={"epochs": 1, "alpha": 0.7}, seeds=[9])
    mixup = next(p for p in plans if p.arm == "Mixup")
    assert len(mixup.points) == 1 and dict(mixup.points[0].params) == {}
    cfg = mixup.points[0].configs[9]
    assert (cfg.epochs, cfg.alpha, cfg.seed) == (1, 0.7, 9)


def test_configs_are_normalized_so_equal_runs_share_a_name():
    suite = parse_suite(base_suite())
    erm = expand(suite)[0].points[0].configs[3]
    assert erm == TrainConfig(dataset="digits", model="mlp", lr=0.2, epochs=4, batch_size=32,
                              seed=3).normalized()


def test_grid_over_an_option_without_effect_is_rejected():
    bad = base_suite(arms=[{"label": "Mixup", "method": "mixup", "grid": {"eta": [0.1, 1.0]}}])
    with pytest.raises(ConfigError, match=r"arm 'Mixup'.*give the same run.*remove it"):
        expand(parse_suite(bad))


def test_selection_seeds_may_lie_apart_and_every_point_gets_their_configs():
    no_grid = [{"label": "ERM", "method": "erm"}, {"label": "M", "method": "mixup"}]
    suite = parse_suite({k: v for k, v in base_suite(arms=no_grid).items()
                         if k != "selection_seeds"})
    assert suite.selection_seeds == (3, 5)  # default: the seeds (no cell chooses here)
    suite = parse_suite(base_suite(seeds=[0, 1, 2], selection_seeds=[100, 101]))
    assert suite.selection_seeds == (100, 101)
    for plan in expand(suite):
        for point in plan.points:
            assert sorted(point.configs) == [0, 1, 2, 100, 101]
    # a seed override replaces the reported seeds; the selection seeds stay
    for plan in expand(suite, seeds=[4]):
        assert sorted(plan.points[0].configs) == [4, 100, 101]


def test_follow_crosses_the_grid_with_the_followed_arms_values():
    arms = [{"label": "Mixup", "method": "mixup", "grid": {"alpha": [0.2, 1.0]}},
            {"label": "E", "method": "mixupe", "grid": {"eta": [0.1, 1.0]},
             "follow": {"alpha": "Mixup"}},
            {"label": "F", "method": "mixupe", "follow": {"alpha": "Fixed"}},
            {"label": "Fixed", "method": "mixup", "alpha": 0.4}]
    with pytest.raises(ConfigError, match=r"follow alpha = 'Fixed' must name an arm listed "
                                          r"before this one"):
        parse_suite(base_suite(arms=arms, seeds=[0], selection_seeds=[9]))
    arms = [*arms[:2], arms[3], {**arms[2]}]
    plans = expand(parse_suite(base_suite(arms=arms, seeds=[0], selection_seeds=[9])))
    e = next(p for p in plans if p.arm == "E")
    assert sorted((pt.params["alpha"], pt.params["eta"]) for pt in e.points) == [
        (0.2, 0.1), (0.2, 1.0), (1.0, 0.1), (1.0, 1.0)]
    assert all(pt.configs[0].alpha == pt.params["alpha"] for pt in e.points)
    f = next(p for p in plans if p.arm == "F")
    assert [pt.params for pt in f.points] == [{"alpha": 0.4}] and f.follow == {"alpha": "Fixed"}


def test_baseline_defaults_to_the_first_mixup_arm():
    assert parse_suite(base_suite()).baseline == "Mixup"
    assert parse_suite(base_suite(baseline="ERM")).baseline == "ERM"


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"colour": 1}, r"unknown top-level key\(s\) \['colour'\]"),
        ({"defaults": {"epoch": 3}}, r"\[defaults\] sets unknown option\(s\) \['epoch'\]"),
        ({"defaults": {"seed": 3}}, r"sets 'seed'; list seeds in the suite's top-level"),
        ({"seeds": []}, r"seeds = \[\] must be a non-empty list of integers"),
        ({"seeds": [1, 1]}, r"repeats a seed"),
        ({"seeds": [0, 1], "selection_seeds": [1, 0]},
         r"every seed \[0, 1\] is a selection seed.*add reported seeds"),
        ({"arms": [{"label": "A", "method": "mixup", "alpha": 0.2},
                   {"label": "B", "method": "mixupe", "alpha": 1.0,
                    "follow": {"alpha": "A"}}]},
         r"'alpha' is both followed from 'A' and set by the arm itself"),
        ({"datasets": []}, r"lists no datasets; add at least one \[\[datasets\]\]"),
        ({"datasets": [{"model": "mlp"}]}, r"datasets entry 0 has no 'name'"),
        ({"arms": []}, r"lists no arms"),
        ({"arms": [{"method": "erm"}]}, r"arms entry 0 has no label"),
        ({"arms": [{"label": "A", "method": "erm"}, {"label": "A", "method": "mixup"}]},
         r"arm label\(s\) \['A'\] used twice"),
        ({"arms": [{"label": "A", "grid": {"alpha": 1.0}}]},
         r"grid alpha = 1.0 must be a non-empty"),
        ({"baseline": "Nope"}, r"baseline = 'Nope' is not an arm label"),
        ({"name": "a/b"}, r"name = 'a/b' must be a non-empty string without '/'"),
    ],
)
def test_bad_suites_raise_config_errors_naming_the_problem(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_suite(base_suite(**changes))


def test_invalid_train_config_value_names_the_cell():
    bad = base_suite(arms=[{"label": "Bad", "method": "mixup", "grid": {"alpha": [1.0, -1.0]}}])
    with pytest.raises(ConfigError, match=r"dataset 'digits', arm 'Bad', grid point "
                                          r"\{'alpha': -1.0\}: alpha=-1.0"):
        expand(parse_suite(bad))


def test_unknown_suite_and_bad_toml(tmp_path: Path):
    # The message lists every TOML file shipped in the suites folder, read here independently.
    shipped = sorted(f.stem for f in (Path(mixupe.bench.__file__).parent / "suites").glob("*.toml"))
    assert {"quick", "converged", "regime"} <= set(shipped)
    with pytest.raises(ConfigError,
                       match=r"'nosuch' is neither a built-in suite.*" + re.escape(str(shipped))):
        load_suite("nosuch")
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match=r"broken.toml is not valid TOML.*fix the syntax"):
        load_suite(path)


def test_suite_file_name_is_the_default_suite_name(tmp_path: Path):
    path = tmp_path / "mine.toml"
    path.write_text('seeds = [0]\n[[datasets]]\nname = "digits"\n[[arms]]\nlabel = "ERM"\n')
    suite = load_suite(path)
    assert suite.name == "mine"
    assert [p.arm for p in expand(suite)] == ["ERM"]


@pytest.mark.parametrize("name", ["smoke", "quick", "full"])
def test_builtin_suites_expand_and_validate(name):
    assert name in builtin_suites()
    suite = load_suite(name)
    plans = expand(suite)
    assert plans and all(p.points for p in plans)
    arms = {a.label for a in suite.arms}
    assert suite.baseline in arms
    if name == "full":
        assert {d.settings["dataset"] for d in suite.datasets} == {
            "fashion-mnist", "letter", "satimage", "fsdd", "solubility",
            "fashion-mnist-superpixels"}
        assert len(suite.seeds) == 5
        etas = {pt.params.get("eta") for p in plans if p.arm.startswith("MixupE")
                for pt in p.points}
        assert etas == {1e-3, 1e-2, 1e-1, 1.0}
        versions = {(c.version, c.fast_sign) for p in plans for pt in p.points
                    for c in pt.configs.values() if c.method == "mixupe"}
        assert versions == {(1, -1), (3, -1), (3, 1), (4, -1)}  # v1: sign reset by normalized
    if name == "quick":
        # the regime search's letter-2k setting, where Mixup beats ERM at convergence
        regime = next(p for p in expand(load_suite("regime"))
                      if p.dataset == "letter-2k" and p.arm == "ERM")
        quick_erm = next(p for p in plans if p.arm == "ERM")
        assert quick_erm.points[0].configs[0] == regime.points[0].configs[0]
        assert {c.method for p in plans for pt in p.points for c in pt.configs.values()} == {
            "erm", "mixup", "mixupe", "mixup-ce"}
        assert suite.seeds == (0, 1, 2)


def test_manifest_round_trip_maps_every_run(tmp_path: Path):
    suite = parse_suite(base_suite(selection_seeds=[5]))
    plans = expand(suite)
    record = manifest(suite, plans)
    path = write_manifest(tmp_path, record)
    assert path == tmp_path / "_suites" / "t.json"
    (back,) = read_manifests(tmp_path)
    assert back == json.loads(json.dumps(record))
    assert back["selection_seeds"] == [5] and back["baseline"] == "Mixup"
    names = {n for c in back["cells"] for p in c["points"] for n in p["runs"].values()}
    expected = {cfg.run_name() for p in plans for pt in p.points for cfg in pt.configs.values()}
    assert names == expected


def test_corrupt_manifest_is_reported(tmp_path: Path):
    (tmp_path / "_suites").mkdir()
    (tmp_path / "_suites" / "x.json").write_text("{not json")
    with pytest.raises(CorruptDataError, match=r"x.json is not valid JSON.*rerun `mixupe bench`"):
        read_manifests(tmp_path)


def test_restrict_grid_keeps_run_names_and_renames_the_suite():
    from mixupe.bench.suites import restrict_grid

    full = load_suite("full")
    cut = restrict_grid(full, {"alpha": [1]})  # an int matches the grid's 1.0
    assert cut.name == "full@alpha=1"
    assert cut.contrasts == full.contrasts and cut.seeds == full.seeds
    full_plans = {(p.dataset, p.arm): p for p in expand(full)}
    for plan in expand(cut):
        names = {pt.configs[0].run_name() for pt in plan.points}
        all_names = {pt.configs[0].run_name() for pt in full_plans[(plan.dataset, plan.arm)].points}
        assert names <= all_names  # every restricted run is a run of the full suite
        for point in plan.points:
            if "alpha" in point.params:
                assert point.params["alpha"] == 1.0 and isinstance(point.params["alpha"], float)
        arm = next(a for a in full.arms if a.label == plan.arm)
        expected = 1
        for key, values in arm.grid.items():
            expected *= 1 if key == "alpha" else len(values)
        assert len(plan.points) == expected
    with pytest.raises(ConfigError, match=r"no arm .* searches 'lr'"):
        restrict_grid(full, {"lr": [0.1]})
    with pytest.raises(ConfigError, match=r"alpha=\[0.5\]: not in the grid of arm 'Mixup'"):
        restrict_grid(full, {"alpha": [0.5]})


def test_cli_bench_restrict_dry_run_lists_the_restricted_suite(capsys, tmp_path):
    from mixupe.cli import main

    assert main(["bench", "full", "--restrict", "alpha=0.2", "--restrict", "eta=1",
                 "--runs-root", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "suite full@alpha=0.2,eta=1:" in out
    assert "mixupe-v4-a0.2-eta1-" in out and "eta0.01" not in out and "mixup-a1/" not in out
    assert main(["bench", "full", "--restrict", "alpha", "--dry-run"]) == 2


def test_an_arm_may_run_on_some_datasets_only():
    arms = [{"label": "ERM", "method": "erm"},
            {"label": "CutMix", "method": "cutmix", "datasets": ["digits"],
             "grid": {"alpha": [0.2, 1.0]}},
            {"label": "E", "method": "mixupe", "mixing": "cutmix", "datasets": ["digits"],
             "follow": {"alpha": "CutMix"}, "grid": {"eta": [0.1, 1.0]}}]
    suite = parse_suite(base_suite(arms=arms, seeds=[0], selection_seeds=[9]))
    cells = [(p.dataset, p.arm) for p in expand(suite)]
    assert cells == [("digits", "ERM"), ("digits", "CutMix"), ("digits", "E"), ("sat", "ERM")]
    with pytest.raises(ConfigError, match=r"datasets = \['mnist'\] must list dataset labels"):
        parse_suite(base_suite(arms=[{**arms[1], "datasets": ["mnist"]}]))
    unrestricted = [arms[0], arms[1], {k: v for k, v in arms[2].items() if k != "datasets"}]
    with pytest.raises(ConfigError, match=r"follows 'CutMix', which runs only on \['digits'\]"):
        parse_suite(base_suite(arms=unrestricted, seeds=[0], selection_seeds=[9]))
