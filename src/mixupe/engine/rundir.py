"""The run directory: where one run keeps its config, per-epoch metrics, checkpoint and result.

Layout of ``runs_root / cfg.run_name()``::

    config.json      the resolved config and the environment (written when the run starts)
    metrics.jsonl    one JSON object per finished epoch
    checkpoint.pt    the state after the last finished epoch (written atomically)
    checkpoint.prev.pt  the one before it, the fall-back if checkpoint.pt cannot be read
    result.json      written last; its presence marks the run complete
    failed.json      written instead of result.json when the loss became non-finite

Nothing is created or deleted until the run can start: :meth:`RunDir.prepare` only decides
how it starts, :meth:`RunDir.start` then acts, so a run that fails to start (an unknown
dataset, a bad CSV file, a model that does not fit the data) leaves no directory behind and
an existing one untouched.

>>> import tempfile
>>> from mixupe.engine.config import TrainConfig
>>> run = RunDir(tempfile.mkdtemp(), TrainConfig(epochs=2))
>>> run.prepare(resume=False, overwrite=False), run.path.exists()
('fresh', False)
>>> run.start(); run.path.is_dir()
True
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from mixupe.atomic import atomic_write
from mixupe.engine.checkpoint import previous_checkpoint, read_json, write_json
from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError, CorruptDataError

__all__ = ["RunDir"]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
FAILED = "failed.json"
# Files the suite executors keep in a run directory (mixupe.bench.executors): the lock held
# while the run trains and the run's own log. They do not make a directory a started run.
RUN_LOCK = ".lock"
RUN_LOG = "run.log"
EXECUTOR_FILES = frozenset({RUN_LOCK, RUN_LOG})


class RunDir:
    """Paths and file operations of one run directory (only the main process writes)."""

    def __init__(self, runs_root: str | os.PathLike[str], cfg: TrainConfig) -> None:
        self.cfg = cfg
        # A run written under an earlier naming rule keeps its directory (run_names()).
        paths = [Path(runs_root) / n for n in cfg.run_names()]  # the current name first
        self.path = next((p for p in paths if p.is_dir()), paths[0])
        self.config_path = self.path / CONFIG
        self.metrics_path = self.path / METRICS
        self.checkpoint_path = self.path / CHECKPOINT
        self.result_path = self.path / RESULT
        self.failed_path = self.path / FAILED
        self._status: str | None = None  # prepare()'s decision, acted on by start()
        self._wipe = False

    # ------------------------------------------------------------------ start
    def prepare(self, *, resume: bool, overwrite: bool) -> str:
        """How the run starts: ``"fresh"``, ``"resume"`` (from the checkpoint) or ``"complete"``.

        An existing directory is only reused with ``resume=True`` and only wiped with
        ``overwrite=True``; otherwise :class:`~mixupe.errors.ConfigError` is raised. Nothing
        on disk changes here: call :meth:`start` once training can start.
        """
        if resume and overwrite:
            raise ConfigError(
                "resume=True and overwrite=True contradict each other; pass only one of "
                "--resume / --overwrite"
            )
        exists = self.path.exists() and any(p.name not in EXECUTOR_FILES
                                            for p in self.path.iterdir())
        self._wipe = exists and overwrite
        if not exists or overwrite:
            self._status = "fresh"
            return self._status
        if not resume:
            raise ConfigError(
                f"run directory {self.path} already exists; pass --resume (resume=True) to "
                "continue it or --overwrite (overwrite=True) to start it again"
            )
        self._check_same_config()
        if self.result_path.exists():
            self._status = "complete"
        elif self.checkpoint_path.exists() or previous_checkpoint(self.checkpoint_path).exists():
            self._status = "resume"
        else:  # started but stopped before its first checkpoint: nothing to keep
            self._status = "fresh"
        return self._status

    def start(self) -> None:
        """Act on :meth:`prepare`'s decision: wipe (overwrite) or create the directory, and
        drop what a resumed or restarted run replaces (``failed.json``, stale metrics)."""
        status = self._status
        if status is None:
            raise ConfigError("RunDir.start() needs RunDir.prepare() first")
        if self._wipe:
            shutil.rmtree(self.path)
            self._wipe = False
        self.path.mkdir(parents=True, exist_ok=True)
        self.failed_path.unlink(missing_ok=True)
        if status == "fresh":
            self.metrics_path.unlink(missing_ok=True)

    def abandon(self, runs_root: str | os.PathLike[str]) -> None:
        """Remove a run that failed before finishing an epoch, so the real error shows again
        when the command is rerun: the directory and its parents left empty, up to
        ``runs_root``. A directory with metrics or a checkpoint is kept."""
        if self.metrics_path.exists() or self.checkpoint_path.exists():
            return
        if self.path.is_dir() and any(p.name in EXECUTOR_FILES for p in self.path.iterdir()):
            # a suite executor's lock and log (with this very error) stay; they do not make
            # the directory a started run
            for p in self.path.iterdir():
                if p.name not in EXECUTOR_FILES:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            return
        shutil.rmtree(self.path, ignore_errors=True)
        root, parent = Path(runs_root).resolve(), self.path.parent.resolve()
        while parent != root and root in parent.parents:
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
            parent = parent.parent

    def _check_same_config(self) -> None:
        if not self.config_path.exists():
            return
        stored = read_json(self.config_path).get("config", {})
        try:
            old = TrainConfig.from_stored(stored).normalized()
        except ConfigError as exc:
            raise CorruptDataError(
                f"{self.config_path} holds an unreadable config ({exc}); use --overwrite"
            ) from exc
        new = self.cfg.normalized()
        if old.config_hash() != new.config_hash():
            raise ConfigError(
                f"run directory {self.path} holds a different config; use another runs_root "
                "or --overwrite"
            )

    # ------------------------------------------------------------------ writes
    def write_config(self, env: dict[str, Any]) -> None:
        """Write ``config.json``: the resolved config and the environment it ran in."""
        write_json(self.config_path, {"config": self.cfg.to_dict(), "run_name":
                                      self.cfg.run_name(), "environment": env})

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch's metrics as a JSON line, flushed to disk."""
        line = json.dumps(record, sort_keys=True) + "\n"
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch records written so far.

        A torn last line (the process was killed while appending it) is ignored; it is
        dropped for good when the run resumes. A bad line with records after it cannot come
        from an interrupted append and raises :class:`~mixupe.errors.CorruptDataError`
        rather than silently losing the later epochs.
        """
        if not self.metrics_path.exists():
            return []
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        out = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                if i == last:
                    break
                raise CorruptDataError(
                    f"line {i + 1} of {self.metrics_path} is not valid JSON ({exc}) but "
                    f"{len(lines) - i - 1} line(s) follow it, so it was not cut short by an "
                    "interruption; repair that line (one JSON object per epoch) or restore the "
                    "file from a copy, then resume"
                ) from exc
            if not isinstance(record, dict) or "epoch" not in record:
                raise CorruptDataError(
                    f"line {i + 1} of {self.metrics_path} is not an epoch record (a JSON object "
                    "with an 'epoch' key); repair that line or restore the file from a copy"
                )
            out.append(record)
        return out

    def keep_metrics_until(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (written after the last checkpoint)."""
        kept = [r for r in self.read_metrics() if r["epoch"] <= epoch]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        atomic_write(self.metrics_path, text)

    def write_result(self, result: dict[str, Any]) -> None:
        """Write ``result.json`` (last; marks the run complete).

        A complete run is never resumed, so the fall-back checkpoint is removed.
        """
        write_json(self.result_path, result)
        previous_checkpoint(self.checkpoint_path).unlink(missing_ok=True)

    def write_failed(self, info: dict[str, Any]) -> None:
        """Write ``failed.json`` with the reason the run stopped."""
        write_json(self.failed_path, info)

    def read_result(self) -> dict[str, Any]:
        """The content of ``result.json``."""
        return read_json(self.result_path)
