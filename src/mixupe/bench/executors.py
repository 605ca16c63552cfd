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
import socket
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mixupe.engine.config import TrainConfig
from mixupe.engine.rundir import EXECUTOR_FILES, RUN_LOCK, RUN_LOG
from mixupe.errors import ConfigError, NonFiniteLossError, RunError

__all__ = ["EXECUTORS", "Executor", "ProcessExecutor", "RayExecutor", "RunLock", "RunOutcome",
           "RunTask", "SequentialExecutor", "check_shared_filesystem", "execute_run",
           "make_executor"]

EXECUTORS = ("sequential", "processes", "ray")
RAY_INSTALL = "pip install 'mixupe[ray]'"
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


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


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
        _set_threads(self.threads)
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
    _set_threads(threads)


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


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"the ray executor needs Ray, which is not installed; run "
                          f"`{RAY_INSTALL}` (or pick --executor processes)") from exc
    return ray


def _ray_execute(task: RunTask, train_fn: Callable[..., Any] | None,
                 threads: int | None) -> RunOutcome:
    _set_threads(threads)
    return execute_run(task, train_fn)


class RayExecutor:
    """Ray tasks, ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs each, on the instance at
    ``address`` (``RAY_ADDRESS`` when None; a new local instance when neither is set).

    At start every live node must see the runs root at the same path
    (:func:`check_shared_filesystem`). At most ``capacity`` runs are in flight: ``jobs`` when
    given, else what the cluster's CPUs (and GPUs) fit.
    """

    kind = "ray"

    def __init__(self, *, runs_root: str | os.PathLike[str], address: str | None = None,
                 cpus_per_run: float = 1.0, gpus_per_run: float = 0.0,
                 jobs: int | None = None, max_retries: int = 3,
                 train_fn: Callable[..., Any] | None = None) -> None:
        _check_resources(cpus_per_run, gpus_per_run)
        ray = _ray()
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
            self._started = True
        capacity = _ray_capacity(ray.cluster_resources(), cpus_per_run, gpus_per_run)
        check_shared_filesystem(runs_root)
        self.capacity = jobs or capacity
        threads = max(1, int(cpus_per_run))
        self._remote = ray.remote(_ray_execute).options(
            num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=max_retries,
            retry_exceptions=False)
        self._threads = threads
        self.train_fn = train_fn
        self._refs: dict[Any, RunTask] = {}

    @property
    def running(self) -> int:
        return len(self._refs)

    def submit(self, task: RunTask) -> None:
        self._refs[self._remote.remote(task, self.train_fn, self._threads)] = task

    def wait(self, timeout: float | None = None) -> list[RunOutcome]:
        if not self._refs:
            return []
        ready, _ = self._ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            task = self._refs.pop(ref)
            try:
                out.append(self._ray.get(ref))
            except self._ray.exceptions.RayTaskError as exc:
                cause = exc.cause if exc.cause is not None else exc
                out.append(RunOutcome(task.name, "error", str(cause)))
            except self._ray.exceptions.RayError as exc:  # worker or node died, retries spent
                out.append(RunOutcome(task.name, "error", (
                    f"{task.described} ({task.name}): its Ray worker died and the retries are "
                    f"spent ({type(exc).__name__}); see "
                    f"{Path(task.runs_root) / task.name / RUN_LOG}")))
        return out

    def close(self) -> None:
        for ref in list(self._refs):
            self._ray.cancel(ref, force=True)
        self._refs.clear()
        if self._started:
            self._ray.shutdown()


def _check_resources(cpus_per_run: float, gpus_per_run: float) -> None:
    if not cpus_per_run > 0:
        raise ConfigError(f"cpus_per_run={cpus_per_run}: a run needs a positive number of CPUs; "
                          "pass e.g. --cpus-per-run 1")
    if gpus_per_run < 0 or (gpus_per_run > 1 and gpus_per_run != int(gpus_per_run)):
        raise ConfigError(f"gpus_per_run={gpus_per_run}: pass 0 (CPU runs), a fraction below 1 "
                          "(runs share a GPU, e.g. 0.25) or a whole number of GPUs")


def _ray_capacity(resources: dict[str, float], cpus_per_run: float,
                  gpus_per_run: float) -> int:
    fits = [int(resources.get("CPU", 1) // cpus_per_run)]
    if gpus_per_run > 0 and resources.get("GPU", 0) < gpus_per_run:
        raise ConfigError(f"--gpus-per-run {gpus_per_run}, but the Ray cluster has "
                          f"{resources.get('GPU', 0):g} GPUs (no GPU a run could use; Ray would "
                          "wait for one forever); start GPU nodes or pass --gpus-per-run 0")
    if gpus_per_run > 0:
        fits.append(int(round(resources.get("GPU", 0) / gpus_per_run, 6)))
    return max(1, min(fits))


def _probe(path: str, token: str) -> tuple[str, bool]:
    p = Path(path)
    return socket.gethostname(), p.is_file() and p.read_text(encoding="utf-8") == token


def check_shared_filesystem(runs_root: str | os.PathLike[str], *,
                            timeout_s: float = 600.0) -> None:
    """Raise :class:`~mixupe.errors.ConfigError` unless every live Ray node reads the runs
    root at the same absolute path (workers write run directories; the driver reads them)."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root = Path(runs_root).resolve()
    probe = root / "_executor" / f"probe-{uuid.uuid4().hex}"
    probe.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe.write_text(token, encoding="utf-8")
    try:
        remote = ray.remote(num_cpus=0)(_probe)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(probe), token) for n in nodes]
        seen = ray.get(refs, timeout=timeout_s)
    finally:
        probe.unlink(missing_ok=True)
    blind = sorted(host for host, ok in seen if not ok)
    if blind:
        raise ConfigError(
            f"the runs root {root} is not visible at the same path on Ray node(s) {blind}: "
            "workers write each run directory there and the driver reads it, so the runs root "
            "must be on a filesystem every node mounts at the same path (NFS, Lustre, ...); "
            "pass such a --runs-root")


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
