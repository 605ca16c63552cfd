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

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mixupe.atomic import atomic_write

# Every name the report offers, importable from here: the tables, notes and claims modules
# hold the parts.
from mixupe.bench.claims import check_claims, stale_quotes
from mixupe.bench.report_notes import REGULARISED as REGULARISED
from mixupe.bench.report_notes import regime_search, render_notes, render_regime_search
from mixupe.bench.report_tables import COST_NOTE as COST_NOTE
from mixupe.bench.report_tables import (
    FLAT_RULE,
    HYPOTHESES_INTRO,
    PAIRED_COLUMNS,
    PAIRED_INTRO,
    PRECONDITION_INTRO,
    render_glance,
    render_hypotheses,
    render_late_gains,
    render_paired_table,
    render_precondition,
    render_results_table,
)
from mixupe.bench.report_tables import render_grid as render_grid
from mixupe.bench.selection import FIXED_PROTOCOL, PROTOCOL
from mixupe.bench.summary import ADHOC, SuiteSummary, summarize
from mixupe.errors import ConfigError

__all__ = ["check_claims", "regime_search", "render_glance", "render_markdown", "render_suite",
           "stale_quotes", "write_report"]


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
    lines += render_results_table(summary)
    return "\n".join(lines + _comparisons(summary) + render_notes(summary))


def _comparisons(summary: SuiteSummary) -> list[str]:
    """The glance, the paired differences against the baseline, the suite's contrasts and
    the convergence table, each where the suite has it."""
    base = summary.baseline or "baseline"
    lines: list[str] = []
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
        lines += render_paired_table(rows, "Arm (minus " + base + ")")
        lines.append("")
    if summary.contrast_results:
        lines += ["### Contrasts declared by the suite", "",
                  "Each row is the first arm minus the second, each at its own selected point. "
                  + PAIRED_COLUMNS, ""]
        lines += render_paired_table(
            [(d, f"{a} − {b}", r) for (d, a, b), r in summary.contrast_results.items()],
            "Contrast")
        lines.append("")
    late = render_late_gains(summary)
    if late:
        lines += ["### Convergence: late validation gain (pp)", "", FLAT_RULE, "", late, ""]
    return lines


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
    pre_text = _read_preamble(document, preamble)
    summaries = summarize(runs_root, suite=suite)
    out_dir = Path(out) if out is not None else Path(runs_root) / "report"
    text = render_markdown(summaries)
    from mixupe.bench.trend import trend_section  # suite `scale`'s trend, once it has results

    text += trend_section(summaries, runs_root, out_dir, plots=plots)
    if document is not None:
        _check_preamble(pre_text, text, summaries, preamble)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = _write_plots(summaries, out_dir) if plots else []
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


def _read_preamble(document: str | Path | None, preamble: str | Path | None) -> str:
    """The preamble's text ("" without one); refuses a document without a preamble (or the
    reverse), a missing preamble and a document this function did not write."""
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
    return pre_text


def _check_preamble(pre_text: str, text: str, summaries: Sequence[SuiteSummary],
                    preamble: str | Path | None) -> None:
    """ConfigError when the preamble quotes a figure, or claims a verdict, the report lacks."""
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


def _write_plots(summaries: Sequence[SuiteSummary], out_dir: Path) -> list[Path]:
    from mixupe.bench.plots import plot_suite

    written: list[Path] = []
    for summary in summaries:
        written += plot_suite(summary, out_dir)
    return written
