"""``behavior-rag discover`` (draft a taxonomy from unlabelled sessions) and ``profile``.

Example:
    $ behavior-rag discover data/taobao --out prompts/taxonomies/taobao_draft.yaml --k-max 8
    $ behavior-rag profile u_3f2a... --index indexes/taobao --human
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from behavior_rag.api import BehaviorRAG
from behavior_rag.cli.common import HUMAN, emit, err, load_sessions
from behavior_rag.discover import discover, write_taxonomy
from behavior_rag.embed import get_embedder
from behavior_rag.llm.factory import get_llm
from behavior_rag.settings import Settings


def discover_cmd(
    source: Path = typer.Argument(..., help="Session store or event log (unlabelled)."),
    out: Path = typer.Option(..., "--out", "-o", help="Draft taxonomy YAML to write."),
    fmt: str = typer.Option("auto", "--format", "-f"),
    k: Optional[int] = typer.Option(None, "--k", help="Number of clusters (default: best "
                                    "silhouette in --k-min..--k-max)."),
    k_min: int = typer.Option(3, "--k-min"),
    k_max: int = typer.Option(10, "--k-max"),
    features: str = typer.Option("both", "--features", help="both | embedding | facts"),
    limit: int = typer.Option(20000, help="Cluster at most this many sessions (first ones)."),
    seed: int = typer.Option(0, "--seed"),
    use_llm: bool = typer.Option(False, "--llm/--no-llm", help="Let the configured LLM "
                                 "propose cluster names (validated; ours otherwise)."),
    human: bool = HUMAN,
) -> None:
    """Cluster sessions, describe each cluster by its facts, write an editable taxonomy."""

    s = Settings()
    sessions = load_sessions(source, fmt, s)[:limit]
    llm = None
    if use_llm:

        llm = get_llm(s)
    d = discover(sessions, get_embedder(s), k=k, k_range=(k_min, k_max), seed=seed, llm=llm,
                 settings=s, features=features)
    path = write_taxonomy(d, out)
    if human:
        err.print(f"k={d.k} (silhouette {d.silhouette}); draft taxonomy written to {path}")
        for c in d.clusters:
            err.print(f"[bold]{c.name}[/] ({c.size}): {c.description}")
    else:
        emit({"taxonomy": str(path), **d.model_dump(exclude={"assignments"})})

def profile_cmd(
    user_id: str = typer.Argument(..., help="Pseudonymised user id (as in the index)."),
    index: Optional[Path] = typer.Option(None, "--index", "-i"),
    use_llm: bool = typer.Option(False, "--llm/--no-llm", help="LLM-worded claims "
                                 "(each re-checked against the facts)."),
    patterns: bool = typer.Option(False, "--patterns", help="Classify the user's sessions "
                                  "and add the dominant patterns (needs a labelled index)."),
    human: bool = HUMAN,
) -> None:
    """A user's profile: facts computed by code and a narrative citing them."""

    p = BehaviorRAG(Settings(), index).profile(user_id, use_llm=use_llm, patterns=patterns)
    if human:
        err.print(p.narrative, markup=False)
        if use_llm:
            n = sum(c.source == "llm" for c in p.claims)
            err.print(f"LLM: {n} claim(s) kept, {len(p.llm_dropped)} dropped"
                      + (f"; {p.llm_note}" if p.llm_note else ""), markup=False)
            for d in p.llm_dropped:
                err.print(f"  dropped {d.fact or '(reply)'}: {d.reason}", markup=False)
    else:
        emit(p.model_dump(mode="json"))
