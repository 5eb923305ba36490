"""The featurizer: from sessions to what the chosen heads and the asked-for output read, and
nothing more.

Facts are always computed (evidence cites them). Rendering, embedding and the index search
happen only when something needs them: a head that reads vectors or neighbours, similar-session
voters asked for, or the LLM's few-shot prompt. :attr:`Featurizer.stats` counts what was
computed, so a facts-only model can be seen to embed nothing. Live sessions keep their cut,
guarded events and facts per appended event and hand them in whole
(:meth:`Featurizer.prepare_known`): the same rows without a pass over the session.

Example:
    >>> fz = Featurizer(index, embedder, settings)                        # doctest: +SKIP
    >>> rows = fz.prepare(sessions, needs={"facts"})                      # doctest: +SKIP
    >>> fz.stats.embedded                                                 # doctest: +SKIP
    0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from pydantic import BaseModel

from behavior_rag.embed.base import Embedder
from behavior_rag.facts import compute_facts
from behavior_rag.guard import guard_session
from behavior_rag.heads.base import HeadInputs
from behavior_rag.history import Propensity, UserHistory
from behavior_rag.index.base import VectorIndex
from behavior_rag.index.build import encode
from behavior_rag.labels.targets import InputCut, Target
from behavior_rag.llm.base import ChatMessage
from behavior_rag.render import render
from behavior_rag.retrieve import Example, labelled_neighbors
from behavior_rag.running_facts import Snapshot
from behavior_rag.settings import Settings
from behavior_rag.types import Session, SessionFacts


@dataclass
class Prepared:
    """One session with what was computed for it (``vector`` None: not embedded;
    ``neighbors`` None: not searched)."""

    session: Session
    facts: SessionFacts
    warnings: list[str]
    earlier: list[Session] = field(default_factory=list)  # the user's, for history facts
    before_point: bool = False  # too little before the target's prediction point
    text: str | None = None
    vector: np.ndarray | None = None
    neighbors: list[tuple[str, float]] | None = None
    neighbor_ids: list[str] = field(default_factory=list)
    hits: list = field(default_factory=list)  # SearchHit, for few-shot examples
    examples: list[Example] = field(default_factory=list)
    messages: list[ChatMessage] = field(default_factory=list)


class FeaturizerStats(BaseModel):
    """How many sessions were rendered, embedded and searched (cumulative)."""

    sessions: int = 0
    rendered: int = 0
    embedded: int = 0
    searched: int = 0


class Featurizer:
    """Facts (with the users' earlier sessions when the model reads them), and on demand
    texts, vectors and labelled neighbours."""

    def __init__(self, index: VectorIndex, embedder: Embedder, settings: Settings, *,
                 history: UserHistory | None = None,
                 propensity: Propensity | None = None, target: Target | None = None) -> None:
        self.index, self.embedder, self.settings = index, embedder, settings
        self.history, self.propensity = history, propensity
        self.target = target  # its input cut: what the model may see of a session
        self.stats = FeaturizerStats()

    def prepare(self, sessions: Sequence[Session], needs: set[str] | frozenset[str],
                *, k: int | None = None) -> list[Prepared]:
        """Facts of ``sessions``; ``vector`` / ``neighbors`` in ``needs``: those too (``k``
        neighbours, default ``classify.knn_k``)."""
        if self.target is not None:  # the events after the prediction point never reach us
            sessions = [self.target.input.cut(s, min_events=0) for s in sessions]
        cuts = [0] * len(sessions)
        if self.settings.classify.strip_instructions:
            guarded = [guard_session(s) for s in sessions]
            sessions, cuts = [g for g, _ in guarded], [n for _, n in guarded]
        tz = self.settings.render.timezone
        facts = [compute_facts(s, tz=tz) for s in sessions] if self.history is None else None
        return self._finish(sessions, facts, cuts, needs, k)

    def prepare_known(self, known: Sequence[Snapshot], needs: set[str] | frozenset[str],
                      *, k: int | None = None) -> list[Prepared]:
        """:meth:`prepare` for sessions already cut at the target's prediction point and
        guarded, with their facts (live sessions keep them per appended event,
        :class:`~behavior_rag.running_facts.RunningFacts`): the same rows, without a pass
        over the events. Check :meth:`matches` first.

        Example:
            >>> fz.prepare_known([running.snapshot()], {"facts"})[0].facts   # doctest: +SKIP
        """
        return self._finish([s.session for s in known], [s.facts for s in known],
                            [s.cuts for s in known], needs, k)

    def matches(self, cut: InputCut | None, *, guard: bool, tz: str) -> bool:
        """Whether sessions cut by ``cut``, guarded or not, with facts in ``tz`` are what
        :meth:`prepare` would make of them (a refit may have moved the prediction point)."""
        def real(c: InputCut | None) -> InputCut | None:  # "all" cuts nothing
            return None if c is None or c.kind == "all" else c

        mine = real(self.target.input) if self.target is not None else None
        return mine == real(cut) and guard == self.settings.classify.strip_instructions and \
            tz == self.settings.render.timezone

    def _finish(self, sessions: list[Session], facts: list[SessionFacts] | None,
                cuts: list[int], needs: set[str] | frozenset[str], k: int | None
                ) -> list[Prepared]:
        """Rows of cut, guarded ``sessions`` (``facts`` None: computed here), with their
        warnings and the users' history facts; vectors / neighbours by ``needs``."""
        short = [self.target is not None and s.n_events < self.target.min_events
                 for s in sessions]
        warnings = [([f"nothing before the prediction point ({self.target.input})"] if b
                     else []) + ([f"{n} instruction-like span(s) cut from free text"] if n
                                 else []) for b, n in zip(short, cuts)]
        earlier: list[list[Session]] = [[] for _ in sessions]
        if self.history is not None:  # it keeps what it read of each earlier session (digests)
            tz = self.settings.render.timezone
            both = [self.history.facts(s, self.propensity) for s in sessions]
            earlier = [e for e, _ in both]
            facts = [compute_facts(s, tz=tz, history=h) for s, (_, h) in zip(sessions, both)] \
                if facts is None else [f.model_copy(update={"history": h})
                                       for f, (_, h) in zip(facts, both)]
        self.stats.sessions += len(sessions)
        out = [Prepared(s, f, w, e, before_point=b)
               for s, f, w, e, b in zip(sessions, facts, warnings, earlier, short)]
        if "neighbors" in needs:
            return self.search(out, k)
        if "vector" in needs:
            return self.embed(out)
        return out

    def embed(self, prepared: list[Prepared]) -> list[Prepared]:
        """Texts and text vectors of those not embedded yet (one batch)."""
        todo = [i for i, p in enumerate(prepared) if p.vector is None]
        if not todo:
            return prepared
        texts = [render(prepared[i].session, settings=self.settings, facts=prepared[i].facts)
                 for i in todo]
        vecs = self.embedder.embed(texts)
        self.stats.rendered += len(todo)
        self.stats.embedded += len(todo)
        out = list(prepared)
        for i, t, v in zip(todo, texts, vecs):
            out[i] = replace(out[i], text=t, vector=v)
        return out

    def search(self, prepared: list[Prepared], k: int | None = None) -> list[Prepared]:
        """Labelled neighbours of those not searched yet (never the session's own user)."""
        prepared = self.embed(prepared)
        todo = [i for i, p in enumerate(prepared) if p.neighbors is None]
        if not todo:
            return prepared
        cs = self.settings.classify
        k = k or max(cs.knn_k, cs.k_examples * 4)
        # the index's own vectors (hybrid: with the facts) find the neighbours; the text
        # vector stays the embedding head's input
        queries = encode(self.index, np.array([prepared[i].vector for i in todo]),
                         [(prepared[i].session, prepared[i].facts) for i in todo])
        self.stats.searched += len(todo)
        out = list(prepared)
        for i, q in zip(todo, queries):
            s = out[i].session
            hits = labelled_neighbors(self.index, q, k, session_id=s.session_id,
                                      user_id=s.user_id)
            near = hits[: cs.knn_k]
            out[i] = replace(out[i], hits=hits, neighbors=[(h.meta.label, h.score) for h in near],
                             neighbor_ids=[h.meta.session_id for h in near])
        return out


def head_inputs(prepared: Sequence[Prepared], *, history: bool = False) -> HeadInputs:
    """The heads' rows of prepared sessions (built without validation: its parts are
    validated already, and pydantic would run ``Session``'s order check again on every
    event — O(session) per call)."""
    return HeadInputs.model_construct(
        sessions=[p.session for p in prepared], facts=[p.facts for p in prepared],
        vectors=np.array([p.vector for p in prepared])
        if prepared and all(p.vector is not None for p in prepared) else None,
        neighbors=[p.neighbors for p in prepared]
        if all(p.neighbors is not None for p in prepared) else None,
        history=history)
