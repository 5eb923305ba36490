"""``behavior-rag plugins``: the heads, LLM backends and embedding backends this installation
can use by name (built in, or declared by installed packages' entry points), as JSON.

Example:
    $ behavior-rag plugins
    {"kind": "head", "name": "facts", "from": "built in"}
"""

from __future__ import annotations

from behavior_rag.cli.common import emit
from behavior_rag.embed.factory import EMBEDDERS
from behavior_rag.heads.registry import HEADS
from behavior_rag.llm.factory import LLM_BACKENDS


def plugins_cmd() -> None:
    """List what can be named in --heads, --llm and --backend (and the settings behind them)."""
    for kind, reg in (("head", HEADS), ("llm_backend", LLM_BACKENDS),
                      ("embedder", EMBEDDERS)):
        for name in reg.names():
            emit({"kind": kind, "name": name, "from": reg.where(name),
                  "group": reg.group})
