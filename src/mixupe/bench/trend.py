"""The trend with training-set size: paired accuracy differences of suite ``scale`` by size.

Reads only what :func:`mixupe.bench.summary.summarize` computed (each arm minus the suite's
baseline, and the suite's declared contrasts, paired over seeds with 95 % Student-t
intervals, at the final epoch and at the best-validation epoch) and lays it out by
training-set size: one table per domain (TrainConfig ``dataset``) with the sizes as columns,
and plots against size on a log axis, one panel per domain. The size of a dataset label is
the ``subset`` its runs trained on, or, for a label without a subset (every training row),
the number in the label (``letter-14k (all)``: 14000).

Example:
    >>> size_from_label("letter-14k (all)"), size_from_label("fsdd-300")
    (14000, 300)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mixupe.bench.formats import fmt_paired  # one format for every paired difference
from mixupe.bench.rundirs import RunReader
from mixupe.bench.suites import read_manifests
from mixupe.bench.summary import BEST, Paired, SuiteSummary
from mixupe.errors import ConfigError

__all__ = ["TREND_SUITES", "TrendRow", "complete_rows", "dataset_sizes", "plot_trend",
           "render_trend", "size_from_label", "trend_rows", "trend_section"]

# Suites laid out by size; the equal-compute plot compares the first arm with the others.
TREND_SUITES = ("scale",)
EQUAL_COMPUTE = ("MixupE v3 (sign -1, released)", "Mixup at equal compute", "Mixup")


@dataclass(frozen=True)
class TrendRow:
    """One comparison ``a - b`` on one dataset label of ``size`` training samples."""

    domain: str
    dataset: str
    size: int
    a: str
    b: str
    final: Paired | None
    best: Paired | None

    @property
    def comparison(self) -> str:
        """``"A − B"``."""
        return f"{self.a} − {self.b}"


def size_from_label(label: str) -> int | None:
    """The training-set size a label names (``2k`` -> 2000, ``-300`` -> 300), or None."""
    found = re.search(r"(\d+(?:\.\d+)?)k\b", label)
    if found:
        return round(float(found.group(1)) * 1000)
    found = re.search(r"-(\d+)\b", label)
    return int(found.group(1)) if found else None


def dataset_sizes(runs_root: str | Path, suite: str) -> dict[str, tuple[str, int]]:
    """Dataset label -> (domain, training-set size), from the configs of the suite's runs."""
    record = next((m for m in read_manifests(runs_root) if m.get("suite") == suite), None)
    if record is None:
        raise ConfigError(f"no suite {suite!r} under {str(runs_root)!r}; run `mixupe bench "
                          f"{suite} --runs-root {runs_root}` first")
    reader = RunReader(runs_root)
    out: dict[str, tuple[str, int]] = {}
    for cell in record["cells"]:
        label = cell["dataset"]
        if label in out:
            continue
        names = [n for p in cell["points"] for n in p["runs"].values()]
        config = next((reader(n).config for n in names if reader(n).status != "missing"), None)
        if not config:
            continue
        subset = dict(config.get("data_options") or {}).get("subset")
        size = int(subset) if isinstance(subset, int) else size_from_label(label)
        if size is None:
            raise ConfigError(f"suite {suite!r}, dataset {label!r}: its runs set no subset and "
                              f"the label names no size; put the size in the label, e.g. "
                              f"'{label}-14k'")
        out[label] = (str(config.get("dataset", label)), size)
    return out


def trend_rows(summary: SuiteSummary,
               sizes: Mapping[str, tuple[str, int]]) -> list[TrendRow]:
    """Every arm minus the baseline, then every declared contrast, per sized dataset label.

    An arm minus the baseline is left out where the suite declares the reverse contrast
    (``Mixup - ERM`` replaces ``ERM - Mixup``)."""
    rows: list[TrendRow] = []
    reversed_ = {(b, a) for a, b in summary.contrasts}
    for label in summary.datasets:
        if label not in sizes:
            continue
        domain, size = sizes[label]
        seen = set()
        for cell in summary.cells:
            if (cell.dataset == label and cell.paired and summary.baseline
                    and (cell.arm, summary.baseline) not in reversed_):
                seen.add((cell.arm, summary.baseline))
                rows.append(TrendRow(domain, label, size, cell.arm, summary.baseline,
                                     cell.paired.get("acc"), cell.paired.get(BEST)))
        for (dataset, a, b), result in summary.contrast_results.items():
            if dataset == label and (a, b) not in seen:
                seen.add((a, b))
                rows.append(TrendRow(domain, label, size, a, b, result.get("acc"),
                                     result.get(BEST)))
    return rows


TREND_INTRO = (
    "Test accuracy of the first arm minus the second (pp), paired over the reported seeds, "
    "mean ± 95 % Student-t half-width, at each training-set size; **bold**: the interval "
    "excludes zero (unadjusted; the suite's tables give Holm-adjusted p-values). final: the "
    "last epoch; best-val: the epoch of best validation accuracy, chosen on validation alone. "
    "Every seed has its own split and subset, so sizes are independent samples. A size "
    "whose comparison lacks some reported seeds (runs still to train) shows how many pairs "
    "it has, (n=k of N), and is left out of the plots."
)


def render_trend(rows: Sequence[TrendRow], summary: SuiteSummary) -> str:
    """One Markdown table per domain: comparisons x {final, best-val}, sizes as columns."""
    lines: list[str] = []
    for domain in dict.fromkeys(r.domain for r in rows):
        mine = [r for r in rows if r.domain == domain]
        labels = sorted(dict.fromkeys(r.dataset for r in mine),
                        key=lambda d: next(r.size for r in mine if r.dataset == d))
        lines += [f"#### {domain}", "", "| Comparison (pp) | Epoch | " + " | ".join(labels) + " |",
                  "|---|---|" + "---|" * len(labels)]
        for comparison in dict.fromkeys(r.comparison for r in mine):
            by = {r.dataset: r for r in mine if r.comparison == comparison}
            for kind in ("final", "best-val"):
                cells = [_cell(getattr(by[d], "final" if kind == "final" else "best"),
                               len(summary.seeds)) if d in by else "–" for d in labels]
                lines.append(f"| {comparison if kind == 'final' else ''} | {kind} | "
                             + " | ".join(cells) + " |")
        cost = _cost_row(summary, labels)
        if cost:
            lines.append(cost)
        lines.append("")
    return "\n".join(lines)


def _cell(paired: Paired | None, n_seeds: int) -> str:
    """The paired difference, with its pair count where some reported seeds are missing."""
    text = fmt_paired(paired)
    if paired is not None and text != "–" and paired.n < n_seeds and "(n=" not in text:
        text += f" (n={paired.n} of {n_seeds})"
    return text


def complete_rows(rows: Sequence[TrendRow], n_seeds: int) -> list[TrendRow]:
    """The rows whose final-epoch comparison has every reported seed."""
    return [r for r in rows if r.final is not None and r.final.n >= n_seeds]


def _cost_row(summary: SuiteSummary, labels: Sequence[str]) -> str:
    """Mean s/run of the equal-compute pair and their ratio: did the stretch match the cost?"""
    a, b = EQUAL_COMPUTE[0], EQUAL_COMPUTE[1]
    cells = []
    for label in labels:
        ca, cb = summary.cell(label, a), summary.cell(label, b)
        wa = ca.chosen_wall_s if ca is not None else math.nan
        wb = cb.chosen_wall_s if cb is not None else math.nan
        cells.append(f"{wa:.0f} / {wb:.0f} ({wa / wb:.2f}x)"
                     if math.isfinite(wa) and math.isfinite(wb) and wb > 0 else "–")
    if all(c == "–" for c in cells):
        return ""
    return f"| s/run: {a} / {b} | | " + " | ".join(cells) + " |"


def plot_trend(rows: Sequence[TrendRow], path: str | Path, *,
               pairs: Sequence[tuple[str, str]], title: str,
               best: bool = False) -> Path | None:
    """Differences ``a - b`` (pp, 95 % intervals) against size (log axis), a panel per domain.

    Solid: the final epoch; with ``best``, dashed: the best-validation epoch. Points of
    different series are spread a little along the axis so their bars do not overlap.
    Returns None when no row matches ``pairs``.
    """
    from mixupe.bench.plots import _legend_beside, _panels, _save

    wanted = [r for r in rows if (r.a, r.b) in set(pairs)
              and r.final is not None and math.isfinite(r.final.mean)]
    if not wanted:
        return None
    domains = list(dict.fromkeys(r.domain for r in wanted))
    present = [p for p in pairs if any((r.a, r.b) == p for r in wanted)]
    names = [f"{a} − {b}" for a, b in present]
    fig, axes = _panels(len(domains), legend=[n + " (best-val)" for n in names],
                        shared_legend=False)
    colours = [f"C{i % 10}" for i in range(len(present))]
    for ax, domain in zip(axes, domains, strict=True):
        series = [(i, kind) for i in range(len(present))
                  for kind in (("final", "best") if best else ("final",))]
        for j, (i, kind) in enumerate(series):
            pts = sorted((r.size, getattr(r, kind)) for r in wanted
                         if r.domain == domain and (r.a, r.b) == present[i])
            pts = [(s, p) for s, p in pts if p is not None and math.isfinite(p.mean)]
            if not pts:
                continue
            spread = 1.0 + 0.04 * (j - (len(series) - 1) / 2)
            ax.errorbar([s * spread for s, _ in pts], [100 * p.mean for _, p in pts],
                        yerr=[100 * p.half if math.isfinite(p.half) else 0.0 for _, p in pts],
                        color=colours[i], marker="o" if kind == "final" else "s",
                        linestyle="-" if kind == "final" else "--", capsize=3,
                        label=names[i] + (" (best-val)" if kind == "best" else ""))
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.set_xscale("log")
        sizes = sorted({r.size for r in wanted if r.domain == domain})
        ax.set_xticks(sizes, [f"{s / 1000:g}k" if s >= 1000 else str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("training-set size (log)")
        ax.set_ylabel("test accuracy difference (pp)")
        ax.set_title(domain, fontsize=9)
        _legend_beside(ax)
    return _save(fig, path, title)


def trend_section(summaries: Sequence[SuiteSummary], runs_root: str | Path,
                  out_dir: str | Path, *, plots: bool = True) -> str:
    """The report's trend section (Markdown with plot links), or "" when no trend suite has
    results under ``runs_root``. Plots are written to ``out_dir``."""
    parts = []
    for summary in summaries:
        if summary.name not in TREND_SUITES or not any(c.test for c in summary.cells):
            continue
        rows = trend_rows(summary, dataset_sizes(runs_root, summary.name))
        if not rows:
            continue
        parts += [f"## The trend with training-set size (suite `{summary.name}`)", "",
                  TREND_INTRO, "", render_trend(rows, summary)]
        if plots:
            parts += _trend_plots(complete_rows(rows, len(summary.seeds)), summary,
                                  Path(out_dir))
    return "\n".join(parts) + ("\n" if parts else "")


def _trend_plots(rows: Sequence[TrendRow], summary: SuiteSummary, out_dir: Path) -> list[str]:
    base = summary.baseline or "Mixup"
    arms = [a for a in summary.arms if a != base]
    figures: list[tuple[str, list[tuple[str, str]], str, bool]] = [
        ("gain", [(a, base) for a in arms], f"Each arm minus {base} (final epoch)", False),
        ("mixup_erm", [("Mixup", "ERM")], "Mixup minus ERM", True),
        ("equal_compute", [(EQUAL_COMPUTE[0], EQUAL_COMPUTE[1]),
                           (EQUAL_COMPUTE[0], EQUAL_COMPUTE[2])],
         "MixupE v3 against Mixup at equal compute and at its own schedule", True),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    links = []
    for key, pairs, title, best in figures:
        path = plot_trend(rows, out_dir / f"{summary.name}_trend_{key}.png", pairs=pairs,
                          title=f"Suite {summary.name}: {title}, against training-set size",
                          best=best)
        if path is not None:
            links.append(f"![{path.stem}]({path.name})")
    return [*links, ""] if links else []
