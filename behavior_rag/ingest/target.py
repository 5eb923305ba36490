"""Where ``behavior-rag ingest --out`` / ``synth --out`` may write: a new or empty folder, or a
session store it wrote before (replaced whole). Never an index folder, a folder inside one, a
fitted model's folder or any other folder with files in it.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> check_store_target(d / "new")  # absent: fine
    >>> (d / "notes.txt").write_text("mine")
    4
    >>> try:
    ...     check_store_target(d)
    ... except StoreError as e:
    ...     print(e.message.split(" (")[0])
    refusing to replace a folder that is not a session store
"""

from __future__ import annotations

import json
from pathlib import Path

from behavior_rag.errors import StoreError

# the fields every store manifest has (ingest.store.StoreManifest; not imported: store uses us)
STORE_KEYS = {"sessions", "events", "users", "labels", "created"}


def check_store_target(path: str | Path) -> None:
    """Raise :class:`StoreError` unless ``path`` can become a store: absent (below folders),
    an empty folder, or a session store folder (which is then replaced). An index folder, a
    fitted model's folder (its ``manifest.json`` is not a store's) and any other folder with
    files in it are refused: ingest only replaces what it wrote."""
    path = Path(path)
    up = next((p for p in (path, *path.parents) if p.exists()), None)
    if up is not None and not up.is_dir():
        what = "is a file" if up == path else f"is inside {str(up)!r}, which is a file"
        raise StoreError(f"the store path {what}: give a folder (new, empty, or a session store)",
                         file=str(path), field="out")
    if path.is_symlink():
        raise StoreError("the store path is a symbolic link: give the folder itself",
                         file=str(path), field="out")
    if _index_config(path.parent):
        raise StoreError("refusing to write a session store inside an index folder (its "
                         "sessions are written by `behavior-rag index add`): choose another "
                         "--out", file=str(path), field="out")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if _index_config(path):
        raise StoreError("refusing to replace an index folder with a session store: choose "
                         "another --out", file=str(path), field="out")
    if not (path / "manifest.json").is_file():
        raise StoreError("refusing to replace a folder that is not a session store (it has "
                         "files and no manifest.json): choose a new or empty folder",
                         file=str(path), field="out")
    try:
        data = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        data = None
    if not (isinstance(data, dict) and STORE_KEYS <= set(data)):
        raise StoreError("refusing to replace a folder that is not a session store (its "
                         "manifest.json is not a store manifest; a fitted model's folder?): "
                         "choose a new or empty folder", file=str(path / "manifest.json"),
                         field="out")


def check_append_target(path: str | Path) -> None:
    """Raise :class:`StoreError` unless ``path`` is a session store folder that ``ingest
    --append`` may add to: one ``ingest`` or ``synth`` wrote (its own ``manifest.json``). A
    missing or empty folder, any other folder, an index folder and the stores inside one are
    refused, each naming the folder."""
    path = Path(path)
    where = repr(str(path))
    if path.is_symlink():
        raise StoreError(f"--append: {where} is a symbolic link: give the store folder itself",
                         file=str(path), field="out")
    if not path.exists():
        raise StoreError(f"--append: there is no session store at {where}: ingest the first "
                         "file without --append to create it", file=str(path), field="out")
    if not path.is_dir():
        raise StoreError(f"--append: {where} is a file, not a session store folder",
                         file=str(path), field="out")
    if _index_config(path) or _index_config(path.parent):
        raise StoreError(f"--append: {where} is an index folder or inside one; its sessions "
                         "are written by `behavior-rag index add`: append to a session store "
                         "and add that to the index", file=str(path), field="out")
    if not (path / "manifest.json").is_file():
        what = "is empty" if not any(path.iterdir()) else "has no manifest.json"
        raise StoreError(f"--append: {where} is not a session store (it {what}): name a folder "
                         "that `behavior-rag ingest --out` wrote, or ingest the first file "
                         "without --append", file=str(path), field="out")
    try:
        data = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        data = None
    if not (isinstance(data, dict) and STORE_KEYS <= set(data)):
        raise StoreError(f"--append: {where} is not a session store (its manifest.json is not "
                         "a store manifest; a fitted model's folder?)",
                         file=str(path / "manifest.json"), field="out")


def _index_config(folder: Path) -> bool:
    """Whether ``folder`` holds an index's ``config.json`` (one that lists ``stores``)."""
    cfg = folder / "config.json"
    try:
        data = json.loads(cfg.read_text()) if cfg.is_file() else None
    except (OSError, ValueError):
        return False  # someone else's config.json: the other checks still apply
    return isinstance(data, dict) and ("stores" in data or "embedder" in data)
