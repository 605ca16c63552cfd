"""What every ``mixupe`` command shares: exit codes, the usage error, output and progress."""

from __future__ import annotations

import os
import sys
from typing import Any

from mixupe.errors import MixupeError

EXIT_OK, EXIT_OTHER, EXIT_USAGE, EXIT_DIVERGED = 0, 1, 2, 3


class CliError(MixupeError):
    """A command-line usage problem (exit code 2)."""


def out(text: str) -> None:
    """``text`` on stdout, ending in one newline, flushed."""
    sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    sys.stdout.flush()


def err(text: str) -> None:
    """``text`` on stderr, ending in one newline, flushed."""
    sys.stderr.write(text + ("" if text.endswith("\n") else "\n"))
    sys.stderr.flush()


def progress_wanted(no_progress: bool) -> bool:
    """Progress bars unless ``--no-progress`` or stderr is not a terminal."""
    return not no_progress and sys.stderr.isatty()


def world_size() -> int:
    """The number of processes of a torchrun launch (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def print_report_files(files: Any) -> None:
    """The report's Markdown on stdout, then where its files went on stderr."""
    out(files.text)
    err(f"report: {files.markdown}")
    if files.document is not None:
        err(f"document: {files.document}")
    for path in files.plots:
        err(f"plot: {path}")
