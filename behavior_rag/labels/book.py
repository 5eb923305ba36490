"""An index folder's label set, read and grown under the folder's writer lock.

:class:`LabelBook` is what ``BehaviorRAG.labels``, the CLI (``labels import``, ``label
--rules``, ``labels export``) and the service's queue use: it checks new labels (the session is
in the index, the label in the taxonomy — all problems in one error), appends them to the
committed set and commits the grown set by itself (the vectors are not rewritten). The read,
the append and the commit happen under the writer lock, so two writers never lose each other's
labels.

Example:
    >>> book = rag.labels                                                  # doctest: +SKIP
    >>> book.add([NewLabel(session_id="s_1", label="deal_hunter")], source="human",
    ...          who="ana").added                                        # doctest: +SKIP
    1
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl
from pydantic import BaseModel, Field

from behavior_rag.atomic import writing_file
from behavior_rag.errors import DataError, TaxonomyError
from behavior_rag.heads.store import read_manifest
from behavior_rag.index.folder import IndexFolder
from behavior_rag.labels.agreement import Agreement, llm_agreement
from behavior_rag.labels.labelset import LabelEvent, LabelSet, NewLabel
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import Session

SHOWN = 5  # ids listed per kind in an error


class LabelsAdded(BaseModel):
    """What :meth:`LabelBook.add` did."""

    added: int
    unchanged: int = Field(0, description="Labels equal to the session's latest (skipped).")
    kept: int = Field(0, description="Sessions left alone because a person or a label file "
                      "already labelled them (rules and the LLM never overwrite those).")
    total: int = Field(description="Events in the label set after the commit.")
    events: list[LabelEvent] = Field(default_factory=list, description="The new events.")


class Training(BaseModel):
    """What :meth:`LabelBook.training` labelled, for fit's report."""

    label_set: int = Field(description="Events in the label set.")
    by_source: dict[str, dict[str, int]]
    llm_agreement: Agreement
    sessions: int
    labels: dict[str, int]
    left_out: int = Field(description="Sessions with no label of their own or in the set.")


class LabelBook:
    """The label set of ``folder``; ``known(session_id)`` says whether the index holds it."""

    def __init__(self, folder: IndexFolder, taxonomy: Taxonomy,
                 known: Callable[[str], bool]) -> None:
        self.folder, self.taxonomy, self.known = folder, taxonomy, known

    def current(self) -> LabelSet:
        """The committed label set (empty when none was committed)."""
        path = self.folder.artifact_path("labels")
        return LabelSet.load(path) if path is not None else LabelSet()

    def training(self, sessions: Sequence[Session]) -> tuple[list[Session], Training]:
        """``sessions`` labelled for fit: the set's latest label wins over a session's own
        (LLM suggestions weighted by their measured agreement); sessions with neither are
        left out (a :class:`DataError` when none is left)."""
        cur = self.current()
        agreement = llm_agreement(cur, self.heads_rate())
        named = {s.session_id: s for s in cur.apply(sessions, llm_weight=agreement.weight)}
        out = [named.get(s.session_id, s) for s in sessions
               if s.session_id in named or s.label is not None]
        if not out:
            raise DataError("nothing to fit on: no session has a label (label some in the "
                            "queue, or: labels import, label --rules)",
                            file=str(self.folder.root), field="labels")
        return out, Training(label_set=len(cur), by_source=cur.counts(),
                             llm_agreement=agreement, sessions=len(out),
                             labels=dict(Counter(s.label for s in out)),
                             left_out=len(sessions) - len(out))

    def heads_rate(self) -> float | None:
        """The committed model's dev accuracy (what LLM suggestions must beat); None: no
        model was fitted."""
        path = self.folder.artifact_path("model")
        if path is None:
            return None
        return read_manifest(path).dev.dev_metrics.get("accuracy")

    def add(self, labels: Sequence[NewLabel], *, source: str, who: str,
            protect: bool = False, known: Callable[[str], bool] | None = None
            ) -> LabelsAdded:
        """Append ``labels`` and commit. ``protect``: skip sessions whose latest label came
        from a person or a label file (how rules and LLM suggestions are added). ``known``:
        which session ids may be labelled (default: the index's sessions; a store about to
        be fitted on names its own)."""
        self.check(labels, known or self.known)
        self.folder.begin()  # held from the read to the commit: no lost update
        try:
            now = self.current()
            latest = now.latest()
            todo, same, kept = [], 0, 0
            for lab in labels:
                before = latest.get(lab.session_id)
                if before is not None and protect and before.source in ("human", "file"):
                    kept += 1
                elif before is not None and (before.label, before.source, before.weight) == (
                        lab.label, source, lab.weight):
                    same += 1
                else:
                    todo.append(lab)
            grown = now.append(todo, source=source, who=who)
            if todo:
                grown.save(self.folder.new_artifact_path("labels"))
                self.folder.commit_artifacts()
        finally:
            self.folder.writer.release()
        return LabelsAdded(added=len(todo), unchanged=same, kept=kept, total=len(grown),
                           events=list(grown.events[len(now):]))

    def check(self, labels: Sequence[NewLabel], known: Callable[[str], bool]) -> None:
        """One error for every unknown session and label outside the taxonomy."""
        unknown = sorted({x.session_id for x in labels if not known(x.session_id)})
        bad = sorted({x.label for x in labels if x.label not in self.taxonomy})
        if bad:
            raise TaxonomyError(f"{len(bad)} label(s) outside the taxonomy "
                                f"{self.taxonomy.name!r} ({list(self.taxonomy.names)}): "
                                f"{bad[:SHOWN]}", field="label", value=bad[0])
        if unknown:
            raise DataError(f"{len(unknown)} session id(s) are not in this index: "
                            f"{unknown[:SHOWN]}", file=str(self.folder.root),
                            field="session_id", value=unknown[0])

    def export(self, path: Path, *, history: bool = False) -> int:
        """Write the latest label per session (``history``: every event) as CSV, Parquet or
        JSONL by ``path``'s suffix; the columns ``fit --labels`` reads come first."""
        s = self.current()
        rows = list(s.events) if history else list(s.latest().values())
        cols = ["session_id", "label", "source", "weight", "who", "at", "previous",
                "previous_source", "seq"]
        df = pl.DataFrame([e.model_dump(include=set(cols)) for e in rows],
                          schema={c: (pl.Int64 if c == "seq" else pl.Float64 if c == "weight"
                                      else pl.Datetime("us", "UTC") if c == "at" else pl.Utf8)
                                  for c in cols}).select(cols)
        with writing_file(path) as tmp:
            suffix = path.suffix.lower()
            if suffix == ".parquet":
                df.write_parquet(tmp)
            elif suffix in (".jsonl", ".ndjson"):
                df.write_ndjson(tmp)
            elif suffix in (".csv", ".tsv"):
                df.write_csv(tmp, separator="\t" if suffix == ".tsv" else ",")
            else:
                raise DataError("write labels to a .csv, .tsv, .parquet or .jsonl file",
                                file=str(path))
        return len(rows)
