"""The trend section against synthetic packs: every interval recomputed here with numpy/scipy.

A fake suite named ``scale`` (two letter sizes, one with a subset and one without, and a
digits size) gets a manifest and one pack of complete runs whose final and best-epoch test
accuracies are drawn here; the expected paired differences are computed from those draws.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mixupe.bench.report import write_report
from mixupe.bench.suites import expand, manifest, parse_suite, write_manifest
from mixupe.bench.summary import summarize
from mixupe.bench.trend import (
    complete_rows,
    dataset_sizes,
    plot_trend,
    trend_rows,
    trend_section,
)
from mixupe.errors import ConfigError

V3, EC = "MixupE v3 (sign -1, released)", "Mixup at equal compute"
SUITE = {
    "name": "scale",
    "seeds": [0, 1, 2, 3],
    "selection_seeds": [9],
    "baseline": "Mixup",
    "contrasts": [[V3, EC], ["Mixup", "ERM"]],
    "defaults": {"epochs": 4},
    "datasets": [
        {"label": "letter-2k", "name": "letter", "model": "mlp", "data_options": {"subset": 2000}},
        {"label": "letter-4k (all)", "name": "letter", "model": "mlp"},
        {"label": "digits-300", "name": "digits", "model": "mlp", "data_options": {"subset": 300}},
    ],
    "arms": [
        {"label": "ERM", "method": "erm"},
        {"label": "Mixup", "method": "mixup", "alpha": 0.5},
        {"label": V3, "method": "mixupe", "alpha": 0.5},
        {"label": EC, "method": "mixup", "alpha": 0.5,
         "equal_compute": {"of": V3, "ratio": {"letter": 2.0, "digits": 1.5}}},
    ],
}
COMPARISONS = [(V3, "Mixup"), (EC, "Mixup"), (V3, EC), ("Mixup", "ERM")]


def write_scale_root(root: Path, suite_dict: dict = SUITE, seed: int = 0) -> dict:
    """Manifest and one pack; returns (dataset, arm, seed) -> (final acc, best acc, wall)."""
    rng = np.random.default_rng(seed)
    suite = parse_suite(suite_dict)
    plans = expand(suite)
    write_manifest(root, manifest(suite, plans))
    runs, draws = {}, {}
    for plan in plans:
        for seed_, cfg in plan.points[0].configs.items():
            acc, best = rng.uniform(0.6, 0.9), rng.uniform(0.6, 0.9)
            wall = rng.uniform(5.0, 20.0)
            draws[(plan.dataset, plan.arm, seed_)] = (acc, best, wall)
            epochs = [{"epoch": e, "time_s": wall / cfg.epochs, "val": {"acc": acc}}
                      for e in range(1, cfg.epochs + 1)]
            runs[cfg.run_name()] = {
                "status": "complete", "config": cfg.to_dict(), "failure": "",
                "result": {"failed": False, "val": {"acc": acc}, "test": {"acc": acc},
                           "best": {"epoch": 2, "test": {"acc": best}}, "wall_time_s": wall},
                "epochs": epochs}
    (root / "_packs").mkdir(parents=True)
    with gzip.open(root / "_packs" / "scale--all.json.gz", "wt") as f:
        json.dump({"format": 1, "runs": runs}, f)
    return draws


def expected(draws: dict, dataset: str, a: str, b: str, which: int) -> str:
    seeds = SUITE["seeds"]  # the reported seeds (the selection seed's runs exist but not here)
    diff = np.array([draws[(dataset, a, s)][which] - draws[(dataset, b, s)][which]
                     for s in seeds])
    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff))
    return f"{100 * diff.mean():+.2f} ± {100 * half:.2f}"


def parse_tables(text: str) -> dict:
    """domain -> {(comparison, kind): {dataset label: cell}} from the trend's Markdown."""
    out, domain, header, comparison = {}, None, None, None
    for line in text.splitlines():
        if line.startswith("#### "):
            domain, header = line[5:].strip(), None
            out[domain] = {}
        elif domain and line.startswith("| Comparison"):
            header = [c.strip() for c in line.strip("|").split("|")][2:]
        elif domain and header and line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            comparison = cells[0] or comparison
            out[domain][(comparison, cells[1])] = dict(zip(header, cells[2:], strict=True))
    return out


def test_trend_tables_hold_the_paired_intervals_at_each_size(tmp_path):
    draws = write_scale_root(tmp_path)
    text = trend_section(summarize(tmp_path), tmp_path, tmp_path / "out", plots=False)
    tables = parse_tables(text)
    assert set(tables) == {"letter", "digits"}
    for domain, labels in (("letter", ["letter-2k", "letter-4k (all)"]),
                           ("digits", ["digits-300"])):
        for a, b in COMPARISONS:
            for kind, which in (("final", 0), ("best-val", 1)):
                row = tables[domain][(f"{a} − {b}", kind)]
                assert ("ERM − Mixup", kind) not in tables[domain]  # the reverse is declared
                assert list(row) == labels  # columns ordered by size
                for label in labels:
                    assert row[label].replace("**", "") == expected(draws, label, a, b, which)


def test_equal_compute_cost_row_shows_the_wall_time_ratio(tmp_path):
    draws = write_scale_root(tmp_path, seed=3)
    text = trend_section(summarize(tmp_path), tmp_path, tmp_path / "out", plots=False)
    digits = text.split("#### digits", 1)[1]
    row = next(line for line in digits.splitlines() if line.startswith(f"| s/run: {V3}"))
    wa = np.mean([draws[("digits-300", V3, s)][2] for s in SUITE["seeds"]])
    wb = np.mean([draws[("digits-300", EC, s)][2] for s in SUITE["seeds"]])
    assert f"{wa:.0f} / {wb:.0f} ({wa / wb:.2f}x)" in row


def test_sizes_come_from_the_runs_subset_or_the_label(tmp_path):
    write_scale_root(tmp_path)
    assert dataset_sizes(tmp_path, "scale") == {
        "letter-2k": ("letter", 2000), "letter-4k (all)": ("letter", 4000),
        "digits-300": ("digits", 300)}


def test_trend_plots_are_written_and_linked(tmp_path):
    write_scale_root(tmp_path)
    out = tmp_path / "out"
    text = trend_section(summarize(tmp_path), tmp_path, out, plots=True)
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["scale_trend_equal_compute.png", "scale_trend_gain.png",
                     "scale_trend_mixup_erm.png"]
    for name in names:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text
    rows = trend_rows(summarize(tmp_path)[0], dataset_sizes(tmp_path, "scale"))
    assert plot_trend(rows, out / "none.png", pairs=[("nobody", "ERM")], title="t") is None


def test_report_has_the_trend_section_only_for_the_scale_suite(tmp_path):
    write_scale_root(tmp_path / "a")
    files = write_report(tmp_path / "a", plots=False)
    assert "## The trend with training-set size (suite `scale`)" in files.text
    other = dict(SUITE, name="not-scale")
    write_scale_root(tmp_path / "b", other)
    assert "The trend with training-set size" not in write_report(tmp_path / "b",
                                                                   plots=False).text


def test_a_label_without_subset_or_size_raises(tmp_path):
    bad = json.loads(json.dumps(SUITE))
    bad["datasets"][1]["label"] = "letter-all"
    write_scale_root(tmp_path, bad)
    with pytest.raises(ConfigError, match="names no size"):
        dataset_sizes(tmp_path, "scale")


def test_a_size_with_missing_seeds_shows_its_pair_count_and_stays_out_of_the_plots(tmp_path):
    """Drop two reported seeds of v3 on digits-300 from the pack: that size's v3 rows hold
    the interval over the two remaining pairs, say "(n=2 of 4)", and are not plotted; the
    complete sizes are unchanged."""
    draws = write_scale_root(tmp_path, seed=5)
    pack = tmp_path / "_packs" / "scale--all.json.gz"
    with gzip.open(pack, "rt") as f:
        data = json.load(f)
    dropped = [name for name, run in data["runs"].items()
               if run["config"]["dataset"] == "digits" and run["config"]["method"] == "mixupe"
               and run["config"]["seed"] in (2, 3)]
    assert len(dropped) == 2
    for name in dropped:
        del data["runs"][name]
    with gzip.open(pack, "wt") as f:
        json.dump(data, f)
    summary = summarize(tmp_path)[0]
    text = trend_section([summary], tmp_path, tmp_path / "out", plots=False)
    cell = parse_tables(text)["digits"][(f"{V3} − Mixup", "final")]["digits-300"]
    diff = np.array([draws[("digits-300", V3, s)][0] - draws[("digits-300", "Mixup", s)][0]
                     for s in (0, 1)])
    half = stats.t.ppf(0.975, 1) * diff.std(ddof=1) / math.sqrt(2)
    assert cell.replace("**", "") == f"{100 * diff.mean():+.2f} ± {100 * half:.2f} (n=2 of 4)"
    full = parse_tables(text)["letter"][(f"{V3} − Mixup", "final")]["letter-2k"]
    assert full.replace("**", "") == expected(draws, "letter-2k", V3, "Mixup", 0)
    rows = trend_rows(summary, dataset_sizes(tmp_path, "scale"))
    kept = complete_rows(rows, len(SUITE["seeds"]))
    assert {(r.dataset, r.a) for r in rows} - {(r.dataset, r.a) for r in kept} == {
        ("digits-300", V3)}
