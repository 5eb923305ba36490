"""A self-describing index folder, saved atomically.

Layout::

    <index>/config.json        format version, embedder id/dim/backend, index spec, counts,
                               created/updated, and which data folder is current
    <index>/v-000007/faiss.index   FAISS's own serialisation (no pickle)
    <index>/v-000007/ids.npy       internal slot -> session key (-1 = dead), allow_pickle=False
    <index>/v-000007/metadata.parquet
    <index>/sessions/seg-*.parquet  the indexed sessions' events (behavior_rag.ingest.store),
                               live segments listed in config.json's ``stores``
    <index>/model-<hex>/       named artifacts (config.json's ``artifacts``: name -> folder
                               and the sha256 of its manifest), e.g. the fitted model

Folders from before the artifact map named their model in ``model`` (read as the ``model``
artifact) and the retired kNN ⊕ LLM fusion weights in ``fusion`` (``fusion-<hex>.json`` or
``fusion.json``): those weights are never read (an unfitted index uses the default kNN model)
and the next commit removes the file.

A save writes a new ``v-N`` folder (fsynced), then atomically replaces ``config.json`` to point at
it; only then are older folders removed. A crash at any point leaves the previous config pointing
at its untouched folder, so the last committed index always loads.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ValidationError, field_validator, model_validator

from behavior_rag.atomic import fsync_path, fsync_tree, replace_file, temp_name
from behavior_rag.embed.base import EmbedderInfo
from behavior_rag.errors import StoreError
from behavior_rag.faults import crash_point
from behavior_rag.ingest.store import StoreManifest
from behavior_rag.settings import IndexSettings
from behavior_rag.vectors import HybridSpec

FORMAT_VERSION = 1
STORE_NAMES = ("sessions", "history")  # indexed sessions' events; recorded history


class FileSum(BaseModel):
    size: int
    sha256: str


class Artifact(BaseModel):
    """A fitted artifact committed with the index: a folder inside it and the sha256 of the
    folder's ``manifest.json`` (None: named by an older index, unchecked)."""

    path: str
    sha256: str | None = None


# artifact name -> the folder names it may have (anything else in config.json is refused)
ARTIFACTS = {"model": r"model-[0-9a-f]{12}"}
MANIFEST = "manifest.json"


class IndexConfig(BaseModel):
    """``config.json``: everything needed to know what an index folder holds."""

    format_version: int = FORMAT_VERSION
    embedder: EmbedderInfo
    index: IndexSettings
    kind: str  # the FAISS index kind in use (auto resolves to flat or hnsw)
    count: int
    created: datetime
    updated: datetime
    data: str  # current data folder name
    hybrid: HybridSpec | None = None  # facts joined to the text vectors (behavior_rag.vectors)
    # session stores in the folder (sessions/, history/): committed by this file's rename too
    stores: dict[str, StoreManifest] = {}
    files: dict[str, FileSum] = {}  # of the data folder, checked on load (empty: older index)
    # fitted artifacts (the model), committed by this file's rename too
    artifacts: dict[str, Artifact] = {}
    model: str | None = None  # before the artifact map: read as artifacts["model"], not written
    fusion: str | None = None  # retired fusion weights: never read, removed by the next commit

    @field_validator("stores")
    @classmethod
    def _known_stores(cls, v: dict[str, StoreManifest]) -> dict[str, StoreManifest]:
        # store names become folder names: only the ones this format has (never a path)
        bad = sorted(set(v) - set(STORE_NAMES))
        if bad:
            raise ValueError(f"unknown session store {bad[0]!r} (this format has "
                             f"{list(STORE_NAMES)})")
        return v

    @model_validator(mode="after")
    def _older_model_slot(self) -> IndexConfig:
        if self.model is not None and "model" not in self.artifacts:
            self.artifacts = {**self.artifacts, "model": Artifact(path=self.model)}
        return self

    @property
    def dim(self) -> int:
        """Dimension of the stored vectors (text, plus facts when hybrid)."""
        return self.embedder.dim + (self.hybrid.extra_dim if self.hybrid else 0)


def read_config(root: Path) -> IndexConfig:
    try:
        return IndexConfig.model_validate_json((root / "config.json").read_text())
    except FileNotFoundError as e:
        raise StoreError("not an index folder (no config.json)", file=str(root)) from e
    except ValidationError as e:
        raise StoreError(f"invalid index config.json: {e}", file=str(root)) from e


def new_data_dir(root: Path) -> Path:
    """A fresh temp folder inside ``root`` to write the next version into."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(root / "v", "tmp")  # hidden, unique: swept by the next commit if orphaned
    tmp.mkdir()
    return tmp


def file_sums(folder: Path) -> dict[str, FileSum]:
    out = {}
    for p in sorted(folder.iterdir()):
        with p.open("rb") as f:
            out[p.name] = FileSum(size=p.stat().st_size,
                                  sha256=hashlib.file_digest(f, "sha256").hexdigest())
    return out


def artifact_path(root: Path, config: IndexConfig | None, name: str) -> Path | None:
    """The folder of artifact ``name`` this commit names, checked: a name of its kind inside
    the folder (never a path out or a symlink), present, its manifest's checksum as
    committed. None: this commit names none."""
    art = config.artifacts.get(name) if config is not None else None
    if art is None:
        return None
    cfg = str(root / "config.json")
    pattern = ARTIFACTS.get(name)
    if pattern is None or not re.fullmatch(pattern, art.path):
        raise StoreError(f"config.json names {art.path!r} as the {name} artifact, not a "
                         f"folder of this index", file=cfg, field=f"artifacts.{name}")
    folder = root / art.path
    if folder.is_symlink() or not folder.is_dir() or not (folder / MANIFEST).is_file():
        raise StoreError(f"the {name} this index committed is missing (deleted or moved "
                         "outside behavior_rag): refit or restore it", file=str(folder),
                         field=f"artifacts.{name}")
    if art.sha256 is not None and _digest(folder / MANIFEST) != art.sha256:
        raise StoreError(f"the {name} folder is not the one this index committed (replaced "
                         "or copied from another index): refit or restore it",
                         file=str(folder / MANIFEST), field=f"artifacts.{name}")
    return folder


def artifact(root: Path, name: str, path: str) -> Artifact:
    """The entry for a folder just written at ``root / path`` (its manifest's checksum)."""
    return Artifact(path=path, sha256=_digest(root / path / MANIFEST))


def _digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def model_dir(root: Path, config: IndexConfig | None) -> Path:
    """The fitted model's folder this commit names (an index from before: ``model/``)."""
    return artifact_path(root, config, "model") or root / "model"


def data_dir(root: Path, config: IndexConfig) -> Path:
    """The data folder ``config.json`` points at, checked: a ``v-N`` folder inside ``root``
    holding exactly the files it lists, with their sizes and checksums."""
    if not re.fullmatch(r"v-\d{6}", config.data):
        raise StoreError(f"config.json names the data folder {config.data!r}, not a v-NNNNNN "
                         "folder of this index", file=str(root / "config.json"), field="data")
    data = root / config.data
    if not data.is_dir():
        raise StoreError("the data folder config.json points at is missing", file=str(data))
    if config.files:
        have = file_sums(data)
        for name, want in config.files.items():
            got = have.get(name)
            if got != want:
                what = "is missing" if got is None else (
                    f"has {got.size} bytes, config.json says {want.size}"
                    if got.size != want.size else "does not match its checksum")
                raise StoreError(f"index file {what}: the folder was changed or damaged "
                                 "outside behavior_rag", file=str(data / name))
    return data


def commit(root: Path, tmp: Path, config: IndexConfig) -> IndexConfig:
    """Turn ``tmp`` into the next ``v-N`` folder and point ``config.json`` at it, atomically."""
    config = config.model_copy(update={"files": file_sums(tmp)})
    versions = sorted(p.name for p in root.glob("v-*"))
    n = int(versions[-1][2:]) + 1 if versions else 1
    name = f"v-{n:06d}"
    fsync_tree(tmp)
    crash_point("data-written")
    os.replace(tmp, root / name)  # a new name: nothing is replaced yet
    fsync_path(root)
    crash_point("data-renamed")
    config = config.model_copy(update={"data": name, "updated": datetime.now(timezone.utc)})
    # the commit point
    replace_file(root / "config.json", config.model_dump_json(indent=2,
                                                              exclude={"model", "fusion"}))
    crash_point("committed")
    for old in root.iterdir():  # older versions and leftovers of interrupted saves
        if _stale(old.name, name, config):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    return config


def _stale(entry: str, data: str, config: IndexConfig) -> bool:
    """Whether a folder entry is left over: an older data version, a temp file, an artifact
    this commit no longer names, or retired fusion weights."""
    if entry in {a.path for a in config.artifacts.values()}:
        return False
    if re.fullmatch(r"\.?fusion-[0-9a-f]{12}\.json.*|fusion\.json", entry):
        return True
    model = "model" in config.artifacts and (
        entry == "model" or re.fullmatch(r"\.?model-[0-9a-f]{12}.*", entry))
    return bool(model) or entry != data and entry.startswith(
        ("v-", ".v.tmp-", ".tmp-", ".config-", ".config.json.tmp-"))
