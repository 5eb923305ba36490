"""A LoRA adapter's model card: what it was trained on, and the checks that refuse it elsewhere.

``behavior-rag finetune`` writes ``model_card.json`` beside the PEFT weights; every backend that
loads an adapter reads it here first, so an adapter trained for another base model, taxonomy or
prompt file is refused with the field to fix instead of giving silently wrong labels.

Example:
    >>> card = read_card("adapters/personas")                              # doctest: +SKIP
    >>> card.base_model, card.k_examples                                  # doctest: +SKIP
    ('smollm2-135m', 0)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from behavior_rag.errors import ConfigError
from behavior_rag.prompts import load_prompt
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import Session

CARD = "model_card.json"


class ModelCard(BaseModel):
    """What an adapter was trained with; the trainer's own card adds its training config."""

    base_model: str
    taxonomy: str
    taxonomy_hash: str
    data_hash: str
    n_train: int
    n_val: int
    k_examples: int | None = Field(None, description="Few-shot neighbours the adapter was "
                                   "trained (and must be used) with; None: cards before it.")
    prompt: str | None = Field(None, description="Prompt file the adapter was trained (and "
                               "must be used) with; None: cards before it (classify).")
    prompt_hash: str | None = Field(None, description="PromptFile.content_hash of it: an "
                                    "edited prompt is refused.")
    metrics: dict[str, float | int | list | None]
    date: str


def data_hash(sessions: Sequence[Session]) -> str:
    """A short hash of the labelled sessions an adapter saw (ids, labels, lengths)."""
    h = hashlib.sha256()
    for s in sorted(sessions, key=lambda x: x.session_id):
        h.update(f"{s.session_id}\t{s.label}\t{s.n_events}\n".encode())
    return h.hexdigest()[:16]


def read_card(adapter: str | Path) -> ModelCard:
    """The card of ``adapter``; :class:`ConfigError` if the folder has none."""
    path = Path(adapter) / CARD
    if not path.exists():
        raise ConfigError(f"{path} missing: not an adapter written by behavior-rag finetune",
                          file=str(path))
    try:
        return ModelCard.model_validate_json(path.read_text())
    except ValueError as e:  # pydantic.ValidationError or bad JSON: name the file
        raise ConfigError(f"{path} is not a valid model card: {e}", file=str(path)) from e


def check_adapter(adapter: str | Path, base_model: str, taxonomy: Taxonomy) -> ModelCard:
    """Refuse an adapter trained for another base model, taxonomy or (edited) prompt file."""
    card = read_card(adapter)
    if card.base_model != base_model:
        raise ConfigError(f"adapter {adapter} was trained on {card.base_model!r}, the running "
                          f"model is {base_model!r}", field="llm.adapter", value=str(adapter))
    if card.taxonomy_hash != taxonomy.content_hash:
        raise ConfigError(f"adapter {adapter} was trained for taxonomy {card.taxonomy!r} "
                          f"(hash {card.taxonomy_hash}), the running taxonomy is "
                          f"{taxonomy.name!r} (hash {taxonomy.content_hash})",
                          field="llm.adapter", value=str(adapter))
    if card.prompt_hash is not None:
        now = load_prompt(card.prompt).content_hash
        if now != card.prompt_hash:
            raise ConfigError(f"adapter {adapter} was trained with prompt {card.prompt!r} "
                              f"(hash {card.prompt_hash}); that prompt file has changed since "
                              f"(hash {now}): retrain the adapter", field="classify.prompt",
                              value=card.prompt)
    return card
