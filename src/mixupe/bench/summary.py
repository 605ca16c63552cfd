"""The data model of a benchmark report: suites, cells, seeds, intervals and paired differences.

:func:`summarize` reads what is on disk (the suite manifests under ``RUNS/_suites/`` and each
run, from its directory or from a pack, see :mod:`mixupe.bench.rundirs`), applies the one
selection rule (:mod:`mixupe.bench.selection`) and computes every statistic; the Markdown
report (:mod:`mixupe.bench.report`) and the plots (:mod:`mixupe.bench.plots`) only render it.
Runs that belong to no suite (``mixupe train``) are grouped by configuration (all seeds of
the same hyper-parameters together) in an extra suite.

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
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mixupe.bench.rundirs import METRICS, RunReader, RunRecord
from mixupe.bench.runner import cell_selections
from mixupe.bench.suites import Hypothesis, builtin_suites, load_suite, read_manifests

# The data model, importable from here: this module is where the report's numbers come from.
from mixupe.bench.summary_model import (
    ADHOC,
    BEST,
    CellSummary,
    HypothesisTest,
    Paired,
    Precondition,
    SuiteSummary,
    compare,
    hypothesis_outcomes,
    verdict_of,
)
from mixupe.bench.summary_model import PAIRED_METRICS as PAIRED_METRICS
from mixupe.bench.summary_model import paired as paired
from mixupe.engine.metrics import holm_adjust, mean_ci
from mixupe.engine.naming import current_name
from mixupe.errors import ConfigError

__all__ = ["ADHOC", "CellSummary", "HypothesisTest", "Paired", "Precondition", "SuiteSummary",
           "compare", "hypothesis_outcomes", "summarize", "verdict_of"]

def _ci(values: Sequence[float]) -> tuple[float, float]:
    if len(values) == 0:
        return math.nan, math.nan
    if len(values) == 1:
        return float(values[0]), math.nan
    mean, half = mean_ci(list(values))
    return float(mean), float(half)


def _pool_reliability(records: Sequence[RunRecord]) -> dict[str, list[float]] | None:
    """Pool per-bin reliability data of the test split over seeds (count-weighted)."""
    tables = [r.final("test").get("reliability") for r in records]
    tables = [t for t in tables if isinstance(t, dict) and t.get("count")]
    if not tables:
        return None
    n_bins = len(tables[0]["count"])
    count, conf, acc = [0.0] * n_bins, [0.0] * n_bins, [0.0] * n_bins
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


def _late_gains(curves: Mapping[int, Sequence[float]]) -> dict[int, float]:
    """Per seed: mean val acc over the last 10 % of epochs minus the mean over the 10 % before."""
    gains = {}
    for seed, curve in curves.items():
        k = max(1, round(0.1 * len(curve)))
        if len(curve) < 2 * k or len(curve) < 4:
            continue
        last, before = curve[-k:], curve[-2 * k:-k]
        gains[seed] = sum(last) / k - sum(before) / k
    return gains


def _summarize_cell(reader: RunReader, cell: Mapping[str, Any], sel: Any) -> CellSummary:
    points = cell["points"]
    out = CellSummary(dataset=cell["dataset"], arm=cell["arm"], n_points=len(points))
    out.chose, out.waiting_for = sel.chose, list(sel.waiting_for)
    out.reported_seeds = list(sel.reported_seeds)
    out.selection_pending = sel.pending
    out.grid = [(dict(p.get("params", {})), score)
                for i, (p, score) in enumerate(zip(points, sel.scores, strict=True))
                if i in sel.eligible and sel.chose]
    _count_runs(out, reader, points)
    out.chosen = sel.chosen
    if sel.chosen is None:
        return out
    point = points[sel.chosen]
    out.params = dict(point.get("params", {}))
    runs = {int(s): n for s, n in point["runs"].items()}
    records = {s: reader(runs[s]) for s in sel.reported_seeds if s in runs}
    complete = {s: r for s, r in records.items() if r.status == "complete"}
    out.missing = sum(1 for r in records.values() if r.status in ("missing", "partial"))
    _test_metrics(out, complete)
    out.method = str(next((r.config.get("method", "") for r in complete.values()), ""))
    first = next(iter(records.values()), None) or reader(next(iter(runs.values())))
    out.config_name = re.sub(r"-?seed\d+-[0-9a-f]+$", "", first.name).rstrip("/")
    _validation_curves(out, complete)
    walls = [r.wall_s for r in complete.values()]
    out.chosen_wall_s = sum(walls) / len(walls) if walls else math.nan
    out.reliability = _pool_reliability(list(complete.values()))
    out.train_extra = _train_extra(list(complete.values()))
    return out


def _count_runs(out: CellSummary, reader: RunReader, points: Sequence[Mapping[str, Any]]) -> None:
    """Bookkeeping counts every run that exists for this cell, chosen or not."""
    for point in points:
        for name in point["runs"].values():
            rec = reader(name)
            if rec.status == "missing":
                continue
            out.runs += 1
            out.wall_s += rec.wall_s
            if rec.status == "failed":
                out.failed += 1
                out.failures.append(f"{rec.name}: {rec.failure or 'diverged'}")


def _test_metrics(out: CellSummary, complete: Mapping[int, RunRecord]) -> None:
    """Final-epoch test metrics, and test accuracy at the best-validation epoch, per seed."""
    for metric in METRICS:
        values = {s: r.final("test").get(metric) for s, r in complete.items()}
        values = {s: float(v) for s, v in values.items() if isinstance(v, int | float)}
        if values:
            out.test[metric] = values
    best = {s: r.best() for s, r in complete.items()}
    out.best_epochs = {s: b[0] for s, b in best.items() if b is not None}
    best_acc = {s: b[1].get("acc") for s, b in best.items() if b is not None}
    best_acc = {s: float(v) for s, v in best_acc.items() if isinstance(v, int | float)}
    if best_acc:
        out.test[BEST] = best_acc
    out.ci = {metric: _ci([v[s] for s in sorted(v)]) for metric, v in out.test.items()}


def _validation_curves(out: CellSummary, complete: Mapping[int, RunRecord]) -> None:
    """Validation accuracy per epoch, its final value and spread, and the late gains."""
    out.curves = {s: r.curve("val", "acc") for s, r in complete.items()}
    out.epochs = max((len(c) for c in out.curves.values()), default=0)
    vals = {s: r.final("val").get("acc") for s, r in complete.items()}
    out.val = {s: float(v) for s, v in vals.items()
               if isinstance(v, int | float) and math.isfinite(v)}
    if len(out.val) >= 2:
        out.val_spread = statistics.stdev(out.val.values())
    out.late_gains = _late_gains(out.curves)
    out.late_gain = _ci([out.late_gains[s] for s in sorted(out.late_gains)])


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def _train_extra(complete: Sequence[RunRecord]) -> dict[str, float]:
    """MixupE's diagnostics at the final epoch, mean over runs, and the rescale factor over
    the whole run: its range over epochs (mean of the per-epoch means)."""
    extra: dict[str, float] = {}
    for key in ("reg_ratio", "selected_frac", "rescale", "rescale_sd"):
        per_run = _finite([r.epochs[-1].get("train", {}).get(key) for r in complete if r.epochs])
        if per_run:
            extra[key] = sum(per_run) / len(per_run)
    factors = _finite([e.get("train", {}).get("rescale") for r in complete for e in r.epochs])
    if factors:
        extra["rescale_all"] = sum(factors) / len(factors)
        extra["rescale_min"] = min(factors)
        extra["rescale_max"] = max(factors)
    return extra


def _with_holm(results: Sequence[dict[str, Paired]], metric: str, *,
               field_name: str = "p_holm") -> None:
    """Holm-adjust the p-values of ``metric`` over one family of comparisons, in place."""
    idx = [i for i, r in enumerate(results) if metric in r]
    adjusted = holm_adjust([results[i][metric].p for i in idx])
    for i, q in zip(idx, adjusted, strict=True):
        results[i][metric] = dataclasses.replace(results[i][metric], **{field_name: q})


def _holm_families(rows: Sequence[tuple[str, dict[str, Paired]]]) -> None:
    """Holm over the whole table (``p_holm``) and over each dataset's rows (``p_dataset``)."""
    for metric in ("acc", BEST):
        _with_holm([r for _, r in rows], metric)
        for dataset in dict.fromkeys(d for d, _ in rows):
            _with_holm([r for d, r in rows if d == dataset], metric, field_name="p_dataset")


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
                cell.paired = compare(cell, base)
                family.append(cell)
        _holm_families([(c.dataset, c.paired) for c in family])
    contrast_results = {}
    for dataset in summary.datasets:
        for a_label, b_label in summary.contrasts:
            a, b = summary.cell(dataset, a_label), summary.cell(dataset, b_label)
            if a is None or b is None:
                continue
            compared = compare(a, b)
            if compared:
                contrast_results[(dataset, a_label, b_label)] = compared
    _holm_families([(d, r) for (d, _, _), r in contrast_results.items()])
    summary.contrast_results = contrast_results


def _summarize_manifest(reader: RunReader, record: Mapping[str, Any]) -> SuiteSummary:
    seeds = [int(s) for s in record.get("seeds", [])]
    selection = [int(s) for s in record.get("selection_seeds", seeds)]
    state = cell_selections(record["cells"], seeds=seeds, selection_seeds=selection,
                            status=lambda n: reader(n).status,
                            val_acc=lambda n: reader(n).final("val").get("acc"))
    cells = [_summarize_cell(reader, c, state[(c["dataset"], c["arm"])])
             for c in record["cells"]]
    pre = record.get("precondition")
    summary = SuiteSummary(name=str(record["suite"]),
                           description=str(record.get("description", "")),
                           seeds=seeds, selection_seeds=selection,
                           baseline=record.get("baseline"),
                           datasets=list(record["datasets"]), arms=list(record["arms"]),
                           cells=cells,
                           contrasts=[(str(a), str(b)) for a, b in record.get("contrasts", [])],
                           precondition_arms=(str(pre[0]), str(pre[1])) if pre else None)
    _paired_differences(summary)
    summary.hypotheses = _hypotheses(record)
    summary.hypothesis_tests = _hypothesis_tests(summary)
    return summary


def _hypotheses(record: Mapping[str, Any]) -> list[Hypothesis]:
    """The manifest's pre-registered hypotheses; a manifest written before hypotheses were
    recorded takes them from the built-in suite file of the same name."""
    if "hypotheses" in record:
        return [Hypothesis.from_dict(h) for h in record["hypotheses"]]
    name = str(record["suite"])
    if name in builtin_suites():
        return list(load_suite(name).hypotheses)
    return []


def _hypothesis_tests(summary: SuiteSummary) -> list[HypothesisTest]:
    """Every comparison of every hypothesis, Holm over all of them (per epoch)."""
    tests = []
    for h in summary.hypotheses:
        for dataset in h.datasets:
            for arm in h.arms:
                a, b = summary.cell(dataset, arm), summary.cell(dataset, h.baseline)
                result = compare(a, b) if a is not None and b is not None else {}
                tests.append(HypothesisTest(h, dataset, arm, result,
                                            seeds=len(summary.seeds)))
    for metric in ("acc", BEST):
        _with_holm([t.result for t in tests], metric)
    return tests


def _adhoc_summary(reader: RunReader, names: Sequence[str]) -> SuiteSummary:
    """Group runs outside suites by their configuration without the seed."""
    groups: dict[str, dict[str, Any]] = {}
    for name in names:
        rec = reader(name)
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
    cells = []
    for group in groups.values():
        k = (group["dataset"], group["arm"])
        labels[k] = labels.get(k, 0) + 1
        arm = group["arm"] if labels[k] == 1 else f"{group['arm']} ({labels[k]})"
        cells.append({"dataset": group["dataset"], "arm": arm,
                      "points": [{"params": {}, "runs": group["runs"]}]})
    seeds = sorted({int(s) for c in cells for s in c["points"][0]["runs"]})
    record = {"suite": ADHOC, "description": "runs started with `mixupe train`",
              "seeds": seeds, "selection_seeds": [], "baseline": None,
              "datasets": list(dict.fromkeys(c["dataset"] for c in cells)),
              "arms": list(dict.fromkeys(c["arm"] for c in cells)), "cells": cells}
    return _summarize_manifest(reader, record)


def summarize(runs_root: str | Path = "runs", *, suite: str | None = None) -> list[SuiteSummary]:
    """Summaries of every suite found under ``runs_root`` (or only ``suite``).

    Raises ConfigError when the directory is missing or holds no runs.
    """
    root = Path(runs_root)
    if not root.is_dir():
        raise ConfigError(
            f"runs directory {str(root)!r} does not exist; run `mixupe bench quick` or "
            f"`mixupe train` first, or pass the directory that holds your runs"
        )
    reader = RunReader(root)
    manifests = read_manifests(root)
    if suite is not None:
        chosen = [m for m in manifests if m.get("suite") == suite]
        if not chosen:
            found = [m.get("suite") for m in manifests]
            raise ConfigError(
                f"no suite {suite!r} under {str(root)!r} (found {found}); "
                f"run `mixupe bench {suite} --runs-root {root}` first or drop --suite"
            )
        return [_summarize_manifest(reader, m) for m in chosen]
    summaries = [_summarize_manifest(reader, m) for m in manifests]
    in_suites = {name for m in manifests for c in m["cells"] for p in c["points"]
                 for name in p["runs"].values()}
    # a run stored under an earlier naming rule's name belongs to the suite naming it now
    rest = [n for n in reader.names() if n not in in_suites and current_name(n) not in in_suites]
    if rest:
        summaries.append(_adhoc_summary(reader, rest))
    if not summaries:
        raise ConfigError(
            f"runs directory {str(root)!r} holds no runs; run `mixupe bench quick` or "
            f"`mixupe train` first, or pass the directory that holds your runs"
        )
    return summaries
