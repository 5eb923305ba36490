"""``behavior-rag index build|add|delete|info`` and ``behavior-rag similar``.

Example:
    $ behavior-rag index build data/taobao --index indexes/taobao --backend onnx-int8
    $ behavior-rag similar --index indexes/taobao --text "adds to cart, never buys" -k 5 --human
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from behavior_rag.api import BehaviorRAG
from behavior_rag.cli.common import HUMAN, emit, err, load_sessions
from behavior_rag.embed.base import BACKENDS
from behavior_rag.errors import ConfigError
from behavior_rag.index.base import Filter
from behavior_rag.settings import Settings

index_app = typer.Typer(no_args_is_help=True, help="Build and manage session indexes.")
INDEX = typer.Option(None, "--index", "-i", help="Index folder (default: indexes/default).")
BACKEND = typer.Option(None, "--backend", help="auto | torch | onnx | onnx-int8 | openvino "
                       "(default: settings' embed.backend, auto = the fastest installed; or "
                       "the backend an existing index was built with).")


def _rag(index: Path | None, backend: str | None = None, kind: str | None = None,
         sq8: bool | None = None, fresh: bool = False) -> BehaviorRAG:
    s = Settings()
    if backend:
        if backend not in ("auto", *BACKENDS):
            raise ConfigError(f"backend must be auto or one of {', '.join(BACKENDS)}",
                              field="backend", value=backend)
        s = s.model_copy(update={"embed": s.embed.model_copy(update={"backend": backend})})
    upd = {k: v for k, v in {"kind": kind, "sq8": sq8}.items() if v is not None}
    if upd:
        s = s.model_copy(update={"index": s.index.model_validate(s.index.model_dump() | upd)})
    rag = BehaviorRAG(s, index, fresh=fresh)
    if backend and not fresh:
        # An explicit --backend wins over the one recorded in the index (the model must match).
        rag.settings = s
    return rag


def _embed_bar(rag: BehaviorRAG, sessions, split: str | None) -> dict:
    with Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("embed", total=len(sessions))
        report = rag.index_sessions(sessions, split=split,
                                    progress=lambda done, total: bar.update(task, completed=done,
                                                                            total=total))
    cfg = rag.save()
    return report.model_dump() | {"index": str(rag.index_path), "kind": cfg.kind,
                                  "embedder": cfg.embedder.model_dump()}


@index_app.command("build")
def build(source: Path = typer.Argument(..., help="Session store or event log."),
          fmt: str = typer.Option("auto", "--format", "-f"), index: Optional[Path] = INDEX,
          backend: Optional[str] = BACKEND,
          kind: Optional[str] = typer.Option(None, help="auto | flat | hnsw | ivf"),
          sq8: Optional[bool] = typer.Option(None, "--sq8/--no-sq8"),
          split: Optional[str] = typer.Option(None, help="Split name stored with each session."),
          human: bool = HUMAN) -> None:
    """Build a new index from sessions (replaces an existing one atomically on success)."""
    rag = _rag(index, backend, kind, sq8, fresh=True)
    out = _embed_bar(rag, load_sessions(source, fmt, rag.settings), split)
    if human:
        err.print(f"indexed {out['index_size']} sessions ({out['kind']}, "
                  f"{out['embedder']['backend']}) -> {out['index']}")
    else:
        emit(out)


@index_app.command("add")
def add(source: Path = typer.Argument(...), fmt: str = typer.Option("auto", "--format", "-f"),
        index: Optional[Path] = INDEX, backend: Optional[str] = BACKEND,
        split: Optional[str] = typer.Option(None), human: bool = HUMAN) -> None:
    """Upsert sessions into an index (unchanged sessions are skipped)."""
    rag = _rag(index, backend)
    out = _embed_bar(rag, load_sessions(source, fmt, rag.settings), split)
    if human:
        err.print(f"embedded {out['embedded']}, unchanged {out['unchanged']}; index now has "
                  f"{out['index_size']} sessions")
    else:
        emit(out)


@index_app.command("delete")
def delete(session_ids: list[str] = typer.Argument(...), index: Optional[Path] = INDEX,
           human: bool = HUMAN) -> None:
    """Delete sessions by id."""
    rag = _rag(index)
    n = rag.delete_sessions(session_ids)
    rag.save()
    if human:
        err.print(f"deleted {n} of {len(session_ids)} sessions")
    else:
        emit({"deleted": n, "requested": len(session_ids), "index_size": len(rag.index)})


@index_app.command("info")
def info(index: Optional[Path] = INDEX, human: bool = HUMAN) -> None:
    """Describe an index folder: embedder, index type, counts, labels."""
    i = _rag(index).info()
    if human:
        c = i.config
        err.print(f"{i.path}: {c.count} sessions of {i.users} users; {c.kind}"
                  f"{' +SQ8' if c.index.sq8 else ''}; {c.embedder.id} ({c.embedder.backend}, "
                  f"dim {c.embedder.dim}); updated {c.updated:%Y-%m-%d %H:%M}; labels {i.labels}")
    else:
        emit(i.model_dump(mode="json"))


def similar_cmd(
    index: Optional[Path] = INDEX,
    session_id: Optional[str] = typer.Option(None, "--session-id", "-s"),
    user_id: Optional[str] = typer.Option(None, "--user-id", "-u"),
    text: Optional[str] = typer.Option(None, "--text", "-t"),
    k: int = typer.Option(10, "-k"),
    labelled: Optional[bool] = typer.Option(None, "--labelled/--unlabelled"),
    label: list[str] = typer.Option([], help="Only these labels (repeatable)."),
    category: list[str] = typer.Option([], help="Sessions touching any of these categories."),
    exclude_user: list[str] = typer.Option([]),
    start_from: Optional[datetime] = typer.Option(None, "--from"),
    start_to: Optional[datetime] = typer.Option(None, "--to"),
    with_text: bool = typer.Option(False, help="Include each neighbour's rendered text."),
    human: bool = HUMAN,
) -> None:
    """Nearest sessions to a session, nearest shoppers to a user, or sessions matching text."""
    flt = Filter(labelled=labelled, labels=label or None, categories=category or None,
                 exclude_users=exclude_user, start_from=start_from, start_to=start_to)
    rag = _rag(index)
    hits = rag.similar(session_id=session_id, user_id=user_id, text=text, k=k, filter=flt,
                       with_text=with_text or human)
    if human:
        for n, h in enumerate(hits, 1):
            print(f"{n}. {h.score:.3f}  session {h.session_id}  user {h.user_id}"
                  + (f"  label {h.meta.label}" if h.meta.label else ""))
            if h.text:
                print("   " + h.text.replace("\n", "\n   "))
    else:
        for h in hits:
            emit(h.model_dump(mode="json", exclude={"meta": {"text"}}))
