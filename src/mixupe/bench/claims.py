"""What a hand-written preamble may say about the report: only the intervals it prints
(:func:`stale_quotes`) and only the verdicts its tables bear out (:func:`check_claims`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from mixupe.bench.summary import Paired, SuiteSummary, hypothesis_outcomes, verdict_of

__all__ = ["check_claims", "stale_quotes"]

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
