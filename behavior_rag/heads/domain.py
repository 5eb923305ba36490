"""Is a session like the ones the model was fitted on? A check on the session's facts.

Fitted on the training sessions' fact features (:data:`FACT_FEATURES`, whatever heads the
model uses), it notes per feature the range the training sessions span and whether the value
is always, sometimes or never known there. A session's oddities are the features outside that
(a price where training never had one, a count far beyond anything seen). The number of
oddities a session may have is fitted on the dev sessions so that about 1 % of them are
flagged; a flagged prediction abstains and says why (``behavior_rag.classify.decider``).

Example:
    >>> import numpy as np
    >>> x = np.array([[1.0, 5.0], [2.0, 6.0], [3.0, 7.0]] * 20)
    >>> d = DomainCheck.fit(x, ["a", "b"], x)
    >>> d.oddities(np.array([[2.0, 6.0], [2.0, np.nan]]))
    [[], ['b unknown (known in every training session)']]
    >>> d.counts(np.array([[2.0, 6.0], [99.0, np.nan]])).tolist()
    [0, 2]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from behavior_rag.heads.features import facts_features
from behavior_rag.types import Session, SessionFacts


class FeatureRange(BaseModel):
    name: str
    lo: float | None = None  # None: never known in training
    hi: float | None = None
    known: float = Field(description="Share of training sessions where it is known.")


class DomainCheck(BaseModel):
    features: list[FeatureRange]
    max_oddities: int = Field(0, ge=0, description="More than this: outside the domain.")
    dev_flagged: float = Field(0.0, description="Share of dev sessions flagged.")

    @classmethod
    def fit(cls, x: np.ndarray, names: Sequence[str], dev: np.ndarray,
            target_rate: float = 0.01) -> DomainCheck:
        feats = []
        for j, name in enumerate(names):
            col = x[:, j]
            ok = col[~np.isnan(col)]
            if len(ok):
                lo, hi = np.quantile(ok, [0.005, 0.995])
                pad = 0.25 * (hi - lo) + 1e-9  # room around the training range
                feats.append(FeatureRange(name=name, lo=float(lo - pad), hi=float(hi + pad),
                                          known=len(ok) / len(col)))
            else:
                feats.append(FeatureRange(name=name, known=0.0))
        out = cls(features=feats)
        counts = out.counts(dev) if len(dev) else np.zeros(1)
        k = 0
        while (counts > k).mean() > target_rate:
            k += 1
        return out.model_copy(update={"max_oddities": k,
                                      "dev_flagged": float((counts > k).mean())})

    def oddities(self, x: np.ndarray) -> list[list[str]]:
        """Per row, what is unlike the training sessions (empty: nothing)."""
        out = []
        for row in x:
            odd = []
            for f, v in zip(self.features, row.tolist()):
                if np.isnan(v):
                    if f.known >= 0.99:
                        odd.append(f"{f.name} unknown (known in every training session)")
                elif f.lo is None or f.known <= 0.01:
                    odd.append(f"{f.name} {v:g} (never known in training)")
                elif not f.lo <= v <= f.hi:
                    odd.append(f"{f.name} {v:g} (training {f.lo:g} to {f.hi:g})")
            out.append(odd)
        return out

    def counts(self, x: np.ndarray) -> np.ndarray:
        """Per row, the number of oddities (what :meth:`oddities` lists), vectorised."""
        known = np.array([f.known for f in self.features])
        lo = np.array([np.nan if f.lo is None else f.lo for f in self.features])
        hi = np.array([np.nan if f.hi is None else f.hi for f in self.features])
        nan = np.isnan(x)
        never = ~nan & ((known <= 0.01) | np.isnan(lo))
        with np.errstate(invalid="ignore"):
            out = ~nan & ~never & ((x < lo) | (x > hi))
        return (nan & (known >= 0.99)).sum(1) + never.sum(1) + out.sum(1)

    def check(self, x: np.ndarray) -> list[list[str]]:
        """Per row of fact features: its oddities when there are more than allowed, else
        empty."""
        flagged = self.counts(x) > self.max_oddities
        return [self.oddities(x[i: i + 1])[0] if f else [] for i, f in enumerate(flagged)]


def fit_domain(train: Sequence[Session], train_facts: Sequence[SessionFacts] | None,
               dev: Sequence[Session], dev_facts: Sequence[SessionFacts] | None
               ) -> DomainCheck:
    x, names = facts_features(train, train_facts)
    xd, _ = facts_features(dev, dev_facts)
    return DomainCheck.fit(x, names, xd)
