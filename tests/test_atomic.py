"""The one atomic-write helper: old or new content, never a mix, and durable renames."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mixupe import atomic
from mixupe.atomic import atomic_write


def test_content_kinds_and_parent_creation(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "f.bin"
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    atomic_write(path, "é")
    assert path.read_bytes() == "é".encode()
    atomic_write(path, lambda f: f.write(b"from a writer"))
    assert path.read_bytes() == b"from a writer"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.bin"]  # no temp files left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    atomic_write(path, "old")

    def broken(f) -> None:
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match=r"disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.skipif(os.name != "posix", reason="directory fsync is POSIX only")
def test_file_then_rename_then_directory_are_flushed(tmp_path: Path, monkeypatch) -> None:
    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
        events.append((f"fsync {kind}", info.st_ino))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    path = tmp_path / "manifest.json"
    atomic_write(path, "{}")
    kinds = [e[0] for e in events]
    assert kinds == ["fsync file", "replace", "fsync dir"]
    assert events[0][1] == path.stat().st_ino  # the data reached disk before the rename
    assert events[2][1] == tmp_path.stat().st_ino  # then the directory holding the new name


def test_every_writer_of_the_package_uses_the_helper() -> None:
    # One way to replace a file: no other module renames temp files into place by itself.
    root = Path(atomic.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "atomic.py":
            continue
        text = path.read_text()
        for needle in ("os.replace(", ".replace(path)", "mkstemp(", "os.fsync("):
            if needle in text:
                offenders.append(f"{path.relative_to(root)}: {needle}")
    # rundir appends one fsynced line per epoch (an append, not a replacement).
    assert offenders == ["engine/rundir.py: os.fsync("], offenders
