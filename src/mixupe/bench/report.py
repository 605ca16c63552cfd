"""The benchmark report: per-suite Markdown tables with confidence intervals, from run directories.

The report reads only what is on disk: the suite manifests the runner writes under
``RUNS/_suites/`` and each run's ``config.json``, ``metrics.jsonl`` and ``result.json``.
Runs that belong to no suite (``mixupe train``) are grouped by configuration (all seeds of
the same hyper-parameters together) in an extra table.

Example:
    >>> import tempfile
    >>> try:
    ...     summarize(tempfile.mkdtemp())
    ... except Exception as exc:
    ...     type(exc).__name__
    'ConfigError'
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixupe.bench.reliability import recompute_reliability
from mixupe.bench.rundirs import METRICS, RunRecord, find_runs, read_run
from mixupe.bench.selection import PROTOCOL, choose_point
from mixupe.bench.suites import read_manifests
from mixupe.engine.metrics import holm_adjust, mean_ci, paired_diff_ci, paired_t_pvalue
from mixupe.errors import ConfigError

__all__ = ["CellSummary", "Paired", "SuiteSummary", "render_glance", "render_markdown",
           "stale_quotes", "summarize", "write_report"]

ADHOC = "(runs outside any suite)"
# Metrics compared seed by seed between arms (accuracy first: the Holm family is over it).
PAIRED_METRICS = ("acc", "nll", "ece", "fgsm_acc")


@dataclass(frozen=True)
class Paired:
    """A paired comparison A minus B over the seeds both arms completed.

    ``p`` is the two-sided paired t-test p-value; ``p_holm`` is Holm-adjusted over the
    comparison's family (every arm against the baseline of the suite, or every contrast),
    NaN where no family adjustment applies (only accuracy is adjusted).
    """

    mean: float
    half: float
    n: int
    p: float
    p_holm: float = math.nan

    @property
    def excludes_zero(self) -> bool:
        """Whether the 95 % interval lies entirely on one side of zero."""
        return math.isfinite(self.half) and abs(self.mean) > self.half


@dataclass
class CellSummary:
    """One dataset x arm of a suite after selection."""

    dataset: str
    arm: str
    n_points: int
    method: str = ""
    config_name: str = ""  # the chosen point's run name without seed and hash
    chosen: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    selection_val: float = math.nan
    test: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> seed -> value
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (mean, half)
    paired: dict[str, Paired] = field(default_factory=dict)  # metric -> this arm minus baseline
    curves: dict[int, list[float]] = field(default_factory=dict)  # seed -> val acc per epoch
    reliability: dict[str, list[float]] | None = None
    train_extra: dict[str, float] = field(default_factory=dict)  # e.g. reg_ratio, selected_frac
    failed: int = 0
    missing: int = 0
    selection_pending: int = 0  # grid points whose selection runs have not all finished
    grid: list[tuple[dict[str, Any], float]] = field(default_factory=list)  # params, sel. score
    val_spread: float = math.nan  # sd over seeds of the chosen point's final val accuracy
    runs: int = 0
    wall_s: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def diff(self) -> tuple[float, float, int] | None:
        """Test accuracy minus the baseline's: (mean, half-width, pairs), or None."""
        acc = self.paired.get("acc")
        return None if acc is None else (acc.mean, acc.half, acc.n)

    @property
    def seeds(self) -> list[int]:
        """Seeds of the chosen point with complete test metrics."""
        return sorted(self.test.get("acc", {}))


@dataclass
class SuiteSummary:
    """A whole suite: its cells in (dataset, arm) order and its bookkeeping."""

    name: str
    description: str
    seeds: list[int]
    selection_seeds: list[int]
    baseline: str | None
    datasets: list[str]
    arms: list[str]
    cells: list[CellSummary]
    contrasts: list[tuple[str, str]] = field(default_factory=list)
    # (dataset, A, B) -> metric -> A minus B, for every contrast the suite declares
    contrast_results: dict[tuple[str, str, str], dict[str, Paired]] = field(default_factory=dict)

    def cell(self, dataset: str, arm: str) -> CellSummary | None:
        """The cell of ``dataset`` x ``arm``, if the suite has it."""
        return next((c for c in self.cells if c.dataset == dataset and c.arm == arm), None)

    @property
    def wall_s(self) -> float:
        """Compute spent: the sum of the wall times of every run read."""
        return sum(c.wall_s for c in self.cells)


def _ci(values: Sequence[float]) -> tuple[float, float]:
    if len(values) == 0:
        return math.nan, math.nan
    if len(values) == 1:
        return float(values[0]), math.nan
    mean, half = mean_ci(list(values))
    return float(mean), float(half)


def _aggregate_reliability(records: Sequence[RunRecord], data_cache: dict[Any, Any] | None
                           ) -> dict[str, list[float]] | None:
    """Pool per-bin reliability data over seeds (count-weighted); None when absent.

    Runs whose result.json has no per-bin data are recomputed from their checkpoint when
    ``data_cache`` is a dict (see :mod:`mixupe.bench.reliability`).
    """
    tables = []
    for r in records:
        table = r.final("test").get("reliability")
        if table is None and data_cache is not None:
            table = recompute_reliability(r, cache=data_cache)
        tables.append(table)
    tables = [t for t in tables if isinstance(t, dict) and t.get("count")]
    if not tables:
        return None
    n_bins = len(tables[0]["count"])
    count = [0.0] * n_bins
    conf = [0.0] * n_bins
    acc = [0.0] * n_bins
    for t in tables:
        if len(t["count"]) != n_bins:
            continue
        for b in range(n_bins):
            c = float(t["count"][b])
            count[b] += c
            conf[b] += c * float(t["conf"][b] or 0.0)
            acc[b] += c * float(t["acc"][b] or 0.0)
    return {
        "count": count,
        "conf": [conf[b] / count[b] if count[b] else math.nan for b in range(n_bins)],
        "acc": [acc[b] / count[b] if count[b] else math.nan for b in range(n_bins)],
    }


def _summarize_cell(runs_root: Path, dataset: str, arm: str, points: Sequence[Mapping[str, Any]],
                    selection_seeds: Sequence[int],
                    data_cache: dict[Any, Any] | None = None) -> CellSummary:
    cell = CellSummary(dataset=dataset, arm=arm, n_points=len(points))
    records: list[dict[int, RunRecord]] = []
    for point in points:
        recs = {int(s): read_run(runs_root, name) for s, name in point["runs"].items()}
        records.append(recs)
    scores: list[list[float] | None] = []
    for recs in records:
        chosen_recs = [recs[s] for s in selection_seeds if s in recs]
        ok = chosen_recs and all(r.status == "complete" for r in chosen_recs)
        vals = [r.final("val").get("acc") for r in chosen_recs] if ok else []
        ok = ok and all(isinstance(v, int | float) and math.isfinite(v) for v in vals)
        scores.append([float(v) for v in vals] if ok else None)
    # No choice is announced while a grid point's selection runs are still missing or partial
    # (the runner, too, chooses only after every selection run ended): a partial study must
    # not show a "chosen" point that a later run can displace.
    cell.selection_pending = sum(
        1 for recs in records
        if any(recs[s].status in ("missing", "partial") for s in selection_seeds if s in recs))
    if len(records) > 1 and cell.selection_pending:
        cell.chosen = None
    else:
        cell.chosen = choose_point(scores)
    cell.grid = [(dict(point.get("params", {})),
                  sum(sc) / len(sc) if sc else math.nan)
                 for point, sc in zip(points, scores, strict=True)]
    if cell.chosen is None and len(records) == 1 and any(
            r.status == "complete" for r in records[0].values()):
        cell.chosen = 0  # a single point needs no selection: report the seeds that finished
    # Bookkeeping counts every run that exists for this cell, chosen or not.
    for recs in records:
        for rec in recs.values():
            if rec.status == "missing":
                continue
            cell.runs += 1
            cell.wall_s += rec.wall_s
            if rec.status == "failed":
                cell.failed += 1
                cell.failures.append(f"{rec.name}: {rec.failure or 'diverged'}")
    if cell.chosen is None:
        cell.missing = sum(1 for recs in records for r in recs.values() if r.status != "complete")
        return cell
    chosen = records[cell.chosen]
    cell.params = dict(points[cell.chosen].get("params", {}))
    chosen_scores = scores[cell.chosen] or []
    cell.selection_val = (sum(chosen_scores) / len(chosen_scores)) if chosen_scores else math.nan
    complete = {s: r for s, r in chosen.items() if r.status == "complete"}
    cell.missing = sum(1 for r in chosen.values() if r.status in ("missing", "partial"))
    for metric in METRICS:
        values = {s: r.final("test").get(metric) for s, r in complete.items()}
        values = {s: float(v) for s, v in values.items() if isinstance(v, int | float)}
        if values:
            cell.test[metric] = values
            cell.ci[metric] = _ci([values[s] for s in sorted(values)])
    cell.method = str(next((r.config.get("method", "") for r in complete.values()), ""))
    first = next(iter(chosen.values()))
    cell.config_name = re.sub(r"-?seed\d+-[0-9a-f]+$", "", first.name).rstrip("/")
    cell.curves = {s: r.curve("val", "acc") for s, r in complete.items()}
    vals = [r.final("val").get("acc") for r in complete.values()]
    vals = [float(v) for v in vals if isinstance(v, int | float) and math.isfinite(v)]
    if len(vals) >= 2:
        cell.val_spread = statistics.stdev(vals)
    cell.reliability = _aggregate_reliability(list(complete.values()), data_cache)
    for key in ("reg_ratio", "selected_frac"):
        vals = [r.epochs[-1].get("train", {}).get(key) for r in complete.values() if r.epochs]
        vals = [float(v) for v in vals if isinstance(v, int | float) and math.isfinite(v)]
        if vals:
            cell.train_extra[key] = sum(vals) / len(vals)
    return cell


def _compare(a: CellSummary, b: CellSummary) -> dict[str, Paired]:
    """A minus B for every paired metric, over the seeds both completed."""
    out: dict[str, Paired] = {}
    for metric in PAIRED_METRICS:
        if metric not in a.test or metric not in b.test:
            continue
        seeds = sorted(set(a.test[metric]) & set(b.test[metric]))
        va = [a.test[metric][s] for s in seeds]
        vb = [b.test[metric][s] for s in seeds]
        if len(seeds) >= 2:
            mean, half = paired_diff_ci(va, vb)
            out[metric] = Paired(float(mean), float(half), len(seeds), paired_t_pvalue(va, vb))
        elif len(seeds) == 1:
            out[metric] = Paired(va[0] - vb[0], math.nan, 1, math.nan)
    return out


def _with_holm(results: Sequence[dict[str, Paired]]) -> None:
    """Holm-adjust the accuracy p-values of one family of comparisons, in place."""
    idx = [i for i, r in enumerate(results) if "acc" in r]
    adjusted = holm_adjust([results[i]["acc"].p for i in idx])
    for i, q in zip(idx, adjusted, strict=True):
        results[i]["acc"] = dataclasses.replace(results[i]["acc"], p_holm=q)


def _paired_differences(summary: SuiteSummary) -> None:
    if summary.baseline is not None:
        family: list[CellSummary] = []
        for dataset in summary.datasets:
            base = summary.cell(dataset, summary.baseline)
            if base is None or "acc" not in base.test:
                continue
            for cell in summary.cells:
                if (cell.dataset != dataset or cell.arm == summary.baseline
                        or "acc" not in cell.test):
                    continue
                cell.paired = _compare(cell, base)
                family.append(cell)
        _with_holm([c.paired for c in family])
    contrast_results = {}
    for dataset in summary.datasets:
        for a_label, b_label in summary.contrasts:
            a, b = summary.cell(dataset, a_label), summary.cell(dataset, b_label)
            if a is None or b is None:
                continue
            compared = _compare(a, b)
            if compared:
                contrast_results[(dataset, a_label, b_label)] = compared
    _with_holm(list(contrast_results.values()))
    summary.contrast_results = contrast_results


def _summarize_manifest(runs_root: Path, record: Mapping[str, Any],
                        data_cache: dict[Any, Any] | None) -> SuiteSummary:
    selection = [int(s) for s in record.get("selection_seeds", record.get("seeds", []))]
    cells = [_summarize_cell(runs_root, c["dataset"], c["arm"], c["points"], selection,
                             data_cache)
             for c in record["cells"]]
    summary = SuiteSummary(name=str(record["suite"]),
                           description=str(record.get("description", "")),
                           seeds=[int(s) for s in record.get("seeds", [])],
                           selection_seeds=selection, baseline=record.get("baseline"),
                           datasets=list(record["datasets"]), arms=list(record["arms"]),
                           cells=cells,
                           contrasts=[(str(a), str(b)) for a, b in record.get("contrasts", [])])
    _paired_differences(summary)
    return summary


def _adhoc_summary(runs_root: Path, names: Sequence[str],
                   data_cache: dict[Any, Any] | None) -> SuiteSummary:
    """Group runs outside suites by their configuration without the seed."""
    groups: dict[str, dict[str, Any]] = {}
    for name in names:
        rec = read_run(runs_root, name)
        config = {k: v for k, v in rec.config.items() if k != "seed"}
        dataset = str(config.get("dataset", name.split("/")[0]))
        arm = re.sub(r"-?seed\d+-[0-9a-f]+$", "", name).rstrip("/")
        arm = arm[len(dataset) + 1:] if arm.startswith(dataset + "/") else arm
        key = repr(sorted(config.items(), key=lambda kv: kv[0])) if config else name
        group = groups.setdefault(key, {"dataset": dataset, "arm": arm, "runs": {}})
        seed = int(rec.config.get("seed", len(group["runs"])))
        while str(seed) in group["runs"]:
            seed += 1000
        group["runs"][str(seed)] = name
    # Distinct configurations that render to the same label get a numeric suffix.
    labels: dict[tuple[str, str], int] = {}
    cells_in = []
    for group in groups.values():
        k = (group["dataset"], group["arm"])
        labels[k] = labels.get(k, 0) + 1
        arm = group["arm"] if labels[k] == 1 else f"{group['arm']} ({labels[k]})"
        cells_in.append((group["dataset"], arm, group["runs"]))
    cells = [_summarize_cell(runs_root, d, a, [{"params": {}, "runs": runs}],
                             [int(s) for s in runs], data_cache) for d, a, runs in cells_in]
    # Every seed of an ad-hoc group "selects"; with no grid the choice is trivial.
    return SuiteSummary(name=ADHOC, description="runs started with `mixupe train`",
                        seeds=sorted({s for c in cells for s in c.seeds}), selection_seeds=[],
                        baseline=None, datasets=list(dict.fromkeys(c.dataset for c in cells)),
                        arms=list(dict.fromkeys(c.arm for c in cells)), cells=cells)


def summarize(runs_root: str | Path = "runs", *, suite: str | None = None,
              recompute_reliability: bool = False) -> list[SuiteSummary]:
    """Summaries of every suite found under ``runs_root`` (or only ``suite``).

    ``recompute_reliability``: rebuild per-bin calibration data from the final checkpoints
    of runs whose result.json lacks it (needed for reliability diagrams; loads the data).
    Raises ConfigError when the directory is missing or holds no runs.
    """
    root = Path(runs_root)
    cache: dict[Any, Any] | None = {} if recompute_reliability else None
    if not root.is_dir():
        raise ConfigError(
            f"runs directory {str(root)!r} does not exist; run `mixupe bench quick` or "
            f"`mixupe train` first, or pass the directory that holds your runs"
        )
    manifests = read_manifests(root)
    if suite is not None:
        chosen = [m for m in manifests if m.get("suite") == suite]
        if not chosen:
            found = [m.get("suite") for m in manifests]
            raise ConfigError(
                f"no suite {suite!r} under {str(root)!r} (found {found}); "
                f"run `mixupe bench {suite} --runs-root {root}` first or drop --suite"
            )
        return [_summarize_manifest(root, m, cache) for m in chosen]
    summaries = [_summarize_manifest(root, m, cache) for m in manifests]
    in_suites = {name for m in manifests for c in m["cells"] for p in c["points"]
                 for name in p["runs"].values()}
    rest = [n for n in find_runs(root) if n not in in_suites]
    if rest:
        summaries.append(_adhoc_summary(root, rest, cache))
    if not summaries:
        raise ConfigError(
            f"runs directory {str(root)!r} holds no runs; run `mixupe bench quick` or "
            f"`mixupe train` first, or pass the directory that holds your runs"
        )
    return summaries


def _pct(ci: tuple[float, float] | None, scale: float = 100.0, digits: int = 1) -> str:
    if ci is None or not math.isfinite(ci[0]):
        return "–"
    mean, half = ci
    if not math.isfinite(half):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


def _fmt_params(params: Mapping[str, Any]) -> str:
    if not params:
        return "–"
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def _fmt_duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _fmt_paired(paired: Paired | None, scale: float = 100.0, digits: int = 2) -> str:
    """``+0.26 ± 0.17``; bold where the 95 % interval excludes zero."""
    if paired is None or not math.isfinite(paired.mean):
        return "–"
    text = f"{paired.mean * scale:+.{digits}f}"
    if not math.isfinite(paired.half):
        return text + f" (n={paired.n})"
    text += f" ± {paired.half * scale:.{digits}f}"
    return f"**{text}**" if paired.excludes_zero else text


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


PAIRED_INTRO = (
    "Paired over seeds (same seed: same initialisation and data order where the arms allow); "
    "mean ± 95 % Student-t half-width; **bold**: the interval excludes zero."
)
PAIRED_COLUMNS = (
    "p: two-sided paired t-test on accuracy; Holm: that p-value adjusted (Holm-Bonferroni) "
    "over every comparison of the same table, a guard against reading one lucky interval out "
    "of many. Δ NLL and Δ ECE: lower is better, so a negative difference favours the first arm."
)


def render_glance(summary: SuiteSummary) -> str:
    """One row per dataset, one column per arm: test accuracy minus the baseline's (pp)."""
    if summary.baseline is None:
        return ""
    arms = [a for a in summary.arms if a != summary.baseline]
    rows = []
    for dataset in summary.datasets:
        base = summary.cell(dataset, summary.baseline)
        if base is None:
            continue
        cells = [summary.cell(dataset, a) for a in arms]
        entries = [_fmt_paired(c.paired.get("acc") if c is not None else None) for c in cells]
        if "acc" not in base.ci:
            entries = ["not run yet" if not base.runs else "incomplete"] + [""] * (len(arms) - 1)
        rows.append(f"| {dataset} | {_pct(base.ci.get('acc'), digits=2)} | "
                    + " | ".join(entries) + " |")
    if not rows:
        return ""
    head = (f"| Dataset | {summary.baseline} test acc (%) | "
            + " | ".join(f"{a} − {summary.baseline}" for a in arms) + " |")
    return "\n".join([head, "|" + "---|" * (len(arms) + 2), *rows])


def _render_paired_table(rows: Sequence[tuple[str, str, dict[str, Paired]]],
                         first: str) -> list[str]:
    lines = [f"| Dataset | {first} | Δ acc (pp) | p | Holm p | Δ NLL | Δ ECE (pp) | "
             f"Δ FGSM acc (pp) |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset, label, paired in rows:
        acc = paired.get("acc")
        lines.append(
            f"| {dataset} | {label} | {_fmt_paired(acc)} | {_fmt_p(acc.p if acc else math.nan)} "
            f"| {_fmt_p(acc.p_holm if acc else math.nan)} | "
            f"{_fmt_paired(paired.get('nll'), 1.0, 3)} | {_fmt_paired(paired.get('ece'))} | "
            f"{_fmt_paired(paired.get('fgsm_acc'))} |")
    return lines


def _fmt_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def render_grid(summary: SuiteSummary) -> str:
    """Validation accuracy at every grid point, grouped by all parameters but the last.

    Shows whether the chosen point stands out from its neighbours by more than the seed-to-
    seed spread, i.e. how much the selection can be trusted.
    """
    lines = []
    for dataset in summary.datasets:
        for cell in (c for c in summary.cells if c.dataset == dataset and c.n_points > 1):
            groups: dict[str, list[str]] = {}
            for i, (params, score) in enumerate(cell.grid):
                keys = list(params)
                if not keys:
                    continue
                head = ", ".join(f"{k}={_fmt_value(params[k])}" for k in keys[:-1])
                head = (head + ", " if head else "") + f"{keys[-1]}"
                shown = f"{score * 100:.2f}" if math.isfinite(score) else "n/a"
                entry = f"{_fmt_value(params[keys[-1]])} → {shown}"
                groups.setdefault(head, []).append(f"**{entry}**" if i == cell.chosen
                                                   else entry)
            if not groups:
                continue
            spread = (f" (seed sd {cell.val_spread * 100:.2f})"
                      if math.isfinite(cell.val_spread) else "")
            body = "; ".join(f"{head} " + ", ".join(items) for head, items in groups.items())
            lines.append(f"- {dataset} / {cell.arm}{spread}: {body}")
    return "\n".join(lines)


def render_suite(summary: SuiteSummary) -> str:
    """The Markdown section of one suite: protocol, table, notes."""
    lines = [f"## Suite `{summary.name}`", ""]
    if summary.description:
        lines += [summary.description, ""]
    if summary.name != ADHOC:
        lines += [f"Seeds {summary.seeds}; selection seeds {summary.selection_seeds}. " + PROTOCOL,
                  ""]
    base = summary.baseline or "baseline"
    lines += [
        f"| Dataset | Arm | Chosen | Seeds | Test acc (%) | NLL | ECE (%) | Brier | "
        f"FGSM acc (%) | Δ acc vs {base} (pp) | Failed/runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset in summary.datasets:
        for arm in summary.arms:
            cell = summary.cell(dataset, arm)
            if cell is None:
                continue
            if cell.diff is not None:
                mean, half, n = cell.diff
                diff = (f"{mean * 100:+.2f} ± {half * 100:.2f}" if math.isfinite(half)
                        else f"{mean * 100:+.2f}") + f" (n={n})"
            else:
                diff = "–"
            seeds = f"{len(cell.seeds)}" + (f" (+{cell.missing} missing)" if cell.missing else "")
            chosen = _fmt_params(cell.params)
            if cell.chosen is None and cell.n_points > 1 and cell.selection_pending:
                chosen = (f"selecting ({cell.n_points - cell.selection_pending}/"
                          f"{cell.n_points} points done)")
            lines.append(
                f"| {dataset} | {arm} | {chosen} | {seeds} | "
                f"{_pct(cell.ci.get('acc'))} | {_pct(cell.ci.get('nll'), 1.0, 3)} | "
                f"{_pct(cell.ci.get('ece'))} | {_pct(cell.ci.get('brier'), 1.0, 3)} | "
                f"{_pct(cell.ci.get('fgsm_acc'))} | {diff} | {cell.failed}/{cell.runs} |"
            )
    lines.append("")
    glance = render_glance(summary)
    if glance:
        lines += [f"### At a glance: test accuracy of each arm minus {base} (pp)", "",
                  "Paired by seed, mean ± 95 % interval; **bold**: the interval excludes zero "
                  "(details and multiple-comparison-adjusted p-values below).", "", glance, ""]
    rows = [(c.dataset, c.arm, c.paired) for d in summary.datasets for c in summary.cells
            if c.dataset == d and c.paired]
    if rows:
        lines += [f"### Paired differences against {base}", "",
                  f"{PAIRED_INTRO} {PAIRED_COLUMNS}", ""]
        lines += _render_paired_table(rows, "Arm (minus " + base + ")")
        lines.append("")
    if summary.contrast_results:
        lines += ["### Contrasts declared by the suite", "",
                  "Each row is the first arm minus the second, each at its own selected point; "
                  "Holm over the rows of this table. " + PAIRED_COLUMNS, ""]
        lines += _render_paired_table(
            [(d, f"{a} − {b}", r) for (d, a, b), r in summary.contrast_results.items()],
            "Contrast")
        lines.append("")
    grid = render_grid(summary)
    if grid:
        lines += ["### Selection grids", "",
                  "Final-epoch VALIDATION accuracy (%) of every grid point, mean over the "
                  "selection seeds; the chosen point in bold; seed sd: the standard deviation "
                  "of the chosen point's validation accuracy over all its seeds. Neighbouring "
                  "points closer than that are not distinguishable, and the choice among "
                  "them is arbitrary.", "", grid, ""]
    configured = [c for c in summary.cells if c.config_name]
    if configured and summary.name != ADHOC:
        lines += ["Configurations of the chosen points (run directory names without the seed):",
                  ""]
        lines += [f"- {c.dataset} / {c.arm}: `{c.config_name}`" for c in configured]
        lines.append("")
    extras = [c for c in summary.cells if c.train_extra and c.method == "mixupe"]
    if extras:
        lines += ["MixupE at the final epoch, mean over the chosen point's seeds (reg_ratio: size "
                  "of the regulariser relative to the Mixup loss; selected_frac: fraction of "
                  "samples selected):", ""]
        lines += [f"- {c.dataset} / {c.arm}: " + ", ".join(
            f"{k} {v:.3g}" for k, v in c.train_extra.items()) for c in extras]
        lines.append("")
    lines.append(f"Compute spent: {_fmt_duration(summary.wall_s)} of training wall time over "
                 f"{sum(c.runs for c in summary.cells)} runs "
                 f"({sum(c.failed for c in summary.cells)} failed).")
    failures = [f for c in summary.cells for f in c.failures]
    if failures:
        lines += ["", "Failed runs:", *[f"- {f}" for f in failures]]
    if not any(c.reliability for c in summary.cells):
        lines += ["", "(No per-bin reliability data for these runs (neither in result.json nor "
                      "recomputable from checkpoint.pt); reliability diagrams were skipped.)"]
    lines.append("")
    return "\n".join(lines)


def render_markdown(summaries: Sequence[SuiteSummary]) -> str:
    """The whole report as Markdown."""
    parts = ["# mixupe benchmark report", "",
             "Mean ± half-width of the 95 % Student-t confidence interval over seeds; "
             "accuracies, ECE and differences in percent (pp: percentage points).", ""]
    parts += [render_suite(s) for s in summaries]
    return "\n".join(parts)


@dataclass
class ReportFiles:
    """What :func:`write_report` wrote."""

    markdown: Path
    plots: list[Path]
    text: str
    document: Path | None = None


GENERATED_MARK = "<!-- generated by `mixupe report`; edit the preamble, not this file -->"
_QUOTED = re.compile(r"[+-]?\d+(?:\.\d+)? ± \d+(?:\.\d+)?")


def stale_quotes(preamble: str, report: str) -> list[str]:
    """The ``mean ± half`` figures quoted in ``preamble`` that ``report`` does not contain.

    A hand-written conclusion may only quote intervals that the generated report prints, so a
    rerun that changes a number makes the old quote fail loudly instead of going stale.

    >>> stale_quotes("v4 gains +0.28 ± 0.14 pp, v1 +9.99 ± 1.00", "| **+0.28 ± 0.14** |")
    ['+9.99 ± 1.00']
    """
    plain = report.replace("**", "")
    return [q for q in _QUOTED.findall(preamble) if q not in plain]


def _document(preamble: str, text: str, out_dir: Path, document: Path) -> str:
    """The preamble, then the report with its image links made relative to ``document``."""
    rel = Path(os.path.relpath(out_dir.resolve(), document.resolve().parent)).as_posix()
    body = re.sub(r"\]\((?!https?:|/)([^)]+\.png)\)", lambda m: f"]({rel}/{m.group(1)})", text)
    body = body.replace("# mixupe benchmark report", "## The generated report", 1)
    return "\n".join([GENERATED_MARK, "", preamble.rstrip(), "", "---", "", body])


def write_report(runs_root: str | Path = "runs", *, suite: str | None = None,
                 out: str | Path | None = None, plots: bool = True,
                 document: str | Path | None = None,
                 preamble: str | Path | None = None) -> ReportFiles:
    """Write ``report.md`` and the PNG plots to ``out`` (default: ``runs_root/report``).

    ``document``: also write one Markdown file made of ``preamble`` (a hand-written file:
    title, set-up, conclusion) followed by the generated report, with image links relative
    to the document. Every ``mean ± half`` the preamble quotes must appear in the report
    (ConfigError otherwise), and a document not written by this function is never replaced.

    Example:
        >>> import tempfile
        >>> try:
        ...     write_report(tempfile.mkdtemp() + "/nowhere")
        ... except ValueError as exc:
        ...     "does not exist" in str(exc)
        True
    """
    if (document is None) != (preamble is None):
        raise ConfigError("document and preamble go together: pass both (--document FILE "
                          "--preamble FILE) or neither")
    pre_text = ""
    if preamble is not None:
        pre_path = Path(preamble)
        if not pre_path.is_file():
            raise ConfigError(f"preamble {str(pre_path)!r} does not exist; write the "
                              f"hand-written part (title, set-up, conclusion) there first")
        pre_text = pre_path.read_text(encoding="utf-8")
    if document is not None:
        doc = Path(document)
        if doc.exists() and GENERATED_MARK not in doc.read_text(encoding="utf-8",
                                                                 errors="replace"):
            raise ConfigError(f"{str(doc)!r} exists and was not written by `mixupe report`; "
                              f"move it away or choose another --document path (it is never "
                              f"overwritten)")
    summaries = summarize(runs_root, suite=suite, recompute_reliability=plots)
    out_dir = Path(out) if out is not None else Path(runs_root) / "report"
    text = render_markdown(summaries)
    if document is not None:
        stale = stale_quotes(pre_text, text)
        if stale:
            raise ConfigError(f"the preamble {str(preamble)!r} quotes {stale}, which the "
                              f"report does not contain (the runs changed?); update those "
                              f"figures in the preamble")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if plots:
        from mixupe.bench.plots import plot_suite

        for summary in summaries:
            written += plot_suite(summary, out_dir)
    if written:
        text += "\n## Plots\n\n" + "\n".join(
            f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in written) + "\n"
    md = out_dir / "report.md"
    md.write_text(text, encoding="utf-8")
    doc_path = None
    if document is not None:
        doc_path = Path(document)
        doc_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = doc_path.with_name(doc_path.name + ".tmp")
        tmp.write_text(_document(pre_text, text, out_dir, doc_path), encoding="utf-8")
        os.replace(tmp, doc_path)
    return ReportFiles(markdown=md, plots=written, text=text, document=doc_path)
