"""``mixupe pack``: a suite's finished runs stored compactly, one file per dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mixupe.cli.common import EXIT_OK, out
from mixupe.cli.options import Formatter, add_runs_root


def add_parser(sub: Any) -> None:
    """The ``pack`` subcommand."""
    pack = sub.add_parser(
        "pack", help="store a suite's finished runs compactly (one file per dataset)",
        formatter_class=Formatter,
        description="Write the finished runs of a suite into OUT/_packs/SUITE--DATASET.json.gz "
                    "(config, result and per-epoch records, gzip) and its manifest into "
                    "OUT/_suites/: OUT is then a runs root that `mixupe report` reads and that "
                    "`mixupe bench` treats as done, without the run directories. A pack is "
                    "never replaced by one holding fewer runs.")
    pack.add_argument("suite", metavar="SUITE", help="suite name (as in RUNS_ROOT/_suites/)")
    add_runs_root(pack, "directory that holds the suite's run directories")
    pack.add_argument("--out", type=Path, required=True,
                      help="runs root to write the packs and manifest into, e.g. results/study")


def run(args: argparse.Namespace) -> int:
    """Pack the suite and say how many runs each dataset's pack holds."""
    from mixupe.bench.rundirs import pack_suite

    counts = pack_suite(args.runs_root, args.suite, args.out)
    for dataset, n in counts.items():
        out(f"{args.suite} / {dataset}: {n} finished runs packed")
    return EXIT_OK
