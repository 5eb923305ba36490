"""One writer per index folder: an OS file lock (``flock``) on ``<index>/.writer.lock``.

A writer holds it from its first change until its commit, so two writers can never both read
the same state and commit over each other (the second waits up to a timeout, then gets a
clear error naming the holder). Readers take no lock: they see the last commit. The kernel
drops the lock when its holder dies, so a crashed writer never leaves the folder locked.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with WriterLock(d, "doctest"):
    ...     WriterLock(d, "second", timeout_s=0).acquire()
    Traceback (most recent call last):
    ...
    behavior_rag.errors.WriteConflict: ...
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from behavior_rag.errors import WriteConflict

LOCK_FILE = ".writer.lock"
SERVED_FILE = ".served.lock"  # each serving process holds a shared lock on it


class WriterLock:
    """The writer lock of the index folder ``root``; ``what`` says who holds it (shown to a
    writer that has to wait)."""

    def __init__(self, root: str | Path, what: str, timeout_s: float = 10.0) -> None:
        self.root, self.what, self.timeout_s = Path(root), what, timeout_s
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> WriterLock:
        if self._fd is not None:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    os.close(fd)
                    raise WriteConflict(
                        f"another writer holds this index folder ({holder}); waited "
                        f"{self.timeout_s:g} s. Wait for it to finish, stop it, or raise "
                        "BEHAVIOR_RAG_INDEX__LOCK_TIMEOUT_S", file=str(self.root),
                        field="lock") from None
                time.sleep(0.05)
        # who holds it, for the next writer's error (the lock file itself, not a commit)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "what": self.what}).encode(), 0)
        self._fd = fd
        return self

    def begin(self, loaded: str | None, *, serving: bool = False) -> None:
        """Take the lock for a change to an index loaded at data version ``loaded`` (None:
        nothing loaded yet); refuse if another writer committed since it was loaded, or (for a
        writer that is not the service itself) while ``behavior-rag serve`` serves the folder."""
        if not serving and served(self.root):
            raise WriteConflict("this index folder is being served by `behavior-rag serve`: write "
                             "through its HTTP API (POST /v1/sessions, DELETE "
                             "/v1/sessions/{id}) or stop the service first",
                             file=str(self.root), field="lock")
        self.acquire()
        cfg = self.root / "config.json"
        if loaded is None or not cfg.exists():
            return
        try:
            now = json.loads(cfg.read_text()).get("data")
        except (OSError, ValueError):
            now = None
        if now != loaded:
            self.release()
            raise WriteConflict(f"the index folder changed since it was opened (now {now}, opened "
                             f"at {loaded}): another writer committed; open it again",
                             file=str(self.root), field="lock")

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # a writer dropped without committing frees the folder
        self.release()

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class ServeLock:
    """Held (shared) by every process serving the folder, for as long as it serves."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is None:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / SERVED_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.release()


def served(root: Path) -> bool:
    """Whether some process serves ``root`` now (holds its shared serve lock)."""
    path = root / SERVED_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"{info.get('what', '?')}, pid {info.get('pid', '?')}"
    except ValueError:
        return "unknown holder"
