"""The notes that end a suite's report section (grids, configurations, diagnostics,
compute, failures) and the regime search across the precondition suites."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mixupe.bench.formats import extras_text, fmt_duration, met_word
from mixupe.bench.report_tables import render_grid
from mixupe.bench.summary import ADHOC, SuiteSummary
from mixupe.errors import ConfigError

__all__ = ["REGULARISED", "regime_search", "render_notes", "render_regime_search"]

# Methods whose training adds a regulariser to a mixing loss (their diagnostics are shown).
REGULARISED = ("mixupe", "mixup-ce")


def render_notes(summary: SuiteSummary) -> list[str]:
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
    extras = [c for c in summary.cells if c.method in REGULARISED and extras_text(c.train_extra)]
    if extras:
        lines += ["MixupE diagnostics at the final epoch, mean over the chosen point's seeds "
                  "(reg_ratio: size of the regulariser relative to the Mixup loss; "
                  "selected_frac: fraction of samples selected; rescale factor: |L_mix| / |L| "
                  "of the rescaled loss, averaged over all steps, with the range of its epoch "
                  "means):", ""]
        lines += [f"- {c.dataset} / {c.arm}: {extras_text(c.train_extra)}" for c in extras]
        lines.append("")
    lines.append(f"Compute spent: {fmt_duration(summary.wall_s)} of training wall time over "
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


# Suites that check the precondition at settings fixed in advance (sizes, the paper's setting):
# they are not part of the search for a regime, so the search's counts leave them out.
NOT_A_SEARCH = ("scale", "paper-cifar")


def _searches(summaries: Sequence[SuiteSummary]) -> list[SuiteSummary]:
    return [s for s in sorted(summaries, key=lambda x: len(x.seeds))  # fewer seeds ran first
            if s.name not in NOT_A_SEARCH]


def regime_search(summaries: Sequence[SuiteSummary]) -> dict[str, dict[str, list[str]]]:
    """Per domain (the data registry's): the settings every precondition suite tried.

    ``{domain: {setting: [suite (n seeds) -> met word, ...]}}`` in the order first seen.
    """
    out: dict[str, dict[str, list[str]]] = {}
    for summary in _searches(summaries):
        for row in summary.preconditions:
            n = row.diff.n if row.diff is not None else 0
            runs = out.setdefault(_domain(row.a), {}).setdefault(row.dataset, [])
            runs.append(f"{summary.name} ({n} seeds): {met_word(row)}")
    return out


def render_regime_search(summaries: Sequence[SuiteSummary]) -> str:
    """Counts of the settings tried per domain across the precondition suites."""
    search = regime_search(summaries)
    if not search:
        return ""
    suites = [s.name for s in _searches(summaries) if s.preconditions]
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
