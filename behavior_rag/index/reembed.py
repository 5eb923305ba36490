"""Rebuild an index folder's vectors with another embedder (e.g. a tuned one), in place.

Every session kept in ``<index>/sessions/`` is re-rendered and re-embedded into a fresh index
with the same index settings, keeping each session's label and split from the old metadata;
the new index is then committed by the folder's atomic save (``config.json`` is the commit
point), so readers see the old index or the new one. ``history/`` is events only and stays as
it is. The embedding model used is recorded in ``<index>/embed_model.json`` so that opening the
index later picks the same model (:func:`recorded_model`).

Example:
    >>> from behavior_rag.embed import get_embedder
    >>> reembed("indexes/shop", get_embedder(settings_with_tuned_model))  # doctest: +SKIP
    ReembedReport(sessions=1000, old_id='sentence-transformers/all-MiniLM-L6-v2', ...)
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field

from behavior_rag.atomic import replace_file
from behavior_rag.embed.base import Embedder, Progress
from behavior_rag.errors import ConfigError
from behavior_rag.index.build import rebuild
from behavior_rag.index.factory import open_index
from behavior_rag.index.storage import read_config
from behavior_rag.ingest.store import SessionStore
from behavior_rag.settings import Settings, default_settings

MODEL_FILE = "embed_model.json"
# Files fitted on the old vectors: kept (they are the user's), reported as needing a refit.
_FITTED = ("model",)  # older indexes; newer ones name theirs in config.json's artifacts


class ReembedReport(BaseModel):
    index: str
    sessions: int = Field(description="Sessions re-embedded.")
    old_id: str
    new_id: str
    backend: str
    stale: list[str] = Field(default_factory=list, description="Fitted files made on the old "
                             "vectors: run `behavior-rag fit` again to use them.")


def reembed(path: str | Path, embedder: Embedder, *, model: str | None = None,
            settings: Settings | None = None, progress: Progress | None = None
            ) -> ReembedReport:
    """Re-embed every session of the index at ``path`` with ``embedder`` and commit it.

    ``model`` is the model setting ``embedder`` was made from (recorded for later opens)."""
    root = Path(path)
    settings = settings or default_settings()
    cfg = read_config(root)
    old = open_index(root, spec=cfg.index)  # no expect: its vectors are being replaced
    frame = old.metadata()
    store = SessionStore(root / "sessions", cfg.stores.get("sessions"), own_manifest=False)
    sessions = {s.session_id: s for s in store.get_many(frame["session_id"].to_list())}
    missing = [sid for sid in frame["session_id"].to_list() if sid not in sessions]
    if missing:
        raise ConfigError(f"{len(missing)} indexed sessions have no events in "
                          f"{root / 'sessions'} (e.g. {missing[0]!r}), so they cannot be "
                          "re-rendered; rebuild the index from the source with "
                          "`behavior-rag index build`", file=str(root), field="sessions")
    labelled = [sessions[r["session_id"]].model_copy(update={"label": r["label"]})
                for r in frame.select("session_id", "label").iter_rows(named=True)]
    # the facts' part of hybrid vectors does not depend on the embedder: it is kept as it was
    new = rebuild(old, embedder, labelled, hybrid=cfg.hybrid,
                  settings=settings.model_copy(update={"index": cfg.index}), progress=progress)
    new.save(root)
    if model is not None:
        replace_file(root / MODEL_FILE, json.dumps(
            {"model": _as_setting(model), "id": embedder.info.id}, indent=2))
    return ReembedReport(index=str(root), sessions=len(frame), old_id=cfg.embedder.id,
                         new_id=embedder.info.id, backend=embedder.info.backend,
                         stale=[n for n in (*_FITTED, *(a.path for a in cfg.artifacts.values()))
                                if n and (root / n).exists()])


def _as_setting(model: str) -> str:
    """A folder as an absolute path (the index may be opened from another working dir)."""
    p = Path(model).expanduser()
    return str(p.resolve()) if p.is_dir() else model


def recorded_model(path: str | Path) -> str | None:
    """The model setting ``reembed`` recorded for the index at ``path`` (None: none recorded).

    Example:
        >>> recorded_model("/nonexistent") is None
        True
    """
    f = Path(path) / MODEL_FILE
    if not f.is_file():
        return None
    try:
        return str(json.loads(f.read_text())["model"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"unreadable {MODEL_FILE}: {e}", file=str(f)) from e
