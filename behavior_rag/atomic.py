"""Durable-write helpers shared by every on-disk format (session stores, index folders)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(p: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes renames inside it durable)."""
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
