"""Prompt templates are data: YAML files of Jinja2 templates under ``prompts/``.

Example:
    >>> from behavior_rag.taxonomy import load_taxonomy
    >>> p = load_prompt("classify")
    >>> msgs = p.messages(taxonomy=load_taxonomy(), examples=[], session_text="facts: 1 events")
    >>> [m.role for m in msgs], p.answer_prefix
    (['system', 'user'], 'Label: ')
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, StrictUndefined, TemplateError
from pydantic import BaseModel, ValidationError

from behavior_rag.errors import ConfigError
from behavior_rag.resources import prompts_dir
from behavior_rag.types import ChatMessage

# Autoescape off: the output is a prompt, not HTML. Free text reaching templates is already
# quoted by the renderer; StrictUndefined turns a missing variable into an error, not "".
_ENV = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class PromptFile(BaseModel):
    """One prompt file: named Jinja2 templates plus settings such as ``answer_prefix``."""

    name: str
    version: int
    answer_prefix: str = ""
    system: str
    user: str
    structured_suffix: str = ""
    reask: str = ""
    path: str = ""

    @property
    def content_hash(self) -> str:
        """sha256 (hex, 16) of the templates: a fine-tuned adapter records the hash of the prompt
        it was trained on, and is refused with an edited one."""
        body = self.model_dump(exclude={"path"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def render(self, part: str, **variables: Any) -> str:
        try:
            return _ENV.from_string(getattr(self, part)).render(**variables).strip()
        except TemplateError as e:
            raise ConfigError(f"prompt template {self.name}.{part} failed: {e}", file=self.path,
                              field=part) from e

    def messages(self, **variables: Any) -> list[ChatMessage]:
        """System (static) then user message."""
        return [ChatMessage(role="system", content=self.render("system", **variables)),
                ChatMessage(role="user", content=self.render("user", **variables))]


@lru_cache(maxsize=16)
def load_prompt(name_or_path: str | Path) -> PromptFile:
    """``classify`` -> ``prompts/classify.yaml``; or a path to your own YAML file. A file with
    ``extends: other`` takes every template it does not set from ``other``."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = prompts_dir() / f"{name_or_path}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
        base = data.pop("extends", None) if isinstance(data, dict) else None
        if base is not None:
            data = load_prompt(base).model_dump(exclude={"path"}) | data
        return PromptFile.model_validate({**data, "path": str(path)})
    except FileNotFoundError as e:
        raise ConfigError("prompt file not found", file=str(path)) from e
    except (yaml.YAMLError, ValidationError, TypeError) as e:
        raise ConfigError(f"invalid prompt file: {e}", file=str(path)) from e
