"""The ``ray`` executor: Ray tasks on a local instance or a cluster (see
:mod:`mixupe.bench.executors`); Ray is imported only when one is made."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixupe.bench.execution import RunOutcome, RunTask, execute_run, set_threads
from mixupe.engine.rundir import RUN_LOG
from mixupe.errors import ConfigError

__all__ = ["RAY_INSTALL", "RayExecutor", "check_shared_filesystem"]

RAY_INSTALL = "pip install 'mixupe[ray]'"


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"the ray executor needs Ray, which is not installed; run "
                          f"`{RAY_INSTALL}` (or pick --executor processes)") from exc
    return ray


def _ray_execute(task: RunTask, train_fn: Callable[..., Any] | None,
                 threads: int | None) -> RunOutcome:
    set_threads(threads)
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
