"""Where a suite's runs train: in this process, in local worker processes, or on Ray.

The runner (:mod:`mixupe.bench.runner`) decides *what* runs next from the run directories;
an executor decides *where* it trains. Three are built in:

- ``sequential`` (the default): one run at a time in this process;
- ``processes``: ``jobs`` worker processes on this machine (:mod:`concurrent.futures`,
  ``spawn``), each with ``threads`` torch threads; a worker that dies (killed, out of memory)
  is replaced and its run resumed from its checkpoint, up to ``max_retries`` times;
- ``ray``: Ray tasks on a local instance or a cluster (``address`` or ``RAY_ADDRESS``), each
  asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (fractions share a GPU); Ray
  retries a task whose worker or node died (``max_retries``).

Every executor trains a run through :func:`execute_run`, so a run trains the same way, to the
same bits at the same thread count, wherever it runs. ``execute_run`` holds a lock file in the
run directory while it trains (two drivers on one runs root never train the same run twice),
logs to ``run.log`` beside it, returns a diverged run as an outcome (diverged runs are never
retried) and raises :class:`~mixupe.errors.RunError` naming the run for anything else.

Example:
    >>> ex = make_executor("processes", jobs=2, threads=1)
    >>> ex.kind, ex.capacity
    ('processes', 2)
    >>> ex.close()
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

# One run, and the ray executor, importable from here: this module is where executors are made.
from mixupe.bench.execution import (
    RunLock,
    RunOutcome,
    RunTask,
    execute_run,
    set_threads,
)
from mixupe.bench.ray_executor import RAY_INSTALL as RAY_INSTALL
from mixupe.bench.ray_executor import RayExecutor, check_shared_filesystem
from mixupe.engine.rundir import RUN_LOG
from mixupe.errors import ConfigError

__all__ = ["EXECUTORS", "Executor", "ProcessExecutor", "RayExecutor", "RunLock", "RunOutcome",
           "RunTask", "SequentialExecutor", "check_shared_filesystem", "execute_run",
           "make_executor"]

EXECUTORS = ("sequential", "processes", "ray")
log = logging.getLogger("mixupe.bench")


# ---------------------------------------------------------------------------- executors
class Executor(Protocol):
    """Trains submitted runs somewhere; :meth:`wait` returns finished outcomes."""

    kind: str
    capacity: int

    def submit(self, task: RunTask) -> None: ...

    def wait(self, timeout: float | None = None) -> list[RunOutcome]: ...

    @property
    def running(self) -> int: ...

    def close(self) -> None: ...


class SequentialExecutor:
    """One run at a time in this process (the default; exceptions propagate unchanged, with a
    note naming the run)."""

    kind = "sequential"
    capacity = 1

    def __init__(self, *, threads: int | None = None,
                 train_fn: Callable[..., Any] | None = None) -> None:
        self.threads = threads
        self.train_fn = train_fn
        self._done: list[RunOutcome] = []

    @property
    def running(self) -> int:
        return 0

    def submit(self, task: RunTask) -> None:
        import torch

        before = torch.get_num_threads()
        set_threads(self.threads)
        try:
            self._done.append(execute_run(task, self.train_fn, in_process=True))
        finally:
            torch.set_num_threads(before)

    def wait(self, timeout: float | None = None) -> list[RunOutcome]:
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        pass


def _worker_init(threads: int | None) -> None:
    set_threads(threads)


class ProcessExecutor:
    """``jobs`` spawned worker processes on this machine, ``threads`` torch threads each.

    A worker that dies breaks the pool (:class:`concurrent.futures.process.BrokenProcessPool`):
    the pool is rebuilt and the runs it held are resubmitted (they resume from their
    checkpoints), each at most ``max_retries`` times.
    """

    kind = "processes"

    def __init__(self, *, jobs: int, threads: int | None = None, max_retries: int = 3,
                 train_fn: Callable[..., Any] | None = None) -> None:
        if jobs < 1:
            raise ConfigError(f"jobs={jobs}: need at least one worker process; pass --jobs 1 "
                              "or more")
        self.capacity = jobs
        self.threads = threads
        self.max_retries = max_retries
        self.train_fn = train_fn
        self._futures: dict[cf.Future[RunOutcome], RunTask] = {}
        self._tries: dict[str, int] = {}
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(self.capacity, mp_context=multiprocessing.get_context(
            "spawn"), initializer=_worker_init, initargs=(self.threads,))

    @property
    def running(self) -> int:
        return len(self._futures)

    def submit(self, task: RunTask) -> None:
        self._futures[self._pool.submit(execute_run, task, self.train_fn)] = task

    def wait(self, timeout: float | None = None) -> list[RunOutcome]:
        if not self._futures:
            return []
        done, _ = cf.wait(self._futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        out, lost = [], []
        for fut in done:
            task = self._futures.pop(fut)
            try:
                out.append(fut.result())
            except cf.process.BrokenProcessPool:
                lost.append(task)
            except Exception as exc:  # RunError from the worker, or unpicklable results
                out.append(RunOutcome(task.name, "error", str(exc)))
        if lost:
            out += self._retry(lost)
        return out

    def _retry(self, lost: list[RunTask]) -> list[RunOutcome]:
        # Every worker of a broken pool is gone: the runs still pending there are lost too.
        lost += list(self._futures.values())
        self._futures.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        out = []
        for task in lost:
            self._tries[task.name] = self._tries.get(task.name, 0) + 1
            if self._tries[task.name] > self.max_retries:
                out.append(RunOutcome(task.name, "error", (
                    f"{task.described} ({task.name}): its worker process died "
                    f"{self._tries[task.name]} times (killed, or out of memory); not retried "
                    f"again; see {Path(task.runs_root) / task.name / RUN_LOG}")))
            else:
                log.warning("worker process died; retrying %s from its checkpoint (retry %d "
                            "of %d)", task.described, self._tries[task.name], self.max_retries)
                self.submit(task)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def make_executor(kind: str = "sequential", *, jobs: int | None = None,
                  threads: int | None = None, runs_root: str | os.PathLike[str] = "runs",
                  address: str | None = None, cpus_per_run: float = 1.0,
                  gpus_per_run: float = 0.0, max_retries: int = 3,
                  train_fn: Callable[..., Any] | None = None) -> Executor:
    """An executor by name (one of :data:`EXECUTORS`); options that do not apply to it are
    refused. ``threads`` defaults to the CPUs divided among ``jobs`` for ``processes``."""
    if kind not in EXECUTORS:
        raise ConfigError(f"executor {kind!r} is unknown; choose one of {list(EXECUTORS)}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads={threads}: pass a positive number of torch threads per run")
    if max_retries < 0:
        raise ConfigError(f"max_retries={max_retries}: pass 0 or more")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"jobs={jobs}: need at least one worker (one run in flight); pass "
                          "--jobs 1 or more")
    ray_only = {"address": address, "cpus_per_run": cpus_per_run != 1.0,
                "gpus_per_run": gpus_per_run != 0.0}
    if kind != "ray" and any(ray_only.values()):
        given = [k for k, v in ray_only.items() if v]
        raise ConfigError(f"{given} apply only to the ray executor; pass --executor ray or drop "
                          "them")
    if kind == "sequential":
        if jobs not in (None, 1):
            raise ConfigError(f"jobs={jobs} with the sequential executor; pass --executor "
                              "processes (or ray) to train runs in parallel")
        return SequentialExecutor(threads=threads, train_fn=train_fn)
    if kind == "processes":
        jobs = 1 if jobs is None else jobs
        if threads is None:
            threads = max(1, (os.cpu_count() or 1) // jobs)
        return ProcessExecutor(jobs=jobs, threads=threads, max_retries=max_retries,
                               train_fn=train_fn)
    if threads is not None:
        raise ConfigError("threads apply to the sequential and processes executors; a Ray run "
                          "takes as many torch threads as its --cpus-per-run")
    return RayExecutor(runs_root=runs_root, address=address, cpus_per_run=cpus_per_run,
                       gpus_per_run=gpus_per_run, jobs=jobs, max_retries=max_retries,
                       train_fn=train_fn)
