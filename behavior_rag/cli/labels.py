"""``behavior-rag labels``: outcome targets and label files (and the pieces ``fit`` uses).

Example:
    $ behavior-rag labels targets --human
    $ behavior-rag labels import my_labels.csv --index indexes/shop
    $ behavior-rag labels import my_labels.parquet --index indexes/shop --lenient --human
    $ behavior-rag labels export labels.csv --index indexes/shop --history
"""

from __future__ import annotations

import getpass
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import typer

from behavior_rag.annotate import LabelDesk
from behavior_rag.annotate.desk import llm_labels
from behavior_rag.api import BehaviorRAG
from behavior_rag.classify import Classifier
from behavior_rag.cli.common import HUMAN, emit, err, load_sessions
from behavior_rag.errors import ConfigError, DataError, StoreError
from behavior_rag.labels import (
    LabelJoin,
    NewLabel,
    Target,
    apply_label_file,
    known_targets,
    label_sessions,
    load_target,
    read_label_file,
)
from behavior_rag.labels.agreement import llm_agreement
from behavior_rag.labels.rules import rule_labels
from behavior_rag.llm.factory import get_llm
from behavior_rag.settings import Settings
from behavior_rag.taxonomy import load_taxonomy
from behavior_rag.types import Session

labels_app = typer.Typer(no_args_is_help=True, help="Labels from your data: outcome targets "
                         "label files and the index's label set.")
INPUT_HELP = ("What the model may see (the prediction point): before:cart,purchase | first:N | "
              "minutes:N | types:view | all. Default: the target's.")


def target_taxonomy(target: Target, taxonomy: str | None) -> str:
    """The taxonomy ``fit`` uses for ``target``: its own, or ``taxonomy`` if that holds the
    target's two labels (else a :class:`ConfigError`)."""
    if taxonomy is None:
        return target.taxonomy_ref()
    tax = load_taxonomy(taxonomy)
    if set(tax.names) != set(target.labels()):
        raise ConfigError(f"--taxonomy {taxonomy!r} has labels {list(tax.names)}, but target "
                          f"{target.name!r} gives {list(target.labels())}; leave --taxonomy "
                          f"out to use the target's ({target.taxonomy})", field="taxonomy",
                          value=taxonomy)
    return taxonomy


def apply_target(target: Target, train: Sequence[Session], dev: Sequence[Session] | None,
                 later: Sequence[Session] = ()) -> tuple[list[Session], list[Session] | None,
                                                        dict[str, Any]]:
    """Label and cut ``train`` (and ``dev``) by ``target``; ``later``: more full sessions the
    look-ahead rules may use (e.g. --history). Refuses a result that cannot be fitted."""
    pool = [*train, *(dev or []), *later]
    a = label_sessions(train, target, later=pool)
    b = label_sessions(dev, target, later=pool) if dev is not None else None
    summary = {"target": target.name, "input": str(target.input),
               "target_hash": target.content_hash,
               "train": a.model_dump(exclude={"sessions"})}
    if b is not None:
        summary["dev"] = b.model_dump(exclude={"sessions"})
    for part, r in (("train", a), ("dev", b)):
        if r is None:
            continue
        if not r.sessions:
            raise DataError(
                f"no {part} session is left to fit on: target {target.name!r} with input "
                f"{target.input} dropped {r.dropped_empty} with nothing before the prediction "
                f"point, {r.dropped_censored} whose outcome is past the log's end and "
                f"{r.dropped_not_eligible} not eligible, of {r.n_in}", field="input",
                value=str(target.input), examples=r.empty_examples)
        missing = [k for k, v in r.labels.items() if not v]
        if missing and part == "train":
            raise DataError(f"target {target.name!r} gives no {part} session the label(s) "
                            f"{missing} ({r.labels}): nothing to tell apart", field="label",
                            value=missing[0])
    return a.sessions, (b.sessions if b is not None else None), summary


def apply_labels(path: Path, train: Sequence[Session], dev: Sequence[Session] | None,
                 taxonomy: str, settings: Settings, lenient: bool
                 ) -> tuple[list[Session], list[Session] | None, LabelJoin]:
    """Join a label file onto ``train`` and ``dev`` together (its ids may name either);
    sessions it does not name are left out of both."""
    join = apply_label_file(read_label_file(path), [*train, *(dev or [])],
                            load_taxonomy(taxonomy), settings, lenient=lenient or None)
    labelled = {s.session_id: s for s in join.sessions}
    a = [labelled[s.session_id] for s in train if s.session_id in labelled]
    b = [labelled[s.session_id] for s in dev if s.session_id in labelled] \
        if dev is not None else None
    if not a:
        raise DataError("the label file labels no training session", file=str(path),
                        labelled=join.sessions_labelled)
    return a, b, join


def fit_with(rag: BehaviorRAG, train: Sequence[Session], dev: Sequence[Session],
             target: Target | None, **kw: Any) -> Any:
    """``rag.fit(train, dev, **kw)``, passing ``target=`` when ``BehaviorRAG.fit`` takes it
    (the model then records the target and classify applies the same input cut)."""
    fit: Callable[..., Any] = rag.fit
    if target is not None and "target" in inspect.signature(fit).parameters:
        kw["target"] = target
    return fit(train, dev, **kw)


@labels_app.command("targets")
def targets_cmd(human: bool = HUMAN) -> None:
    """The shipped outcome targets: label rule, labels, taxonomy and default input cut."""
    rows = []
    for name in known_targets():
        t = load_target(name)
        rows.append({"name": t.name, "labels": list(t.labels()), "taxonomy": t.taxonomy,
                     "rule": t.rule.model_dump(exclude_none=True), "input": str(t.input),
                     "description": t.description})
    if human:
        for r in rows:
            err.print(f"[bold]{r['name']}[/] {r['labels'][0]} / {r['labels'][1]} "
                      f"(taxonomy {r['taxonomy']}; input {r['input']}): {r['description']}")
    else:
        for r in rows:
            emit(r)


@labels_app.command("import")
def import_cmd(
    file: Path = typer.Argument(..., help="Label file: CSV/TSV, Parquet or JSONL with "
                                "session_id or user_id, label, optional source and weight."),
    index: Path = typer.Option(..., "--index", "-i", help="Index folder whose sessions the "
                               "labels name; the labels go into its label set."),
    store: Optional[Path] = typer.Option(None, "--store", help="Join on this store's (or event "
                                         "log's) sessions instead of the index's (e.g. before "
                                         "`fit STORE --index IDX`)."),
    taxonomy: Optional[str] = typer.Option(None, "--taxonomy", "-t", help="The labels' "
                                           "taxonomy (default: the index's)."),
    fmt: str = typer.Option("auto", "--format", "-f"),
    lenient: bool = typer.Option(False, "--lenient", help="Skip and count unusable rows "
                                 "instead of failing (also ingest.mode=lenient)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what the file labels; "
                                 "write nothing."),
    who: Optional[str] = typer.Option(None, "--who", help="Recorded as who added them "
                                      "(default: your OS user)."),
    human: bool = HUMAN,
) -> None:
    """Join a label file onto the index's sessions and add it to the index's label set
    (source `file`; `fit --index IDX` then fits on the latest label per session)."""
    s = Settings()
    if taxonomy:
        s = s.model_copy(update={"classify": s.classify.model_copy(
            update={"taxonomy": taxonomy})})
    rag = _opened(index, s)
    book = rag.labels
    sessions = load_sessions(store, fmt, s) if store is not None else list(
        rag.sessions.values())
    join = apply_label_file(read_label_file(file), sessions, book.taxonomy, s,
                            lenient=lenient or None)
    out = join.model_dump(mode="json")
    if not dry_run:
        ids = {x.session_id for x in sessions}
        added = book.add([NewLabel(session_id=x.session_id, label=x.label,
                                   weight=join.weights.get(x.session_id, 1.0))
                          for x in join.sessions], source="file", who=who_am_i(who),
                         known=ids.__contains__)
        out["label_set"] = added.model_dump(exclude={"events"})
    if human:
        err.print(f"{join.sessions_labelled} of {join.sessions_in} sessions labelled from "
                  f"{join.rows_used} of {join.rows} rows; labels {join.labels}"
                  + (f"; skipped {join.skipped}" if join.skipped else "")
                  + ("" if dry_run else f"; label set: {out['label_set']}"))
    else:
        emit(out)


@labels_app.command("export")
def export_cmd(
    out: Path = typer.Argument(..., help="File to write: .csv, .tsv, .parquet or .jsonl."),
    index: Path = typer.Option(..., "--index", "-i"),
    history: bool = typer.Option(False, "--history", help="Every event (the audit trail), "
                                 "not only the latest label per session."),
) -> None:
    """Write the index's labels out (readable by `fit --labels` and `labels import`)."""
    n = _opened(index, Settings()).labels.export(out, history=history)
    emit({"file": str(out), "rows": n, "history": history})


@labels_app.command("show")
def show_cmd(index: Path = typer.Option(..., "--index", "-i"), human: bool = HUMAN) -> None:
    """What the index's label set holds: events, and latest labels per source."""
    book = _opened(index, Settings()).labels
    cur = book.current()
    out = {"events": len(cur), "sessions": len(cur.latest()), "by_source": cur.counts(),
           "taxonomy": book.taxonomy.name}
    if human:
        err.print(f"{out['sessions']} labelled sessions ({out['events']} events): "
                  f"{out['by_source']}")
    else:
        emit(out)


def _opened(index: Path, settings: Settings) -> BehaviorRAG:
    if not (index / "config.json").exists():
        raise StoreError("no index in this folder; build one with `behavior-rag index "
                         "build`", file=str(index))
    return BehaviorRAG(settings, index)

def who_am_i(who: str | None) -> str:
    """``--who``, else the OS user: the name the label set records for CLI labels."""
    return who or getpass.getuser()


def apply_labelset(rag: BehaviorRAG, train: Sequence[Session], dev: Sequence[Session] | None
                   ) -> tuple[list[Session], list[Session] | None, dict[str, Any] | None]:
    """Label ``train``/``dev`` with the index's label set (its latest label per session wins
    over a session's own; sessions with neither are left out). None summary: no label set."""
    if not (rag.index_path / "config.json").exists() or not rag.labels.current():
        return list(train), list(dev) if dev is not None else None, None
    a, summary = rag.labels.training([*train, *(dev or [])])
    named = {s.session_id: s for s in a}
    a = [named[s.session_id] for s in train if s.session_id in named]
    b = [named[s.session_id] for s in dev if s.session_id in named] if dev is not None \
        else None
    if not a:
        raise DataError("the index's label set labels none of these training sessions: "
                        "label sessions of this store (labels import, label --rules, the "
                        "queue at /ui/label) or give --target / --labels",
                        file=str(rag.index_path), field="labels")
    return a, b, summary.model_dump()


def label_cmd(
    source: Optional[Path] = typer.Argument(None, help="Sessions to label: a store or an event "
                                            "log (default: the index's own sessions)."),
    index: Path = typer.Option(..., "--index", "-i", help="Index whose label set gets the "
                               "labels."),
    rules: bool = typer.Option(False, "--rules", help="Label each session where exactly one "
                               "label's definition (requires/excludes) holds."),
    llm: bool = typer.Option(False, "--llm", help="Record the configured LLM's suggestions "
                             "for the next --limit sessions of the queue (weak labels: they "
                             "count in fit only as far as their agreement with yours earns)."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="--llm: sessions."),
    fmt: str = typer.Option("auto", "--format", "-f"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report only; write nothing."),
    who: Optional[str] = typer.Option(None, "--who"),
    human: bool = HUMAN,
) -> None:
    """Label sessions into the index's label set: by the taxonomy's definitions (--rules; with
    coverage and conflicts per label, and precision where sessions have gold labels: their
    own, or a person's or a file's in the label set), or by the LLM's suggestions (--llm).
    Never overwrites a person's or a file's label."""
    if rules == llm:
        raise ConfigError("say how to label: --rules or --llm", field="rules")
    s = Settings()
    rag = _opened(index, s)
    book = rag.labels
    if llm:
        return _llm_cmd(rag, limit, dry_run, human)
    sessions = load_sessions(source, fmt, s) if source is not None else list(
        rag.sessions.values())
    gold = {x.session_id: x.label for x in sessions if x.label is not None} | {
        e.session_id: e.label for e in book.current().latest(("human", "file")).values()}
    got = rule_labels(sessions, book.taxonomy, gold)
    out = got.report.model_dump()
    if not dry_run:
        ids = {x.session_id for x in sessions}
        added = book.add(got.labels, source="rule", who=who_am_i(who), protect=True,
                         known=ids.__contains__)
        out["label_set"] = added.model_dump(exclude={"events"})
    if human:
        r = got.report
        err.print(f"rules label {r.labelled} of {r.sessions} sessions ({r.coverage:.0%}); "
                  f"{r.conflicting} where several definitions hold, {r.none_hold} where "
                  f"none does; precision on gold {r.precision}")
        for c in r.per_label:
            err.print(f"  {c.label}: {c.labelled} alone, holds in {c.holds}, precision "
                      f"{c.precision} (of {c.gold})" + ("" if c.defined else " (no definition)"))
    else:
        emit(out)


def _llm_cmd(rag: BehaviorRAG, limit: int, dry_run: bool, human: bool) -> None:
    """``label --llm``: suggestions for the queue's next sessions, and the agreement so far."""
    if rag.settings.llm.backend == "none":
        raise ConfigError("no LLM is configured (llm.backend=none): set --llm on serve/fit "
                          "or BEHAVIOR_RAG_LLM__BACKEND", field="llm.backend")
    book, tax = rag.labels, rag.taxonomy()
    cur = book.current()
    try:
        ranker = rag.classifier
    except ConfigError:
        ranker = None
    order = LabelDesk(rag.embedder, tax).order(list(rag.sessions.values()), cur, ranker, limit)
    ask = Classifier(rag.index, rag.embedder, get_llm(rag.settings), tax, settings=rag.settings)
    got = llm_labels(ask, rag.sessions.get_many([e.session_id for e in order.entries]))
    out = {"asked": len(order.entries), "answered": len(got),
           "agreement": llm_agreement(cur, book.heads_rate()).model_dump()}
    if not dry_run:
        added = book.add(got, source="llm", who=f"llm:{rag.settings.llm.backend}",
                         protect=True)
        out["label_set"] = added.model_dump(exclude={"events"})
    if human:
        err.print(f"the LLM suggested labels for {len(got)} of {len(order.entries)} sessions; "
                  f"{out['agreement']['why']}")
    else:
        emit(out)
