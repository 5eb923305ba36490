"""``behavior-rag fit``: train the classifier users call on labelled sessions.

Indexes the training sessions as labelled examples, fits the facts / embedding / kNN heads and
their stack (heads chosen by CV), the abstain threshold and the LLM cascade on the dev part,
and saves the model in ``<index>/model/``. ``behavior-rag classify`` and ``serve`` then use it.
Fitting is a batch job (minutes of CPU, and the LLM asked about up to
``classify.cascade_dev_max`` dev sessions), so it runs here and not behind the HTTP service,
which loads the fitted model from the index folder at start.

Example:
    $ behavior-rag fit data/labelled --index indexes/shop --dev-frac 0.2
    $ behavior-rag fit data/train --dev data/dev --index indexes/shop --taxonomy purchase_intent \
        --history data/all_sessions
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from behavior_rag.api import BehaviorRAG
from behavior_rag.cli.common import HUMAN, emit, err, load_sessions
from behavior_rag.errors import ConfigError
from behavior_rag.evaluation import split_by_user
from behavior_rag.settings import Settings


def _settings(taxonomy: str | None, llm: str | None, cascade: str | None) -> Settings:
    s = Settings()
    cls = s.classify.model_dump() | {k: v for k, v in {"taxonomy": taxonomy,
                                                        "llm": cascade}.items() if v}
    upd = {"classify": s.classify.model_validate(cls)}
    if llm:
        upd["llm"] = s.llm.model_validate(s.llm.model_dump() | {"backend": llm})
    return s.model_copy(update=upd)


def fit_cmd(
    source: Path = typer.Argument(..., help="Labelled sessions: a store or an event log."),
    index: Path = typer.Option(..., "--index", "-i", help="Index folder to fit (created)."),
    dev: Optional[Path] = typer.Option(None, "--dev", help="Labelled dev sessions (default: "
                                       "--dev-frac of SOURCE's users)."),
    dev_frac: float = typer.Option(0.2, "--dev-frac", help="Share of users held out as dev "
                                   "when --dev is not given."),
    taxonomy: Optional[str] = typer.Option(None, "--taxonomy", "-t"),
    fmt: str = typer.Option("auto", "--format", "-f"),
    llm: Optional[str] = typer.Option(None, "--llm", help="local | vllm | none."),
    cascade: Optional[str] = typer.Option(None, "--cascade", help="always | cascade | never "
                                          "(classify.llm; never: no LLM calls while fitting)."),
    seed: int = typer.Option(0, help="Seed of the dev split."),
    history: Optional[Path] = typer.Option(None, "--history", help="Users' past sessions in "
                                           "full (a store or an event log), recorded in "
                                           "<index>/history/ for cross-session facts."),
    human: bool = HUMAN,
) -> None:
    """Fit heads, stack, abstain threshold and LLM cascade; save them with the index."""
    if not 0 < dev_frac < 1:
        raise ConfigError("--dev-frac must be between 0 and 1", field="dev_frac",
                          value=dev_frac)
    s = _settings(taxonomy, llm, cascade)
    rag = BehaviorRAG(s, index)
    train = load_sessions(source, fmt, rag.settings)
    if dev is not None:
        dev_sessions = load_sessions(dev, fmt, rag.settings)
    else:
        split = split_by_user(train, seed=seed, dev_frac=dev_frac, test_frac=0.0)
        train, dev_sessions = split.train, split.dev
    if history is not None:
        rag.add_history(load_sessions(history, fmt, rag.settings))
    report = rag.fit(train, dev_sessions, progress=(lambda m: err.print(m)) if human else None)
    if human:
        d = report.dev
        err.print(f"fitted on {d.n_train} sessions (dev {d.n_dev}): stack of "
                  f"[bold]{' + '.join(report.chosen)}[/]; dev {d.dev_metrics}; LLM asked below "
                  f"confidence {report.cascade.threshold:.2f} -> {report.path}")
    else:
        emit(report.model_dump(mode="json"))
