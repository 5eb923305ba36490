"""The one way we write files: a unique temp name beside the target, fsync, rename.

Every file or folder the project writes goes through here, so a crash or a second writer never
leaves a half-written target: readers see the old content or the new, nothing in between. Temp
names are unique per call (two runs never share one), the old content stays in place until the
rename, and a failed write removes its temp and leaves the target untouched.

Folders are swapped with Linux's ``renameat2(RENAME_EXCHANGE)`` where the kernel offers it (one
atomic step); elsewhere the old folder is moved aside, the new one renamed in, then the old one
removed (a crash in between leaves the old folder beside the target under a ``.old-`` name).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> replace_file(d / "a.txt", "one") == d / "a.txt"
    True
    >>> with replace_dir(d / "folder") as tmp:
    ...     _ = (tmp / "x.json").write_text("{}")
    >>> sorted(p.name for p in d.iterdir())
    ['a.txt', 'folder']
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def fsync_path(p: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes renames inside it durable)."""
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(target: Path, kind: str = "tmp") -> Path:
    """A unique hidden name beside ``target`` (same folder, so a rename is atomic)."""
    return target.parent / f".{target.name}.{kind}-{uuid.uuid4().hex[:12]}"


@contextmanager
def writing_file(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path`` for a writer that wants a file name (``savefig``,
    an exporter); on success it is fsynced and renamed over ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def replace_file(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns ``path``."""
    with writing_file(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def create_file_once(path: str | Path, data: str | bytes, mode: int = 0o600) -> bool:
    """Create ``path`` with ``data`` (file mode ``mode``) only if it does not exist yet, all or
    nothing: two racing writers never both win. Returns whether this call created it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if another process created it first
        fsync_path(path.parent)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def exclusive(lock: str | Path) -> Iterator[None]:
    """Hold a blocking OS lock (``flock``) on the file ``lock`` (created if missing): processes
    that make the same cached artefact (workers exporting one model) take turns instead of
    racing; the lock goes with the process if it dies."""
    lock = Path(lock)
    os.makedirs(lock.parent, exist_ok=True)  # os.makedirs tolerates a racing creator
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (before a rename makes them visible)."""
    for dirpath, _, files in os.walk(root):
        for f in files:
            fsync_path(Path(dirpath) / f)
        fsync_path(Path(dirpath))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


@contextmanager
def replace_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temp folder beside ``path``; on success its files are fsynced and it
    replaces ``path`` (the old folder, if any, stays until then and is removed after)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        if not path.exists():
            os.replace(tmp, path)
        elif path.is_dir() and _exchange(tmp, path):
            shutil.rmtree(tmp)  # tmp now holds the old content
        else:
            old = temp_name(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        fsync_path(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
