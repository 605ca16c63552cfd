"""Paired comparisons in the report: every metric, p-values, Holm, contrasts, documents.

Expected values come from scipy (``ttest_rel``) and from a Holm procedure written here as
a plain loop over sorted p-values, independent of ``mixupe.engine.metrics.holm_adjust``.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mixupe.bench.report import check_claims, render_markdown, stale_quotes, write_report
from mixupe.bench.stats import flat_rule, verdict, wilcoxon_signed_rank
from mixupe.bench.suites import expand, load_suite, manifest, parse_suite, write_manifest
from mixupe.bench.summary import BEST, hypothesis_outcomes, summarize, verdict_of
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


# --- the statistics stated once: Wilcoxon, Holm families, verdicts, hypotheses, claims ---

def wilcoxon_by_enumeration(d):
    """Two-sided p by listing all 2^n sign flips of the average ranks of |d| (zeros dropped)."""
    d = [x for x in d if x != 0]
    ranks = stats.rankdata(np.abs(d))
    observed = ranks[np.array(d) > 0].sum()
    sums = [sum(r for r, s in zip(ranks, signs, strict=True) if s)
            for signs in itertools.product((0, 1), repeat=len(d))]
    low = np.mean([x <= observed + 1e-9 for x in sums])
    high = np.mean([x >= observed - 1e-9 for x in sums])
    return min(1.0, 2 * min(low, high))


def test_wilcoxon_matches_scipy_exact_and_an_enumeration_with_ties_and_zeros():
    rng = np.random.default_rng(4)
    for n in (3, 5, 8, 10, 12):
        for _ in range(5):
            d = rng.normal(0.3, 1.0, size=n)
            want = stats.wilcoxon(d, method="exact").pvalue
            assert wilcoxon_signed_rank(d.tolist()) == pytest.approx(want, rel=1e-12)
    for _ in range(20):  # accuracies on a 300-sample test set: multiples of 1/300, many ties
        d = (rng.integers(-4, 6, size=9) / 300).tolist()
        assert wilcoxon_signed_rank(d) == pytest.approx(wilcoxon_by_enumeration(d), rel=1e-12)
    assert wilcoxon_signed_rank([0.01] * 10) == pytest.approx(2 / 1024)  # "10 of 10 seeds"
    assert math.isnan(wilcoxon_signed_rank([0.0, 0.0]))
    with pytest.raises(InputError, match="non-finite"):
        wilcoxon_signed_rank([1.0, math.nan])


def test_flat_rule_and_verdict_words():
    assert flat_rule(0.0015, 0.0004) is True  # 0.11-0.19 pp: below 0.2 pp
    assert flat_rule(0.0020, 0.0004) is False  # 0.16-0.24 pp: not below, excludes zero
    assert flat_rule(-0.004, 0.005) is True  # includes zero
    assert flat_rule(-0.004, 0.001) is True  # falling lies below 0.2 pp too
    assert flat_rule(0.01, math.nan) is None
    assert verdict((0.01, 0.01), (0.02, 0.04)) == "beats"
    assert verdict((-0.01, 0.01), (-0.02, 0.04)) == "costs"
    assert verdict((0.01, 0.01), (-0.02, 0.04)) == "inconclusive"  # the epochs disagree
    assert verdict((0.01, 0.01), (0.02, 0.06)) == "inconclusive"  # best epoch not adjusted in
    assert verdict((0.01, 0.01), None) == "inconclusive"


HYP_SEEDS = list(range(6))
NOISE = np.array([1.0, -1.0, 2.0, -2.0, 0.5, -0.5]) * 0.002  # mean exactly 0
HSUITE = {
    "name": "hyp", "seeds": HYP_SEEDS, "selection_seeds": [9], "baseline": "Mixup",
    "datasets": [{"name": "digits", "model": "mlp"}, {"name": "satimage", "model": "mlp"}],
    "arms": [{"label": "ERM", "method": "erm"}, {"label": "Mixup", "method": "mixup"},
             {"label": "A", "method": "mixupe", "version": 3},
             {"label": "B", "method": "mixupe", "version": 4}],
    "contrasts": [["A", "B"]],
    "hypotheses": [
        {"id": "H1", "dataset": "digits", "arm": "A", "baseline": "Mixup", "direction": ">"},
        {"id": "H2", "dataset": "digits", "arm": "B", "baseline": "A", "direction": ">="},
        {"id": "H3", "dataset": "satimage", "arm": "A", "baseline": "Mixup",
         "direction": ">"},
        {"id": "H4", "dataset": "satimage", "arm": ["A", "B"], "baseline": "Mixup",
         "direction": "="},
        {"id": "H5", "dataset": ["digits", "satimage"], "arm": "Mixup", "baseline": "ERM",
         "direction": ">"},
    ],
}
# (dataset, arm) -> (final offset, best-epoch offset) over Mixup's accuracy, plus noise
EFFECTS = {("digits", "A"): (0.02, 0.02), ("digits", "B"): (-0.03, -0.03),
           ("satimage", "A"): (0.02, 0.0), ("satimage", "B"): (0.03, 0.03),
           ("digits", "ERM"): (-0.02, -0.02), ("satimage", "ERM"): (-0.02, 0.0)}


def _write_hyp_runs(root: Path, suite_dict: dict = HSUITE):
    """Final and best-epoch test accuracy set per (dataset, arm, seed); returns them."""
    suite = parse_suite(suite_dict)
    plans = expand(suite)
    write_manifest(root, manifest(suite, plans))
    truth = {}
    for k, plan in enumerate(plans):
        final_off, best_off = EFFECTS.get((plan.dataset, plan.arm), (0.0, 0.0))
        noise = np.roll(NOISE, k) if plan.arm != "Mixup" else 0.0 * NOISE
        for i, s in enumerate(HYP_SEEDS):
            cfg = plan.points[0].configs[s]
            final = 0.7 + 0.01 * s + final_off + noise[i]
            best = 0.7 + 0.01 * s + best_off + noise[i] * 1.5
            write_run(root, cfg, val_acc=0.8, test={m: final for m in METRICS})
            run = root / cfg.run_name()
            result = json.loads((run / "result.json").read_text())
            result["best"] = {"epoch": 2, "val": {"acc": 0.9}, "test": {"acc": best}}
            (run / "result.json").write_text(json.dumps(result))
            truth[(plan.dataset, plan.arm, s)] = (final, best)
    return truth


def test_holm_is_shown_per_dataset_and_table_wide(tmp_path: Path):
    truth = _write_hyp_runs(tmp_path)
    (summary,) = summarize(tmp_path)
    rows = [(c.dataset, c.arm) for c in summary.cells if c.paired]
    for k, metric in ((0, "acc"), (1, BEST)):
        p = [stats.ttest_rel([truth[(d, a, s)][k] for s in HYP_SEEDS],
                             [truth[(d, "Mixup", s)][k] for s in HYP_SEEDS]).pvalue
             for d, a in rows]
        table = holm_reference(p)
        for (d, a), want in zip(rows, table, strict=True):
            got = summary.cell(d, a).paired[metric]
            assert got.p_holm == pytest.approx(want, rel=1e-9)
            same = [i for i, (d2, _) in enumerate(rows) if d2 == d]
            per = holm_reference([p[i] for i in same])
            assert got.p_dataset == pytest.approx(per[same.index(rows.index((d, a)))],
                                                  rel=1e-9)
            diffs = [truth[(d, a, s)][k] - truth[(d, "Mixup", s)][k] for s in HYP_SEEDS]
            assert got.p_wilcoxon == pytest.approx(wilcoxon_by_enumeration(diffs), rel=1e-9)
    # digits A: +2 pp at both epochs -> beats; satimage A: +2 pp final, 0 at best -> inconclusive
    assert verdict_of(summary.cell("digits", "A").paired) == "beats"
    assert verdict_of(summary.cell("satimage", "A").paired) == "inconclusive"
    assert verdict_of(summary.cell("digits", "ERM").paired) == "costs"
    text = render_markdown([summary])
    assert "| Holm p (dataset / table) |" in text and "| beats / beats |" in text
    glance = text.split("### At a glance")[1].split("###")[0]
    assert "†" in glance.split("| digits |")[1].split("\n")[0]
    assert "†" not in glance.split("| satimage |")[1].split("\n")[0].split("|")[4]


def _outcome_reference(direction, s_final, s_best):
    both = {s_final, s_best}
    if direction == ">":
        return "confirmed" if both == {1} else "reversed" if both == {-1} else "not confirmed"
    if direction == ">=":
        return ("confirmed" if -1 not in both else "reversed" if both == {-1}
                else "not confirmed")
    return "confirmed" if both == {0} else "reversed" if len(both) == 1 else "not confirmed"


def test_hypotheses_are_judged_at_both_epochs_with_holm_over_the_family(tmp_path: Path):
    truth = _write_hyp_runs(tmp_path)
    (summary,) = summarize(tmp_path)
    comps = [("H1", "digits", "A", "Mixup", ">"), ("H2", "digits", "B", "A", ">="),
             ("H3", "satimage", "A", "Mixup", ">"), ("H4", "satimage", "A", "Mixup", "="),
             ("H4", "satimage", "B", "Mixup", "="), ("H5", "digits", "Mixup", "ERM", ">"),
             ("H5", "satimage", "Mixup", "ERM", ">")]
    assert [(t.hypothesis.id, t.dataset, t.arm) for t in summary.hypothesis_tests] == [
        c[:3] for c in comps]
    sides = []
    for k in (0, 1):
        diffs = [np.array([truth[(d, a, s)][k] - truth[(d, b, s)][k] for s in HYP_SEEDS])
                 for _, d, a, b, _ in comps]
        holm = holm_reference([stats.ttest_1samp(x, 0.0).pvalue for x in diffs])
        sides.append([0 if q >= 0.05 else int(np.sign(x.mean()))
                      for x, q in zip(diffs, holm, strict=True)])
        for t, q in zip(summary.hypothesis_tests, holm, strict=True):
            assert t.result["acc" if k == 0 else BEST].p_holm == pytest.approx(q, rel=1e-9)
    want = [_outcome_reference(c[4], sf, sb)
            for c, sf, sb in zip(comps, sides[0], sides[1], strict=True)]
    assert [t.outcome for t in summary.hypothesis_tests] == want
    # by construction: H1 confirmed, H2 reversed, H3 final epoch only, H4 A differs at the
    # final epoch only and B at both, H5 holds on digits only
    assert hypothesis_outcomes(summary.hypothesis_tests) == {
        "H1": "confirmed", "H2": "reversed", "H3": "not confirmed", "H4": "not confirmed",
        "H5": "not confirmed"}
    text = render_markdown([summary])
    assert "### Pre-registered hypotheses" in text
    assert "| H2 | digits | B >= A |" in text and "- H2: **reversed**" in text
    assert "- H4: **not confirmed** (1 not confirmed, 1 reversed)" in text
    assert "- H5: **not confirmed** (1 confirmed, 1 not confirmed)" in text


def test_hypotheses_are_validated_and_pending_until_run(tmp_path: Path):
    bad = [({"id": "H1", "dataset": "nope", "arm": "A", "baseline": "Mixup",
             "direction": ">"}, r"dataset names unknown label\(s\) \['nope'\]"),
           ({"id": "H1", "dataset": "digits", "arm": "A", "baseline": "Mixup",
             "direction": "!="}, "direction = '!=' must be one of"),
           ({"id": "H1", "dataset": "digits", "arm": "A", "baseline": "A",
             "direction": ">"}, "compared with itself"),
           ({"id": "H1", "dataset": "digits", "arm": "A", "baseline": "Mixup",
             "direction": ">", "side": 1}, r"unknown key\(s\) \['side'\]")]
    for entry, message in bad:
        with pytest.raises(ConfigError, match=message):
            parse_suite(dict(HSUITE, hypotheses=[entry]))
    suite = parse_suite(HSUITE)
    write_manifest(tmp_path, manifest(suite, expand(suite)))
    write_run(tmp_path, expand(suite)[0].points[0].configs[0], val_acc=0.5,
              test={m: 0.5 for m in METRICS})
    (summary,) = summarize(tmp_path)
    assert set(hypothesis_outcomes(summary.hypothesis_tests).values()) == {"pending"}


def test_a_manifest_without_hypotheses_takes_them_from_the_builtin_suite(tmp_path: Path):
    suite = load_suite("converged-confirm")
    record = manifest(suite, expand(suite))
    assert [h["id"] for h in record["hypotheses"]] == [f"H{i}" for i in range(1, 8)]
    del record["hypotheses"]  # as written by the runner before hypotheses were recorded
    write_manifest(tmp_path, record)
    (summary,) = summarize(tmp_path)
    assert [h.id for h in summary.hypotheses] == [f"H{i}" for i in range(1, 8)]
    assert len(summary.hypothesis_tests) == 1 + 1 + 1 + 1 + 5 + 5 + 4


def test_claims_are_checked_against_the_tables(tmp_path: Path):
    _write_hyp_runs(tmp_path)
    summaries = summarize(tmp_path)
    good = ('<!-- claim suite=hyp minus=Mixup verdict=beats only=A dataset=digits -->'
            '<!-- claim suite=hyp arm=A minus=B verdict=beats dataset=digits all -->'
            '<!-- claim suite=hyp dataset=satimage minus=Mixup arm="[AB]" verdict=beats '
            'count=1 -->'
            '<!-- claim suite=hyp hypothesis=H2 outcome=reversed -->')
    assert check_claims(good, summaries) == []
    bad = ('<!-- claim suite=hyp minus=Mixup verdict=beats count=0 -->'
           '<!-- claim suite=hyp arm=Nope count=0 -->'
           '<!-- claim suite=hyp hypothesis=H3 outcome=confirmed -->'
           '<!-- claim suite=hyp minus=Mixup colour=red -->')
    problems = check_claims(bad, summaries)
    assert len(problems) == 4
    assert "not 0" in problems[0] and "matches no comparison" in problems[1]
    assert "'not confirmed'" in problems[2] and "unknown key" in problems[3]
    pre = tmp_path / "pre.md"
    pre.write_text("Nothing beats Mixup. <!-- claim suite=hyp minus=Mixup verdict=beats "
                   "count=0 -->\n")
    with pytest.raises(ConfigError, match="claims the report's tables do not bear out"):
        write_report(tmp_path, out=tmp_path / "o", document=tmp_path / "R.md", preamble=pre,
                     plots=False)


def test_a_hypothesis_measured_on_part_of_its_seeds_is_pending():
    from mixupe.bench.suites import Hypothesis
    from mixupe.bench.summary import HypothesisTest, Paired

    h = Hypothesis(id="H", datasets=("d",), arms=("A",), baseline="B", direction=">")
    clear = {m: Paired(mean=2.0, half=0.5, n=2, p=1e-4, p_holm=1e-4) for m in ("acc", BEST)}
    # a clear positive difference on 2 of 10 pre-registered seeds is not yet a verdict ...
    assert HypothesisTest(h, "d", "A", clear, seeds=10).outcome == "pending"
    # ... and the same difference on every seed is
    full = {m: Paired(mean=2.0, half=0.5, n=10, p=1e-4, p_holm=1e-4) for m in ("acc", BEST)}
    assert HypothesisTest(h, "d", "A", full, seeds=10).outcome == "confirmed"
