"""Paired comparisons in the report: every metric, p-values, Holm, contrasts, documents.

Expected values come from scipy (``ttest_rel``) and from a Holm procedure written here as
a plain loop over sorted p-values, independent of ``mixupe.engine.metrics.holm_adjust``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mixupe.bench.report import render_markdown, stale_quotes, write_report
from mixupe.bench.suites import parse_suite
from mixupe.bench.summary import summarize
from mixupe.cli import main
from mixupe.engine.metrics import holm_adjust, paired_t_pvalue
from mixupe.errors import ConfigError, InputError
from test_report import METRICS, write_run, write_suite_runs

SUITE = {
    "name": "stats",
    "seeds": [0, 1, 2, 3],
    "selection_seeds": [9],
    "datasets": [{"name": "digits", "model": "mlp"}, {"name": "satimage", "model": "mlp"}],
    "arms": [
        {"label": "ERM", "method": "erm"},
        {"label": "Mixup", "method": "mixup", "grid": {"alpha": [0.5, 2.0]}},
        {"label": "MixupE a", "method": "mixupe", "version": 3, "grid": {"eta": [0.1, 1.0]}},
        {"label": "MixupE b", "method": "mixupe", "version": 4, "grid": {"eta": [0.1, 1.0]}},
    ],
    "contrasts": [["MixupE a", "MixupE b"], ["ERM", "MixupE b"]],
}


def holm_reference(pvalues):
    """Holm by definition: sort, multiply the k-th smallest by (m - k), running maximum."""
    finite = [p for p in pvalues if not math.isnan(p)]
    m = len(finite)
    kept = [i for i in range(len(pvalues)) if not math.isnan(pvalues[i])]
    order = sorted(kept, key=lambda i: pvalues[i])
    out = [math.nan] * len(pvalues)
    for k, i in enumerate(order):
        out[i] = min(1.0, max(min(1.0, (m - j) * pvalues[order[j]]) for j in range(k + 1)))
    return out


@pytest.fixture()
def runs(tmp_path: Path):
    """Every run of SUITE with random metrics; returns the root, the plans and the truth."""
    _suite, plans, truth = write_suite_runs(tmp_path, SUITE, 7)
    return tmp_path, plans, truth


def _chosen_tests(truth, dataset, arm, n_points):
    # chosen on selection seed 9; reported over seeds 0-3 (a single point needs no choice)
    best = max(range(n_points), key=lambda i: truth[(dataset, arm, i, 9)][0])
    return {s: truth[(dataset, arm, best, s)][1] for s in range(4)}


def test_paired_t_pvalue_and_holm_match_references():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 9):
        a, b = rng.normal(size=n), rng.normal(size=n)
        assert paired_t_pvalue(a.tolist(), b.tolist()) == pytest.approx(
            stats.ttest_rel(a, b).pvalue, rel=1e-10)
    for _ in range(20):
        ps = rng.uniform(0, 0.2, size=7).tolist()
        ps[3] = math.nan
        got, want = holm_adjust(ps), holm_reference(ps)
        assert math.isnan(got[3])
        assert [g for g in got if not math.isnan(g)] == pytest.approx(
            [w for w in want if not math.isnan(w)], rel=1e-12)
    assert paired_t_pvalue([1.0, 2.0], [1.0, 2.0]) == 1.0
    assert paired_t_pvalue([2.0, 3.0], [1.0, 2.0]) == 0.0
    assert math.isnan(paired_t_pvalue([1.0], [0.0]))
    with pytest.raises(InputError, match="equally long"):
        paired_t_pvalue([1.0, 2.0], [1.0])
    with pytest.raises(InputError, match="non-finite"):
        paired_t_pvalue([1.0, math.nan], [1.0, 2.0])
    with pytest.raises(InputError, match="outside"):
        holm_adjust([0.5, 1.5])


def test_every_metric_is_paired_against_the_baseline_with_holm_over_the_suite(runs):
    root, _plans, truth = runs
    (summary,) = summarize(root)
    raw_p, cells = [], []
    for dataset in ("digits", "satimage"):
        base = _chosen_tests(truth, dataset, "Mixup", 2)
        for arm, n_points in (("ERM", 1), ("MixupE a", 2), ("MixupE b", 2)):
            mine = _chosen_tests(truth, dataset, arm, n_points)
            cell = summary.cell(dataset, arm)
            for metric in ("acc", "nll", "ece", "fgsm_acc"):
                d = np.array([mine[s][metric] - base[s][metric] for s in range(4)])
                half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2.0
                got = cell.paired[metric]
                assert (got.mean, got.half, got.n) == pytest.approx((d.mean(), half, 4))
                assert got.p == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
            raw_p.append(cell.paired["acc"].p)
            cells.append(cell)
        assert "acc" not in summary.cell(dataset, "Mixup").paired  # the baseline itself
    for cell, want in zip(cells, holm_reference(raw_p), strict=True):
        assert cell.paired["acc"].p_holm == pytest.approx(want, rel=1e-12)
        assert math.isnan(cell.paired["nll"].p_holm)  # only accuracy is adjusted


def test_contrasts_are_read_from_the_manifest_and_paired(runs):
    root, _plans, truth = runs
    (summary,) = summarize(root)
    assert summary.contrasts == [("MixupE a", "MixupE b"), ("ERM", "MixupE b")]
    raw_p = []
    for dataset in ("digits", "satimage"):
        for a, na, b, nb in (("MixupE a", 2, "MixupE b", 2), ("ERM", 1, "MixupE b", 2)):
            ta, tb = _chosen_tests(truth, dataset, a, na), _chosen_tests(truth, dataset, b, nb)
            d = np.array([ta[s]["acc"] - tb[s]["acc"] for s in range(4)])
            got = summary.contrast_results[(dataset, a, b)]["acc"]
            assert got.mean == pytest.approx(d.mean())
            raw_p.append(got.p)
    holm = [summary.contrast_results[k]["acc"].p_holm for k in summary.contrast_results]
    assert holm == pytest.approx(holm_reference(raw_p), rel=1e-12)
    text = render_markdown([summary])
    assert "### Contrasts declared by the suite" in text
    assert "| digits | MixupE a − MixupE b |" in text
    assert "### At a glance" in text and "| MixupE a − Mixup |" in text


def test_glance_bolds_only_intervals_that_exclude_zero(runs):
    root, *_ = runs
    (summary,) = summarize(root)
    text = render_markdown([summary])
    glance = text.split("### At a glance")[1].split("###")[0]
    for dataset in ("digits", "satimage"):
        for arm in ("ERM", "MixupE a", "MixupE b"):
            acc = summary.cell(dataset, arm).paired["acc"]
            shown = f"{acc.mean * 100:+.2f} ± {acc.half * 100:.2f}"
            excludes = abs(acc.mean) > acc.half
            assert (f"**{shown}**" in glance) == excludes
            assert shown in glance


def test_no_point_is_announced_while_selection_runs_are_missing(runs):
    root, plans, _truth = runs
    plan = next(p for p in plans if p.dataset == "digits" and p.arm == "MixupE a")
    shutil.rmtree(root / plan.points[1].configs[9].run_name())  # a selection run not yet run
    (summary,) = summarize(root)
    cell = summary.cell("digits", "MixupE a")
    assert cell.chosen is None and cell.selection_pending == 1
    assert cell.paired == {}
    assert "| digits | MixupE a | selecting (1/2 points done) |" in render_markdown([summary])
    # A diverged selection run is final: the point is ruled out and the other one chosen.
    run = root / plan.points[0].configs[9].run_name()
    (run / "result.json").unlink()
    (run / "failed.json").write_text(json.dumps({"failed": True, "reason": "nan"}))
    write_run(root, plan.points[1].configs[9], val_acc=0.1, test={m: 0.5 for m in METRICS})
    (summary,) = summarize(root)
    assert summary.cell("digits", "MixupE a").chosen == 1


def test_contrast_validation_names_the_fix():
    bad = dict(SUITE, contrasts=[["MixupE a", "Nope"]])
    with pytest.raises(ConfigError, match=r"unknown arm\(s\) \['Nope'\]"):
        parse_suite(bad)
    with pytest.raises(ConfigError, match="itself"):
        parse_suite(dict(SUITE, contrasts=[["ERM", "ERM"]]))
    with pytest.raises(ConfigError, match="pair of arm labels"):
        parse_suite(dict(SUITE, contrasts=[["ERM"]]))
    with pytest.raises(ConfigError, match="must be a list"):
        parse_suite(dict(SUITE, contrasts="ERM"))


def test_document_joins_preamble_and_report_and_checks_quotes(runs, tmp_path):
    root, *_ = runs
    (summary,) = summarize(root)
    acc = summary.cell("digits", "MixupE a").paired["acc"]
    quote = f"{acc.mean * 100:+.2f} ± {acc.half * 100:.2f}"
    pre = tmp_path / "pre.md"
    pre.write_text(f"# Title\n\nMixupE a moved accuracy by {quote} pp.\n")
    doc = tmp_path / "docs" / "RESULTS.md"
    files = write_report(root, out=tmp_path / "docs" / "results", document=doc, preamble=pre)
    text = doc.read_text()
    assert text.index("# Title") < text.index("## The generated report")
    assert "](results/stats-differences.png)" in text  # links relative to the document
    assert (tmp_path / "docs" / "results" / "stats-differences.png").is_file()
    assert files.document == doc
    # Rerunning replaces a generated document.
    write_report(root, out=tmp_path / "docs" / "results", document=doc, preamble=pre,
                 plots=False)
    # A stale quote fails loudly and leaves the document as it was.
    pre.write_text("# Title\n\nMixupE a moved accuracy by +12.34 ± 0.01 pp.\n")
    before = doc.read_text()
    with pytest.raises(ConfigError, match=r"quotes \['\+12.34 ± 0.01'\]"):
        write_report(root, out=tmp_path / "x", document=doc, preamble=pre, plots=False)
    assert doc.read_text() == before
    # A file the user wrote is never replaced.
    mine = tmp_path / "mine.md"
    mine.write_text("my notes")
    with pytest.raises(ConfigError, match="never overwritten"):
        write_report(root, out=tmp_path / "x", document=mine, preamble=pre, plots=False)
    assert mine.read_text() == "my notes"
    with pytest.raises(ConfigError, match="go together"):
        write_report(root, document=doc)


def test_stale_quotes_ignores_bold_and_finds_missing():
    assert stale_quotes("a +1.00 ± 0.50 b", "| **+1.00 ± 0.50** |") == []
    assert stale_quotes("96.7 ± 0.2 and 0.147 ± 0.001", "96.7 ± 0.2") == ["0.147 ± 0.001"]


def test_cli_report_writes_the_document(runs, tmp_path, capsys):
    root, *_ = runs
    pre = tmp_path / "pre.md"
    pre.write_text("# Study\n")
    doc = tmp_path / "R.md"
    code = main(["report", str(root), "--out", str(tmp_path / "o"), "--no-plots",
                 "--document", str(doc), "--preamble", str(pre)])
    assert code == 0
    assert doc.read_text().count("# Study") == 1
    assert "document:" in capsys.readouterr().err
    assert main(["report", str(root), "--document", str(doc)]) == 2


def test_selection_grid_lists_every_point_with_the_chosen_one_bold(runs):
    root, _plans, truth = runs
    (summary,) = summarize(root)
    text = render_markdown([summary])
    assert "### Selection grids" in text
    for dataset in ("digits", "satimage"):
        cell = summary.cell(dataset, "MixupE a")
        vals = [truth[(dataset, "MixupE a", i, 9)][0] for i in range(2)]
        best = int(np.argmax(vals))
        entries = [f"{eta:g} → {v * 100:.2f}" for eta, v in zip((0.1, 1.0), vals, strict=True)]
        entries[best] = f"**{entries[best]}**"
        chosen_vals = [truth[(dataset, "MixupE a", best, s)][0] for s in range(4)]
        sd = np.std(chosen_vals, ddof=1) * 100
        line = f"- {dataset} / MixupE a (seed sd {sd:.2f}): eta " + ", ".join(entries)
        assert line in text
        assert cell.val_spread * 100 == pytest.approx(sd)
    grids = text.split("### Selection grids")[1].split("Configurations of the chosen")[0]
    assert "- digits / ERM" not in grids  # a single point: nothing was selected
