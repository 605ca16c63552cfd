"""The report's data model: paired comparisons, cells, suites, hypotheses and preconditions.

:func:`mixupe.bench.summary.summarize` fills it from the runs on disk; the report and the
plots read it. :func:`paired` and :func:`compare` are the paired statistics every
comparison of the report is made of.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mixupe.bench.stats import flat_rule, outcome, side, verdict, wilcoxon_signed_rank
from mixupe.bench.suite_types import Hypothesis
from mixupe.engine.metrics import paired_diff_ci, paired_t_pvalue
from mixupe.errors import ConfigError

__all__ = ["ADHOC", "BEST", "PAIRED_METRICS", "CellSummary", "HypothesisTest", "Paired",
           "Precondition", "SuiteSummary", "compare", "hypothesis_outcomes", "paired",
           "verdict_of"]

ADHOC = "(runs outside any suite)"


# Metrics compared seed by seed between arms (accuracy first: the Holm family is over it).
PAIRED_METRICS = ("acc", "nll", "ece", "fgsm_acc")


# Test accuracy at the best-validation epoch, compared like the final-epoch metrics.
BEST = "best_acc"


@dataclass(frozen=True)
class Paired:
    """A paired comparison A minus B over the seeds both arms completed.

    ``p`` is the two-sided paired t-test p-value and ``p_wilcoxon`` the two-sided exact
    Wilcoxon signed-rank p-value. ``p_holm`` is ``p`` Holm-adjusted over the table-wide
    family (every arm against the suite's baseline on every dataset, or every contrast of
    the suite, or every comparison of the pre-registered hypotheses), ``p_dataset`` over the
    comparisons of the same table on the same dataset; NaN where no adjustment applies.
    When every paired difference is the same (``degenerate``: no spread, e.g. two arms that
    train identically) no interval or test exists: ``half`` is 0, ``p`` is NaN, and the
    difference is never called significant.
    """

    mean: float
    half: float
    n: int
    p: float
    p_holm: float = math.nan
    degenerate: bool = False
    p_dataset: float = math.nan
    p_wilcoxon: float = math.nan

    @property
    def excludes_zero(self) -> bool:
        """Whether the 95 % interval lies entirely on one side of zero."""
        return (not self.degenerate and math.isfinite(self.half)
                and abs(self.mean) > self.half)


def verdict_of(result: Mapping[str, Paired], *, family: str = "table") -> str:
    """"beats", "costs" or "inconclusive" for one comparison (see :mod:`mixupe.bench.stats`).

    ``family``: "table" judges on ``p_holm`` (every comparison of the table), "dataset" on
    ``p_dataset`` (the table's comparisons on the same dataset). Needs the adjusted test at
    the final epoch and at the best-validation epoch to agree on a side.
    """
    if family not in ("table", "dataset"):
        raise ConfigError(f"family={family!r} must be 'table' or 'dataset'")
    pair = []
    for metric in ("acc", BEST):
        r = result.get(metric)
        if r is None or r.degenerate:
            return "inconclusive"
        pair.append((r.mean, r.p_holm if family == "table" else r.p_dataset))
    return verdict(pair[0], pair[1])


@dataclass(frozen=True)
class HypothesisTest:
    """One comparison of a pre-registered hypothesis: ``arm`` minus ``baseline`` on ``dataset``.

    ``result`` holds final-epoch ("acc") and best-validation-epoch test accuracy, with
    ``p_holm`` adjusted over every comparison of the suite's hypotheses (one family per epoch).
    """

    hypothesis: Hypothesis
    dataset: str
    arm: str
    result: dict[str, Paired]
    seeds: int = 0  # reported seeds of the suite: fewer paired seeds is still "pending"

    def side(self, metric: str) -> int | None:
        """+1 / -1 / 0 after adjustment (see :func:`mixupe.bench.stats.side`); None: not run,
        or not yet on every reported seed (a verdict on part of the seeds is not the one
        pre-registered)."""
        r = self.result.get(metric)
        if r is None or (not math.isfinite(r.half) and not r.degenerate) or r.n < self.seeds:
            return None
        return side(r.mean, r.p_holm, degenerate=r.degenerate)

    @property
    def outcome(self) -> str:
        """confirmed / not confirmed / reversed / pending."""
        return outcome(self.hypothesis.direction, self.side("acc"), self.side(BEST))


def hypothesis_outcomes(tests: Sequence[HypothesisTest]) -> dict[str, str]:
    """Per hypothesis id: "confirmed" when every comparison is, "reversed" when every one is,
    "pending" while one is not measured, else "not confirmed"."""
    out: dict[str, str] = {}
    for hid in dict.fromkeys(t.hypothesis.id for t in tests):
        found = {t.outcome for t in tests if t.hypothesis.id == hid}
        out[hid] = (next(iter(found)) if len(found) == 1
                    else "pending" if "pending" in found else "not confirmed")
    return out


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
    reported_seeds: list[int] = field(default_factory=list)
    chose: bool = False  # a choice among several points was made (selection seeds excluded)
    waiting_for: list[str] = field(default_factory=list)  # followed arms that have not chosen
    # metric -> seed -> value: final-epoch test metrics, plus BEST (test acc at best val epoch)
    test: dict[str, dict[int, float]] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (mean, half)
    paired: dict[str, Paired] = field(default_factory=dict)  # metric -> this arm minus baseline
    curves: dict[int, list[float]] = field(default_factory=dict)  # seed -> val acc per epoch
    best_epochs: dict[int, int] = field(default_factory=dict)  # seed -> best validation epoch
    epochs: int = 0
    reliability: dict[str, list[float]] | None = None
    train_extra: dict[str, float] = field(default_factory=dict)  # e.g. reg_ratio, rescale
    failed: int = 0
    missing: int = 0
    selection_pending: int = 0  # grid points whose selection runs have not all finished
    grid: list[tuple[dict[str, Any], float]] = field(default_factory=list)  # params, sel. score
    val_spread: float = math.nan  # sd over seeds of the chosen point's final val accuracy
    val: dict[int, float] = field(default_factory=dict)  # seed -> final validation accuracy
    late_gains: dict[int, float] = field(default_factory=dict)  # seed -> late val gain
    late_gain: tuple[float, float] = (math.nan, math.nan)  # mean ± 95 % half over seeds
    runs: int = 0
    wall_s: float = 0.0
    chosen_wall_s: float = math.nan  # mean wall time of the chosen point's reported runs
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

    @property
    def flat(self) -> bool | None:
        """Whether validation accuracy is flat at the end (None: too few epochs or seeds).

        The late gain (per seed: mean validation accuracy over the last tenth of epochs
        minus the tenth before) has a 95 % interval over seeds; flat when that interval
        includes zero or lies below 0.2 pp (:func:`mixupe.bench.stats.flat_rule`).
        """
        return flat_rule(*self.late_gain)


@dataclass(frozen=True)
class Precondition:
    """Whether arm ``a`` beats arm ``b`` at convergence on a dataset (the regime search).

    Judged on VALIDATION data only, never test: ``diff`` is the paired difference of
    final-epoch validation accuracy ``a - b`` over the reported seeds (the runs that did not
    choose ``a``'s hyper-parameters). Met when its 95 % interval lies above zero and both
    arms are flat (:attr:`CellSummary.flat`).
    """

    dataset: str
    a: CellSummary
    b: CellSummary
    diff: Paired | None

    @property
    def met(self) -> bool:
        """The difference excludes zero upwards and both arms are flat."""
        return (self.diff is not None and self.diff.excludes_zero and self.diff.mean > 0
                and bool(self.a.flat) and bool(self.b.flat))


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
    precondition_arms: tuple[str, str] | None = None
    hypotheses: list[Hypothesis] = field(default_factory=list)
    hypothesis_tests: list[HypothesisTest] = field(default_factory=list)

    def cell(self, dataset: str, arm: str) -> CellSummary | None:
        """The cell of ``dataset`` x ``arm``, if the suite has it."""
        return next((c for c in self.cells if c.dataset == dataset and c.arm == arm), None)

    @property
    def wall_s(self) -> float:
        """Compute spent: the sum of the wall times of every run read."""
        return sum(c.wall_s for c in self.cells)

    @property
    def preconditions(self) -> list[Precondition]:
        """Per dataset, whether the suite's ``precondition`` arm beats the other (if declared)."""
        if self.precondition_arms is None:
            return []
        a_label, b_label = self.precondition_arms
        out = []
        for dataset in self.datasets:
            a, b = self.cell(dataset, a_label), self.cell(dataset, b_label)
            if a is not None and b is not None:
                out.append(Precondition(dataset, a, b, paired(a.val, b.val)))
        return out


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Paired | None:
    """``a`` minus ``b`` (seed -> value) over their shared seeds; None without a shared seed."""
    seeds = sorted(set(a) & set(b))
    va, vb = [a[s] for s in seeds], [b[s] for s in seeds]
    d = [x - y for x, y in zip(va, vb, strict=True)]
    if len(d) >= 2 and max(d) - min(d) <= 1e-12 * max(1.0, abs(d[0])):
        return Paired(math.fsum(d) / len(d), 0.0, len(d), math.nan, degenerate=True)
    if len(d) >= 2:
        mean, half = paired_diff_ci(va, vb)
        return Paired(float(mean), float(half), len(d), paired_t_pvalue(va, vb),
                      p_wilcoxon=wilcoxon_signed_rank(d))
    if len(d) == 1:
        return Paired(d[0], math.nan, 1, math.nan)
    return None


def compare(a: CellSummary, b: CellSummary) -> dict[str, Paired]:
    """A minus B for every paired metric (and best-epoch accuracy), over shared seeds."""
    out: dict[str, Paired] = {}
    for metric in (*PAIRED_METRICS, BEST):
        if metric in a.test and metric in b.test:
            result = paired(a.test[metric], b.test[metric])
            if result is not None:
                out[metric] = result
    return out
