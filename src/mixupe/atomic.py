"""Atomic file writes: the one way every part of mixupe replaces a file on disk.

The content goes to a temporary file in the target's directory, which is flushed and fsynced,
then moved over the target with :func:`os.replace`; finally the directory itself is fsynced so
the rename survives a power cut. A crash at any moment leaves either the old file or the new
one, never a truncated or half-written one.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> atomic_write(path, "first")
    >>> atomic_write(path, lambda f: f.write(b"second"))
    >>> path.read_text()
    'second'
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_copy", "atomic_write", "fsync_directory"]


def fsync_directory(folder: str | os.PathLike[str]) -> None:
    """Flush a directory's entries (a rename inside it) to disk; a no-op where unsupported."""
    if os.name != "posix":  # Windows cannot open a directory for fsync
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str], content: bytes | str | Callable[[IO[bytes]], object]
) -> None:
    """Replace ``path`` with ``content`` atomically and durably.

    ``content`` is bytes, text (written as UTF-8) or a function that writes to the binary file
    it is given (e.g. ``lambda f: torch.save(state, f)``). The parent directory is created if
    needed. If writing fails, the temporary file is removed and the old ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, bytes | bytearray | memoryview):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_copy(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Replace ``target`` with a copy of ``source`` atomically; ``source`` stays as it is.

    A hard link when the file system offers one (no bytes copied), a copy otherwise.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write(d / "new", "v2")
        >>> atomic_copy(d / "new", d / "kept")
        >>> (d / "kept").read_text(), (d / "new").read_text()
        ('v2', 'v2')
    """
    source, target = Path(source), Path(target)
    link = target.with_name(f".{target.name}.link")
    link.unlink(missing_ok=True)
    try:
        os.link(source, link)
    except OSError:  # a file system without hard links

        def copy(f: IO[bytes]) -> None:
            with source.open("rb") as src:
                shutil.copyfileobj(src, f)

        atomic_write(target, copy)
        return
    try:
        os.replace(link, target)
    except BaseException:
        link.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)
