"""The committed study pages say what the committed run logs say.

``docs/results/report.md`` must be exactly what ``mixupe report results`` renders from the
suite manifests and packs committed in ``results/`` (configs, results, per-epoch records), and
every ``mean ± half`` figure that the hand-written parts (the preamble of docs/RESULTS.md and
the README) quote must appear in that report. A rerun that changes a number, or an edit to a
quote, fails here until the pages are regenerated (``make results``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mixupe.bench.report import GENERATED_MARK, render_markdown, stale_quotes
from mixupe.bench.summary import summarize

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results"
REPORT = ROOT / "docs" / "results" / "report.md"

pytestmark = pytest.mark.skipif(not (RUNS.is_dir() and REPORT.is_file()),
                                reason="the study's run logs or report are not in this checkout")


def test_committed_report_is_what_the_run_logs_render():
    text = render_markdown(summarize(RUNS))
    committed = REPORT.read_text(encoding="utf-8").split("\n## Plots\n")[0]
    assert committed.rstrip() == text.rstrip()


def test_hand_written_quotes_are_in_the_report():
    report = REPORT.read_text(encoding="utf-8")
    results = (ROOT / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    assert results.startswith(GENERATED_MARK)
    preamble = results.split("## The generated report")[0]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert stale_quotes(preamble, report) == []
    assert stale_quotes(readme, report) == []
