"""One writer per output folder: the corpus build (`descriptors.corpus`), every training stage
(`training.common.claims_output_dir`) and `fmrilm demo` hold an exclusive `fcntl.flock` on
`FOLDER/.fmrilm.lock` while they write there. (A stage's window-code cache lives in its output
folder; the processes of one multi-process run share it through `datasets`' own temp-and-rename.)

The holder writes what it is, its pid and host into the lock file (`a corpus build (pid N on host
H)`), so a second writer fails at once with one line naming it. The kernel drops the lock when the holder exits, however it ends (a killed run
leaves no stale lock); a holder that ends normally also removes the file, and a writer that finds
its locked file removed or replaced under it starts over, so two writers never hold two files of
the same name. A process that already holds a folder's lock can take it again (a corpus build's
steps, nested calls) without waiting on itself.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import FmriInputError

LOCK_NAME = ".fmrilm.lock"
HOLDER_WAIT_S = 1.0  # how long a refused writer waits for the holder to record itself
_held: dict[Path, int] = {}  # folder -> depth, for the folders this process holds


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        return os.fstat(descriptor).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _holder(descriptor: int) -> str:
    deadline = time.monotonic() + HOLDER_WAIT_S
    while True:
        recorded = os.pread(descriptor, 256, 0).decode(errors="replace").strip()
        if recorded or time.monotonic() > deadline:
            return recorded or "a writer that has not recorded itself yet"
        time.sleep(0.05)


def _acquire(path: Path, what: str) -> int:
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(descriptor)
                raise
            holder, current = _holder(descriptor), _same_file(descriptor, path)
            os.close(descriptor)
            if not current:  # released and removed while we looked: try the new file
                continue
            raise FmriInputError(
                f"{path.parent}: expected no other writer, found {holder} writing there (lock {path}); wait for it to end or choose another folder"
            ) from None
        if _same_file(descriptor, path):
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{what} (pid {os.getpid()} on host {socket.gethostname()})\n".encode(), 0)
            return descriptor
        os.close(descriptor)  # we locked a file its holder had just removed


@contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold the exclusive lock of `folder` (created if missing) while the block runs.

    Args:
        folder: the output folder to write.
        what: who takes it, in words, recorded for the refusal of others (`"a corpus build"`, `"a training run"`).

    Raises:
        FmriInputError: another process holds the lock; the message names its pid and host.
    """
    folder = Path(folder).resolve()
    if folder in _held:
        _held[folder] += 1
        try:
            yield folder
        finally:
            _held[folder] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    descriptor = _acquire(path, what)
    _held[folder] = 1
    try:
        yield folder
    finally:
        del _held[folder]
        path.unlink(missing_ok=True)  # before the release: a waiter then finds its file gone and starts over
        os.close(descriptor)


__all__ = ["LOCK_NAME", "folder_lock"]
