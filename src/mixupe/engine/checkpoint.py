"""Atomic writes of checkpoints and small JSON files.

A file is written to a temporary name in the same directory, flushed to disk, then moved over
the target with :func:`os.replace`, so a crash leaves either the old or the new file, never a
truncated one.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> save_checkpoint(d / "checkpoint.pt", {"epoch": 1})
>>> load_checkpoint(d / "checkpoint.pt")["epoch"]
1
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from mixupe.errors import CorruptDataError

__all__ = ["atomic_write", "load_checkpoint", "read_json", "save_checkpoint", "write_json"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary file, fsync it, and move it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, state dicts, generator states) atomically with ``torch.save``."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`~mixupe.errors.CorruptDataError` if the file cannot be read.
    """
    try:
        # weights_only=False: the checkpoint holds our own generator states and plain dicts,
        # written by this library into the user's own run directory.
        return torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise CorruptDataError(
            f"checkpoint {path} cannot be read ({exc}); delete the run directory or "
            "train again with overwrite=True (--overwrite)"
        ) from exc


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, raising :class:`~mixupe.errors.CorruptDataError` if it is malformed."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise CorruptDataError(
            f"{path} is not valid JSON ({exc}); delete it or rerun with overwrite=True"
        ) from exc
