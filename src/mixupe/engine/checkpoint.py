"""Checkpoints and small JSON files of a run directory, written atomically.

Every write goes through :func:`mixupe.atomic.atomic_write`, so a crash leaves either the
old or the new file. :func:`save_checkpoint` also keeps the checkpoint it replaces as
``<name>.prev.pt``; :func:`load_checkpoint` falls back to it (with a warning) when the newest
file cannot be read, e.g. after a copy of the run directory was cut short.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> save_checkpoint(d / "checkpoint.pt", {"epoch": 1})
>>> save_checkpoint(d / "checkpoint.pt", {"epoch": 2})
>>> _ = (d / "checkpoint.pt").write_bytes(b"cut short")  # a truncated copy
>>> load_checkpoint(d / "checkpoint.pt")["epoch"]  # the previous one, with a warning
1
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from mixupe.atomic import atomic_copy, atomic_write
from mixupe.errors import ConfigError, CorruptDataError

__all__ = [
    "CHECKPOINT_FORMAT",
    "load_checkpoint",
    "previous_checkpoint",
    "read_json",
    "save_checkpoint",
    "write_json",
]

log = logging.getLogger(__name__)

# The layout of the checkpoint dict; raised when that layout changes incompatibly.
CHECKPOINT_FORMAT = 1


def previous_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint that ``path`` replaced.

    >>> previous_checkpoint("runs/x/checkpoint.pt").name
    'checkpoint.prev.pt'
    """
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, state dicts, generator states) atomically with ``torch.save``.

    The checkpoint it replaces stays as :func:`previous_checkpoint` ``(path)``. The file
    records :data:`CHECKPOINT_FORMAT` and the mixupe version that wrote it.
    """
    from mixupe import __version__

    path = Path(path)
    if path.is_file():
        atomic_copy(path, previous_checkpoint(path))
    full = {**state, "format": CHECKPOINT_FORMAT, "mixupe_version": __version__}
    atomic_write(path, lambda f: torch.save(full, f))


def _read(path: Path, map_location: Any) -> dict[str, Any]:
    # weights_only=False: the checkpoint holds our own generator states and plain dicts,
    # written by this library into the user's own run directory.
    state = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(state, dict):
        raise ValueError(f"it holds a {type(state).__name__}, not a checkpoint dict")
    return state


def _check(state: dict[str, Any], path: Path, config_hash: str | None) -> None:
    fmt = state.get("format")
    if fmt != CHECKPOINT_FORMAT:
        writer = state.get("mixupe_version", "an older mixupe")
        raise ConfigError(
            f"checkpoint {path} has format {fmt!r}, written by mixupe {writer}, but this mixupe "
            f"reads format {CHECKPOINT_FORMAT}; resume it with the mixupe version that wrote "
            "it, or start the run again with --overwrite (overwrite=True)"
        )
    if config_hash is not None and state.get("config_hash") != config_hash:
        raise ConfigError(
            f"checkpoint {path} belongs to a run with config hash {state.get('config_hash')!r}, "
            f"not {config_hash!r} (was it copied from another run directory?); put it back "
            "where it came from, or start this run again with --overwrite"
        )


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: Any = "cpu", config_hash: str | None = None
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    If ``path`` is missing or unreadable (truncated, cut short) but the previous checkpoint
    is readable, that one is returned with a warning: training then repeats one epoch.
    Raises :class:`~mixupe.errors.ConfigError` for a checkpoint of another format version or,
    when ``config_hash`` is given, of another config; :class:`~mixupe.errors.CorruptDataError`
    when neither file can be read; ``FileNotFoundError`` when neither exists.
    """
    path = Path(path)
    prev = previous_checkpoint(path)
    try:
        state = _read(path, map_location)
    except FileNotFoundError:
        if not prev.is_file():
            raise
        problem: Exception = FileNotFoundError(f"{path.name} is missing")
    except Exception as exc:
        problem = exc
    else:
        _check(state, path, config_hash)
        return state
    remedy = ("restore the run directory from a copy if you have one; otherwise start the "
              "run again with --overwrite (overwrite=True)")
    if not prev.is_file():
        raise CorruptDataError(
            f"checkpoint {path} cannot be read ({problem}): it is truncated, or was written by "
            f"an incompatible version of torch, and there is no previous checkpoint; {remedy}"
        ) from problem
    try:
        state = _read(prev, map_location)
    except Exception as exc:
        raise CorruptDataError(
            f"checkpoint {path} cannot be read ({problem}) and neither can the previous one "
            f"({prev.name}: {exc}): both are truncated, or were written by an incompatible "
            f"version of torch; {remedy}"
        ) from exc
    _check(state, prev, config_hash)
    log.warning("checkpoint %s cannot be read (%s); resuming from the previous checkpoint %s "
                "(epoch %s), so one epoch is trained again", path, problem, prev.name,
                state.get("epoch"))
    return state


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, raising :class:`~mixupe.errors.CorruptDataError` if it is malformed."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise CorruptDataError(
            f"{path} is not valid JSON ({exc}); repair it or restore it from a copy of the run "
            "directory, or start the run again with --overwrite"
        ) from exc
