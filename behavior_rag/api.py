"""``BehaviorRAG``: the in-process facade users call; :class:`behavior_rag.client.Client` offers
the same methods over HTTP.

It wires settings -> embedder -> index folder -> classifier / profiles / fine-tune; each step
lives in its own module.

Example:
    >>> from behavior_rag import BehaviorRAG, generate
    >>> rag = BehaviorRAG(index_path="indexes/demo")                      # doctest: +SKIP
    >>> rag.index_sessions(generate(200, seed=1).sessions)               # doctest: +SKIP
    >>> rag.save()                                                       # doctest: +SKIP
    >>> rag.similar(text="many views of cheap discounted items", k=3)    # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import overload

from behavior_rag.bounds import MAX_SPLIT
from behavior_rag.classify import Classifier
from behavior_rag.embed import Embedder, get_embedder
from behavior_rag.embed.base import EmbedderInfo, Progress
from behavior_rag.errors import ConfigError, TaxonomyError
from behavior_rag.finetune import finetune
from behavior_rag.fitting import FitReport, IndexInfo, fit_model
from behavior_rag.heads.store import load_model, model_taxonomy, save_model
from behavior_rag.history import UserHistory
from behavior_rag.index.base import Filter, VectorIndex
from behavior_rag.index.build import UpsertReport, upsert_sessions, with_hybrid
from behavior_rag.index.factory import create_index, open_index
from behavior_rag.index.folder import IndexFolder
from behavior_rag.index.reembed import recorded_model
from behavior_rag.index.storage import IndexConfig, has_config, read_config
from behavior_rag.ingest.pseudonym import UserIds
from behavior_rag.ingest.store import SessionStore
from behavior_rag.labels.book import LabelBook
from behavior_rag.labels.targets import Target
from behavior_rag.llm.factory import get_llm
from behavior_rag.profile import build_profile, user_sessions
from behavior_rag.retrieve import Neighbor, similar
from behavior_rag.settings import ClassifySettings, EmbedSettings, Settings, default_settings
from behavior_rag.taxonomy import Taxonomy, load_taxonomy
from behavior_rag.types import PatternPrediction, Session
from behavior_rag.vectors import HybridSpec, fit_hybrid

log = logging.getLogger(__name__)


class BehaviorRAG:
    """Index sessions, find similar shoppers, classify, profile and fine-tune.

    If ``index_path`` holds an index, it is loaded lazily and queries use the embedding backend
    it was built with (vectors from another model are refused on load).

    Every user id passed in (sessions, ``user_id``, filters) is pseudonymised with the
    installation's key before it is stored, searched or prompted; answers carry pseudonyms.
    ``rag.user_ids("12345")`` gives the pseudonym of one of your ids (to join results back).
    """

    def __init__(self, settings: Settings | None = None, index_path: str | Path | None = None,
                 *, fresh: bool = False, llm=None, embedder: Embedder | None = None) -> None:
        self.settings = settings or default_settings()
        self.index_path = Path(index_path) if index_path else self.settings.index_dir / "default"
        if not fresh and has_config(self.index_path):
            built = read_config(self.index_path).embedder
            recorded = recorded_model(self.index_path)
            if recorded and self.settings.embed.model == EmbedSettings().model:
                # `index reembed` recorded the (e.g. tuned) model: the default setting means
                # "whatever this index was made with", not "refuse it".
                log.info("using the index's embedding model %s", recorded)
                self.settings = self.settings.model_copy(update={
                    "embed": self.settings.embed.model_copy(update={"model": recorded})})
            if built.backend != self.settings.embed.backend:
                log.info("using the index's embedding backend %s", built.backend)
                self.settings = self.settings.model_copy(update={
                    "embed": self.settings.embed.model_copy(update={"backend": built.backend})})
        # an Embedder object overrides settings.embed (e.g. one registered by a plugin)
        self._embedder: Embedder | None = embedder
        self._index: VectorIndex | None = None
        self._classifier: Classifier | None = None
        self._history: UserHistory | None = None  # what a history-reading model was given
        self._llm = llm  # an LLMBackend object overrides settings.llm (e.g. LangChainBackend)
        # stores, locks and fitted files of the folder, committed together (index/folder.py)
        self.folder = IndexFolder(self.index_path, fresh=fresh,
                                  owner=f"{Path(sys.argv[0]).name} (BehaviorRAG)",
                                  lock_timeout_s=self.settings.index.lock_timeout_s)
        self.user_ids = UserIds(self.settings)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, index_path: str | Path | None = None,
                      **kw) -> BehaviorRAG:
        """Build from a :class:`Settings` (default: environment ``BEHAVIOR_RAG_*``).

        Example:
            >>> rag = BehaviorRAG.from_settings(Settings(llm={"backend": "none"}))  # doctest: +SKIP
        """
        return cls(settings, index_path, **kw)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.settings)
        return self._embedder

    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            if not self.folder.fresh and has_config(self.index_path):
                self.folder.loaded = read_config(self.index_path).data
                self._index = open_index(self.index_path, expect=self.embedder.info,
                                         spec=self.settings.index)
            else:
                self._index = create_index(self.embedder.info, self.settings.index)
        return self._index

    def index_sessions(self, sessions: Sequence[Session], *, split: str | None = None,
                       progress: Progress | None = None) -> UpsertReport:
        """Render, embed and upsert sessions (unchanged ones are skipped). Call :meth:`save`.

        A session's label, when it has one, must be in the configured taxonomy (checked before
        anything is embedded)."""
        if split is not None and len(split) > MAX_SPLIT:
            raise ConfigError(f"split name of {len(split)} characters; at most {MAX_SPLIT}",
                              field="split", value=split[:100])
        sessions = self.user_ids.sessions(sessions)
        self._check_labels(sessions, required=False)
        self._begin()
        report = upsert_sessions(self.index, self.embedder, sessions, settings=self.settings,
                                 split=split, progress=progress)
        self.sessions.upsert(sessions)
        if self._history is not None:  # the classifier reads this object
            self._history.add(sessions, override=False)
        return report

    @property
    def recorded(self) -> SessionStore:
        """Sessions recorded with :meth:`add_history` (``<index>/history/``)."""
        return self.folder.store("history")

    def add_history(self, sessions: Sequence[Session]) -> int:
        """Record shoppers' past sessions (events only: not embedded, not labelled) so fitting
        and classifying see each user's earlier sessions (``classify.history``). A recorded
        session wins over an indexed one with the same id (e.g. the full session over the
        prefix you index). Call :meth:`save` to commit.

        Example:
            >>> rag.add_history(all_past_sessions)                             # doctest: +SKIP
        """
        sessions = self.user_ids.sessions(sessions)
        self._begin()
        self.recorded.upsert(sessions)
        if self._history is not None:
            self._history.add(sessions)
        return len(sessions)

    def user_history(self) -> UserHistory | None:
        """The users' sessions the classifier looks back on (None: ``classify.history`` off)."""
        if not self.settings.classify.history:
            return None
        h = UserHistory(self.sessions.values())
        h.add(self.recorded.values())
        return h

    @property
    def sessions(self) -> SessionStore:
        """Indexed sessions with their events (``<index>/sessions/``): ``get(id)``,
        ``of_user(id)``, iteration; lookups read one slice, not the whole store."""
        return self.folder.store("sessions")

    def add_labelled(self, sessions: Sequence[Session], labels: Sequence[str] | None = None, *,
                     split: str | None = "train", progress: Progress | None = None
                     ) -> UpsertReport:
        """Index labelled sessions (the few-shot examples and kNN voters). ``labels`` overrides
        the sessions' own ``label``; every label must be in the configured taxonomy, checked
        before anything is embedded. Call :meth:`save` to commit.

        Example:
            >>> rag.add_labelled(train_sessions)                                # doctest: +SKIP
        """

        if labels is not None:
            if len(labels) != len(sessions):
                raise TaxonomyError(f"{len(labels)} labels for {len(sessions)} sessions",
                                    field="labels")
            sessions = [s.model_copy(update={"label": lab}) for s, lab in zip(sessions, labels)]
        self._check_labels(sessions, required=True)
        return self.index_sessions(sessions, split=split, progress=progress)

    @property
    def labels(self) -> LabelBook:
        """The index's label set: append-only and audited, committed with the folder
        (:mod:`behavior_rag.labels.labelset`); ``fit`` uses the latest label per session.

        Example:
            >>> rag.labels.add([NewLabel(session_id="s_1", label="deal_hunter")],
            ...                source="human", who="ana")                    # doctest: +SKIP
        """
        return LabelBook(self.folder, self.taxonomy(), self.sessions.__contains__)

    def taxonomy(self) -> Taxonomy:
        """The labels this index classifies with: the fitted model's taxonomy while
        ``classify.taxonomy`` is left at its default, else the configured one."""
        name = self.settings.classify.taxonomy
        return model_taxonomy(None if self.folder.fresh else self.model_path(), name,
                              configured=name != ClassifySettings().taxonomy)

    def _check_labels(self, sessions: Sequence[Session], *, required: bool) -> None:
        tax = load_taxonomy(self.settings.classify.taxonomy)
        for i, s in enumerate(sessions):
            if (s.label is not None or required) and s.label not in tax:
                raise TaxonomyError(
                    f"session {s.session_id!r} has label {s.label!r}, not one of the taxonomy "
                    f"{tax.name!r} labels {list(tax.names)}", row=i + 1,
                    field=f"sessions.{i}.label", value=s.label)

    def delete_sessions(self, session_ids: Sequence[str]) -> int:
        self._begin()
        ids = [m.id for s in session_ids if (m := self.index.get(s)) is not None]
        self.sessions.delete(session_ids)
        return self.index.delete(ids)

    def save(self) -> IndexConfig:
        """Commit the index folder atomically: vectors, metadata, the session stores' new
        segments and fitted files become visible together, by one rename of ``config.json``;
        then the writer lock (index/lock.py) is released."""
        return self.folder.commit(self.index)

    def _begin(self) -> None:
        self.folder.begin()

    def serve_folder(self, what: str) -> None:
        """Mark the folder as served by this process until :meth:`stop_serving`: other
        writers are then refused (told to write through the service) instead of committing
        under it; this object's own writes still take the writer lock for each commit."""
        self.folder.serve(what)

    def stop_serving(self) -> None:
        self.folder.stop_serving()

    def profile(self, user_id: str, *, sessions: Sequence[Session] | None = None,
                use_llm: bool = False, patterns: bool = False):
        """A :class:`~behavior_rag.profile.UserProfile` of ``user_id`` from the indexed sessions
        (or ``sessions``). ``use_llm``: let the configured LLM word claims (each re-checked);
        ``patterns``: classify the user's sessions and add their dominant patterns.

        Example:
            >>> rag.profile("u_3f2a...").narrative                              # doctest: +SKIP
        """

        user_id = self.user_ids(user_id)
        mine, now = user_sessions(user_id, None if sessions is None else
                                  self.user_ids.sessions(sessions), self.sessions)
        preds = self.classify_many(mine) if patterns and mine else None
        llm = None
        if use_llm:  # the LLM alone: no index, model or history to load for it
            llm = self._llm if self._llm is not None else self.classifier.llm \
                if self._classifier is not None else get_llm(self.settings)
        return build_profile(user_id, mine, llm=llm,
                             predictions=preds, now=now)

    def similar(self, *, session: Session | None = None, session_id: str | None = None,
                user_id: str | None = None, text: str | None = None, k: int = 10,
                filter: Filter | None = None, with_text: bool = False) -> list[Neighbor]:
        """Similar sessions (or users, for ``user_id``) — see :func:`behavior_rag.retrieve.similar`."""
        ids = self.user_ids
        if filter is not None and (filter.users or filter.exclude_users):
            filter = filter.model_copy(update={"users": ids.many(filter.users),
                                               "exclude_users": ids.many(filter.exclude_users)})
        return similar(self.index, self.embedder,
                       session=ids.session(session) if session is not None else None,
                       session_id=session_id, user_id=ids(user_id) if user_id else None,
                       text=text, k=k, flt=filter, with_text=with_text, settings=self.settings)

    # ---- classification -----------------------------------------------------------------
    @property
    def classifier(self) -> Classifier:
        """The classifier over this index: the fitted model of the last commit (else the
        default kNN model) and the LLM from settings (not loaded when ``classify.llm=never``)."""
        if self._classifier is None:
            model = self._load_model()
            tax = model.taxonomy if model else load_taxonomy(self.settings.classify.taxonomy)
            llm = self._llm if self._llm is not None else None if \
                self.settings.classify.llm == "never" else get_llm(self.settings)
            if model is None and (llm is None or self.settings.classify.llm == "never") and \
                    self.index.metadata()["label"].drop_nulls().is_empty():
                raise ConfigError("nothing to classify with: add labelled sessions or run "
                                  "behavior-rag fit", file=str(self.index_path), field="index")
            self._classifier = Classifier(
                self.index, self.embedder, llm, tax, settings=self.settings, model=model,
                # the sessions are read only for a model that looks back at them
                history=self._reading_history(model))
        return self._classifier

    def _reading_history(self, model) -> UserHistory | None:
        """The users' sessions for a model that reads them (kept current by later adds)."""
        self._history = self.user_history() if model and model.heads.history else None
        return self._history

    def _load_model(self):
        """The committed model, for the configured taxonomy; with ``classify.taxonomy`` left
        at its default, for the taxonomy the model was fitted with (as the embedder)."""
        if self.folder.fresh:
            return None
        mdir = self.model_path()
        if not (mdir / "manifest.json").exists():
            return None
        return load_model(mdir, taxonomy=self.taxonomy(), embedder=self.index.embedder)

    def fit(self, train: Sequence[Session], dev: Sequence[Session], *,
            heads: Sequence[str] | None = None, target: Target | None = None,
            progress: Callable[[str], None] | None = None) -> FitReport:
        """Fit the classifier on labelled sessions: index ``train`` as labelled examples, fit
        the heads (``heads``, default ``classify.heads``) and their stack (heads chosen by CV
        on the taxonomy's metric), the abstain threshold and the LLM cascade on ``dev``; then
        commit it all at once (vectors, sessions and model). :meth:`classify` then uses it.
        ``target``: the outcome target the sessions were labelled by
        (:func:`behavior_rag.labels.label_sessions`); the model records it, and fitting and
        classifying see sessions only up to its prediction point.

        Example:
            >>> rag.fit(train_sessions, dev_sessions).chosen                  # doctest: +SKIP
            ['facts', 'knn']
        """
        train, dev = self.user_ids.sessions(train), self.user_ids.sessions(dev)
        if target is not None:  # idempotent: sessions labelled by the target are cut already
            train, dev = ([target.input.cut(s, min_events=0) for s in part]
                          for part in (train, dev))
        self._check_labels(dev, required=True)
        self._begin()
        if self.settings.index.hybrid:
            self._use_hybrid(fit_hybrid(self.embedder, train, dev, settings=self.settings))
        self.add_labelled(train)
        # a previous model must not shape the new one: fit over the default model
        base = self.classifier.with_model(None)
        model = fit_model(base, list(train), list(dev), history=self.user_history(),
                          heads=heads, target=target, progress=progress)
        manifest = save_model(model, self.folder.new_model_path())
        self._classifier = base.with_model(model, self._reading_history(model))
        self.save()  # one commit: vectors, sessions and the model become visible together
        return FitReport(path=str(self.model_path()), chosen=manifest.chosen,
                         cv_loss=manifest.cv_loss, metric=manifest.metric, dev=manifest.dev,
                         cascade=manifest.cascade, hybrid=self.index.hybrid)

    def _use_hybrid(self, spec: HybridSpec) -> None:
        """Make vectors as ``spec`` says: set on an empty index, else rebuild the index from
        its kept sessions (texts come from the embedding cache)."""
        old = self.index
        kept = [s for s in self.sessions.values() if old.get(s.session_id)] if len(old) else []
        self._index = with_hybrid(old, self.embedder, kept, spec, settings=self.settings,
                                  where=str(self.index_path))
        if self._index is not old:
            self._classifier = None  # it holds the old index

    @overload
    def classify(self, session: Session, *, voters: bool = False) -> PatternPrediction: ...

    @overload
    def classify(self, session: Sequence[Session], *, voters: bool = False
                 ) -> list[PatternPrediction]: ...

    def classify(self, session, *, voters: bool = False):
        """Label one session, or a list of sessions (returns the shape it was given).
        ``voters``: also find the similar labelled sessions behind the label when the model
        does not read them anyway (a facts-only model then embeds and searches too).

        Example:
            >>> rag.classify(session).label                                     # doctest: +SKIP
            'deal_hunter'
        """
        if isinstance(session, Session):
            return self.classifier.classify(self.user_ids.session(session), voters=voters)
        return self.classify_many(list(session), voters=voters)

    def classify_many(self, sessions: Sequence[Session], *, progress: Progress | None = None,
                      voters: bool = False, heads: Sequence[str] = ()
                      ) -> list[PatternPrediction]:
        """Label sessions; results in input order (``heads``: run these heads too, for
        their probabilities in ``head_probabilities``)."""
        return self.classifier.classify_many(self.user_ids.sessions(sessions), progress=progress,
                                             voters=voters, heads=heads)

    def finetune(self, train: Sequence[Session], val: Sequence[Session], out: str | Path,
                 config=None):
        """LoRA-fine-tune the local model on labelled sessions (see
        :func:`behavior_rag.finetune.finetune`); use it with ``llm.adapter=out``."""

        return finetune(train, val, load_taxonomy(self.settings.classify.taxonomy), out=out,
                        config=config, settings=self.settings)

    def model_path(self) -> Path:
        """The fitted model's folder of this index's last commit (``<index>/model-<hex>``)."""
        return self.folder.model_path()

    def info(self) -> IndexInfo:
        cfg = read_config(self.index_path)
        frame = self.index.metadata()
        labels = frame["label"].drop_nulls().value_counts()
        return IndexInfo(path=str(self.index_path), config=cfg,
                         labels={r["label"]: r["count"] for r in labels.iter_rows(named=True)},
                         users=frame["user_id"].n_unique())

    @property
    def embedder_info(self) -> EmbedderInfo:
        return self.embedder.info
