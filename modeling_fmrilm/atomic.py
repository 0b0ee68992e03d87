"""Atomic writes: a file (corpus shards, build plans) or a finished folder (final folders, exports,
the corpus's data) is written under a temporary name, flushed to disk (`fsync` of the file and of
its directory) and renamed into place, so an interruption or a crash leaves the previous version
or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_directory(folder: Path) -> None:
    """Flush `folder`'s entries (a rename in it) to disk."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write` on a temporary file beside `path` (a name of its own per writer, so concurrent
    writers of the same file never mix), flush it to disk and rename it to `path`."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_text_atomically(path: Path, text: str) -> None:
    """`write_atomically` for a UTF-8 text file."""
    write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for path in sorted({folder, *(p for p in folder.rglob("*") if p.is_dir())}):
        fsync_directory(path)


def replace_folder(staging: Path, destination: Path) -> None:
    """Move the finished `staging` folder to `destination`, replacing what was there (one rename
    each), after flushing every file of `staging` to disk."""
    _fsync_tree(staging)
    previous = destination.with_name(f".{destination.name}-previous")
    shutil.rmtree(previous, ignore_errors=True)
    if destination.exists():
        os.replace(destination, previous)
    os.replace(staging, destination)
    fsync_directory(destination.parent)
    shutil.rmtree(previous, ignore_errors=True)


__all__ = ["fsync_directory", "replace_folder", "write_atomically"]
