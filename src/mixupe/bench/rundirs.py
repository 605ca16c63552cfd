"""Reading run directories written by :func:`mixupe.engine.train` (never writing them).

A run directory holds ``config.json``, ``metrics.jsonl`` (one JSON object per epoch),
``checkpoint.pt``, and finally ``result.json`` (complete) or ``failed.json`` (diverged).

Example:
    >>> import tempfile
    >>> read_run(tempfile.mkdtemp(), "digits/mlp/erm/seed0-abc").status
    'missing'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixupe.errors import CorruptDataError

__all__ = ["RunRecord", "find_runs", "read_run"]

METRICS = ("acc", "nll", "brier", "ece", "fgsm_acc")


@dataclass
class RunRecord:
    """What the report needs from one run directory.

    ``status`` is ``"complete"`` (result.json), ``"failed"`` (failed.json), ``"partial"``
    (started, neither file yet) or ``"missing"`` (no directory).
    """

    name: str
    path: Path
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    failure: str = ""

    def final(self, split: str) -> dict[str, Any]:
        """Final-epoch metrics of ``split`` ("val" or "test"); {} when not available."""
        if isinstance(self.result.get(split), dict):
            return self.result[split]
        if self.epochs and isinstance(self.epochs[-1].get(split), dict):
            return self.epochs[-1][split]
        return {}

    @property
    def wall_s(self) -> float:
        """Wall time of the run in seconds (from result.json, else the sum over epochs)."""
        for key in ("wall_time_s", "wall_s", "time_s", "wall_time"):
            value = self.result.get(key)
            if isinstance(value, int | float):
                return float(value)
        return float(sum(e.get("time_s", 0.0) or 0.0 for e in self.epochs))

    def curve(self, split: str = "val", metric: str = "acc") -> list[float]:
        """Per-epoch values of ``split``/``metric`` from metrics.jsonl."""
        return [float(e[split][metric]) for e in self.epochs
                if isinstance(e.get(split), dict) and metric in e[split]]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorruptDataError(f"{path} is not valid JSON ({exc}); rerun that run with "
                               f"`mixupe train ... --overwrite` or delete its directory") from exc
    if not isinstance(data, dict):
        raise CorruptDataError(f"{path} holds {type(data).__name__}, not a JSON object; rerun "
                               f"that run with --overwrite or delete its directory")
    return data


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            # A run killed mid-write leaves a truncated last line; the epochs before it stand.
            break
    return rows


def _config_of(raw: dict[str, Any]) -> dict[str, Any]:
    """config.json may hold the config at top level or under a "config" key."""
    inner = raw.get("config")
    return dict(inner) if isinstance(inner, dict) else dict(raw)


def read_run(runs_root: str | Path, name: str) -> RunRecord:
    """Read the run directory ``runs_root/name``; a missing directory gives status "missing"."""
    path = Path(runs_root) / name
    if not path.is_dir():
        return RunRecord(name=name, path=path, status="missing")
    config_path = path / "config.json"
    config = _config_of(_read_json(config_path)) if config_path.is_file() else {}
    epochs = _read_jsonl(path / "metrics.jsonl")
    if (path / "result.json").is_file():
        result = _read_json(path / "result.json")
        status = "failed" if result.get("failed") else "complete"
        return RunRecord(name=name, path=path, status=status, config=config, result=result,
                         epochs=epochs, failure=str(result.get("reason", "")))
    if (path / "failed.json").is_file():
        failed = _read_json(path / "failed.json")
        reason = str(failed.get("reason", failed.get("message", "diverged")))
        return RunRecord(name=name, path=path, status="failed", config=config, epochs=epochs,
                         failure=reason)
    return RunRecord(name=name, path=path, status="partial", config=config, epochs=epochs)


def find_runs(runs_root: str | Path) -> list[str]:
    """Names (paths relative to ``runs_root``) of every run directory under it."""
    root = Path(runs_root)
    names = {p.parent.relative_to(root).as_posix() for p in root.rglob("config.json")}
    names |= {p.parent.relative_to(root).as_posix() for p in root.rglob("result.json")}
    return sorted(n for n in names if not n.startswith("_") and n != ".")
