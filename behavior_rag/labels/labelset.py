"""The index's label set: an append-only, audited log of who labelled which session how.

Every label put on a session — by an analyst in the queue, a rule, the LLM, a label file or an
outcome target — is one :class:`LabelEvent`: the session, the label, its ``source``, ``who``
(the API key's name, or the OS user on the CLI), ``when``, the label it replaces
(``previous``) and a ``weight``. Events are never edited or removed: a correction is a new
event whose ``previous`` is the label it corrects. ``fit`` uses the latest event per session
(:meth:`LabelSet.latest`).

On disk it is an artifact folder of the index (``<index>/labels-<hex>/``): ``labels.jsonl``
(one event per line, oldest first) and ``manifest.json`` (count, the sha256 of the file and
the hash of the last event). Each event carries a chain hash over the one before it, so an
edit, a removed line or a reordering anywhere is found on load, not only at the end. The
folder is named by ``config.json`` and committed by its rename, like the fitted model
(:meth:`behavior_rag.index.folder.IndexFolder.commit_artifacts`).

Example:
    >>> s = LabelSet().append([NewLabel(session_id="s1", label="deal_hunter")],
    ...                       source="human", who="ana")
    >>> s = s.append([NewLabel(session_id="s1", label="focused_buyer")], source="human", who="bo")
    >>> e = s.latest()["s1"]
    >>> e.label, e.previous, e.who, len(s)
    ('focused_buyer', 'deal_hunter', 'bo', 2)
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from behavior_rag.atomic import writing_file
from behavior_rag.errors import StoreError
from behavior_rag.types import Session

Source = Literal["human", "rule", "llm", "file", "target"]
SOURCES: tuple[str, ...] = ("human", "rule", "llm", "file", "target")
FILE, MANIFEST = "labels.jsonl", "manifest.json"
FORMAT = 1
GENESIS = "0" * 64


class NewLabel(BaseModel):
    """A label to add: the session and its label (``weight``: how much ``fit`` may trust it)."""

    session_id: str = Field(min_length=1, max_length=512)
    label: str = Field(min_length=1, max_length=128)
    weight: float = Field(1.0, ge=0.0, allow_inf_nan=False)


class LabelEvent(BaseModel):
    """One line of the label set (never changed once written)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = Field(ge=1, description="1-based position in the set.")
    session_id: str
    label: str
    source: Source
    who: str
    at: datetime
    previous: str | None = Field(None, description="The session's label before this event.")
    previous_source: Source | None = None
    weight: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    chain: str = Field(description="sha256 over the previous event's chain and this event.")

    def expected_chain(self, before: str) -> str:
        body = self.model_dump(mode="json", exclude={"chain"})
        return hashlib.sha256((before + json.dumps(body, sort_keys=True)).encode()).hexdigest()


class LabelSetManifest(BaseModel):
    format_version: int = FORMAT
    count: int
    sha256: str
    head: str = Field(description="The last event's chain hash (GENESIS when empty).")


class LabelSet(BaseModel):
    """All label events of an index, oldest first. Immutable: :meth:`append` returns a new set."""

    model_config = ConfigDict(frozen=True)

    events: tuple[LabelEvent, ...] = ()

    def __len__(self) -> int:
        return len(self.events)

    @property
    def head(self) -> str:
        return self.events[-1].chain if self.events else GENESIS

    def latest(self, sources: Iterable[str] | None = None) -> dict[str, LabelEvent]:
        """session id -> its latest event (only events of ``sources``, when given)."""
        keep = set(sources) if sources is not None else None
        out: dict[str, LabelEvent] = {}
        for e in self.events:
            if keep is None or e.source in keep:
                out[e.session_id] = e
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        """source -> label -> sessions whose latest label is that (what ``fit`` would use)."""
        out: dict[str, Counter] = {}
        for e in self.latest().values():
            out.setdefault(e.source, Counter())[e.label] += 1
        return {k: dict(v) for k, v in out.items()}

    def apply(self, sessions: Iterable[Session], *, llm_weight: float = 0.0,
              trusted_only: bool = False) -> list[Session]:
        """The sessions this set labels, each with its latest label. A label of weight 0
        labels nothing; an LLM suggestion counts with ``llm_weight`` (what its measured
        agreement earns, :mod:`~behavior_rag.labels.agreement`): the heads take no
        per-session weights, so a suggestion is kept with that probability (a fixed draw per
        session), which weights the LLM's labels by it on average.

        Example:
            >>> s = LabelSet().append([NewLabel(session_id="a", label="x")], source="file",
            ...                       who="me")
            >>> [x.label for x in s.apply([Session(session_id="a", user_id="u"),
            ...                            Session(session_id="b", user_id="u")])]
            ['x']
        """
        latest = self.latest()
        out = []
        for x in sessions:
            e = latest.get(x.session_id)
            keep = e is not None and e.weight > 0 and (
                e.source != "llm" or not trusted_only and _draw(e.session_id) < llm_weight)
            if keep:
                out.append(x.model_copy(update={"label": e.label}))
        return out

    def append(self, labels: Sequence[NewLabel], *, source: str, who: str,
               at: datetime | None = None) -> LabelSet:
        """A new set with one event per label (``previous``: the session's label so far)."""
        when = at or datetime.now(timezone.utc)
        latest = self.latest()
        events, chain, seq = list(self.events), self.head, len(self.events)
        for lab in labels:
            before = latest.get(lab.session_id)
            seq += 1
            draft = dict(seq=seq, session_id=lab.session_id, label=lab.label, source=source,
                         who=who, at=when, previous=before.label if before else None,
                         previous_source=before.source if before else None,
                         weight=lab.weight, chain="")
            e = LabelEvent(**draft)
            e = e.model_copy(update={"chain": e.expected_chain(chain)})
            events.append(e)
            latest[lab.session_id], chain = e, e.chain
        return LabelSet(events=tuple(events))

    def save(self, folder: Path) -> LabelSetManifest:
        """Write ``folder`` (new, inside the index): the events, then the manifest."""
        folder.mkdir(parents=True, exist_ok=False)
        body = "".join(e.model_dump_json() + "\n" for e in self.events).encode()
        with writing_file(folder / FILE) as tmp:
            tmp.write_bytes(body)
        man = LabelSetManifest(count=len(self.events), sha256=hashlib.sha256(body).hexdigest(),
                               head=self.head)
        with writing_file(folder / MANIFEST) as tmp:
            tmp.write_text(man.model_dump_json(indent=2))
        return man

    @classmethod
    def load(cls, folder: Path) -> LabelSet:
        """Read and check a label-set folder: the manifest, the file's checksum, each line's
        schema, the sequence and the chain. Anything off is a :class:`StoreError` naming the
        file (and line)."""
        man = _manifest(folder)
        path = folder / FILE
        try:
            body = path.read_bytes()
        except OSError as e:
            raise StoreError(f"the label set cannot be read: {e.strerror}", file=str(path)) \
                from None
        if hashlib.sha256(body).hexdigest() != man.sha256:
            raise StoreError("the label set does not match its manifest's checksum: it was "
                             "edited or damaged outside behavior_rag", file=str(path))
        events = _events(path, body)
        s = cls(events=tuple(events))
        if len(s) != man.count or s.head != man.head:
            raise StoreError(f"the label set holds {len(s)} events, its manifest says "
                             f"{man.count}", file=str(folder / MANIFEST))
        return s


def _manifest(folder: Path) -> LabelSetManifest:
    path = folder / MANIFEST
    try:
        man = LabelSetManifest.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as e:
        raise StoreError(f"the label set's manifest is unreadable: {str(e).splitlines()[0]}",
                         file=str(path)) from None
    if man.format_version != FORMAT:
        raise StoreError(f"label set format {man.format_version} is not one this version "
                         f"reads ({FORMAT})", file=str(path), field="format_version")
    return man


def _events(path: Path, body: bytes) -> list[LabelEvent]:
    events: list[LabelEvent] = []
    chain = GENESIS
    for n, line in enumerate(body.decode().splitlines(), start=1):
        try:
            e = LabelEvent.model_validate_json(line)
        except ValidationError as err:
            raise StoreError(f"label event is not valid: {err.errors()[0]['msg']}",
                             file=str(path), row=n) from None
        if e.seq != n or e.chain != e.expected_chain(chain):
            raise StoreError("the label set's audit chain is broken here (an event was "
                             "edited, removed or moved)", file=str(path), row=n)
        events.append(e)
        chain = e.chain
    return events


def _draw(session_id: str) -> float:
    """A fixed number in [0, 1) per session (the same on every fit)."""
    return int(hashlib.sha256(session_id.encode()).hexdigest()[:8], 16) / 16**8
