"""Reading finished runs: from their run directories or from packs (never writing runs).

A run directory (written by :func:`mixupe.engine.train`, layout in
:mod:`mixupe.engine.rundir`) holds ``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` and
finally ``result.json`` (complete) or ``failed.json`` (diverged). A *pack* holds many
finished runs in one compressed file, ``RUNS/_packs/NAME.json.gz``: per run its config,
result and per-epoch records (rounded to six significant digits, the fields the report
and the plots read). Long studies commit packs instead of thousands of run directories;
the report and the runner read both the same way (a run directory wins over a pack).

Example:
    >>> import tempfile
    >>> RunReader(tempfile.mkdtemp())("digits/mlp/erm/seed0-abc").status
    'missing'
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixupe.atomic import atomic_write
from mixupe.engine.naming import current_name
from mixupe.engine.rundir import CONFIG, FAILED, RESULT
from mixupe.engine.rundir import METRICS as METRICS_FILE
from mixupe.errors import ConfigError, CorruptDataError

__all__ = ["PACK_DIR", "RunReader", "RunRecord", "find_runs", "pack_suite", "read_run",
           "write_pack"]

METRICS = ("acc", "nll", "brier", "ece", "fgsm_acc")
PACK_DIR = "_packs"
PACK_FORMAT = 1
# Per-epoch fields a pack keeps (the report's curves, diagnostics and compute).
_EPOCH_KEYS = {
    "epoch": None, "lr": None, "time_s": None, "eval_s": None,
    "train": ("loss", "mixup_loss", "reg", "reg_ratio", "selected_frac", "rescale",
              "rescale_sd"),
    "val": ("acc", "nll", "brier", "ece", "fgsm_acc"),
    "test": ("acc", "nll", "brier", "ece", "fgsm_acc"),
}


@dataclass
class RunRecord:
    """What the report needs from one run.

    ``status`` is ``"complete"`` (result.json), ``"failed"`` (failed.json), ``"partial"``
    (started, neither file yet) or ``"missing"`` (no directory and in no pack).
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

    def best(self) -> tuple[int, dict[str, Any]] | None:
        """(epoch, test metrics) of the best-validation epoch, or None when unknown.

        From result.json's ``best`` entry, or, for runs that evaluated test after every epoch
        and predate that entry, from the per-epoch records (first epoch of highest val acc).
        """
        best = self.result.get("best")
        if isinstance(best, dict) and isinstance(best.get("test"), dict):
            return int(best["epoch"]), best["test"]
        rows = [e for e in self.epochs if isinstance(e.get("val"), dict)
                and isinstance(e.get("test"), dict) and "acc" in e["val"]]
        if not rows or self.status != "complete":
            return None
        top = max(rows, key=lambda e: (e["val"]["acc"], -e["epoch"]))
        return int(top["epoch"]), top["test"]

    @property
    def wall_s(self) -> float:
        """Wall time of the run in seconds (from result.json, else the sum over epochs)."""
        for key in ("wall_time_s", "wall_s", "time_s", "wall_time"):
            value = self.result.get(key)
            if isinstance(value, int | float):
                return float(value)
        return float(sum(e.get("time_s", 0.0) or 0.0 for e in self.epochs))

    def curve(self, split: str = "val", metric: str = "acc") -> list[float]:
        """Per-epoch values of ``split``/``metric``."""
        return [float(e[split][metric]) for e in self.epochs
                if isinstance(e.get(split), dict) and metric in e[split]]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorruptDataError(f"{path} is not valid JSON ({exc}); rerun that run with "
                               f"`mixupe train ... --resume` after moving the file away, or "
                               f"with --overwrite") from exc
    if not isinstance(data, dict):
        raise CorruptDataError(f"{path} holds {type(data).__name__}, not a JSON object; rerun "
                               f"that run with --overwrite")
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
    """Read the run directory ``runs_root/name``; a missing directory gives status "missing".

    Packs are not consulted (see :class:`RunReader`).
    """
    path = Path(runs_root) / name
    if not path.is_dir():
        return RunRecord(name=name, path=path, status="missing")
    config_path = path / CONFIG
    config = _config_of(_read_json(config_path)) if config_path.is_file() else {}
    epochs = _read_jsonl(path / METRICS_FILE)
    if (path / RESULT).is_file():
        result = _read_json(path / RESULT)
        status = "failed" if result.get("failed") else "complete"
        return RunRecord(name=name, path=path, status=status, config=config, result=result,
                         epochs=epochs, failure=str(result.get("reason", "")))
    if (path / FAILED).is_file():
        failed = _read_json(path / FAILED)
        reason = str(failed.get("reason", failed.get("message", "diverged")))
        return RunRecord(name=name, path=path, status="failed", config=config, epochs=epochs,
                         failure=reason)
    return RunRecord(name=name, path=path, status="partial", config=config, epochs=epochs)


def _renamed(names: Iterable[str]) -> dict[str, str]:
    """``{current name: stored name}`` for the names among ``names`` that earlier naming
    rules wrote (:func:`~mixupe.engine.naming.current_name`); the first stored name wins."""
    out: dict[str, str] = {}
    for stored in sorted(names):
        current = current_name(stored)
        if current != stored:
            out.setdefault(current, stored)
    return out


def find_runs(runs_root: str | Path) -> list[str]:
    """Names (paths relative to ``runs_root``) of every run directory under it."""
    root = Path(runs_root)
    names = {p.parent.relative_to(root).as_posix() for p in root.rglob(CONFIG)}
    names |= {p.parent.relative_to(root).as_posix() for p in root.rglob(RESULT)}
    return sorted(n for n in names if not n.startswith("_") and n != ".")


# ---------------------------------------------------------------------------- packs
def _round(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value != 0.0:
        return float(f"{value:.6g}")
    return value


def _compact_epoch(record: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, sub in _EPOCH_KEYS.items():
        value = record.get(key)
        if value is None:
            continue
        if sub is None:
            out[key] = _round(value)
        elif isinstance(value, dict):
            out[key] = {k: _round(value[k]) for k in sub if k in value}
    return out


def write_pack(runs_root: str | Path, names: Iterable[str], path: str | Path) -> int:
    """Write the finished runs among ``names`` under ``runs_root`` to the pack ``path``.

    Only complete and diverged runs go in (a partial run is still being trained); a run among
    ``names`` that the pack already holds and that has no finished directory under
    ``runs_root`` stays in it (so a suite packed in pieces, from roots that hold only the
    newer runs, keeps the earlier ones); a run stored under an earlier naming rule's name
    (:func:`~mixupe.engine.naming.current_name`), in a directory or in the pack, is packed
    under that stored name, as the report finds it. Per-epoch
    records are rounded to six significant digits; a run that evaluated test after every epoch
    and has no ``best`` entry gets one derived from its full-precision records first. An
    existing pack file is never replaced by one with fewer runs. Returns the runs packed.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> write_pack(d, ["nothing/here"], d / "_packs" / "empty.json.gz")
        0
    """
    root = Path(runs_root)
    names = list(names)
    runs = {}
    renamed_dirs = _renamed(find_runs(root))
    for name in names:
        rec = read_run(root, name)
        if rec.status == "missing" and name in renamed_dirs:
            name = renamed_dirs[name]  # a directory under an earlier rule's name keeps it
            rec = read_run(root, name)
        if rec.status not in ("complete", "failed"):
            continue
        result = dict(rec.result)
        best = rec.best()
        if "best" not in result and best is not None:
            # derived here from the full-precision records, before they are rounded
            result["best"] = {"epoch": best[0], "test": best[1], "derived": "records"}
        runs[name] = {"status": rec.status, "config": rec.config, "result": result,
                      "failure": rec.failure,
                      "epochs": [_compact_epoch(e) for e in rec.epochs]}
    target = Path(path)
    if target.exists():
        old = _load_pack(target)
        # an entry stored under an earlier rule's name is kept under that name
        stored_as = {n: n for n in old} | _renamed(old)
        packed = {current_name(n) for n in runs}
        runs |= {stored_as[n]: old[stored_as[n]] for n in names
                 if n in stored_as and n not in packed}
        if len(old) > len(runs):
            raise ConfigError(f"{target} holds {len(old)} runs but only {len(runs)} are "
                              f"finished under {root}; point --runs-root at the directory the "
                              f"pack was made from, or write to another file")
    if not runs:
        return 0
    blob = json.dumps({"format": PACK_FORMAT, "runs": runs}, sort_keys=True,
                      separators=(",", ":")).encode()

    def write(f: Any) -> None:
        # mtime=0: the same runs give the same bytes, so re-packing changes nothing in git
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=9) as gz:
            gz.write(blob)

    atomic_write(target, write)
    return len(runs)


def _load_pack(path: Path) -> dict[str, Any]:
    try:
        with gzip.open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, EOFError, json.JSONDecodeError) as exc:
        raise CorruptDataError(f"pack {path} is not a readable gzip JSON file ({exc}); restore "
                               f"it from git (`git checkout -- {path}`) or rebuild it with "
                               f"`mixupe bench pack`") from exc
    version = data.get("format") if isinstance(data, dict) else None
    if version != PACK_FORMAT:
        raise CorruptDataError(f"pack {path} has format {version!r}, this version reads format "
                               f"{PACK_FORMAT}; use the mixupe version that wrote it or rebuild "
                               f"the pack")
    return dict(data["runs"])


class RunReader:
    """Reads runs under a root from run directories first, then from the root's packs.

    Calls are cached: one reader serves one report or one runner pass.
    """

    def __init__(self, runs_root: str | Path) -> None:
        self.root = Path(runs_root)
        self._cache: dict[str, RunRecord] = {}
        self._packed: dict[str, dict[str, Any]] | None = None
        self._aliases: dict[str, str] | None = None

    def _packs(self) -> dict[str, dict[str, Any]]:
        if self._packed is None:
            self._packed = {}
            folder = self.root / PACK_DIR
            for path in sorted(folder.glob("*.json.gz")) if folder.is_dir() else []:
                for name, run in _load_pack(path).items():
                    self._packed[name] = {**run, "pack": path}
        return self._packed

    def _stored_as(self, name: str) -> str | None:
        """The name a run that the current rules call ``name`` was stored under by earlier
        naming rules (:func:`~mixupe.engine.naming.current_name`), if such a run is here."""
        if self._aliases is None:
            self._aliases = _renamed(set(find_runs(self.root)) | set(self._packs()))
        return self._aliases.get(name)

    def _read(self, name: str) -> RunRecord:
        rec = read_run(self.root, name)
        if rec.status == "missing" and name in self._packs():
            run = self._packs()[name]
            rec = RunRecord(name=name, path=run["pack"], status=run["status"],
                            config=run["config"], result=run["result"],
                            epochs=run["epochs"], failure=run.get("failure", ""))
        return rec

    def __call__(self, name: str) -> RunRecord:
        """The run ``name`` (a run stored under an earlier rule's name is found too)."""
        if name not in self._cache:
            rec = self._read(name)
            stored = self._stored_as(name) if rec.status == "missing" else None
            if stored is not None:
                rec = self._read(stored)
            self._cache[name] = rec
        return self._cache[name]

    def forget(self, name: str) -> None:
        """Drop a cached record (after the run changed on disk)."""
        self._cache.pop(name, None)

    def names(self) -> list[str]:
        """Every run under the root: run directories and packed runs."""
        return sorted(set(find_runs(self.root)) | set(self._packs()))


def pack_suite(runs_root: str | Path, suite: str, out: str | Path) -> dict[str, int]:
    """Pack the finished runs of suite ``suite`` under ``runs_root`` into ``out``: one pack
    per dataset (``out/_packs/SUITE--DATASET.json.gz``) and the suite's manifest.

    ``out`` is then a runs root of its own that the report (and the runner, which skips the
    packed runs) reads without the run directories. Returns the runs packed per dataset.

    Example:
        >>> import tempfile
        >>> try:
        ...     pack_suite(tempfile.mkdtemp(), "quick", tempfile.mkdtemp())
        ... except ConfigError as exc:
        ...     "no suite 'quick'" in str(exc)
        True
    """
    from mixupe.bench.suites import manifest_path, read_manifests, write_manifest

    root, target = Path(runs_root), Path(out)
    record = next((m for m in read_manifests(root) if m.get("suite") == suite), None)
    if record is None:
        raise ConfigError(f"no suite {suite!r} under {str(root)!r}; run `mixupe bench {suite} "
                          f"--runs-root {root}` first, or pass the runs root it ran in")
    counts = {}
    for dataset in record["datasets"]:
        names = [n for c in record["cells"] if c["dataset"] == dataset
                 for p in c["points"] for n in p["runs"].values()]
        slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{suite}--{dataset}")
        counts[dataset] = write_pack(root, names, target / PACK_DIR / f"{slug}.json.gz")
    if not manifest_path(target, suite).exists() or root.resolve() != target.resolve():
        write_manifest(target, record)
    return counts
