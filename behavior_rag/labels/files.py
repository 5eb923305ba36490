"""Label files: a shop's own labels (CSV, TSV, Parquet or JSONL) joined onto its sessions.

Columns: ``session_id`` or ``user_id`` (or both), ``label``, and optionally ``source`` (where
the label came from, e.g. ``crm``) and ``weight`` (>= 0). Other columns are ignored and named
in the report. Ids are the ones the shop knows:

* a ``user_id`` is its raw id, pseudonymised here with the installation's key exactly as ingest
  and :class:`~behavior_rag.ingest.pseudonym.UserIds` do (an id already in pseudonym form, or a
  store written with raw ids, matches as it is). A row with only a ``user_id`` labels every
  session of that user;
* a ``session_id`` is the source's own session id, which ingest keeps as it is (sessions cut by
  inactivity gap get ``s_<hash>`` ids, shown by ``render``/``classify``). A source session id
  that several users share is stored as ``<id>:<user pseudonym>`` per user; the raw id then
  labels all of them, or the one of the row's ``user_id`` when the row gives one.

A row for a session wins over a row for its user. Unknown ids, duplicates with conflicting
labels, labels outside the taxonomy, rows without an id or label and bad weights are found all
at once: strict mode raises ONE :class:`~behavior_rag.errors.DataError` listing them (the first
few of each kind, with their rows, and the counts); lenient mode skips those rows and counts
them in the :class:`LabelJoin` report. Sessions the file does not name stay unlabelled.

Example:
    >>> import tempfile, pathlib
    >>> from behavior_rag.settings import Settings
    >>> from behavior_rag.synth import generate
    >>> from behavior_rag.taxonomy import load_taxonomy
    >>> sessions = generate(20, seed=1).sessions
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "labels.csv"
    >>> _ = f.write_text(f"session_id,label\\n{sessions[0].session_id},deal_hunter\\n")
    >>> j = apply_label_file(read_label_file(f), sessions, load_taxonomy("personas"),
    ...                      Settings(ingest={"pseudonym_key": "k"}))
    >>> j.sessions_labelled, j.sessions[0].label
    (1, 'deal_hunter')
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, Field

from behavior_rag.errors import DataError
from behavior_rag.ingest.pseudonym import UserIds
from behavior_rag.settings import Settings
from behavior_rag.taxonomy import Taxonomy
from behavior_rag.types import Session

COLUMNS: tuple[str, ...] = ("session_id", "user_id", "label", "source", "weight")
SHOWN = 5  # problems listed per kind in an error / report
Reason = Literal["unknown_session", "unknown_user", "user_mismatch", "conflict",
                 "unknown_label", "missing_id", "missing_label", "bad_weight"]
_SAY: dict[str, str] = {
    "unknown_session": "unknown session id(s)",
    "unknown_user": "unknown user id(s)",
    "user_mismatch": "session id(s) of another user than the row's user_id",
    "conflict": "duplicate id(s) with conflicting labels",
    "unknown_label": "label(s) outside the taxonomy",
    "missing_id": "row(s) with neither session_id nor user_id",
    "missing_label": "row(s) without a label",
    "bad_weight": "weight(s) that are not a number >= 0",
}


class LabelRow(BaseModel):
    """One row of a label file, as given (``row``: 1-based data row, header not counted)."""

    row: int
    session_id: str | None = None
    user_id: str | None = None
    label: str | None = None
    source: str | None = None
    weight: float | None = None


class LabelFile(BaseModel):
    """A label file read and shape-checked (rows not yet joined to sessions)."""

    path: str
    rows: list[LabelRow]
    ignored_columns: list[str] = Field(default_factory=list)
    bad_weights: dict[int, str] = Field(default_factory=dict, description="row -> the weight "
                                        "text that is not a number >= 0.")


class LabelProblem(BaseModel):
    """One row that cannot be used, and why."""

    reason: Reason
    row: int
    field: str
    value: str | None = None
    detail: str = ""


class LabelJoin(BaseModel):
    """A label file joined onto sessions: the labelled sessions and what happened to each row.

    ``sessions``, ``weights`` and ``sources`` are left out of dumps (the report is what is
    printed); the labelled sessions keep the input order.
    """

    file: str
    taxonomy: str
    mode: Literal["strict", "lenient"]
    rows: int
    rows_used: int
    session_rows: int = Field(0, description="Used rows that name a session.")
    user_rows: int = Field(0, description="Used rows that name a user (all their sessions).")
    duplicate_rows: int = Field(0, description="Rows repeating another row's id and label.")
    user_label_overridden: int = Field(0, description="Sessions whose user row was overruled "
                                       "by a row for the session itself.")
    skipped: dict[str, int] = Field(default_factory=dict, description="Lenient mode: rows "
                                    "skipped, per reason.")
    problems: list[LabelProblem] = Field(default_factory=list, description="The first few "
                                         "skipped rows of each reason.")
    ignored_columns: list[str] = Field(default_factory=list)
    sessions_in: int
    sessions_labelled: int
    sessions_unlabelled: int
    labels: dict[str, int] = Field(default_factory=dict)
    sessions: list[Session] = Field(default_factory=list, exclude=True)
    weights: dict[str, float] = Field(default_factory=dict, exclude=True,
                                      description="session id -> weight, where the file gave one.")
    sources: dict[str, str] = Field(default_factory=dict, exclude=True,
                                    description="session id -> source, where the file gave one.")


def _frame(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            return pl.read_csv(path, infer_schema=False, separator="\t" if suffix == ".tsv"
                               else ",", null_values=[""], encoding="utf8")
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(path)
        if suffix in (".jsonl", ".ndjson"):
            return pl.read_ndjson(path, infer_schema_length=None)
        if suffix == ".json":
            return pl.read_json(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as e:
        raise DataError(f"cannot read label file: {e}", file=str(path)) from e
    raise DataError("label file must be .csv, .tsv, .parquet, .jsonl/.ndjson or .json",
                    file=str(path), value=path.suffix)


def _text(col: pl.Series) -> list[str | None]:
    """A column as text: whole-number floats (a Parquet id column with nulls) without ``.0``,
    surrounding blanks stripped, empty cells missing."""
    if col.dtype.is_float():
        whole = col.drop_nulls()
        if len(whole) and bool(((whole % 1) == 0).all()):
            col = col.cast(pl.Int64)
    out = []
    for v in col.cast(pl.Utf8, strict=False).to_list():
        v = None if v is None else str(v).strip()
        out.append(v or None)
    return out


def read_label_file(path: str | Path) -> LabelFile:
    """Read a label file (see the module doc); a missing file, an unreadable one or one without
    the needed columns is a :class:`DataError` naming the file (and the columns it has)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError("label file not found", file=str(path))
    df = _frame(path)
    names = {c.strip().lower(): c for c in df.columns}
    if "label" not in names or not ({"session_id", "user_id"} & names.keys()):
        raise DataError("a label file needs a `label` column and a `session_id` or `user_id` "
                        "column", file=str(path), field="columns", value=", ".join(df.columns),
                        expected=list(COLUMNS))
    n = df.height
    cols = {c: _text(df[names[c]]) if c in names else [None] * n for c in COLUMNS}
    rows, bad = [], {}
    for i in range(n):
        weight = None
        raw = cols["weight"][i]
        if raw is not None:
            try:
                weight = float(raw)
            except ValueError:
                weight = math.nan
            if not (math.isfinite(weight) and weight >= 0):
                bad[i + 1] = raw
                weight = None
        rows.append(LabelRow(row=i + 1, session_id=cols["session_id"][i],
                             user_id=cols["user_id"][i], label=cols["label"][i],
                             source=cols["source"][i], weight=weight))
    ignored = [c for key, c in names.items() if key not in COLUMNS]
    return LabelFile(path=str(path), rows=rows, ignored_columns=ignored, bad_weights=bad)


class _Index:
    """The sessions by id, by source session id shared by several users, and by user."""

    def __init__(self, sessions: Sequence[Session], settings: Settings) -> None:
        self.by_id = {s.session_id: s for s in sessions}
        self.by_user: dict[str, list[str]] = defaultdict(list)
        self.shared: dict[str, list[str]] = defaultdict(list)
        for s in sessions:
            self.by_user[s.user_id].append(s.session_id)
            base, sep, user = s.session_id.rpartition(":")
            if sep and user == s.user_id:
                self.shared[base].append(s.session_id)
        self.ids = UserIds(settings)

    def user(self, raw: str) -> str | None:
        """The stored user id of a raw (or pseudonym) id, None if no session has it."""
        for uid in (self.ids(raw), raw):
            if uid in self.by_user:
                return uid
        return None

    def sessions(self, sid: str) -> list[str]:
        return [sid] if sid in self.by_id else list(self.shared.get(sid, []))


def _problem_error(path: str, problems: list[LabelProblem], taxonomy: Taxonomy) -> DataError:
    counts = Counter(p.reason for p in problems)
    shown: list[LabelProblem] = []
    parts = []
    for reason, k in counts.items():
        mine = [p for p in problems if p.reason == reason]
        shown += mine[:SHOWN]
        eg = ", ".join(f"row {p.row} {p.value!r}" for p in mine[:3])
        parts.append(f"{k} {_SAY[reason]} ({eg}{', ...' if k > 3 else ''})")
    first = problems[0]
    extra = (f"; the taxonomy {taxonomy.name!r} has labels {list(taxonomy.names)}"
             if "unknown_label" in counts else "")
    return DataError(f"{len(problems)} label row(s) cannot be used: " + "; ".join(parts)
                     + extra + ". Fix them, or skip them with lenient mode (--lenient / "
                     "BEHAVIOR_RAG_INGEST__MODE=lenient)", file=path, row=first.row,
                     field=first.field, value=first.value, problem_count=len(problems),
                     counts=dict(counts), problems=[p.model_dump() for p in shown])


def apply_label_file(labels: LabelFile, sessions: Sequence[Session], taxonomy: Taxonomy,
                     settings: Settings, *, lenient: bool | None = None) -> LabelJoin:
    """Join ``labels`` onto ``sessions`` (see the module doc). ``lenient`` None: lenient when
    ``settings.ingest.mode`` is. Nothing usable at all is an error in either mode."""
    lenient = settings.ingest.mode == "lenient" if lenient is None else lenient
    idx = _Index(sessions, settings)
    problems: list[LabelProblem] = []
    # (kind, key) -> [(row, label)]: kind "s" keys a stored session id, "u" a stored user id
    claims: dict[tuple[str, str], list[LabelRow]] = defaultdict(list)
    for r in labels.rows:
        if r.row in labels.bad_weights:
            problems.append(LabelProblem(reason="bad_weight", row=r.row, field="weight",
                                         value=labels.bad_weights[r.row]))
            continue
        if r.label is None:
            problems.append(LabelProblem(reason="missing_label", row=r.row, field="label"))
            continue
        if r.label not in taxonomy:
            problems.append(LabelProblem(reason="unknown_label", row=r.row, field="label",
                                         value=r.label))
            continue
        if r.session_id is None and r.user_id is None:
            problems.append(LabelProblem(reason="missing_id", row=r.row, field="session_id"))
            continue
        user = idx.user(r.user_id) if r.user_id is not None else None
        if r.session_id is not None:
            found = idx.sessions(r.session_id)
            if not found:
                problems.append(LabelProblem(reason="unknown_session", row=r.row,
                                             field="session_id", value=r.session_id))
                continue
            if r.user_id is not None:
                found = [sid for sid in found if idx.by_id[sid].user_id == user]
                if not found:
                    problems.append(LabelProblem(
                        reason="user_mismatch", row=r.row, field="user_id", value=r.user_id,
                        detail=f"session {r.session_id!r} is not this user's"))
                    continue
            for sid in found:
                claims[("s", sid)].append(r)
        else:
            assert r.user_id is not None
            if user is None:
                problems.append(LabelProblem(reason="unknown_user", row=r.row, field="user_id",
                                             value=r.user_id))
                continue
            claims[("u", user)].append(r)
    conflicted: set[int] = set()
    for (kind, _key), rows in claims.items():
        if len({r.label for r in rows}) > 1:
            for r in rows:
                if r.row not in conflicted:
                    conflicted.add(r.row)
                    field = "session_id" if kind == "s" else "user_id"
                    problems.append(LabelProblem(
                        reason="conflict", row=r.row, field=field,
                        value=r.session_id if kind == "s" else r.user_id, detail=(
                            f"labels {sorted({x.label for x in rows})!r} for the same "
                            f"{'session' if kind == 's' else 'user'}")))
    problems.sort(key=lambda p: p.row)
    if problems and not lenient:
        raise _problem_error(labels.path, problems, taxonomy)
    bad_rows = {p.row for p in problems}
    chosen: dict[str, LabelRow] = {}
    by_session_row: set[str] = set()
    overridden = 0
    for (kind, key), rows in claims.items():
        rows = [r for r in rows if r.row not in bad_rows]
        if not rows or kind != "s":
            continue
        chosen[key] = rows[0]
        by_session_row.add(key)
    for (kind, key), rows in claims.items():
        rows = [r for r in rows if r.row not in bad_rows]
        if not rows or kind != "u":
            continue
        for sid in idx.by_user[key]:
            if sid in chosen:
                overridden += chosen[sid].label != rows[0].label
                continue
            chosen[sid] = rows[0]
    used_rows = {r.row for r in labels.rows} - bad_rows
    if not chosen:
        raise DataError("no row of the label file labels any session" + (
            f" ({len(problems)} row(s) skipped: {dict(Counter(p.reason for p in problems))})"
            if problems else ""), file=labels.path, rows=len(labels.rows))
    out = [s.model_copy(update={"label": chosen[s.session_id].label})
           for s in sessions if s.session_id in chosen]
    skipped = Counter(p.reason for p in problems)
    shown = [p for reason in skipped for p in [q for q in problems if q.reason == reason][:SHOWN]]
    seen_pairs: set[tuple[str | None, str | None, str | None]] = set()
    dups = 0
    for r in labels.rows:
        if r.row in bad_rows:
            continue
        key = (r.session_id, r.user_id if r.session_id is None else None, r.label)
        dups += key in seen_pairs
        seen_pairs.add(key)
    kinds = {r.row: r.session_id is not None for r in labels.rows if r.row in used_rows}
    return LabelJoin(
        file=labels.path, taxonomy=taxonomy.name, mode="lenient" if lenient else "strict",
        rows=len(labels.rows), rows_used=len(used_rows),
        session_rows=sum(kinds.values()), user_rows=len(kinds) - sum(kinds.values()),
        duplicate_rows=dups, user_label_overridden=overridden, skipped=dict(skipped),
        problems=shown, ignored_columns=labels.ignored_columns, sessions_in=len(sessions),
        sessions_labelled=len(out), sessions_unlabelled=len(sessions) - len(out),
        labels=dict(Counter(s.label for s in out if s.label)), sessions=out,
        weights={sid: r.weight for sid, r in chosen.items() if r.weight is not None},
        sources={sid: r.source for sid, r in chosen.items() if r.source is not None})
