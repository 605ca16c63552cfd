"""The benchmark report: per-suite Markdown tables with confidence intervals, and plots.

Everything shown comes from :func:`mixupe.bench.summary.summarize` (the run logs on disk,
one selection rule, the statistics); this module only renders it and writes the files.

Example:
    >>> import tempfile
    >>> try:
    ...     write_report(tempfile.mkdtemp())
    ... except Exception as exc:
    ...     type(exc).__name__
    'ConfigError'
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixupe.atomic import atomic_write
from mixupe.bench.selection import FIXED_PROTOCOL, PROTOCOL
from mixupe.bench.summary import (
    ADHOC,
    BEST,
    HypothesisTest,
    Paired,
    SuiteSummary,
    hypothesis_outcomes,
    summarize,
    verdict_of,
)
from mixupe.errors import ConfigError

# Methods whose training adds a regulariser to a mixing loss (their diagnostics are shown).
REGULARISED = ("mixupe", "mixup-ce")

__all__ = ["check_claims", "regime_search", "render_glance", "render_markdown", "render_suite",
           "stale_quotes", "write_report"]


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
    """``+0.26 ± 0.17``; bold where the 95 % interval excludes zero.

    >>> _fmt_paired(Paired(0.005, 0.0, 5, math.nan, degenerate=True))
    '+0.50 (same in all 5 pairs)'
    """
    if paired is None or not math.isfinite(paired.mean):
        return "–"
    text = f"{paired.mean * scale:+.{digits}f}"
    if paired.degenerate:
        return text + f" (same in all {paired.n} pairs)"
    if not math.isfinite(paired.half):
        return text + f" (n={paired.n})"
    text += f" ± {paired.half * scale:.{digits}f}"
    return f"**{text}**" if paired.excludes_zero else text


COST_NOTE = (
    "s/run: mean wall time of a reported run of the chosen point (training and evaluation, "
    "one process), and its ratio to the baseline arm's; runs shared cores with other work, so "
    "read it as a rough cost (benchmarks/ times single steps)."
)


def _fmt_cost(wall_s: float, base_s: float) -> str:
    """Mean wall time of a reported run, and its ratio to the baseline arm's (seconds alone,
    to a tenth, where there is no baseline)."""
    if not math.isfinite(wall_s):
        return "–"
    if not math.isfinite(base_s) or base_s <= 0:
        return f"{wall_s:.1f}"
    return f"{wall_s:.0f} ({wall_s / base_s:.2f}x)"


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


PAIRED_INTRO = (
    "Paired over seeds (same seed: same initialisation and data order where the arms allow); "
    "mean ± 95 % Student-t half-width; **bold**: the unadjusted interval excludes zero."
)
PAIRED_COLUMNS = (
    "p: two-sided paired t-test on final-epoch accuracy; W: two-sided exact Wilcoxon "
    "signed-rank test on the same pairs. Holm: the t p-value adjusted (Holm-Bonferroni) over "
    "two named families, the comparisons of this table on the same dataset (dataset) and "
    "every comparison of this table (table). Δ best-epoch acc: test accuracy at each run's "
    "best-validation epoch, with its Holm p-values (dataset / table) in brackets. Verdict "
    "(table / dataset family): \"beats\" or \"costs\" only when the Holm-adjusted p-value "
    "is below 0.05 with the same sign at the final AND the best-validation epoch, else "
    "\"inconclusive\". Δ NLL and Δ ECE: lower is better, so a negative difference favours the "
    "first arm. \"same in all n pairs\": no spread, so no interval or test."
)


def _survives(result: Mapping[str, Paired] | None) -> bool:
    return result is not None and verdict_of(result) != "inconclusive"


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
        entries = [_fmt_paired(c.paired.get("acc") if c is not None else None)
                   + (" †" if c is not None and _survives(c.paired) else "") for c in cells]
        if "acc" not in base.ci:
            entries = ["not run yet" if not base.runs else "incomplete"] + [""] * (len(arms) - 1)
        rows.append(f"| {dataset} | {_pct(base.ci.get('acc'), digits=2)} | "
                    + " | ".join(entries) + " |")
    if not rows:
        return ""
    head = (f"| Dataset | {summary.baseline} test acc (%) | "
            + " | ".join(f"{a} − {summary.baseline}" for a in arms) + " |")
    return "\n".join([head, "|" + "---|" * (len(arms) + 2), *rows])


def _holm_pair(r: Paired | None) -> str:
    if r is None:
        return "–"
    return f"{_fmt_p(r.p_dataset)} / {_fmt_p(r.p_holm)}"


def _render_paired_table(rows: Sequence[tuple[str, str, dict[str, Paired]]],
                         first: str) -> list[str]:
    lines = [f"| Dataset | {first} | Δ acc (pp) | p | W | Holm p (dataset / table) | "
             f"Δ best-epoch acc (pp) [Holm] | Verdict (table / dataset) | Δ NLL | Δ ECE (pp) | "
             f"Δ FGSM acc (pp) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, label, paired in rows:
        acc, best = paired.get("acc"), paired.get(BEST)
        best_text = _fmt_paired(best)
        if best is not None and math.isfinite(best.p_holm):
            best_text += f" [{_holm_pair(best)}]"
        verdicts = f"{verdict_of(paired)} / {verdict_of(paired, family='dataset')}"
        lines.append(
            f"| {dataset} | {label} | {_fmt_paired(acc)} | {_fmt_p(acc.p if acc else math.nan)} "
            f"| {_fmt_p(acc.p_wilcoxon if acc else math.nan)} | {_holm_pair(acc)} | "
            f"{best_text} | {verdicts} | "
            f"{_fmt_paired(paired.get('nll'), 1.0, 3)} | {_fmt_paired(paired.get('ece'))} | "
            f"{_fmt_paired(paired.get('fgsm_acc'))} |")
    return lines


def _fmt_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def render_grid(summary: SuiteSummary) -> str:
    """Validation accuracy at every grid point, grouped by all parameters but the last.

    Parameters that are the same at every eligible point (e.g. the alpha an arm follows) come
    first. Shows whether the chosen point stands out from its neighbours by more than the
    seed-to-seed spread, i.e. how much the selection can be trusted.
    """
    lines = []
    for dataset in summary.datasets:
        for cell in (c for c in summary.cells if c.dataset == dataset and c.grid):
            groups: dict[str, list[str]] = {}
            first = cell.grid[0][0]
            fixed = [k for k in first if all(p.get(k) == first[k] for p, _ in cell.grid)]
            for params, score in cell.grid:
                keys = fixed + [k for k in params if k not in fixed]
                if not keys:
                    continue
                head = ", ".join(f"{k}={_fmt_value(params[k])}" for k in keys[:-1])
                head = (head + ", " if head else "") + f"{keys[-1]}"
                shown = f"{score * 100:.2f}" if math.isfinite(score) else "n/a"
                entry = f"{_fmt_value(params[keys[-1]])} → {shown}"
                groups.setdefault(head, []).append(f"**{entry}**" if params == cell.params
                                                   else entry)
            if not groups:
                continue
            spread = (f" (seed sd {cell.val_spread * 100:.2f})"
                      if math.isfinite(cell.val_spread) else "")
            body = "; ".join(f"{head} " + ", ".join(items) for head, items in groups.items())
            lines.append(f"- {dataset} / {cell.arm}{spread}: {body}")
    return "\n".join(lines)


def _fmt_gain(gain: tuple[float, float]) -> str:
    mean, half = gain
    if not math.isfinite(mean):
        return "–"
    return f"{mean * 100:+.2f}" + (f" ± {half * 100:.2f}" if math.isfinite(half) else "")


def _flat_word(cell: Any) -> str:
    flat = cell.flat
    return "–" if flat is None else "flat" if flat else "rising" if cell.late_gain[0] > 0 \
        else "falling"


def _met_word(row: Any) -> str:
    if row.met:
        return "yes"
    pending = row.diff is None or row.a.flat is None or row.b.flat is None
    return "pending" if pending else "no"


def render_precondition(summary: SuiteSummary) -> str:
    """The regime table: does the suite's first precondition arm beat the second, converged?

    Judged on validation accuracy alone (see :class:`mixupe.bench.summary.Precondition`).
    """
    rows = summary.preconditions
    if not rows:
        return ""
    a_label, b_label = summary.precondition_arms or ("", "")
    lines = [f"| Dataset | Seeds | {a_label} chose | {a_label} − {b_label}, final validation "
             f"acc (pp) | W | late val gain {b_label} (pp) | late val gain {a_label} (pp) | "
             f"Epochs | s/run ({b_label} / {a_label}) | Met (validation) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        a, b = row.a, row.b
        walls = " / ".join(f"{c.chosen_wall_s:.0f}" if math.isfinite(c.chosen_wall_s) else "–"
                           for c in (b, a))
        n = row.diff.n if row.diff is not None else 0
        lines.append(
            f"| {row.dataset} | {n} | {_fmt_params(a.params)} | {_fmt_paired(row.diff)} | "
            f"{_fmt_p(row.diff.p_wilcoxon if row.diff else math.nan)} | "
            f"{_fmt_gain(b.late_gain)} ({_flat_word(b)}) | "
            f"{_fmt_gain(a.late_gain)} ({_flat_word(a)}) | {max(a.epochs, b.epochs)} | "
            f"{walls} | {_met_word(row)} |")
    return "\n".join(lines)


FLAT_RULE = (
    "Late validation gain: per seed, the mean validation accuracy over the last tenth of the "
    "epochs minus the mean over the tenth before, then mean ± 95 % Student-t interval over "
    "seeds; flat when that interval includes zero or lies below 0.2 pp, else rising (or "
    "falling)."
)
PRECONDITION_INTRO = (
    "Judged on VALIDATION data only, never on test: met when the paired difference of "
    "final-epoch validation accuracy over the reported seeds (the runs that did not choose "
    "the hyper-parameters; ERM has no runs on the selection seeds) has a 95 % interval above "
    "zero and both arms are flat. " + FLAT_RULE + " W: exact Wilcoxon signed-rank p. Test "
    "accuracy of these runs is in the table below and plays no part here. s/run: mean wall "
    "time of a reported run of the chosen point."
)


def render_late_gains(summary: SuiteSummary) -> str:
    """Per dataset and arm: the late validation gain with its interval, and the flat rule."""
    if max((c.epochs for c in summary.cells), default=0) < 20:
        return ""
    arms = [a for a in summary.arms
            if any(c.arm == a and math.isfinite(c.late_gain[0]) for c in summary.cells)]
    rows = []
    for dataset in summary.datasets:
        entries = []
        for arm in arms:
            cell = summary.cell(dataset, arm)
            ok = cell is not None and math.isfinite(cell.late_gain[0])
            entries.append(f"{_fmt_gain(cell.late_gain)} ({_flat_word(cell)})" if ok else "")
        if any(entries):
            rows.append(f"| {dataset} | " + " | ".join(entries) + " |")
    if not rows:
        return ""
    return "\n".join([f"| Dataset | {' | '.join(arms)} |", "|---|" + "---|" * len(arms), *rows])


def _chosen_text(cell: Any) -> str:
    if cell.waiting_for:
        return f"waits for {', '.join(cell.waiting_for)}"
    if cell.chosen is None and cell.selection_pending:
        n = len(cell.grid) or cell.n_points
        return f"selecting ({n - cell.selection_pending}/{n} points done)"
    return _fmt_params(cell.params)


def _extras_text(extra: Mapping[str, float]) -> str:
    parts = []
    if "reg_ratio" in extra:
        parts.append(f"reg_ratio {extra['reg_ratio']:.3g}")
    if "selected_frac" in extra:
        parts.append(f"selected_frac {extra['selected_frac']:.3g}")
    if "rescale_all" in extra:
        parts.append(f"rescale factor {extra['rescale_all']:.3g} (epoch means "
                     f"{extra['rescale_min']:.3g}–{extra['rescale_max']:.3g}"
                     + (f"; within the last epoch sd {extra['rescale_sd']:.2g})"
                        if "rescale_sd" in extra else ")"))
    return ", ".join(parts)


HYPOTHESES_INTRO = (
    "Each row is one comparison of a hypothesis written down before the suite ran: the "
    "paired test-accuracy difference arm − baseline over the reported seeds (pp, mean ± 95 % "
    "Student-t interval), at the final epoch and at each run's best-validation epoch. Holm: "
    "the t p-value adjusted over the pre-registered family, every comparison of every "
    "hypothesis below (one family per epoch); W: exact Wilcoxon signed-rank p (unadjusted). "
    "Outcome per comparison: for > (<), confirmed when the difference is above (below) zero "
    "after adjustment at both epochs, reversed when it is on the other side at both; for >= "
    "(<=), confirmed when at neither epoch it is below (above) zero after adjustment, "
    "reversed when it is at both; for =, confirmed when it excludes zero at neither epoch, "
    "reversed when at both on one side; otherwise not confirmed. A hypothesis is confirmed "
    "(reversed) when all its comparisons are, else not confirmed (pending while a "
    "comparison is not measured)."
)


def _hyp_epoch(r: Paired | None) -> list[str]:
    if r is None:
        return ["–", "–", "–"]
    return [_fmt_paired(r), _fmt_p(r.p_holm), _fmt_p(r.p_wilcoxon)]


def render_hypotheses(tests: Sequence[HypothesisTest]) -> str:
    """The confirmation table: every comparison of every pre-registered hypothesis."""
    if not tests:
        return ""
    lines = ["| Hypothesis | Dataset | Comparison | Final Δ (pp) | Holm p | W | "
             "Best-val-epoch Δ (pp) | Holm p | W | Outcome |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t in tests:
        h = t.hypothesis
        cells = [*_hyp_epoch(t.result.get("acc")), *_hyp_epoch(t.result.get(BEST))]
        lines.append(f"| {h.id} | {t.dataset} | {t.arm} {h.direction} {h.baseline} | "
                     + " | ".join(cells) + f" | {t.outcome} |")
    outcomes = hypothesis_outcomes(tests)
    lines += ["", "Per hypothesis:", ""]
    for hid, word in outcomes.items():
        mine = [t for t in tests if t.hypothesis.id == hid]
        counts = ", ".join(f"{sum(t.outcome == w for t in mine)} {w}"
                           for w in ("confirmed", "not confirmed", "reversed", "pending")
                           if any(t.outcome == w for t in mine))
        lines.append(f"- {hid}: **{word}**" + (f" ({counts})" if len(mine) > 1 else ""))
    return "\n".join(lines)


def render_suite(summary: SuiteSummary) -> str:
    """The Markdown section of one suite: protocol, table, notes."""
    lines = [f"## Suite `{summary.name}`", ""]
    if summary.description:
        lines += [summary.description, ""]
    if summary.name != ADHOC:
        if all(c.n_points <= 1 for c in summary.cells):
            lines += [f"Reported seeds {summary.seeds}. Every arm has a single configuration, "
                      "so nothing is selected and no seed is set aside. " + FIXED_PROTOCOL, ""]
        else:
            lines += [f"Reported seeds {summary.seeds}; selection seeds "
                      f"{summary.selection_seeds}. " + PROTOCOL, ""]
    hyp = render_hypotheses(summary.hypothesis_tests)
    if hyp:
        lines += ["### Pre-registered hypotheses", "", HYPOTHESES_INTRO, "", hyp, ""]
    pre = render_precondition(summary)
    if pre:
        a, b = summary.precondition_arms or ("", "")
        lines += [f"### Precondition: does {a} beat {b} at convergence?", "",
                  PRECONDITION_INTRO, "", pre, ""]
    base = summary.baseline or "baseline"
    lines += [
        f"| Dataset | Arm | Chosen | Seeds | Test acc (%) | Best-epoch test acc (%) | NLL | "
        f"ECE (%) | Brier | FGSM acc (%) | Δ acc vs {base} (pp) | Failed/runs | "
        "s/run" + (f" (x {base})" if summary.baseline else "") + " |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset in summary.datasets:
        ref = summary.cell(dataset, base) if summary.baseline else None
        base_wall = ref.chosen_wall_s if ref is not None else math.nan
        for arm in summary.arms:
            cell = summary.cell(dataset, arm)
            if cell is None:
                continue
            diff = _fmt_paired(cell.paired.get("acc")).replace("**", "")
            if cell.diff is not None and "(n=" not in diff and "pairs" not in diff:
                diff += f" (n={cell.diff[2]})"
            seeds = f"{len(cell.seeds)}" + (f" (+{cell.missing} missing)" if cell.missing else "")
            lines.append(
                f"| {dataset} | {arm} | {_chosen_text(cell)} | {seeds} | "
                f"{_pct(cell.ci.get('acc'))} | {_pct(cell.ci.get(BEST))} | "
                f"{_pct(cell.ci.get('nll'), 1.0, 3)} | "
                f"{_pct(cell.ci.get('ece'))} | {_pct(cell.ci.get('brier'), 1.0, 3)} | "
                f"{_pct(cell.ci.get('fgsm_acc'))} | {diff} | {cell.failed}/{cell.runs} | "
                f"{_fmt_cost(cell.chosen_wall_s, base_wall)} |"
            )
    lines += ["", COST_NOTE, ""]
    glance = render_glance(summary)
    if glance:
        lines += [f"### At a glance: test accuracy of each arm minus {base} (pp)", "",
                  "Paired by seed, mean ± 95 % interval; **bold**: the unadjusted interval "
                  "excludes zero; †: the difference survives Holm over the table at the final "
                  "and at the best-validation epoch (verdict \"beats\" or \"costs\"; details "
                  "below).", "", glance, ""]
    rows = [(c.dataset, c.arm, c.paired) for d in summary.datasets for c in summary.cells
            if c.dataset == d and c.paired]
    if rows:
        lines += [f"### Paired differences against {base}", "",
                  f"{PAIRED_INTRO} {PAIRED_COLUMNS}", ""]
        lines += _render_paired_table(rows, "Arm (minus " + base + ")")
        lines.append("")
    if summary.contrast_results:
        lines += ["### Contrasts declared by the suite", "",
                  "Each row is the first arm minus the second, each at its own selected point. "
                  + PAIRED_COLUMNS, ""]
        lines += _render_paired_table(
            [(d, f"{a} − {b}", r) for (d, a, b), r in summary.contrast_results.items()],
            "Contrast")
        lines.append("")
    late = render_late_gains(summary)
    if late:
        lines += ["### Convergence: late validation gain (pp)", "", FLAT_RULE, "", late, ""]
    return "\n".join(lines + _render_notes(summary))


def _render_notes(summary: SuiteSummary) -> list[str]:
    """The end of a suite's section: grids, configurations, diagnostics, compute, failures."""
    lines: list[str] = []
    grid = render_grid(summary)
    if grid:
        lines += ["### Selection grids", "",
                  "Final-epoch VALIDATION accuracy (%) of every eligible grid point, mean over "
                  "the selection seeds (n/a: a selection run of that point diverged or has not "
                  "finished); the chosen point in bold; seed sd: the standard "
                  "deviation of the chosen point's validation accuracy over its reported "
                  "seeds. Neighbouring points closer than that are not distinguishable, and "
                  "the choice among them is arbitrary.", "", grid, ""]
    configured = [c for c in summary.cells if c.config_name]
    if configured and summary.name != ADHOC:
        lines += ["Configurations of the chosen points (run directory names without the seed):",
                  ""]
        lines += [f"- {c.dataset} / {c.arm}: `{c.config_name}`" for c in configured]
        lines.append("")
    extras = [c for c in summary.cells if c.method in REGULARISED and _extras_text(c.train_extra)]
    if extras:
        lines += ["MixupE diagnostics at the final epoch, mean over the chosen point's seeds "
                  "(reg_ratio: size of the regulariser relative to the Mixup loss; "
                  "selected_frac: fraction of samples selected; rescale factor: |L_mix| / |L| "
                  "of the rescaled loss, averaged over all steps, with the range of its epoch "
                  "means):", ""]
        lines += [f"- {c.dataset} / {c.arm}: {_extras_text(c.train_extra)}" for c in extras]
        lines.append("")
    lines.append(f"Compute spent: {_fmt_duration(summary.wall_s)} of training wall time over "
                 f"{sum(c.runs for c in summary.cells)} runs "
                 f"({sum(c.failed for c in summary.cells)} failed).")
    failures = [f for c in summary.cells for f in c.failures]
    if failures:
        lines += ["", "Failed runs:", *[f"- {f}" for f in failures]]
    if not any(c.reliability for c in summary.cells):
        lines += ["", "(No per-bin reliability data in these runs' results; reliability "
                      "diagrams were skipped.)"]
    lines.append("")
    return lines


def _domain(cell: Any) -> str:
    from mixupe.data.registry import describe

    try:
        return str(describe(cell.config_name.split("/")[0])["domain"])
    except ConfigError:
        return "other"


def regime_search(summaries: Sequence[SuiteSummary]) -> dict[str, dict[str, list[str]]]:
    """Per domain (the data registry's): the settings every precondition suite tried.

    ``{domain: {setting: [suite (n seeds) -> met word, ...]}}`` in the order first seen.
    """
    out: dict[str, dict[str, list[str]]] = {}
    for summary in sorted(summaries, key=lambda x: len(x.seeds)):  # fewer seeds ran first
        for row in summary.preconditions:
            n = row.diff.n if row.diff is not None else 0
            runs = out.setdefault(_domain(row.a), {}).setdefault(row.dataset, [])
            runs.append(f"{summary.name} ({n} seeds): {_met_word(row)}")
    return out


def render_regime_search(summaries: Sequence[SuiteSummary]) -> str:
    """Counts of the settings tried per domain across the precondition suites."""
    search = regime_search(summaries)
    if not search:
        return ""
    suites = [s.name for s in sorted(summaries, key=lambda x: len(x.seeds)) if s.preconditions]
    lines = ["## The regime search across suites", "",
             f"Every setting that a precondition suite ({', '.join(suites)}) tried, grouped by "
             "the data registry's domain; the precondition is judged on validation accuracy "
             "(tables above). A setting listed under two suites was run again with more "
             "seeds.", "",
             "| Domain | Settings tried | Rerun with more seeds | Met on validation |",
             "|---|---|---|---|"]
    for domain, settings in search.items():
        rerun = [k for k, v in settings.items() if len(v) > 1]
        met = [k for k, v in settings.items() if any(x.endswith(": yes") for x in v)]
        lines.append(f"| {domain} | {len(settings)}: {', '.join(settings)} | "
                     f"{len(rerun)}{': ' + ', '.join(rerun) if rerun else ''} | "
                     f"{', '.join(met) if met else 'none'} |")
    lines += ["", "Each setting's judgements: "
              + "; ".join(f"{k}: {', '.join(v)}" for d in search.values() for k, v in d.items())
              + ".", ""]
    return "\n".join(lines)


def render_markdown(summaries: Sequence[SuiteSummary]) -> str:
    """The whole report as Markdown."""
    parts = ["# mixupe benchmark report", "",
             "Mean ± half-width of the 95 % Student-t confidence interval over seeds; "
             "accuracies, ECE and differences in percent (pp: percentage points).", ""]
    parts += [render_suite(s) for s in summaries]
    search = render_regime_search(summaries)
    if search:
        parts.append(search)
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


_CLAIM = re.compile(r"<!--\s*claim\s+(.*?)\s*-->", re.S)
_CLAIM_KEYS = {"suite", "dataset", "arm", "minus", "verdict", "family", "count", "only", "all",
               "hypothesis", "outcome"}


def _claim_rows(summary: SuiteSummary) -> list[tuple[str, str, str, dict[str, Paired]]]:
    """Every comparison row of a suite's tables: (dataset, A, B, result)."""
    rows = [(c.dataset, c.arm, summary.baseline or "", c.paired) for c in summary.cells
            if c.paired]
    rows += [(d, a, b, r) for (d, a, b), r in summary.contrast_results.items()]
    return rows


def _check_claim(fields: dict[str, str], summaries: Sequence[SuiteSummary]) -> str | None:
    """None when the claim holds, else what is wrong."""
    from fnmatch import fnmatchcase

    summary = next((s for s in summaries if s.name == fields.get("suite")), None)
    if summary is None:
        return f"no suite {fields.get('suite')!r} in the report"
    if "hypothesis" in fields:
        found = hypothesis_outcomes(summary.hypothesis_tests).get(fields["hypothesis"])
        return None if found == fields.get("outcome") else f"the report says {found!r}"
    rows = [r for r in _claim_rows(summary)
            if fnmatchcase(r[0], fields.get("dataset", "*"))
            and fnmatchcase(r[1], fields.get("arm", "*"))
            and fnmatchcase(r[2], fields.get("minus", "*"))]
    if not rows:
        return "it matches no comparison of the suite's tables"
    want = fields.get("verdict", "decided")
    family = fields.get("family", "table")
    words = [verdict_of(r[3], family=family) for r in rows]
    chosen = [r for r, w in zip(rows, words, strict=True)
              if w == want or (want == "decided" and w != "inconclusive")]
    labels = sorted({f"{r[1]} − {r[2]} ({r[0]})" for r in chosen})
    if "count" in fields and len(chosen) != int(fields["count"]):
        return f"{len(chosen)} of {len(rows)} match, not {fields['count']}: {labels}"
    if "only" in fields and {r[1] for r in chosen} != set(fields["only"].split(";")):
        return f"the matching rows are {labels}"
    if "all" in fields and len(chosen) != len(rows):
        return f"only {len(chosen)} of {len(rows)} rows are {want!r}: {labels}"
    return None


def check_claims(text: str, summaries: Sequence[SuiteSummary]) -> list[str]:
    """The verdict claims of a hand-written text that the report's tables do not bear out.

    A claim is an HTML comment beside the prose it checks, e.g. ``<!-- claim suite=family
    minus=Mixup verdict=decided only="Mixup/CutMix switch" -->`` ("only the switch
    survives") or ``<!-- claim suite=converged minus="Mixup + clean CE" arm="MixupE*"
    verdict=beats count=0 -->`` ("no MixupE arm beats the control"). Rows are the
    comparisons of the suite's tables (every arm minus the baseline, every contrast),
    filtered by ``dataset``, ``arm`` (A) and ``minus`` (B), shell patterns; ``verdict`` is
    beats, costs, inconclusive or decided (beats or costs), judged as the tables judge it
    (``family`` table, the default, or dataset); then ``count=N``, ``only="A;B"`` (exactly
    these A labels) or ``all``. ``hypothesis=H1 outcome=confirmed`` checks a pre-registered
    hypothesis.

    >>> check_claims("<!-- claim suite=nowhere count=0 -->", [])
    ["suite=nowhere count=0: no suite 'nowhere' in the report"]
    """
    import shlex

    problems = []
    for body in _CLAIM.findall(text):
        try:
            parts = shlex.split(body)
        except ValueError as exc:
            problems.append(f"{body}: not parseable ({exc})")
            continue
        fields = dict(p.split("=", 1) if "=" in p else (p, "") for p in parts)
        unknown = sorted(set(fields) - _CLAIM_KEYS)
        if unknown:
            problems.append(f"{body}: unknown key(s) {unknown}; use {sorted(_CLAIM_KEYS)}")
            continue
        wrong = _check_claim(fields, summaries)
        if wrong:
            problems.append(f"{body}: {wrong}")
    return problems


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
    summaries = summarize(runs_root, suite=suite)
    out_dir = Path(out) if out is not None else Path(runs_root) / "report"
    text = render_markdown(summaries)
    from mixupe.bench.trend import trend_section  # suite `scale`'s trend, once it has results

    text += trend_section(summaries, runs_root, out_dir, plots=plots)
    if document is not None:
        stale = stale_quotes(pre_text, text)
        if stale:
            raise ConfigError(f"the preamble {str(preamble)!r} quotes {stale}, which the "
                              f"report does not contain (the runs changed?); update those "
                              f"figures in the preamble")
        wrong = check_claims(pre_text, summaries)
        if wrong:
            raise ConfigError(f"the preamble {str(preamble)!r} makes claims the report's "
                              f"tables do not bear out: {wrong}; correct the prose and its "
                              f"claim comment")
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
        atomic_write(doc_path, _document(pre_text, text, out_dir, doc_path))
    return ReportFiles(markdown=md, plots=written, text=text, document=doc_path)
