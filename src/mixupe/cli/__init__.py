"""The ``mixupe`` command line: ``train``, ``bench``, ``report`` and ``data``.

Exit codes: 0 success, 2 usage or configuration error (a message on stderr, no traceback),
3 a training run diverged (non-finite loss), 1 anything else.

Each command is a module of this package with ``add_parser(subparsers)`` and ``run(args)``;
the options they share are in :mod:`mixupe.cli.options` and :mod:`mixupe.cli.fields`.

Example:
    >>> main(["data", "list"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Sequence

from mixupe.cli import bench, data, pack, report, train
from mixupe.cli.common import (
    EXIT_DIVERGED,
    EXIT_OTHER,
    EXIT_USAGE,
    CliError,
    err,
    progress_wanted,
    world_size,
)
from mixupe.cli.fields import _add_field_options as _add_field_options  # named in a message
from mixupe.errors import (
    ConfigError,
    DataUnavailableError,
    InputError,
    MixupeError,
    NonFiniteLossError,
)

__all__ = ["build_parser", "main"]

COMMANDS = {"train": train.run, "bench": bench.run, "report": report.run, "pack": pack.run,
            "data": data.run}


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``mixupe`` with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="mixupe",
        description="Mixup-family training (ERM, Mixup, CutMix, Manifold Mixup, MixupE) and an "
                    "honest benchmark harness.",
        epilog="Examples:\n  mixupe bench quick          # the quick suite, table and plots\n"
               "  mixupe report               # report on ./runs\n"
               "  mixupe train --dataset digits --method mixupe --eta 0.1 --epochs 5\n"
               "  mixupe data list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every step of the runner (and debug messages)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in (train, bench, report, pack, data):
        command.add_parser(sub)
    return parser


def _continue_hint(command: str, argv: list[str]) -> str:
    """How to continue after an interrupt: ``bench`` resumes by itself, ``train`` needs
    ``--resume`` (and must lose ``--overwrite``, which would wipe what was trained)."""
    if command == "bench":
        return "rerun the same command to continue"
    if command != "train":
        return "rerun the command"
    rerun = [a for a in argv if a != "--overwrite"]
    if "--resume" not in rerun:
        rerun.append("--resume")
    if world_size() > 1:
        return ("continue with the same torchrun command, ending in: "
                f"-m mixupe {shlex.join(rerun)}")
    return f"continue with: mixupe {shlex.join(rerun)}"


def _configure_logging(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.verbose:
        return
    # Progress bars show loss and accuracy; per-epoch log lines are for logs without them.
    # A suite logs one line per run instead of one per epoch.
    quiet_engine = args.command == "bench" or (
        args.command == "train" and progress_wanted(args.no_progress))
    if quiet_engine:
        logging.getLogger("mixupe.engine").setLevel(logging.WARNING)
    if args.command == "bench" and progress_wanted(args.no_progress):
        logging.getLogger("mixupe.bench").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mixupe`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    _configure_logging(args)
    try:
        return COMMANDS[args.command](args)
    except NonFiniteLossError as exc:
        err(f"mixupe {args.command}: training diverged: {exc}")
        return EXIT_DIVERGED
    except (ConfigError, InputError, CliError) as exc:
        err(f"mixupe {args.command}: error: {exc}")
        return EXIT_USAGE
    except (DataUnavailableError, MixupeError) as exc:
        err(f"mixupe {args.command}: error: {exc}")
        return EXIT_OTHER
    except BrokenPipeError:  # e.g. `mixupe bench full --dry-run | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OTHER
    except KeyboardInterrupt:
        err(f"mixupe {args.command}: interrupted; {_continue_hint(args.command, argv)}")
        return 130
    except Exception:  # a bug: keep the traceback, it is what a bug report needs
        traceback.print_exc()
        return EXIT_OTHER
