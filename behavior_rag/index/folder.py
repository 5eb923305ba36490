"""An index folder as one unit of change: its session stores, its writer and serve locks, and
the fitted artifacts (the model) that one ``config.json`` rename commits together.

:class:`~behavior_rag.api.BehaviorRAG` keeps one of these per folder; the vectors themselves
are the :class:`~behavior_rag.index.base.VectorIndex`'s, passed to :meth:`IndexFolder.commit`.

Example:
    >>> import tempfile, pathlib
    >>> f = IndexFolder(pathlib.Path(tempfile.mkdtemp()) / "ix", fresh=True, owner="doctest")
    >>> len(f.store("sessions")), f.config() is None, f.model_path().name
    (0, True, 'model')
"""

from __future__ import annotations

import uuid
from pathlib import Path

from behavior_rag.errors import StoreError
from behavior_rag.faults import crash_point
from behavior_rag.index.base import VectorIndex
from behavior_rag.index.lock import ServeLock, WriterLock
from behavior_rag.index.storage import (
    ARTIFACTS,
    Artifact,
    IndexConfig,
    artifact,
    artifact_path,
    check_index_folder,
    has_config,
    model_dir,
    read_config,
    recommit,
)
from behavior_rag.ingest.store import SessionStore, StoreManifest


class IndexFolder:
    """``root``'s stores, locks and fitted-file names; ``fresh``: ignore what is on disk
    (the first commit replaces it). A folder holding index data but no ``config.json`` is
    refused (:func:`~behavior_rag.index.storage.check_index_folder`), unless ``fresh``."""

    def __init__(self, root: Path, *, fresh: bool = False, owner: str = "behavior_rag",
                 lock_timeout_s: float = 10.0) -> None:
        self.root, self.fresh = root, fresh
        if not fresh:
            check_index_folder(root)  # never a new, empty index over a damaged one
        # one writer per folder, from the first change to the commit (index/lock.py)
        self.writer = WriterLock(root, owner, lock_timeout_s)
        self.loaded: str | None = None  # the data version the index was loaded at
        self.serving: ServeLock | None = None
        self.staged: dict[str, Artifact] = {}  # artifacts written here, until a commit
        self._stores: dict[str, SessionStore] = {}

    def config(self) -> IndexConfig | None:
        """The last commit's config (None: fresh, or nothing committed yet)."""
        if self.fresh or not has_config(self.root):
            return None
        return read_config(self.root)

    def store(self, name: str) -> SessionStore:
        """A session store inside the folder as the last commit lists it (empty if fresh or
        absent; an older folder's own ``manifest.json`` is read), opened once."""
        if name not in self._stores:
            cfg = self.config()
            manifest = StoreManifest.empty() if self.fresh else \
                cfg.stores.get(name) if cfg is not None else None
            self._stores[name] = SessionStore(self.root / name, manifest, own_manifest=False)
        return self._stores[name]

    def is_open(self, name: str) -> bool:
        return name in self._stores

    def begin(self) -> None:
        """Take the writer lock before a change (refused if another writer committed since
        :attr:`loaded`, or if another process serves the folder)."""
        self.writer.begin(self.loaded, serving=self.serving is not None)

    def commit(self, index: VectorIndex) -> IndexConfig:
        """Commit ``index`` with the stores' new segments and the fitted files, by one rename
        of ``config.json``; then release the writer lock."""
        self.begin()
        prepared = {name: st.prepare() for name, st in self._stores.items()}
        crash_point("stores-prepared")
        last = self.config()
        if last is not None:
            prepared = last.stores | prepared
        cfg = index.save(self.root, stores=prepared, artifacts={
            name: artifact(self.root, name, a.path) for name, a in self.staged.items()})
        self.staged = {}
        for name, st in self._stores.items():
            st.committed(prepared[name])
        self.loaded = cfg.data
        self.writer.release()
        return cfg

    def commit_artifacts(self) -> IndexConfig:
        """Commit the artifacts written since the last commit (e.g. a grown label set) and
        nothing else: the vectors and stores stay as committed (their files are shared with
        the new version, see :func:`~behavior_rag.index.storage.recommit`)."""
        self.begin()
        try:
            if self.config() is None:
                raise StoreError("nothing is committed in this index yet: build it first "
                                 "(behavior-rag index build)", file=str(self.root))
            cfg = recommit(self.root, {name: artifact(self.root, name, a.path)
                                       for name, a in self.staged.items()})
            self.staged = {}
            self.loaded = cfg.data
            return cfg
        finally:
            self.writer.release()

    def artifact_path(self, name: str) -> Path | None:
        """Artifact ``name``'s folder: written here and not yet committed, else the last
        commit's (checked), else None."""
        if name in self.staged:
            return self.root / self.staged[name].path
        cfg = self.config()
        return artifact_path(self.root, cfg, name) if cfg is not None else None

    def new_artifact_path(self, name: str) -> Path:
        """A new folder for artifact ``name`` written now (``model-<hex>``), named by the
        next commit (with its manifest's checksum)."""
        if name not in ARTIFACTS:
            raise ValueError(f"unknown artifact {name!r}")
        path = f"{name}-{uuid.uuid4().hex[:12]}"
        self.staged[name] = Artifact(path=path)
        return self.root / path

    def new_model_path(self) -> Path:
        return self.new_artifact_path("model")

    def model_path(self) -> Path:
        """The fitted model's folder: fitted here, else the last commit's (checked: present
        and the one committed), else ``model`` (older indexes)."""
        if "model" in self.staged:
            return self.root / self.staged["model"].path
        if self.fresh or not has_config(self.root):
            return self.root / "model"
        return model_dir(self.root, read_config(self.root))

    def serve(self, what: str) -> None:
        """Mark the folder as served by this process until :meth:`stop_serving`."""
        self.writer.what = what
        self.serving = ServeLock(self.root)
        self.serving.acquire()

    def stop_serving(self) -> None:
        if self.serving is not None:
            self.serving.release()
            self.serving = None
