"""One writer per standalone session store: an OS lock (``flock``) on the store folder itself.

``ingest --append`` holds it from reading the store's manifest to committing the new one, and
``ingest --out`` (replacing a store) holds it while it swaps the folder, so two writers never
both read one state and commit over each other; the second waits, then gets a
:class:`~behavior_rag.errors.WriteConflict` naming the folder. Readers take no lock. The lock is
on the folder, not a file in it (nothing is left behind), and the kernel drops it when its
holder dies. A folder swapped while we waited is a new folder: the lock is taken again on it.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with store_lock(d):
    ...     with store_lock(d, timeout_s=0):
    ...         pass
    Traceback (most recent call last):
    ...
    behavior_rag.errors.WriteConflict: ...
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from behavior_rag.errors import WriteConflict


@contextmanager
def store_lock(path: str | Path, timeout_s: float = 10.0) -> Iterator[None]:
    """Hold the writer lock of the store folder ``path`` (which must exist)."""
    path = Path(path)
    deadline = time.monotonic() + timeout_s
    while True:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise WriteConflict(
                            f"another writer (ingest) is writing the session store "
                            f"{str(path)!r}; waited {timeout_s:g} s. Wait for it to finish, or "
                            "raise BEHAVIOR_RAG_INDEX__LOCK_TIMEOUT_S", file=str(path),
                            field="lock") from None
                    time.sleep(0.05)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield
                return
        finally:
            os.close(fd)  # closing releases the lock
        # the folder was replaced while we waited: lock the one there now
