"""The plots of a small run set (one epoch, runs outside any suite, long run names): what is
drawn equals the written metrics, and no legend or title covers data, ticks or the edge."""

from __future__ import annotations

import json
import math

import pytest

from mixupe.bench import plots
from mixupe.bench.summary import summarize
from mixupe.engine.config import TrainConfig
from test_report import METRICS, write_run

# Per dataset, method and seed: (validation accuracy, test accuracy).
RUNS = {
    ("digits", "erm"): {0: (0.60, 0.62), 1: (0.58, 0.57)},
    ("digits", "mixup"): {0: (0.52, 0.50), 1: (0.51, 0.53)},
    ("digits", "mixupe"): {0: (0.52, 0.51), 1: (0.55, 0.52)},
    ("satimage", "erm"): {0: (0.80, 0.79), 1: (0.83, 0.81)},
}
# Reliability bins: many low-confidence samples in the lower left, where a legend used to be.
RELIABILITY = {"conf": [0.05, 0.15, 0.25, 0.6, 0.95], "acc": [0.02, 0.12, 0.3, 0.7, 0.97],
               "count": [40, 30, 20, 20, 60]}


def config(dataset: str, method: str, seed: int) -> TrainConfig:
    return TrainConfig(dataset=dataset, method=method, epochs=1, seed=seed,
                       model_options={"hidden": (32,)})


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("plots")
    for (dataset, method), seeds in RUNS.items():
        for seed, (val, test) in seeds.items():
            write_run(tmp_path, config(dataset, method, seed), val_acc=val, epochs=1,
                      test={m: test if m == "acc" else 0.1 for m in METRICS},
                      reliability=RELIABILITY)
    (summary,) = summarize(tmp_path)
    kept, real_close = [], plots.plt.close
    # The plots close their figures: keep them open for inspection instead.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots.plt, "close", kept.append)
        written = plots.plot_suite(summary, tmp_path / "out")
    names = [p.name.removeprefix("runs-outside-any-suite-") for p in written]
    assert names == ["learning-curves.png", "accuracy.png", "reliability.png"]  # no baseline
    assert len(kept) == 3
    for fig in kept:
        fig.canvas.draw()
    yield summary, dict(zip(("curves", "accuracy", "reliability"), kept, strict=True))
    for fig in kept:
        real_close(fig)


def _extents(artists, renderer):
    return [a.get_window_extent(renderer) for a in artists if a.get_visible() and a.get_text()]


def test_learning_curves_show_the_mean_over_seeds_at_epoch_one(figures):
    _, figs = figures
    fig = figs["curves"]
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}
    assert set(axes) == {"digits", "satimage"}
    for (dataset, method), seeds in RUNS.items():
        arm = config(dataset, method, 0).run_name().split("/", 1)[1].rsplit("/", 1)[0]
        lines = [line for line in axes[dataset].get_lines()
                 if line.get_label().startswith(arm + "/")]
        assert len(lines) == 1, (dataset, method)
        mean = sum(v for v, _ in seeds.values()) / len(seeds) * 100
        assert list(lines[0].get_xdata()) == [1]
        assert lines[0].get_ydata()[0] == pytest.approx(mean)
    for ax in axes.values():
        # Whole epochs only: one tick at epoch 1, the axis around it.
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks == [1]


@pytest.mark.parametrize("kind", ["curves", "accuracy", "reliability"])
def test_title_and_legends_stay_clear_of_panels_ticks_and_edges(figures, kind):
    _, figs = figures
    fig = figs[kind]
    renderer = fig.canvas.get_renderer()
    edge = fig.bbox
    title = fig._suptitle
    assert title is not None and title.get_text()
    box = title.get_window_extent(renderer)
    assert edge.x0 - 1 <= box.x0 and box.x1 <= edge.x1 + 1, "the title is clipped"
    panels = [ax for ax in fig.axes if ax.get_visible()]
    legends = [ax.get_legend() for ax in panels if ax.get_legend() is not None] + fig.legends
    if kind != "accuracy":
        assert legends, "the arms are not named"
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert edge.x0 - 1 <= box.x0 and box.x1 <= edge.x1 + 1, "a legend spills out"
        assert edge.y0 - 1 <= box.y0 and box.y1 <= edge.y1 + 1, "a legend spills out"
        for ax in panels:
            assert not box.overlaps(ax.get_window_extent(renderer)), "a legend covers a panel"
            ticks = ax.get_xticklabels() + ax.get_yticklabels()
            for label in _extents(ticks, renderer):
                assert not box.overlaps(label), "a legend covers tick labels"


def test_reliability_panel_plots_the_written_bins(figures):
    _, figs = figures
    ax = next(a for a in figs["reliability"].axes if a.get_title() == "digits")
    solid = [line for line in ax.get_lines() if "ECE" in line.get_label()]
    assert len(solid) == 3  # one per arm
    total = sum(RELIABILITY["count"])
    enough = max(plots.MIN_BIN_SAMPLES, plots.MIN_BIN_SHARE * total)
    expected = [(c, a) for c, a, n in zip(RELIABILITY["conf"], RELIABILITY["acc"],
                                          RELIABILITY["count"], strict=True) if n >= enough]
    for line in solid:
        points = list(zip(line.get_xdata(), line.get_ydata(), strict=True))
        assert len(points) == len(expected)
        for (x, y), (c, a) in zip(points, expected, strict=True):
            assert math.isclose(x, c) and math.isclose(y, a)


def test_cost_plot_places_each_arm_at_its_wall_ratio_and_paired_gain(tmp_path):
    """x: the arm's mean wall time over the baseline's (from the files), y: the paired mean."""
    from test_report import SUITE, write_suite_runs

    write_suite_runs(tmp_path, SUITE, 11, wall=1.0)
    walls = {"erm": 2.0, "mixup": 4.0, "mixupe": 10.0}  # per method, every run
    for result in tmp_path.rglob("result.json"):
        method = result.relative_to(tmp_path).parts[2].split("-")[0]
        data = json.loads(result.read_text())
        data["wall_time_s"] = walls[method]
        result.write_text(json.dumps(data))
    (summary,) = summarize(tmp_path)
    kept = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots.plt, "close", kept.append)
        assert plots.plot_cost(summary, tmp_path / "cost.png") is not None
    (fig,) = kept
    for dataset in ("digits", "satimage"):
        ax = next(a for a in fig.axes if a.get_title() == dataset)
        drawn = {t.get_text(): t.xy for t in ax.texts}
        assert set(drawn) == {"ERM", "Mixup", "MixupE"}
        assert drawn["Mixup"] == (1.0, 0.0)
        for arm, method in (("ERM", "erm"), ("MixupE", "mixupe")):
            cell = summary.cell(dataset, arm)
            own = cell.test["acc"]
            base = summary.cell(dataset, "Mixup").test["acc"]
            gain = sum((own[s] - base[s]) * 100 for s in own) / len(own)  # plain loop
            x, y = drawn[arm]
            assert x == pytest.approx(walls[method] / walls["mixup"])
            assert y == pytest.approx(gain)
    plots.plt.close(fig)
