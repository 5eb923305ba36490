"""A self-describing index folder, saved atomically.

Layout::

    <index>/config.json        format version, embedder id/dim/backend, index spec, counts,
                               created/updated, and which data folder is current
    <index>/v-000007/faiss.index   FAISS's own serialisation (no pickle)
    <index>/v-000007/ids.npy       internal slot -> session key (-1 = dead), allow_pickle=False
    <index>/v-000007/metadata.parquet
    <index>/v-000007/commit.json   the sha256 of config.json's canonical form (all but ``files``)
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

Trust on load (format 2): ``config.json``'s ``files`` lists the size and sha256 of every file
of the data folder, ``commit.json`` included, and ``commit.json`` holds the sha256 of the
canonical JSON of ``config.json`` without ``files`` (sorted keys, no whitespace). A reader
checks (:func:`read_config`) the schema (bounds, the hybrid spec against the facts), then that
``commit.json`` matches the config, and before reading vectors (:func:`data_dir`) that the data
folder holds exactly the files the format requires (``ids.npy``, ``metadata.parquet``,
``commit.json``, and ``faiss.index`` when ``count`` > 0; it may hold ``faiss.index`` when 0),
each listed in ``files`` with its size and checksum. So deleting an entry of ``files``,
emptying it, removing or nulling an artifact, or any other edit of ``config.json`` is refused,
naming ``config.json``; the fitted model's folder is checked against the manifest checksum its
artifact entry records (:func:`artifact_path`). A missing ``config.json`` in a folder that holds
index data is refused too (:func:`check_index_folder`), never taken for a new, empty index.

Known limits: the checksums have no secret key, so they catch damage and edits, not someone who
recomputes them; and a folder that claims format 1 (written before ``commit.json``) is checked
as before: the listed files only (none when ``files`` is empty), the config unchecked. The
next commit of such a folder writes format 2. A format-1 claim beside a ``commit.json`` is
refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, PrivateAttr, ValidationError, field_validator, model_validator

from behavior_rag.atomic import fsync_path, fsync_tree, replace_file, temp_name
from behavior_rag.embed.base import EmbedderInfo
from behavior_rag.errors import StoreError
from behavior_rag.faults import crash_point
from behavior_rag.ingest.store import StoreManifest
from behavior_rag.settings import IndexSettings
from behavior_rag.vectors import HybridSpec

FORMAT_VERSION = 2  # 1: no commit.json (still read, checked as before)
FORMATS = (1, FORMAT_VERSION)
CONFIG = "config.json"
COMMIT = "commit.json"  # in each format-2 data folder: the sha256 of the config it belongs to
# the files a format-2 data folder holds (FaissSessionIndex.save): always, and when count > 0
DATA_FILES = ("ids.npy", "metadata.parquet", COMMIT)
VECTOR_FILE = "faiss.index"  # written once the index has had vectors; required when count > 0
DATA_NAME = r"v-\d{6}"
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
ARTIFACTS = {"model": r"model-[0-9a-f]{12}", "labels": r"labels-[0-9a-f]{12}"}
MANIFEST = "manifest.json"


class CommitRecord(BaseModel):
    """``commit.json`` in a data folder: which ``config.json`` commits it."""

    format_version: int = FORMAT_VERSION
    config_sha256: str


class IndexConfig(BaseModel):
    """``config.json``: everything needed to know what an index folder holds."""

    _digest: str | None = PrivateAttr(default=None)  # canonical sha256 of the file as read

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


def config_digest(raw: dict) -> str:
    """sha256 of a config's canonical JSON (sorted keys, no whitespace), without ``files``
    (which lists ``commit.json``, where this digest is kept)."""
    body = {k: v for k, v in raw.items() if k != "files"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def is_index_data(entry: Path) -> bool:
    """Whether a folder entry is something only a committed index leaves (data versions, fitted
    artifacts, session stores); temp files and locks are not."""
    return entry.is_dir() and bool(re.fullmatch(
        rf"{DATA_NAME}|model|{ARTIFACTS['model']}|{'|'.join(STORE_NAMES)}", entry.name))


def has_config(root: Path) -> bool:
    """Whether ``root`` has a ``config.json`` entry of any kind (read_config judges it)."""
    cfg = root / CONFIG
    return cfg.exists() or cfg.is_symlink()


def check_index_folder(root: Path) -> None:
    """Refuse a folder that holds index data but no ``config.json`` (deleted, or the first
    commit interrupted): it must never be taken for a new, empty index."""
    cfg = root / CONFIG
    if has_config(root) or not root.is_dir():
        return
    found = sorted(e.name for e in root.iterdir() if is_index_data(e))
    if found:
        raise StoreError(f"not an index folder (no config.json), yet it holds index data "
                         f"({', '.join(found[:4])}): config.json was deleted, or the folder's "
                         "first commit was interrupted. Restore config.json, or remove the "
                         "folder (or choose another) to build a new index", file=str(cfg),
                         field="config.json")


def read_config(root: Path) -> IndexConfig:
    """``config.json``, checked: readable JSON of this schema and a known format; for format
    2 also the commit record of the data folder it names (any edit is refused)."""
    path = root / CONFIG
    try:
        if path.is_symlink():
            raise StoreError("config.json is a symlink: refused (an index folder's files are "
                             "its own)", file=str(path))
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        check_index_folder(root)
        raise StoreError("not an index folder (no config.json)", file=str(root)) from e
    except IsADirectoryError as e:
        raise StoreError("config.json is a directory, not an index config: the folder was "
                         "changed outside behavior_rag", file=str(path)) from e
    except (OSError, UnicodeDecodeError) as e:
        raise StoreError(f"config.json is unreadable: {e}", file=str(path)) from e
    try:
        raw = json.loads(text)
        cfg = IndexConfig.model_validate_json(text)
    except ValueError as e:  # ValidationError too
        field = None
        if isinstance(e, ValidationError) and e.errors():
            field = ".".join(str(x) for x in e.errors()[0]["loc"]) or None
        raise StoreError(f"invalid index config.json: {e}", file=str(path),
                         field=field) from e
    if cfg.format_version not in FORMATS:
        raise StoreError(f"index format {cfg.format_version} is not supported (this version "
                         f"reads {list(FORMATS)})", file=str(path), field="format_version")
    cfg._digest = config_digest(raw)
    _check_commit(root, cfg)
    return cfg


def _data_name(root: Path, config: IndexConfig) -> Path:
    if not re.fullmatch(DATA_NAME, config.data):
        raise StoreError(f"config.json names the data folder {config.data!r}, not a v-NNNNNN "
                         "folder of this index", file=str(root / CONFIG), field="data")
    data = root / config.data
    if data.is_symlink() or not data.is_dir():
        raise StoreError("the data folder config.json points at is missing", file=str(data))
    return data


def _check_commit(root: Path, config: IndexConfig) -> None:
    """Format 2: the data folder's ``commit.json`` must hold this config's digest."""
    data = _data_name(root, config)
    record = data / COMMIT
    if config.format_version < 2:
        if record.exists() or record.is_symlink():
            raise StoreError("config.json claims format 1, but its data folder holds a "
                             "commit.json (format 2): config.json was changed outside "
                             "behavior_rag", file=str(root / CONFIG), field="format_version")
        return
    try:
        if record.is_symlink() or not record.is_file():
            raise FileNotFoundError(record)
        rec = CommitRecord.model_validate_json(record.read_bytes())
    except FileNotFoundError as e:
        raise StoreError("the data folder's commit.json is missing: the folder was changed or "
                         "damaged outside behavior_rag", file=str(record)) from e
    except (OSError, ValueError) as e:
        raise StoreError(f"the data folder's commit.json is unreadable: {e}",
                         file=str(record)) from e
    if rec.config_sha256 != config._digest:
        raise StoreError(f"config.json does not match the commit it names ({config.data}/"
                         f"{COMMIT}): it was edited or damaged outside behavior_rag. Restore "
                         "it, or rebuild the index", file=str(root / CONFIG), field="config.json")


def new_data_dir(root: Path) -> Path:
    """A fresh temp folder inside ``root`` to write the next version into."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(root / "v", "tmp")  # hidden, unique: swept by the next commit if orphaned
    tmp.mkdir()
    return tmp


def file_sums(folder: Path, *, plain: bool = False) -> dict[str, FileSum]:
    """Size and sha256 of each file in ``folder``; ``plain``: refuse anything that is not a
    regular file (a symlink, a folder)."""
    out = {}
    for p in sorted(folder.iterdir()):
        if plain and (p.is_symlink() or not p.is_file()):
            raise StoreError("the data folder holds something that is not a plain file (a "
                             "symlink or a folder): the folder was changed outside "
                             "behavior_rag", file=str(p))
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
    """The data folder ``config.json`` points at, checked: a ``v-N`` folder inside ``root``;
    format 2: holding exactly the files the format requires, every one listed in ``files``
    with its size and checksum; format 1: the files it lists, as listed."""
    data = _data_name(root, config)
    cfg = str(root / CONFIG)
    have = file_sums(data, plain=config.format_version >= 2)
    if config.format_version >= 2:
        need = set(DATA_FILES) | ({VECTOR_FILE} if config.count > 0 else set())
        for name in sorted(need - set(have)):
            raise StoreError("index file is missing: the folder was changed or damaged "
                             "outside behavior_rag", file=str(data / name))
        for name in sorted(set(have) - need - {VECTOR_FILE}):
            raise StoreError("the data folder holds a file this index format does not have: "
                             "the folder was changed outside behavior_rag", file=str(data / name))
        for name in sorted(set(have) - set(config.files)):
            raise StoreError(f"config.json does not list the data file {name} (its entry under "
                             "files was removed): it was edited outside behavior_rag",
                             file=cfg, field=f"files.{name}")
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
    """Turn ``tmp`` into the next ``v-N`` folder and point ``config.json`` at it, atomically;
    ``tmp`` gets the commit record (``commit.json``) of the config written."""
    versions = sorted(p.name for p in root.glob("v-*"))
    n = int(versions[-1][2:]) + 1 if versions else 1
    name = f"v-{n:06d}"
    config = config.model_copy(update={"format_version": FORMAT_VERSION, "data": name,
                                       "updated": datetime.now(timezone.utc), "files": {}})
    keep = {"model", "fusion"}  # read from older folders, never written
    digest = config_digest(json.loads(config.model_dump_json(exclude=keep)))
    (tmp / COMMIT).write_text(CommitRecord(config_sha256=digest).model_dump_json())
    config = config.model_copy(update={"files": file_sums(tmp)})
    config._digest = digest
    fsync_tree(tmp)
    crash_point("data-written")
    os.replace(tmp, root / name)  # a new name: nothing is replaced yet
    fsync_path(root)
    crash_point("data-renamed")
    # the commit point
    replace_file(root / CONFIG, config.model_dump_json(indent=2, exclude=keep))
    crash_point("committed")
    for old in root.iterdir():  # older versions and leftovers of interrupted saves
        if _stale(old.name, name, config):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    return config


def recommit(root: Path, artifacts: dict[str, Artifact]) -> IndexConfig:
    """Commit new ``artifacts`` (folders already written inside ``root``) without changing the
    vectors: the current data folder's files are hard-linked (never changed in place, so
    sharing them is safe) into the next version, which gets its own commit record."""
    last = read_config(root)
    data = data_dir(root, last)  # checked: never carry a damaged folder forward
    tmp = new_data_dir(root)
    for f in data.iterdir():
        if f.name != COMMIT:
            os.link(f, tmp / f.name)
    return commit(root, tmp, last.model_copy(update={
        "artifacts": {**last.artifacts, **artifacts}}))


def _stale(entry: str, data: str, config: IndexConfig) -> bool:
    """Whether a folder entry is left over: an older data version, a temp file, an artifact
    this commit no longer names, or retired fusion weights."""
    if entry in {a.path for a in config.artifacts.values()}:
        return False
    if re.fullmatch(r"\.?fusion-[0-9a-f]{12}\.json.*|fusion\.json", entry):
        return True
    replaced = any(re.fullmatch(rf"\.?{ARTIFACTS[name]}.*", entry) for name in config.artifacts
                   if name in ARTIFACTS)
    model = "model" in config.artifacts and entry == "model"
    return replaced or model or entry != data and entry.startswith(
        ("v-", ".v.tmp-", ".tmp-", ".config-", ".config.json.tmp-"))
