"""Session vectors as the index holds them: the text embedding, optionally joined with the
session's facts (hybrid vectors).

Renderings are dominated by item and category ids, which say little about how a shopper
behaved; the facts say it directly. A hybrid vector is

    normalise([sqrt(1 - w) * t, sqrt(w) * z / sqrt(d)])

with ``t`` the unit text vector and ``z`` the ``d`` scalar facts after a signed log (counts and
seconds are heavy-tailed) and a z-score with the mean and scale fixed when the index was first
built (clipped at ``Z_CLIP``, so one extreme session cannot dominate). ``w`` is the facts'
share: fitted on labelled dev sessions by ``BehaviorRAG.fit`` (neighbour label agreement), or
the ``index.hybrid_weight`` setting. Free-text queries have no facts: they search with the text
part alone (same ranking as a text index, scaled).

Example:
    >>> from behavior_rag.synth import generate
    >>> sessions = generate(40, seed=1).sessions
    >>> spec = HybridSpec.fit(sessions, weight=0.5)
    >>> len(spec.facts) == len(spec.mean) == len(FACTS)
    True
    >>> t = np.ones((len(sessions), 4), dtype=np.float32) / 2
    >>> spec.join(t, fact_rows(sessions)).shape
    (40, 19)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from behavior_rag.embed.base import Embedder, normalise
from behavior_rag.facts import compute_facts
from behavior_rag.render import render
from behavior_rag.settings import Settings, default_settings
from behavior_rag.types import Session, SessionFacts

# Scalar facts that describe behaviour (name -> how a reader calls it); discovery describes
# clusters by the same list.
FACTS: dict[str, str] = {
    "n_events": "events", "n_view": "item views", "n_search": "searches", "n_cart": "carts",
    "n_remove_from_cart": "cart removals", "n_fav": "favourites", "n_purchase": "purchases",
    "duration_s": "session seconds", "dwell_median_s": "median seconds per step",
    "distinct_categories": "categories", "distinct_brands": "brands",
    "price_median": "median price", "max_views_one_item": "views of the most viewed item",
    "carted_not_purchased": "carted items not bought", "start_hour": "local start hour",
}
Z_CLIP = 4.0
WEIGHT_GRID = (0.0, 0.25, 0.5, 0.7, 0.85, 0.95)


def fact_rows(sessions: Sequence[Session], facts: Sequence[SessionFacts] | None = None,
              names: Sequence[str] = tuple(FACTS)) -> np.ndarray:
    """``(n, len(names))`` float64 fact values (NaN where a fact is unknown)."""
    facts = facts if facts is not None else [compute_facts(s) for s in sessions]
    return np.array([[float(v) if (v := getattr(f, n).value) is not None else np.nan
                      for n in names] for f in facts], dtype=float).reshape(len(facts),
                                                                            len(names))


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


class HybridSpec(BaseModel):
    """How an index joins facts to text vectors; recorded in the index's ``config.json``."""

    facts: list[str] = Field(description="Fact names, in vector order.")
    mean: list[float] = Field(description="Per fact, the mean of its signed log at build.")
    scale: list[float] = Field(description="Per fact, the standard deviation (1 if constant).")
    weight: float = Field(ge=0.0, le=1.0, description="The facts' share of each vector's "
                          "squared norm (0: text only, 1: facts only).")
    fitted: str = Field("setting", description="Where the weight came from: 'setting' or "
                        "'dev: agreement@10' (BehaviorRAG.fit).")
    dev_agreement: dict[str, float] = Field(default_factory=dict, description="Weight -> dev "
                                            "agreement@10, for a weight fitted on dev.")

    # an index's config.json is read through these: a hand-made or damaged spec is refused,
    # naming the field, instead of silently making other vectors (or a traceback)
    @field_validator("facts")
    @classmethod
    def _known_facts(cls, v: list[str]) -> list[str]:
        unknown = [f for f in v if f not in FACTS]
        if unknown:
            raise ValueError(f"unknown fact {unknown[0]!r} (known: {list(FACTS)})")
        if v != list(FACTS):  # vectors are made from every fact, in this order (fact_rows)
            raise ValueError(f"the facts must be this version's {len(FACTS)} facts in order "
                             f"{list(FACTS)}; got {len(v)}: rebuild the index")
        return v

    @field_validator("mean", "scale")
    @classmethod
    def _per_fact(cls, v: list[float], info: ValidationInfo) -> list[float]:
        facts = info.data.get("facts")
        if facts is not None and len(v) != len(facts):
            raise ValueError(f"{len(v)} values for {len(facts)} facts")
        if not np.isfinite(np.asarray(v, dtype=float)).all():
            raise ValueError("every value must be finite")
        if info.field_name == "scale" and any(x <= 0 for x in v):
            raise ValueError("every value must be > 0")
        return v

    @classmethod
    def fit(cls, sessions: Sequence[Session], *, weight: float, fitted: str = "setting",
            facts: Sequence[SessionFacts] | None = None) -> HybridSpec:
        """Mean and scale of the facts of ``sessions`` (the index's first batch)."""
        return cls.from_rows(fact_rows(sessions, facts), weight, fitted)

    @classmethod
    def from_rows(cls, rows: np.ndarray, weight: float, fitted: str = "setting") -> HybridSpec:
        """Mean and scale of raw fact rows (:func:`fact_rows`)."""
        x = _signed_log(rows)
        with warnings.catch_warnings():  # a fact no session has (no prices) is all-NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mu = np.nan_to_num(np.nanmean(x, axis=0)) if len(x) else np.zeros(x.shape[1])
            sd = np.nan_to_num(np.nanstd(x, axis=0)) if len(x) else np.ones(x.shape[1])
        sd = np.where(sd > 1e-9, sd, 1.0)
        return cls(facts=list(FACTS), mean=mu.round(6).tolist(), scale=sd.round(6).tolist(),
                   weight=weight, fitted=fitted)

    @property
    def extra_dim(self) -> int:
        return len(self.facts)

    def fact_part(self, rows: np.ndarray) -> np.ndarray:
        """Raw fact rows (:func:`fact_rows`) -> clipped z-scores over sqrt(d), float32."""
        z = (_signed_log(rows) - np.asarray(self.mean)) / np.asarray(self.scale)
        z = np.clip(np.nan_to_num(z), -Z_CLIP, Z_CLIP)  # unknown fact = average
        return (z / np.sqrt(max(self.extra_dim, 1))).astype(np.float32)

    def join(self, text_vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Unit hybrid vectors from unit text vectors and raw fact rows."""
        t = np.asarray(text_vectors, dtype=np.float32)
        x = np.hstack([np.sqrt(1.0 - self.weight) * t,
                       np.sqrt(self.weight) * self.fact_part(rows)])
        return normalise(x)

    def text_only(self, text_vectors: np.ndarray) -> np.ndarray:
        """Query vectors for free text: the text part, facts zero (ranks like the text)."""
        t = np.asarray(text_vectors, dtype=np.float32)
        return np.hstack([t, np.zeros((len(t), self.extra_dim), dtype=np.float32)])

    def with_weight(self, weight: float, fitted: str,
                    scores: dict[str, float] | None = None) -> HybridSpec:
        return self.model_copy(update={"weight": weight, "fitted": fitted,
                                       "dev_agreement": scores or {}})


def agreement_at_k(queries: np.ndarray, q_labels: Sequence[str], q_users: Sequence[str],
                   pool: np.ndarray, p_labels: Sequence[str], p_users: Sequence[str],
                   k: int = 10) -> float:
    """Mean share of each query's ``k`` nearest pool rows (other users only) that share its
    label — the measure the hybrid weight is chosen by."""
    if not len(queries) or not len(pool):
        return 0.0
    sims = queries @ pool.T
    same_user = np.asarray(q_users)[:, None] == np.asarray(p_users)[None, :]
    sims[same_user] = -np.inf
    k = min(k, pool.shape[0])
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    pl = np.asarray(p_labels)
    ok = np.isfinite(np.take_along_axis(sims, top, axis=1))
    hits = (pl[top] == np.asarray(q_labels)[:, None]) & ok
    return float((hits.sum(1) / np.maximum(ok.sum(1), 1)).mean())


def choose_weight(spec: HybridSpec, train_text: np.ndarray, train_rows: np.ndarray,
                  train: Sequence[Session], dev_text: np.ndarray, dev_rows: np.ndarray,
                  dev: Sequence[Session], grid: Sequence[float] = WEIGHT_GRID) -> HybridSpec:
    """The grid weight whose vectors give dev sessions the most same-label neighbours among
    train sessions of other users (ties: the smaller weight)."""
    scores = {}
    for w in grid:
        s = spec.with_weight(w, "")
        scores[w] = agreement_at_k(s.join(dev_text, dev_rows), [x.label for x in dev],
                                   [x.user_id for x in dev], s.join(train_text, train_rows),
                                   [x.label for x in train], [x.user_id for x in train])
    best = max(grid, key=lambda w: (round(scores[w], 4), -w))
    return spec.with_weight(best, f"dev: agreement@10 of {len(dev)} sessions",
                            {f"{w:g}": round(v, 4) for w, v in scores.items()})


def fit_hybrid(embedder: Embedder, train: Sequence[Session], dev: Sequence[Session], *,
               settings: Settings | None = None) -> HybridSpec:
    """A hybrid spec for labelled ``train`` (mean and scale) with its weight chosen on ``dev``
    (see :func:`choose_weight`); texts are embedded once (the embedding cache keeps them)."""
    settings = settings or default_settings()
    tz = settings.render.timezone

    def parts(sessions: Sequence[Session]) -> tuple[np.ndarray, np.ndarray]:
        facts = [compute_facts(s, tz=tz) for s in sessions]
        texts = [render(s, settings=settings, facts=f) for s, f in zip(sessions, facts)]
        return embedder.embed(texts), fact_rows(sessions, facts)

    (tt, tr), (dt, dr) = parts(train), parts(dev)
    spec = HybridSpec.from_rows(tr, settings.index.hybrid_weight)
    return choose_weight(spec, tt, tr, train, dt, dr, dev)
