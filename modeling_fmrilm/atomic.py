"""Atomic replacement of a finished folder (checkpoints' final folders, exports): an interruption
leaves the previous folder or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_folder(staging: Path, destination: Path) -> None:
    """Move the finished `staging` folder to `destination`, replacing what was there (one rename each)."""
    previous = destination.with_name(f".{destination.name}-previous")
    shutil.rmtree(previous, ignore_errors=True)
    if destination.exists():
        os.replace(destination, previous)
    os.replace(staging, destination)
    shutil.rmtree(previous, ignore_errors=True)


__all__ = ["replace_folder"]
