"""The live sessions' write-ahead log: the commit point of an acknowledged append.

Why a log, and where the point is: a live session's events arrive one request at a time but
reach the index only when the session ends (one atomic commit of the whole folder per batch
of ended sessions — committing per event would rewrite the index each time). In between they
live in memory and in this log. An append is acknowledged only after its record is written
here in one ``write`` — in the operating system's page cache, which a killed process cannot
take back, so a SIGKILL after the answer cannot lose it — and, with ``live.fsync``, on disk
(``fdatasync``, shared by concurrent appends: group commit), so a power loss cannot either. On start the service replays the log; after
each commit of ended sessions it rewrites the log (atomically, :mod:`behavior_rag.atomic`)
with only the sessions still open or waiting, which truncates it.

Each line is ``<crc32 hex> <json>``; a torn last line (a write the kill interrupted, never
acknowledged) is dropped on reading, a damaged line before it is a :class:`StoreError`.

Example:
    >>> import tempfile, pathlib
    >>> log = WriteAheadLog(pathlib.Path(tempfile.mkdtemp()) / "wal.log", fsync=False)
    >>> log.sync(log.append([{"op": "end", "sid": "s1"}]))
    >>> log.read()
    [{'op': 'end', 'sid': 's1'}]
    >>> log.rewrite([]); log.read()
    []
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from pathlib import Path
from typing import Any

from behavior_rag.atomic import fsync_path, replace_file
from behavior_rag.errors import StoreError

log = logging.getLogger(__name__)


def _line(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


class WriteAheadLog:
    """Append-only records in ``path``, each batch one write (+ fsync) before it counts."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path, self.fsync = path, fsync
        self.torn = 0  # torn lines dropped by the last read
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._written = self._synced = 0  # tickets of writes, and of those on disk

    @property
    def size(self) -> int:
        """Bytes in the log now."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def read(self) -> list[dict[str, Any]]:
        """Every whole record, in order (a torn last line is dropped and counted)."""
        try:
            lines = self.path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return []
        parsed = [_parse(line) for line in lines if line]
        bad = next((i for i, r in enumerate(parsed) if r is None), len(parsed))
        if any(r is not None for r in parsed[bad:]):
            raise StoreError("the live sessions' log is damaged before its end (not a torn "
                             "last write)", file=str(self.path), row=bad + 1)
        self.torn = len(parsed) - bad
        if self.torn:
            log.warning("dropped %d torn record(s) at the end of %s (never acknowledged)",
                        self.torn, self.path)
        out = [r for r in parsed[:bad] if r is not None]
        return out

    def append(self, records: list[dict[str, Any]]) -> int:
        """Write ``records`` in one ``write`` (in the OS once this returns: a killed process
        cannot lose them); returns the ticket to pass to :meth:`sync`."""
        data = b"".join(_line(r) for r in records)
        with self._lock:
            fd = self._open()
            written = os.write(fd, data)
            while written < len(data):  # a short write (rare: signals, full pipes)
                written += os.write(fd, data[written:])
            self._written += 1
            return self._written

    @property
    def last(self) -> int:
        """The ticket of the latest write."""
        return self._written

    def sync(self, ticket: int) -> None:
        """With ``fsync``: return once the write of ``ticket`` is on disk. Group commit:
        one ``fdatasync`` covers every write before it, so concurrent appends share it."""
        if not self.fsync or self._synced >= ticket:
            return
        with self._sync_lock:
            if self._synced >= ticket:
                return
            with self._lock:
                fd, upto = self._fd, self._written
            if fd is not None:
                try:
                    os.fdatasync(fd)
                except OSError:  # closed by a rewrite meanwhile: that rewrite was fsynced
                    if self._fd == fd:
                        raise
            self._synced = max(self._synced, upto)

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the log by ``records`` atomically (the old one stays until the rename)."""
        with self._lock:
            self._close()
            replace_file(self.path, b"".join(_line(r) for r in records))  # fsynced
            self._synced = self._written

    def close(self) -> None:
        with self._lock:
            self._close()

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            if new:
                fsync_path(self.path.parent)  # the file's name must survive too
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _parse(line: bytes) -> dict[str, Any] | None:
    crc, _, body = line.partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
