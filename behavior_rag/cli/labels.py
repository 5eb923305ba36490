"""``behavior-rag labels``: outcome targets and label files (and the pieces ``fit`` uses).

Example:
    $ behavior-rag labels targets --human
    $ behavior-rag labels import my_labels.csv --index indexes/shop
    $ behavior-rag labels import my_labels.parquet --index indexes/shop --lenient --human
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import typer

from behavior_rag.api import BehaviorRAG
from behavior_rag.cli.common import HUMAN, emit, err, load_sessions
from behavior_rag.errors import ConfigError, DataError, StoreError
from behavior_rag.labels import (
    LabelJoin,
    Target,
    apply_label_file,
    known_targets,
    label_sessions,
    load_target,
    read_label_file,
)
from behavior_rag.settings import Settings
from behavior_rag.taxonomy import load_taxonomy
from behavior_rag.types import Session

labels_app = typer.Typer(no_args_is_help=True, help="Labels from your data: outcome targets "
                         "and label files.")
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
                               "labels name."),
    store: Optional[Path] = typer.Option(None, "--store", help="Join on this store's (or event "
                                         "log's) sessions instead of the index's."),
    taxonomy: Optional[str] = typer.Option(None, "--taxonomy", "-t", help="The labels' "
                                           "taxonomy (default classify.taxonomy)."),
    fmt: str = typer.Option("auto", "--format", "-f"),
    lenient: bool = typer.Option(False, "--lenient", help="Skip and count unusable rows "
                                 "instead of failing (also ingest.mode=lenient)."),
    human: bool = HUMAN,
) -> None:
    """Join a label file onto the index's sessions and report what it labels (nothing is
    written: `fit --labels FILE` fits on it)."""
    s = Settings()
    if taxonomy:
        s = s.model_copy(update={"classify": s.classify.model_copy(
            update={"taxonomy": taxonomy})})
    if store is not None:
        sessions = load_sessions(store, fmt, s)
    else:
        if not (index / "config.json").exists():
            raise StoreError("no index in this folder; build one with `behavior-rag index "
                             "build` or give --store", file=str(index))
        sessions = list(BehaviorRAG(s, index).sessions.values())
    join = apply_label_file(read_label_file(file), sessions, load_taxonomy(s.classify.taxonomy),
                            s, lenient=lenient or None)
    if human:
        err.print(f"{join.sessions_labelled} of {join.sessions_in} sessions labelled from "
                  f"{join.rows_used} of {join.rows} rows; labels {join.labels}"
                  + (f"; skipped {join.skipped}" if join.skipped else ""))
    else:
        emit(join.model_dump(mode="json"))
