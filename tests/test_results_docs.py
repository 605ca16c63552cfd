"""The committed study pages say what the committed run logs say.

``docs/results/report.md`` must be exactly what ``mixupe report results`` renders from the
suite manifests and packs committed in ``results/`` (configs, results, per-epoch records), and
every ``mean ± half`` figure that the hand-written parts (the preamble of docs/RESULTS.md and
the README) quote must appear in that report. Verdict claims in prose ("no arm beats X",
"only Y survives") carry a ``<!-- claim ... -->`` comment that is re-judged here from the
tables (:func:`mixupe.bench.report.check_claims`), and the regime search's counts quoted in
the preamble are re-derived from the suite manifests. A rerun that changes a number or a
verdict, or an edit to a quote, fails here until the pages are regenerated (``make results``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mixupe.bench.report import (
    GENERATED_MARK,
    check_claims,
    regime_search,
    render_markdown,
    stale_quotes,
)
from mixupe.bench.summary import summarize
from mixupe.bench.trend import trend_section
from mixupe.data.registry import describe

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results"
REPORT = ROOT / "docs" / "results" / "report.md"

pytestmark = pytest.mark.skipif(not (RUNS.is_dir() and REPORT.is_file()),
                                reason="the study's run logs or report are not in this checkout")


@pytest.fixture(scope="module")
def summaries():
    return summarize(RUNS)


def _preamble() -> str:
    results = (ROOT / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    assert results.startswith(GENERATED_MARK)
    return results.split("## The generated report")[0]


def test_committed_report_is_what_the_run_logs_render(summaries, tmp_path):
    text = render_markdown(summaries)
    committed = REPORT.read_text(encoding="utf-8").split("\n## Plots\n")[0]
    tables, _, trend = committed.partition("\n## The trend with training-set size")
    assert tables.rstrip() == text.rstrip()
    committed_trend = ("## The trend with training-set size" + trend if trend else "")
    rendered = trend_section(summaries, RUNS, tmp_path, plots=False)
    assert committed_trend.split("\n![")[0].rstrip() == rendered.rstrip()


# The README's summary, the site's home page (the README with site links) and the user guide,
# which holds the README's other summaries of the study (docs/guide/study.md, family.md).
PAGES = [ROOT / "README.md", ROOT / "docs" / "index.md",
         *sorted((ROOT / "docs" / "guide").glob("*.md"))]


def _claims(text: str) -> int:
    return len(re.findall(r"<!--\s*claim\s", text))


def test_hand_written_quotes_are_in_the_report():
    report = REPORT.read_text(encoding="utf-8")
    assert stale_quotes(_preamble(), report) == []
    for page in PAGES:
        assert stale_quotes(page.read_text(encoding="utf-8"), report) == [], page.name


def test_verdict_claims_hold_in_the_tables(summaries):
    preamble = _preamble()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for text in (preamble, readme):
        assert _claims(text) >= 3  # the claims are really there
        assert check_claims(text, summaries) == []
    guide = {page.name: page.read_text(encoding="utf-8") for page in PAGES[1:]}
    # the study's summary and the family's verdict, moved out of the README
    assert _claims(guide["study.md"]) >= 3 and _claims(guide["family.md"]) >= 1
    for name, text in guide.items():
        assert check_claims(text, summaries) == [], name


def test_a_false_claim_is_caught(summaries):
    # the claims the review found false in the earlier text
    assert check_claims('<!-- claim suite=family minus=Mixup verdict=decided '
                        'only="CutMix;Mixup/CutMix switch;FMix;SaliencyMix" -->', summaries)
    assert check_claims('<!-- claim suite=converged dataset=fsdd-300 minus=Mixup '
                        'arm="MixupE v3 (sign -1, released)" verdict=beats count=1 -->',
                        summaries)


NUMBER_WORDS = dict(enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven",
                               "eight", "nine", "ten", "eleven", "twelve", "thirteen",
                               "fourteen", "fifteen", "sixteen")))


def test_regime_search_counts_in_the_preamble_come_from_the_manifests(summaries):
    # independent of the report: the dataset labels of the precondition suites' manifests,
    # grouped by the registry's domain of the dataset their runs name
    settings: dict[str, set[str]] = {}
    seen: dict[str, int] = {}
    for name in ("regime", "regime-10"):
        record = json.loads((RUNS / "_suites" / f"{name}.json").read_text(encoding="utf-8"))
        assert record["precondition"] == ["Mixup", "ERM"]
        for cell in record["cells"]:
            if cell["arm"] != "ERM":
                continue
            run = next(iter(cell["points"][0]["runs"].values()))
            domain = describe(run.split("/")[0])["domain"]
            settings.setdefault(domain, set()).add(cell["dataset"])
            seen[cell["dataset"]] = seen.get(cell["dataset"], 0) + 1
    derived = regime_search(summaries)
    assert {d: set(v) for d, v in derived.items()} == settings
    block = _preamble().split("<!-- regime counts -->")[1].split("<!-- /regime counts -->")[0]
    block = " ".join(block.split())
    total = sum(len(v) for v in settings.values())
    assert block.startswith(f"{NUMBER_WORDS[total].capitalize()} settings were tried")
    for domain, labels in settings.items():
        assert f"{domain} {len(labels)} (" in block
    reruns = sum(1 for n in seen.values() if n > 1)
    assert f"{reruns} of them were run again with 10 seeds" in block
