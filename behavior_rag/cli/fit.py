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
    $ behavior-rag fit data/taobao --index indexes/buy --target purchase --input first:5
    $ behavior-rag fit data/shop --index indexes/shop --labels my_labels.csv --lenient
    $ behavior-rag fit --index indexes/shop    # its sessions, by its label set

Sessions need labels: their own (a labelled store), an outcome target computed from the log
(``--target``: label rule and prediction point, see ``behavior-rag labels targets``), a
label file (``--labels``: your ids, pseudonymised here as at ingest), or the index's label set
(``labels import``, ``label --rules``, the queue at ``/ui/label``): its latest label per
session wins over a session's own. Without SOURCE, the index's own sessions are fitted on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from behavior_rag.api import BehaviorRAG
from behavior_rag.cli.common import HUMAN, emit, err, load_sessions
from behavior_rag.cli.labels import (
    INPUT_HELP,
    apply_labels,
    apply_labelset,
    apply_target,
    fit_with,
    target_taxonomy,
)
from behavior_rag.errors import ConfigError
from behavior_rag.evaluation import split_by_user
from behavior_rag.labels import load_target
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
    source: Optional[Path] = typer.Argument(None, help="Sessions to fit on: a store or an "
                                            "event log (default: the index's own sessions)."),
    index: Path = typer.Option(..., "--index", "-i", help="Index folder to fit (created)."),
    dev: Optional[Path] = typer.Option(None, "--dev", help="Labelled dev sessions (default: "
                                       "--dev-frac of SOURCE's users)."),
    dev_frac: float = typer.Option(0.2, "--dev-frac", help="Share of users held out as dev "
                                   "when --dev is not given."),
    taxonomy: Optional[str] = typer.Option(None, "--taxonomy", "-t"),
    fmt: str = typer.Option("auto", "--format", "-f"),
    llm: Optional[str] = typer.Option(None, "--llm", help="A registered LLM backend: local | "
                                      "vllm | none | a plugin's (`behavior-rag plugins`)."),
    heads: Optional[str] = typer.Option(None, "--heads", help="Comma-separated heads to fit "
                                        "(default classify.heads: facts,forest,embed,knn; "
                                        "built in also items; plugins add more: `behavior-rag "
                                        "plugins`). The stack keeps those CV chooses."),
    cascade: Optional[str] = typer.Option(None, "--cascade", help="always | cascade | never "
                                          "(classify.llm; never: no LLM calls while fitting)."),
    seed: int = typer.Option(0, help="Seed of the dev split."),
    history: Optional[Path] = typer.Option(None, "--history", help="Users' past sessions in "
                                           "full (a store or an event log), recorded in "
                                           "<index>/history/ for cross-session facts."),
    target: Optional[str] = typer.Option(None, "--target", help="Label the sessions by an "
                                         "outcome target: purchase | cart | return_visit | "
                                         "repeat_purchase | a target file."),
    input_cut: Optional[str] = typer.Option(None, "--input", help=INPUT_HELP),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Label file (CSV/Parquet/"
                                          "JSONL: session_id or user_id, label[, source, "
                                          "weight]); sessions it does not name are left out."),
    lenient: bool = typer.Option(False, "--lenient", help="--labels: skip and count unusable "
                                 "rows instead of failing (also ingest.mode=lenient)."),
    human: bool = HUMAN,
) -> None:
    """Fit heads, stack, abstain threshold and LLM cascade; save them with the index."""
    if not 0 < dev_frac < 1:
        raise ConfigError("--dev-frac must be between 0 and 1", field="dev_frac",
                          value=dev_frac)
    if target is not None and labels is not None:
        raise ConfigError("give --target or --labels, not both", field="target", value=target)
    if input_cut is not None and target is None:
        raise ConfigError("--input is the prediction point of an outcome target: give "
                          "--target too", field="input", value=input_cut)
    tgt = load_target(target).with_input(input_cut) if target is not None else None
    if tgt is not None:
        taxonomy = target_taxonomy(tgt, taxonomy)
    s = _settings(taxonomy, llm, cascade)
    rag = BehaviorRAG(s, index)
    if source is None and not (index / "config.json").exists():
        raise ConfigError("give the sessions to fit on (a store or an event log), or an "
                          "index that holds them", field="source", file=str(index))
    train = load_sessions(source, fmt, rag.settings) if source is not None else list(
        rag.sessions.values())
    dev_sessions = load_sessions(dev, fmt, rag.settings) if dev is not None else None
    past = load_sessions(history, fmt, rag.settings) if history is not None else []
    labelling = None
    if tgt is not None:
        train, dev_sessions, labelling = apply_target(tgt, train, dev_sessions, past)
    elif labels is not None:
        train, dev_sessions, join = apply_labels(labels, train, dev_sessions,
                                                 rag.settings.classify.taxonomy, rag.settings,
                                                 lenient)
        labelling = join.model_dump(mode="json")
    else:  # the index's label set: the latest label per session (queue, rules, imports)
        train, dev_sessions, labelling = apply_labelset(rag, train, dev_sessions)
    if dev_sessions is None:
        split = split_by_user(train, seed=seed, dev_frac=dev_frac, test_frac=0.0)
        train, dev_sessions = split.train, split.dev
    if history is not None:
        rag.add_history(past)
    names = [h.strip() for h in heads.split(",") if h.strip()] if heads else None
    report = fit_with(rag, train, dev_sessions, tgt, heads=names,
                      progress=(lambda m: err.print(m)) if human else None)
    if human:
        d = report.dev
        if labelling is not None:
            err.print(f"labels: {labelling.get('target') or labelling.get('file') or 'label set'} "
                      f"{labelling.get('train', labelling).get('labels')}")
        err.print(f"fitted on {d.n_train} sessions (dev {d.n_dev}): stack of "
                  f"[bold]{' + '.join(report.chosen)}[/]; dev {d.dev_metrics}; LLM asked below "
                  f"confidence {report.cascade.threshold:.2f} -> {report.path}")
    else:
        out = report.model_dump(mode="json")
        if labelling is not None:
            out["labelling"] = labelling
        emit(out)
