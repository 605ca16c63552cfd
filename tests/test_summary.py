"""The report's data model: degenerate differences, best-epoch metrics, packs, preconditions.

Expected values are computed here by hand from the numbers written into the fake runs.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mixupe.bench.report import render_markdown
from mixupe.bench.rundirs import PACK_DIR, RunReader, read_run, write_pack
from mixupe.bench.suites import expand, manifest, parse_suite, write_manifest
from mixupe.bench.summary import BEST, summarize
from mixupe.errors import ConfigError, CorruptDataError
from test_report import METRICS, write_run

TWO_ARMS = {
    "name": "two", "seeds": [0, 1, 2, 3], "selection_seeds": [9],
    "datasets": [{"name": "digits", "model": "mlp"}],
    "arms": [{"label": "ERM", "method": "erm"}, {"label": "Mixup", "method": "mixup"}],
    "baseline": "ERM", "precondition": ["Mixup", "ERM"],
}


def _suite(root: Path, suite_dict: dict = TWO_ARMS):
    suite = parse_suite(suite_dict)
    plans = expand(suite)
    write_manifest(root, manifest(suite, plans))
    return {p.arm: p.points[0].configs for p in plans}


def test_identical_paired_differences_are_not_called_significant(tmp_path: Path):
    configs = _suite(tmp_path)
    for s in range(4):
        base = 0.5 + 0.01 * s
        write_run(tmp_path, configs["ERM"][s], val_acc=0.8, test={m: base for m in METRICS})
        write_run(tmp_path, configs["Mixup"][s], val_acc=0.8,
                  test={m: base + 0.005 for m in METRICS})
    (summary,) = summarize(tmp_path)
    paired = summary.cell("digits", "Mixup").paired["acc"]
    assert paired.degenerate and math.isnan(paired.p) and not paired.excludes_zero
    assert paired.mean == pytest.approx(0.005)
    text = render_markdown([summary])
    assert "+0.50 (same in all 4 pairs)" in text
    assert "**+0.50" not in text and "± 0.00" not in text


def _epochs(val: list[float], test: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "val": {"acc": v}, "test": {"acc": t}}
            for i, (v, t) in enumerate(zip(val, test, strict=True))]


def test_best_epoch_test_accuracy_from_result_or_from_every_epoch_records(tmp_path: Path):
    configs = _suite(tmp_path)
    rng = np.random.default_rng(3)
    truth = {}
    for arm in ("ERM", "Mixup"):
        for s in range(4):
            cfg = configs[arm][s]
            write_run(tmp_path, cfg, val_acc=0.8, test={m: 0.6 for m in METRICS})
            run = tmp_path / cfg.run_name()
            val, test = rng.uniform(0.5, 0.9, 6).tolist(), rng.uniform(0.5, 0.9, 6).tolist()
            best = int(np.argmax(val))
            truth[(arm, s)] = test[best]
            if arm == "ERM":  # an old run: test after every epoch, no "best" entry
                (run / "metrics.jsonl").write_text(
                    "".join(json.dumps(r) + "\n" for r in _epochs(val, test)))
            else:  # a new run: result.json names the best epoch and its test metrics
                result = json.loads((run / "result.json").read_text())
                result["best"] = {"epoch": best + 1, "val": {"acc": val[best]},
                                  "test": {"acc": test[best]}}
                (run / "result.json").write_text(json.dumps(result))
    (summary,) = summarize(tmp_path)
    for arm in ("ERM", "Mixup"):
        cell = summary.cell("digits", arm)
        assert cell.test[BEST] == pytest.approx({s: truth[(arm, s)] for s in range(4)})
    d = np.array([truth[("Mixup", s)] - truth[("ERM", s)] for s in range(4)])
    got = summary.cell("digits", "Mixup").paired[BEST]
    assert got.mean == pytest.approx(d.mean())
    assert got.half == pytest.approx(stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2)


def test_a_pack_reads_back_to_the_same_summary_and_is_refused_when_corrupt(tmp_path: Path):
    runs = tmp_path / "runs"
    configs = _suite(runs)
    rng = np.random.default_rng(5)
    for arm in ("ERM", "Mixup"):
        for s in range(4):
            write_run(runs, configs[arm][s], val_acc=float(rng.uniform(0.5, 0.9)),
                      test={m: float(rng.uniform(0.1, 0.9)) for m in METRICS}, epochs=5)
    names = [configs[arm][s].run_name() for arm in ("ERM", "Mixup") for s in range(4)]
    packed = tmp_path / "packed"
    n = write_pack(runs, names, packed / PACK_DIR / "two.json.gz")
    assert n == len(names)
    (packed / "_suites").mkdir()
    (packed / "_suites" / "two.json").write_text((runs / "_suites" / "two.json").read_text())
    original, = summarize(runs)
    from_pack, = summarize(packed)
    assert render_markdown([from_pack]) == render_markdown([original])
    # per-epoch curves survive (rounded to six significant digits)
    name = names[0]
    assert RunReader(packed)(name).curve() == pytest.approx(read_run(runs, name).curve(),
                                                            rel=1e-5)
    # the same runs give the same bytes; a pack is never replaced by one with fewer runs
    before = (packed / PACK_DIR / "two.json.gz").read_bytes()
    write_pack(runs, names, packed / PACK_DIR / "two.json.gz")
    assert (packed / PACK_DIR / "two.json.gz").read_bytes() == before
    with pytest.raises(ConfigError, match=r"holds 8 runs but only 1 are finished"):
        write_pack(runs, names[:1], packed / PACK_DIR / "two.json.gz")
    # a suite packed in pieces: a root that holds only some of its runs keeps the others
    partial = tmp_path / "partial"
    shutil.copytree(runs / names[0], partial / names[0])
    assert write_pack(partial, names, packed / PACK_DIR / "two.json.gz") == len(names)
    assert (packed / PACK_DIR / "two.json.gz").read_bytes() == before
    assert write_pack(tmp_path / "empty", names, packed / PACK_DIR / "two.json.gz") == len(names)
    assert (packed / PACK_DIR / "two.json.gz").read_bytes() == before
    (packed / PACK_DIR / "bad.json.gz").write_bytes(gzip.compress(b"{not json"))
    with pytest.raises(CorruptDataError, match=r"bad.json.gz is not a readable gzip JSON.*"
                                               r"git checkout"):
        summarize(packed)


def _set_val_curves(run: Path, curve) -> None:
    """Replace a fake run's validation accuracy per epoch by ``curve(epoch)``."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r["val"]["acc"] = curve(r["epoch"])
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = json.loads((run / "result.json").read_text())
    result["val"]["acc"] = rows[-1]["val"]["acc"]
    (run / "result.json").write_text(json.dumps(result))


def _late_gain_reference(curves):
    """Last 2 of 20 epochs minus the 2 before, per seed; mean ± t half-width over seeds."""
    g = np.array([np.mean(c[-2:]) - np.mean(c[-4:-2]) for c in curves])
    return g.mean(), stats.t.ppf(0.975, len(g) - 1) * g.std(ddof=1) / math.sqrt(len(g))


def test_precondition_is_judged_on_validation_never_on_test(tmp_path: Path):
    configs = _suite(tmp_path)
    # Mixup is BEHIND ERM on test on every seed, ahead on validation: the test figures
    # must not matter
    for s in range(4):
        write_run(tmp_path, configs["ERM"][s], val_acc=0.8,
                  test={m: 0.90 + 0.002 * s for m in METRICS}, epochs=20)
        write_run(tmp_path, configs["Mixup"][s], val_acc=0.8,
                  test={m: 0.80 + 0.003 * s for m in METRICS}, epochs=20)
        _set_val_curves(tmp_path / configs["ERM"][s].run_name(), lambda e, s=s: 0.80 + 0.01 * s)
        _set_val_curves(tmp_path / configs["Mixup"][s].run_name(),
                        lambda e, s=s: 0.82 + 0.01 * s + 0.003 * s * s)
    (summary,) = summarize(tmp_path)
    (row,) = summary.preconditions
    d = np.array([0.02 + 0.003 * s * s for s in range(4)])
    assert row.diff.mean == pytest.approx(d.mean())
    assert row.diff.half == pytest.approx(stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2)
    assert row.a.late_gain[0] == pytest.approx(0.0) and row.a.flat and row.b.flat
    assert row.met
    assert summary.cell("digits", "Mixup").paired["acc"].mean < 0  # test says the opposite
    text = render_markdown([summary])
    assert "### Precondition: does Mixup beat ERM at convergence?" in text
    assert "Judged on VALIDATION data only" in text and "| yes |" in text
    # Validation the other way round, test in favour of Mixup: not met
    for s in range(4):
        _set_val_curves(tmp_path / configs["Mixup"][s].run_name(),
                        lambda e, s=s: 0.79 + 0.01 * s - 0.001 * s * s)
    (summary,) = summarize(tmp_path)
    assert summary.preconditions[0].diff.mean < 0 and not summary.preconditions[0].met


def test_flat_rule_is_an_interval_over_seeds_against_zero_and_0_2_pp(tmp_path: Path):
    configs = _suite(tmp_path)
    for s in range(4):
        for arm in ("ERM", "Mixup"):
            write_run(tmp_path, configs[arm][s], val_acc=0.8,
                      test={m: 0.8 for m in METRICS}, epochs=20)
        _set_val_curves(tmp_path / configs["ERM"][s].run_name(),
                        lambda e, s=s: 0.8 + (0.01 * s if e > 18 else 0.0))
        # still rising: 2 pp per epoch, a late gain of 4 pp on every seed plus a little noise
        _set_val_curves(tmp_path / configs["Mixup"][s].run_name(),
                        lambda e, s=s: 0.5 + 0.02 * e + (0.0005 * s if e > 18 else 0.0))
    (summary,) = summarize(tmp_path)
    (row,) = summary.preconditions
    erm = [[0.8 + (0.01 * s if e > 18 else 0.0) for e in range(1, 21)] for s in range(4)]
    mix = [[0.5 + 0.02 * e + (0.0005 * s if e > 18 else 0.0) for e in range(1, 21)]
           for s in range(4)]
    for cell, curves in ((row.b, erm), (row.a, mix)):
        mean, half = _late_gain_reference(curves)
        assert cell.late_gain == pytest.approx((mean, half))
    # ERM: gains 0, 0.005, 0.01, 0.015: the interval includes zero -> flat
    assert row.b.flat is True
    assert row.a.flat is False and not row.met
    assert "rising" in render_markdown([summary])


def test_pack_command_writes_one_pack_per_dataset_and_the_manifest(tmp_path: Path, capsys):
    from mixupe.cli import main

    runs = tmp_path / "runs"
    suite = dict(TWO_ARMS, datasets=[{"name": "digits", "model": "mlp"},
                                     {"name": "satimage", "model": "mlp"}])
    parsed = parse_suite(suite)
    write_manifest(runs, manifest(parsed, expand(parsed)))
    for plan in expand(parsed):
        for s in range(4):
            write_run(runs, plan.points[0].configs[s], val_acc=0.7 + 0.01 * s,
                      test={m: 0.5 + 0.02 * s for m in METRICS})
    out = tmp_path / "results"
    assert main(["pack", "two", "--runs-root", str(runs), "--out", str(out)]) == 0
    assert "two / satimage: 8 finished runs packed" in capsys.readouterr().out
    assert sorted(p.name for p in (out / PACK_DIR).iterdir()) == [
        "two--digits.json.gz", "two--satimage.json.gz"]
    assert render_markdown(summarize(out)) == render_markdown(summarize(runs))
    assert main(["pack", "other", "--runs-root", str(runs), "--out", str(out)]) == 2
