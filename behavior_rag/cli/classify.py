"""``behavior-rag classify``: label sessions with the few-shot classifier over a labelled index.

Example:
    $ behavior-rag classify data/new_sessions --index indexes/synth --limit 20 --human
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from behavior_rag.api import BehaviorRAG
from behavior_rag.cli.common import HUMAN, emit, err, load_sessions, progress
from behavior_rag.settings import Settings


def classify_cmd(
    source: Path = typer.Argument(..., help="Session store or event log to label."),
    index: Optional[Path] = typer.Option(None, "--index", "-i", help="Labelled index folder."),
    fmt: str = typer.Option("auto", "--format", "-f"),
    limit: int = typer.Option(0, help="At most this many sessions (0 = all)."),
    llm: Optional[str] = typer.Option(None, "--llm", help="local | vllm | none (kNN only)."),
    human: bool = HUMAN,
) -> None:
    """Label sessions: JSON lines of PatternPrediction (label, probabilities, evidence, ...)."""
    s = Settings()
    if llm:
        s = s.model_copy(update={"llm": s.llm.model_validate(s.llm.model_dump() | {
            "backend": llm})})
    rag = BehaviorRAG(s, index)
    sessions = load_sessions(source, fmt, rag.settings)
    if limit:
        sessions = sessions[:limit]
    with progress("classifying") as bar:
        task = bar.add_task("classify", total=len(sessions))
        preds = rag.classify_many(sessions, progress=lambda d, t: bar.update(task, completed=d))
    for p in preds:
        if human:
            flag = " (abstained)" if p.abstained else ""
            err.print(f"{p.session_id}: [bold]{p.label}[/]{flag} — {p.explanation}")
        else:
            emit(p.model_dump(mode="json"))
