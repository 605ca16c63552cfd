"""Benchmark suites (TOML), the resumable runner, the statistics report and its plots.

>>> from mixupe.bench import load_suite, builtin_suites
>>> builtin_suites()  # doctest: +NORMALIZE_WHITESPACE
['clean-fraction', 'converged', 'converged-confirm', 'family', 'full', 'images',
 'paper-cifar', 'quick', 'regime', 'regime-10', 'scale', 'smoke']
"""

from __future__ import annotations

from mixupe.bench.report import write_report
from mixupe.bench.runner import plan_suite, run_suite
from mixupe.bench.selection import choose_point
from mixupe.bench.suites import builtin_suites, expand, load_suite, parse_suite
from mixupe.bench.summary import summarize

__all__ = [
    "builtin_suites",
    "choose_point",
    "expand",
    "load_suite",
    "parse_suite",
    "plan_suite",
    "run_suite",
    "summarize",
    "write_report",
]
