"""PNG plots of a suite summary: learning curves, accuracy with intervals, reliability diagrams.

Uses matplotlib's Agg backend (no display needed). One figure per kind and suite, with one
panel per dataset.

Example:
    >>> from mixupe.bench.summary import SuiteSummary
    >>> plot_suite(SuiteSummary("s", "", [0], [0], None, [], [], []), ".")
    []
"""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, MaxNLocator

from mixupe.bench.summary import CellSummary, SuiteSummary

__all__ = ["plot_accuracy", "plot_cost", "plot_differences", "plot_learning_curves",
           "plot_reliability", "plot_suite"]

MIN_BIN_SAMPLES = 5
MIN_BIN_SHARE = 0.005


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "suite"


LEGEND_FONT = 7
# Inches per character of a legend entry at LEGEND_FONT points (a generous average).
_LEGEND_CHAR_WIDTH = 0.065


def _panels(n: int, *, width: float = 4.2, height: float = 3.4, legend: list[str] | None = None,
            shared_legend: bool = False):
    """A grid of ``n`` panels (at most 3 per row) laid out by matplotlib's constrained layout,
    which keeps legends placed outside the panels and the title inside the figure.

    ``legend``: the entries of the legend that :func:`_legend_beside` puts to the right of
    each panel (or, with ``shared_legend``, one legend right of the whole grid); the figure
    gets room for it, so long run names never cover the data.
    """
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    beside = 0.0
    if legend:
        beside = 0.6 + _LEGEND_CHAR_WIDTH * max(len(entry) for entry in legend)
    # At least about 6.5 inches wide, so the title of a one-panel figure fits.
    fig_width = max(width * cols + beside * (1 if shared_legend else cols), 6.5)
    fig, axes = plt.subplots(rows, cols, figsize=(fig_width, height * rows), squeeze=False,
                             layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _legend_beside(ax) -> None:
    """The panel's legend outside it, on the right: it covers neither data nor tick labels."""
    ax.legend(fontsize=LEGEND_FONT, loc="center left", bbox_to_anchor=(1.02, 0.5),
              borderaxespad=0.0, frameon=False)


def _save(fig, path: str | Path, title: str, *, fontsize: float = 10) -> Path:
    """Give ``fig`` its title, wrapped to the figure's width, save it and close it."""
    chars = max(20, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))
    wrapped = "\n".join(textwrap.fill(line, chars) for line in title.split("\n"))
    fig.suptitle(wrapped, fontsize=fontsize)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _epoch_axis(ax, epochs: int) -> None:
    """Whole epochs only, with room around the first and last, also for a single epoch."""
    ax.set_xlim(0.5, epochs + 0.5)
    if epochs <= 12:
        ax.set_xticks(range(1, epochs + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _colors(arms: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {arm: cmap(i % 10) for i, arm in enumerate(arms)}


def _datasets_with(summary: SuiteSummary, predicate) -> list[str]:
    return [d for d in summary.datasets
            if any(predicate(c) for c in summary.cells if c.dataset == d)]


def plot_learning_curves(summary: SuiteSummary, path: str | Path) -> Path | None:
    """Validation accuracy per epoch, mean over seeds (band: min to max), per arm and dataset."""
    datasets = _datasets_with(summary, lambda c: any(c.curves.values()))
    if not datasets:
        return None
    colors = _colors(summary.arms)
    cells = {d: [c for c in summary.cells if c.dataset == d and any(c.curves.values())]
             for d in datasets}
    labels = {d: [f"{c.arm} (n={sum(1 for v in c.curves.values() if v)})" for c in cells[d]]
              for d in datasets}
    # One legend for the figure when every panel would show the same one.
    shared = len({tuple(v) for v in labels.values()}) == 1
    fig, axes = _panels(len(datasets), legend=[x for v in labels.values() for x in v],
                        shared_legend=shared)
    for ax, dataset in zip(axes, datasets, strict=True):
        longest = 1
        for cell in cells[dataset]:
            curves = [c for c in cell.curves.values() if c]
            length = min(len(c) for c in curves)
            longest = max(longest, length)
            epochs = list(range(1, length + 1))
            cols = [[c[e] * 100 for c in curves] for e in range(length)]
            mean = [sum(v) / len(v) for v in cols]
            ax.plot(epochs, mean, marker="o", ms=3, color=colors[cell.arm],
                    label=f"{cell.arm} (n={len(curves)})")
            if len(curves) > 1:
                ax.fill_between(epochs, [min(v) for v in cols], [max(v) for v in cols],
                                color=colors[cell.arm], alpha=0.15, lw=0)
        ax.set_title(dataset)
        _epoch_axis(ax, longest)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        if not shared:
            _legend_beside(ax)
    if shared:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center",
                   fontsize=LEGEND_FONT, frameon=False)
    return _save(fig, path, f"{summary.name}: validation accuracy per epoch (mean over seeds; "
                            "band: min-max)")


def plot_accuracy(summary: SuiteSummary, path: str | Path) -> Path | None:
    """Test accuracy per arm with 95 % confidence intervals, one panel per dataset."""
    datasets = _datasets_with(summary, lambda c: "acc" in c.ci)
    if not datasets:
        return None
    colors = _colors(summary.arms)
    fig, axes = _panels(len(datasets))
    for ax, dataset in zip(axes, datasets, strict=True):
        cells: list[CellSummary] = [c for c in summary.cells
                                    if c.dataset == dataset and "acc" in c.ci]
        for i, cell in enumerate(cells):
            mean, half = cell.ci["acc"]
            err = half * 100 if math.isfinite(half) else 0.0
            ax.errorbar([i], [mean * 100], yerr=[err], fmt="o", capsize=5, ms=7,
                        color=colors[cell.arm])
            # The individual seeds, so a reader sees the spread behind the interval.
            seeds = list(cell.test["acc"].values())
            ax.scatter([i + 0.12] * len(seeds), [v * 100 for v in seeds], s=10,
                       color=colors[cell.arm], alpha=0.5)
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([c.arm for c in cells], rotation=25, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(cells) - 0.4)
        # An interval may reach past 0 % or 100 %; accuracy cannot, so the axis stops there.
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, -1.0), min(high, 101.0))
        ax.set_title(dataset)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, f"{summary.name}: final-epoch test accuracy, mean ± 95 % CI "
                            "(dots: seeds)")


def plot_differences(summary: SuiteSummary, path: str | Path) -> Path | None:
    """Paired test-accuracy difference of every arm minus the baseline, with 95 % intervals.

    One panel per dataset; the dots are the per-seed differences, the dashed line is zero.
    """
    if summary.baseline is None:
        return None
    datasets = _datasets_with(summary, lambda c: "acc" in c.paired)
    if not datasets:
        return None
    colors = _colors(summary.arms)
    arms = [a for a in summary.arms if a != summary.baseline]
    fig, axes = _panels(len(datasets), width=4.6, height=0.45 * len(arms) + 1.6)
    for ax, dataset in zip(axes, datasets, strict=True):
        base = summary.cell(dataset, summary.baseline)
        for row, arm in enumerate(arms):
            cell = summary.cell(dataset, arm)
            paired = cell.paired.get("acc") if cell is not None else None
            if cell is None or paired is None or base is None:
                continue
            y = len(arms) - 1 - row
            err = paired.half * 100 if math.isfinite(paired.half) else 0.0
            ax.errorbar([paired.mean * 100], [y], xerr=[err], fmt="o", capsize=4, ms=6,
                        color=colors[arm])
            seeds = sorted(set(cell.test["acc"]) & set(base.test["acc"]))
            per_seed = [(cell.test["acc"][s] - base.test["acc"][s]) * 100 for s in seeds]
            ax.scatter(per_seed, [y - 0.18] * len(per_seed), s=9, color=colors[arm], alpha=0.5)
        ax.axvline(0.0, color="grey", ls="--", lw=1)
        ax.set_yticks(range(len(arms)))
        ax.set_yticklabels(list(reversed(arms)), fontsize=8)
        ax.set_ylim(-0.7, len(arms) - 0.4)
        ax.set_title(dataset)
        ax.set_xlabel(f"test accuracy minus {summary.baseline} (pp)")
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, path, f"{summary.name}: paired difference against {summary.baseline}, "
                            "mean ± 95 % CI (dots: seeds)")


def plot_cost(summary: SuiteSummary, path: str | Path) -> Path | None:
    """Each arm's paired test-accuracy difference against the baseline (y, 95 % interval)
    over its cost, the mean wall time of its runs relative to the baseline's (x, log scale).

    One panel per dataset; the baseline sits at (1, 0). Points are labelled with their arm.
    """
    if summary.baseline is None:
        return None

    def points(dataset: str) -> list[tuple[str, float, float, float]]:
        base = summary.cell(dataset, summary.baseline)
        if base is None or not math.isfinite(base.chosen_wall_s) or base.chosen_wall_s <= 0:
            return []
        out = [(summary.baseline, 1.0, 0.0, 0.0)]
        for arm in summary.arms:
            cell = summary.cell(dataset, arm)
            paired = cell.paired.get("acc") if cell is not None else None
            if arm == summary.baseline or paired is None or not math.isfinite(cell.chosen_wall_s):
                continue
            half = paired.half * 100 if math.isfinite(paired.half) else 0.0
            out.append((arm, cell.chosen_wall_s / base.chosen_wall_s, paired.mean * 100, half))
        return out if len(out) > 1 else []

    drawn = {d: pts for d in summary.datasets if (pts := points(d))}
    if not drawn:
        return None
    colors = _colors(summary.arms)
    fig, axes = _panels(len(drawn), width=6.0, height=4.6)
    for ax, (dataset, pts) in zip(axes, drawn.items(), strict=True):
        for arm, ratio, mean, half in pts:
            ax.errorbar([ratio], [mean], yerr=[half], fmt="o", capsize=3, ms=5,
                        color=colors[arm])
            ax.annotate(arm, (ratio, mean), xytext=(4, 3), textcoords="offset points",
                        fontsize=6, color=colors[arm])
        ax.axhline(0.0, color="grey", ls="--", lw=1)
        ax.set_xscale("log")
        for axis_ticks in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            axis_ticks(FuncFormatter(lambda v, _: f"{v:.3g}x"))
        ax.set_title(dataset)
        ax.set_xlabel(f"s/run relative to {summary.baseline} (log scale)")
        ax.set_ylabel(f"test accuracy minus {summary.baseline} (pp)")
        ax.grid(alpha=0.3, which="both")
    return _save(fig, path, f"{summary.name}: accuracy gain over {summary.baseline} (mean ± "
                            "95 % CI, paired by seed) against cost (mean wall time of a run)")


def plot_reliability(summary: SuiteSummary, path: str | Path) -> Path | None:
    """Reliability diagrams (accuracy against confidence per bin), pooled over seeds."""
    datasets = _datasets_with(summary, lambda c: c.reliability is not None)
    if not datasets:
        return None
    colors = _colors(summary.arms)
    # The longest legend entry: an arm's label with its ECE, or the diagonal's.
    labels = ["perfect calibration"] + [f"{c.arm} (ECE 100.0 %)" for c in summary.cells
                                        if c.dataset in datasets and c.reliability]
    fig, axes = _panels(len(datasets), height=4.0, width=4.0, legend=labels)
    for ax, dataset in zip(axes, datasets, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
        for cell in (c for c in summary.cells if c.dataset == dataset and c.reliability):
            rel = cell.reliability or {}
            bins = [(cf, ac, n) for cf, ac, n in zip(rel["conf"], rel["acc"], rel["count"],
                                                     strict=True)
                    if n and math.isfinite(cf) and math.isfinite(ac)]
            if not bins:
                continue
            total = sum(n for _, _, n in bins)
            # Bins holding a handful of samples are noise: shown as hollow markers, off the line.
            enough = max(MIN_BIN_SAMPLES, MIN_BIN_SHARE * total)
            solid = [b for b in bins if b[2] >= enough]
            sparse = [b for b in bins if b[2] < enough]
            ece = cell.ci.get("ece", (math.nan, math.nan))[0]
            color = colors[cell.arm]
            ax.plot([b[0] for b in solid], [b[1] for b in solid], lw=1.2, color=color,
                    label=f"{cell.arm} (ECE {ece * 100:.1f} %)")
            # Marker area proportional to the bin's share of the samples.
            ax.scatter([b[0] for b in solid], [b[1] for b in solid], color=color, alpha=0.6,
                       s=[max(6.0, 300.0 * b[2] / total) for b in solid], edgecolors="none")
            ax.scatter([b[0] for b in sparse], [b[1] for b in sparse], s=14,
                       facecolors="none", edgecolors=color, linewidths=0.8)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(-0.03, 1.03)
        ax.set_aspect("equal")
        ax.set_title(dataset)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        _legend_beside(ax)
    return _save(fig, path, f"{summary.name}: reliability on test, pooled over seeds\n"
                            "(above the diagonal: under-confident; marker area: share of "
                            f"samples; hollow: bins with < {MIN_BIN_SAMPLES} samples or "
                            f"< {MIN_BIN_SHARE * 100:g} % of them)", fontsize=9)


def plot_suite(summary: SuiteSummary, out_dir: str | Path) -> list[Path]:
    """Write every plot of ``summary`` into ``out_dir``; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = _slug(summary.name)
    written = [
        plot_differences(summary, out / f"{stem}-differences.png"),
        plot_cost(summary, out / f"{stem}-cost.png"),
        plot_learning_curves(summary, out / f"{stem}-learning-curves.png"),
        plot_accuracy(summary, out / f"{stem}-accuracy.png"),
        plot_reliability(summary, out / f"{stem}-reliability.png"),
    ]
    return [p for p in written if p is not None]
