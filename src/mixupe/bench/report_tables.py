"""The tables of a suite's report section: the results table, the glance, the paired
differences, the selection grids, the precondition, convergence and hypotheses tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from mixupe.bench.formats import (
    chosen_text,
    flat_word,
    fmt_cost,
    fmt_gain,
    fmt_p,
    fmt_paired,
    fmt_params,
    fmt_value,
    holm_pair,
    met_word,
    pct,
)
from mixupe.bench.summary import (
    BEST,
    HypothesisTest,
    Paired,
    SuiteSummary,
    hypothesis_outcomes,
    verdict_of,
)

__all__ = ["render_glance", "render_grid", "render_hypotheses", "render_late_gains",
           "render_paired_table", "render_precondition", "render_results_table"]


COST_NOTE = (
    "s/run: mean wall time of a reported run of the chosen point (training and evaluation, "
    "one process), and its ratio to the baseline arm's; runs shared cores with other work, so "
    "read it as a rough cost (benchmarks/ times single steps)."
)


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
        entries = [fmt_paired(c.paired.get("acc") if c is not None else None)
                   + (" †" if c is not None and _survives(c.paired) else "") for c in cells]
        if "acc" not in base.ci:
            entries = ["not run yet" if not base.runs else "incomplete"] + [""] * (len(arms) - 1)
        rows.append(f"| {dataset} | {pct(base.ci.get('acc'), digits=2)} | "
                    + " | ".join(entries) + " |")
    if not rows:
        return ""
    head = (f"| Dataset | {summary.baseline} test acc (%) | "
            + " | ".join(f"{a} − {summary.baseline}" for a in arms) + " |")
    return "\n".join([head, "|" + "---|" * (len(arms) + 2), *rows])


def render_paired_table(rows: Sequence[tuple[str, str, dict[str, Paired]]],
                         first: str) -> list[str]:
    lines = [f"| Dataset | {first} | Δ acc (pp) | p | W | Holm p (dataset / table) | "
             f"Δ best-epoch acc (pp) [Holm] | Verdict (table / dataset) | Δ NLL | Δ ECE (pp) | "
             f"Δ FGSM acc (pp) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, label, paired in rows:
        acc, best = paired.get("acc"), paired.get(BEST)
        best_text = fmt_paired(best)
        if best is not None and math.isfinite(best.p_holm):
            best_text += f" [{holm_pair(best)}]"
        verdicts = f"{verdict_of(paired)} / {verdict_of(paired, family='dataset')}"
        lines.append(
            f"| {dataset} | {label} | {fmt_paired(acc)} | {fmt_p(acc.p if acc else math.nan)} "
            f"| {fmt_p(acc.p_wilcoxon if acc else math.nan)} | {holm_pair(acc)} | "
            f"{best_text} | {verdicts} | "
            f"{fmt_paired(paired.get('nll'), 1.0, 3)} | {fmt_paired(paired.get('ece'))} | "
            f"{fmt_paired(paired.get('fgsm_acc'))} |")
    return lines


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
                head = ", ".join(f"{k}={fmt_value(params[k])}" for k in keys[:-1])
                head = (head + ", " if head else "") + f"{keys[-1]}"
                shown = f"{score * 100:.2f}" if math.isfinite(score) else "n/a"
                entry = f"{fmt_value(params[keys[-1]])} → {shown}"
                groups.setdefault(head, []).append(f"**{entry}**" if params == cell.params
                                                   else entry)
            if not groups:
                continue
            spread = (f" (seed sd {cell.val_spread * 100:.2f})"
                      if math.isfinite(cell.val_spread) else "")
            body = "; ".join(f"{head} " + ", ".join(items) for head, items in groups.items())
            lines.append(f"- {dataset} / {cell.arm}{spread}: {body}")
    return "\n".join(lines)


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
            f"| {row.dataset} | {n} | {fmt_params(a.params)} | {fmt_paired(row.diff)} | "
            f"{fmt_p(row.diff.p_wilcoxon if row.diff else math.nan)} | "
            f"{fmt_gain(b.late_gain)} ({flat_word(b)}) | "
            f"{fmt_gain(a.late_gain)} ({flat_word(a)}) | {max(a.epochs, b.epochs)} | "
            f"{walls} | {met_word(row)} |")
    return "\n".join(lines)


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
            entries.append(f"{fmt_gain(cell.late_gain)} ({flat_word(cell)})" if ok else "")
        if any(entries):
            rows.append(f"| {dataset} | " + " | ".join(entries) + " |")
    if not rows:
        return ""
    return "\n".join([f"| Dataset | {' | '.join(arms)} |", "|---|" + "---|" * len(arms), *rows])


def _hyp_epoch(r: Paired | None) -> list[str]:
    if r is None:
        return ["–", "–", "–"]
    return [fmt_paired(r), fmt_p(r.p_holm), fmt_p(r.p_wilcoxon)]


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


def render_results_table(summary: SuiteSummary) -> list[str]:
    """The suite's main table, one row per dataset x arm, and the note on its cost column."""
    base = summary.baseline or "baseline"
    lines = [
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
            diff = fmt_paired(cell.paired.get("acc")).replace("**", "")
            if cell.diff is not None and "(n=" not in diff and "pairs" not in diff:
                diff += f" (n={cell.diff[2]})"
            seeds = f"{len(cell.seeds)}" + (f" (+{cell.missing} missing)" if cell.missing else "")
            lines.append(
                f"| {dataset} | {arm} | {chosen_text(cell)} | {seeds} | "
                f"{pct(cell.ci.get('acc'))} | {pct(cell.ci.get(BEST))} | "
                f"{pct(cell.ci.get('nll'), 1.0, 3)} | "
                f"{pct(cell.ci.get('ece'))} | {pct(cell.ci.get('brier'), 1.0, 3)} | "
                f"{pct(cell.ci.get('fgsm_acc'))} | {diff} | {cell.failed}/{cell.runs} | "
                f"{fmt_cost(cell.chosen_wall_s, base_wall)} |"
            )
    return [*lines, "", COST_NOTE, ""]
