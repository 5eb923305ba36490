"""``behavior-rag embed tune`` (tune the embedder on your sessions) and ``behavior-rag index
reembed`` (rebuild an index's vectors with another embedder, e.g. the tuned one).

Example:
    $ behavior-rag embed tune data/shop-store --out models/shop-tuned --steps 60
    $ behavior-rag index reembed --index indexes/shop --model models/shop-tuned
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from behavior_rag.cli.common import HUMAN, emit, err, load_sessions, progress
from behavior_rag.embed import get_embedder
from behavior_rag.embed.base import BACKENDS
from behavior_rag.embed.tune import TuneConfig, tune_embedder
from behavior_rag.errors import ConfigError
from behavior_rag.index.reembed import reembed
from behavior_rag.index.storage import read_config
from behavior_rag.settings import Settings

embed_app = typer.Typer(no_args_is_help=True, help="Tune the sentence embedder.")


@embed_app.command("tune")
def tune_cmd(source: Path = typer.Argument(..., help="Session store or event log."),
             out: Path = typer.Option(..., "--out", "-o", help="Model folder to write."),
             fmt: str = typer.Option("auto", "--format", "-f"),
             labelled: Optional[bool] = typer.Option(
                 None, "--labelled/--unlabelled", help="Same-label pairs, or self-supervised "
                 "views (default: labelled when the sessions carry two labels or more)."),
             steps: Optional[int] = typer.Option(None, "--steps", help="Max optimizer steps."),
             batch_size: Optional[int] = typer.Option(None, "--batch-size"),
             lr: Optional[float] = typer.Option(None, "--lr"),
             seed: int = typer.Option(0, "--seed"),
             base: str = typer.Option("all-MiniLM-L6-v2", "--base", help="Model to tune."),
             human: bool = HUMAN) -> None:
    """Fine-tune the embedder on sessions; use it with ``index reembed --model OUT``."""
    settings = Settings()
    upd = {"mode": "auto" if labelled is None else "labelled" if labelled else
           "self-supervised", "max_steps": steps, "batch_size": batch_size, "lr": lr,
           "seed": seed}
    cfg = TuneConfig.model_validate(TuneConfig().model_dump() |
                                    {k: v for k, v in upd.items() if v is not None})
    report = tune_embedder(load_sessions(source, fmt, settings), out, base=base, config=cfg,
                           settings=settings)
    if human:
        err.print(f"tuned {report.mode} on {report.pairs} pairs, {report.steps} steps in "
                  f"{report.seconds:.0f}s ({report.s_per_step:.2f} s/step, peak RSS "
                  f"{report.peak_rss_mb:.0f} MB) -> {report.path} ({report.model_id})")
    else:
        emit(report.model_dump())


def reembed_cmd(index: Path = typer.Option(Path("indexes/default"), "--index", "-i",
                                           help="Index folder."),
                model: str = typer.Option(..., "--model", "-m", help="Model folder (e.g. "
                                          "`embed tune`'s) or all-MiniLM-L6-v2."),
                backend: Optional[str] = typer.Option(None, "--backend", help="auto or a "
                                                      "backend (default: the index's)."),
                human: bool = HUMAN) -> None:
    """Re-embed every session of an index with another model (atomic; labels, splits and
    history kept)."""
    backend = backend or read_config(index).embedder.backend
    if backend not in ("auto", *BACKENDS):
        raise ConfigError(f"backend must be auto or one of {', '.join(BACKENDS)}",
                          field="backend", value=backend)
    s = Settings()
    s = s.model_copy(update={"embed": s.embed.model_copy(update={"model": model,
                                                                  "backend": backend})})
    emb = get_embedder(s)
    with progress("re-embedding") as bar:
        task = bar.add_task("embed", total=None)
        report = reembed(index, emb, model=model, settings=s,
                         progress=lambda done, total: bar.update(task, completed=done,
                                                                 total=total))
    if human:
        err.print(f"re-embedded {report.sessions} sessions: {report.old_id} -> "
                  f"{report.new_id} ({report.backend})"
                  + (f"; refit needed for {report.stale}" if report.stale else ""))
    else:
        emit(report.model_dump())
