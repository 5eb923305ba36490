"""A tuned embedder's folder: a sentence-transformers model plus ``behavior_rag_tuned.json``.

The manifest says what the model was tuned from and how; its identity is a SHA-256 over the
files that decide its vectors (weights, tokenizer, configs, pooling), so two folders with the
same content share an id and a changed weight file changes it. The id is recomputed from the
files, never trusted from the manifest, so an edited folder cannot pose as the one an index
was built with.

Example:
    >>> is_tuned("/nonexistent")
    False
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, Field

from behavior_rag.errors import ConfigError

MANIFEST = "behavior_rag_tuned.json"
# The model card is regenerated on each save (dates, library versions): not part of identity.
_NOT_CONTENT = {MANIFEST, "README.md"}


class TunedManifest(BaseModel):
    """``behavior_rag_tuned.json``: what a tuned model folder was made from."""

    base: str = Field(description="The model it was tuned from (setting or folder).")
    base_id: str
    mode: str = Field(description="labelled | self-supervised")
    pairs: int
    steps: int
    config: dict = Field(default_factory=dict)
    content_hash: str = Field(description="SHA-256 over the model files (tuned_hash).")


def content_hash(folder: str | Path) -> str:
    """SHA-256 over every model file's relative path and bytes, in sorted order."""
    root = Path(folder)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        if rel in _NOT_CONTENT or rel.startswith("."):
            continue
        h.update(rel.encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def is_tuned(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def read_manifest(folder: str | Path) -> TunedManifest:
    path = Path(folder) / MANIFEST
    try:
        return TunedManifest.model_validate_json(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"unreadable tuned-model manifest: {e}", file=str(path)) from e


def tuned_id(folder: str | Path) -> str:
    """``tuned:<first 16 hex of the content hash>`` (recomputed from the files)."""
    return f"tuned:{content_hash(folder)[:16]}"
