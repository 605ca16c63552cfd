"""``mixupe report``: the Markdown report and plots of a runs directory (never retrains)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mixupe.cli.common import EXIT_OK, print_report_files
from mixupe.cli.options import Formatter, add_flags


def add_parser(sub: Any) -> None:
    """The ``report`` subcommand."""
    report = sub.add_parser(
        "report", help="write the Markdown report and plots for a runs directory",
        formatter_class=Formatter,
        description="Read run directories (never retrains) and write report.md with one table "
                    "per suite (mean ± 95 % CI, chosen hyper-parameters, paired differences) "
                    "and PNG plots; the Markdown is also printed.")
    report.add_argument("runs_dir", nargs="?", type=Path, default=Path("runs"), metavar="RUNS_DIR",
                        help="directory that holds run directories")
    report.add_argument("--suite", metavar="NAME", help="report only this suite")
    report.add_argument("--out", type=Path, help="output directory (default: RUNS_DIR/report)")
    add_flags(report, {"--no-plots": "write report.md only"})
    report.add_argument("--document", type=Path, metavar="FILE",
                        help="also write one Markdown document: --preamble's text, then the "
                             "report, image links relative to FILE (e.g. docs/RESULTS.md); "
                             "every 'mean ± half' the preamble quotes must be in the report")
    report.add_argument("--preamble", type=Path, metavar="FILE",
                        help="hand-written Markdown (title, set-up, conclusion) that opens "
                             "--document")


def run(args: argparse.Namespace) -> int:
    """Write the report and print it."""
    from mixupe.bench.report import write_report

    print_report_files(write_report(args.runs_dir, suite=args.suite, out=args.out,
                                    plots=not args.no_plots, document=args.document,
                                    preamble=args.preamble))
    return EXIT_OK
