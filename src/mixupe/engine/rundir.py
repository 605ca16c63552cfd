"""The run directory: where one run keeps its config, per-epoch metrics, checkpoint and result.

Layout of ``runs_root / cfg.run_name()``::

    config.json      the resolved config and the environment (written when the run starts)
    metrics.jsonl    one JSON object per finished epoch
    checkpoint.pt    the state after the last finished epoch (written atomically)
    result.json      written last; its presence marks the run complete
    failed.json      written instead of result.json when the loss became non-finite

>>> import tempfile
>>> from mixupe.engine.config import TrainConfig
>>> run = RunDir(tempfile.mkdtemp(), TrainConfig(epochs=2))
>>> run.prepare(resume=False, overwrite=False)
'fresh'
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from mixupe.engine.checkpoint import atomic_write, read_json, write_json
from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError, CorruptDataError

__all__ = ["RunDir"]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
FAILED = "failed.json"


class RunDir:
    """Paths and file operations of one run directory (only the main process writes)."""

    def __init__(self, runs_root: str | os.PathLike[str], cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.path = Path(runs_root) / cfg.run_name()
        self.config_path = self.path / CONFIG
        self.metrics_path = self.path / METRICS
        self.checkpoint_path = self.path / CHECKPOINT
        self.result_path = self.path / RESULT
        self.failed_path = self.path / FAILED

    # ------------------------------------------------------------------ start
    def prepare(self, *, resume: bool, overwrite: bool) -> str:
        """How the run starts: ``"fresh"``, ``"resume"`` (from the checkpoint) or ``"complete"``.

        An existing directory is only reused with ``resume=True`` and only wiped with
        ``overwrite=True``; otherwise :class:`~mixupe.errors.ConfigError` is raised.
        """
        if resume and overwrite:
            raise ConfigError(
                "resume=True and overwrite=True contradict each other; pass only one of "
                "--resume / --overwrite"
            )
        exists = self.path.exists() and any(self.path.iterdir())
        if exists and overwrite:
            shutil.rmtree(self.path)
            exists = False
        if not exists:
            self.path.mkdir(parents=True, exist_ok=True)
            return "fresh"
        if not resume:
            raise ConfigError(
                f"run directory {self.path} already exists; pass --resume (resume=True) to "
                "continue it or --overwrite (overwrite=True) to start it again"
            )
        self._check_same_config()
        if self.result_path.exists():
            return "complete"
        self.failed_path.unlink(missing_ok=True)
        if self.checkpoint_path.exists():
            return "resume"
        # Started but stopped before its first checkpoint: nothing to keep.
        self.metrics_path.unlink(missing_ok=True)
        return "fresh"

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
        """The per-epoch records written so far (a torn last line is ignored)."""
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return out

    def keep_metrics_until(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (written after the last checkpoint)."""
        kept = [r for r in self.read_metrics() if r["epoch"] <= epoch]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        atomic_write(self.metrics_path, lambda f: f.write(text.encode()))

    def write_result(self, result: dict[str, Any]) -> None:
        """Write ``result.json`` (last; marks the run complete)."""
        write_json(self.result_path, result)

    def write_failed(self, info: dict[str, Any]) -> None:
        """Write ``failed.json`` with the reason the run stopped."""
        write_json(self.failed_path, info)

    def read_result(self) -> dict[str, Any]:
        """The content of ``result.json``."""
        return read_json(self.result_path)
