"""One run trained under its lock, logging to its ``run.log``: the path every executor takes
(see :mod:`mixupe.bench.executors`)."""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixupe.engine.config import TrainConfig
from mixupe.engine.rundir import EXECUTOR_FILES, RUN_LOCK, RUN_LOG
from mixupe.errors import NonFiniteLossError, RunError

__all__ = ["RunLock", "RunOutcome", "RunTask", "execute_run", "set_threads"]

log = logging.getLogger("mixupe.bench")

try:  # POSIX advisory locks; NFS clients emulate flock() with byte-range locks
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked
    fcntl = None  # type: ignore[assignment]


# ---------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class RunTask:
    """One run to train: its config, where, and how it is described in messages."""

    config: TrainConfig
    runs_root: str
    described: str
    progress: bool = False

    @property
    def name(self) -> str:
        return self.config.run_name()


@dataclass(frozen=True)
class RunOutcome:
    """What became of a task: ``trained``, ``diverged``, ``done`` (finished elsewhere,
    found complete under the lock), ``busy`` (another process holds the run's lock) or
    ``error`` (the message names the run and its log)."""

    name: str
    status: str
    message: str = ""
    val_acc: float | None = None


class RunLock:
    """An exclusive, non-blocking lock on ``path`` (a file in the run directory).

    ``acquired`` says whether this process holds it; if not, ``holder`` is what the holder
    wrote (host, pid, start time). The kernel drops the lock when the holder dies, so a
    killed worker or driver never leaves a run locked.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / ".lock"
    >>> with RunLock(p) as a, RunLock(p) as b:
    ...     a.acquired, b.acquired, b.holder.startswith("host ")
    (True, False, True)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.acquired = False
        self.holder = ""
        self._file: Any = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+", encoding="utf-8")
        if fcntl is None:
            self.acquired = True
            return self
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            self.holder = self._file.read().strip() or "another process"
            return self
        self.acquired = True
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"host {socket.gethostname()} pid {os.getpid()} since "
                         f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        self._file.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            if self.acquired and fcntl is not None:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _has_run_files(path: Path) -> bool:
    return path.is_dir() and any(p.name not in EXECUTOR_FILES for p in path.iterdir())


def _status(path: Path) -> str:
    """The run directory's status as :func:`mixupe.bench.rundirs.read_run` sees it, except
    that a directory holding only the executor's lock and log is "missing" (nothing to
    resume)."""
    from mixupe.bench.rundirs import read_run

    status = read_run(path.parent, path.name).status
    if status == "partial" and not _has_run_files(path):
        return "missing"
    return status


def execute_run(task: RunTask, train_fn: Callable[..., Any] | None = None, *,
                in_process: bool = False) -> RunOutcome:
    """Train one run under its lock, logging to its ``run.log``; the one path every executor
    takes. A run found complete (another driver finished it) or diverged is not trained."""
    if train_fn is None:
        from mixupe.engine import train as train_fn
    path = Path(task.runs_root) / task.name
    with RunLock(path / RUN_LOCK) as lock:
        if not lock.acquired:
            return RunOutcome(task.name, "busy", f"locked by {lock.holder}")
        status = _status(path)
        if status == "complete":
            return RunOutcome(task.name, "done")
        if status == "failed":
            return RunOutcome(task.name, "diverged", "diverged earlier (failed.json); not retried")
        handler = logging.FileHandler(path / RUN_LOG, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        pkg = logging.getLogger("mixupe")
        pkg.addHandler(handler)
        old_level = pkg.level
        if pkg.getEffectiveLevel() > logging.INFO:
            pkg.setLevel(logging.INFO)
        try:
            return _train_logged(task, train_fn, resume=status == "partial", in_process=in_process)
        finally:
            pkg.removeHandler(handler)
            pkg.setLevel(old_level)
            handler.close()


def _train_logged(task: RunTask, train_fn: Callable[..., Any], *, resume: bool,
                  in_process: bool) -> RunOutcome:
    import torch

    log.info("start %s on host %s pid %d with %d torch threads (%s): %s", task.described,
             socket.gethostname(), os.getpid(), torch.get_num_threads(),
             "resume" if resume else "fresh", task.name)
    try:
        result = train_fn(task.config, runs_root=Path(task.runs_root), resume=resume,
                          progress=task.progress)
    except NonFiniteLossError as exc:
        log.warning("diverged: %s", exc)
        return RunOutcome(task.name, "diverged", str(exc))
    except Exception as exc:
        log.error("failed:\n%s", traceback.format_exc())
        if in_process:
            exc.add_note(f"while training {task.described}: {task.name}")
            raise
        raise RunError(f"{task.described} ({task.name}) raised {type(exc).__name__}: {exc} "
                       f"(traceback in {Path(task.runs_root) / task.name / RUN_LOG})") from None
    log.info("done %s", task.name)
    final = getattr(result, "final", None)
    val = final.get("val", {}).get("acc") if isinstance(final, dict) else None
    return RunOutcome(task.name, "trained", val_acc=val if isinstance(val, float) else None)


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
