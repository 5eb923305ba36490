"""The ``items`` head: what the shop's own items and categories say about a session.

Two views of the items a session touched, both learnt from the training sessions:

* **item and category vectors** without labels: the positive PMI of items (categories) seen in
  the same session, factorised by truncated SVD (item2vec's skip-gram with a session-wide
  window is an implicit factorisation of this matrix; the SVD is exact, seeded and fast on two
  cores). A session is the mean vector of its items and of its categories.
* **label rates** of its items and categories: per label, the smoothed share of training
  sessions with that item that carry the label, as log-odds against the prior; a training
  row's rates come from the other folds only (never its own label).

A logistic regression reads both. It is linear in each item's share, so its evidence names the
items and categories that moved a decision (each checked against the session's events).

Example:
    >>> head = ItemHead(["buy", "no"])                                      # doctest: +SKIP
    >>> oof = head.fit(rows, y, folds)                                       # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from behavior_rag.heads.base import Contributions, Folds, Head, HeadInputs
from behavior_rag.heads.linear import LinearHead, load_linear, save_linear
from behavior_rag.types import Session

KINDS = ("item", "category")


class ItemParams(BaseModel):
    dim: int = Field(16, ge=2, le=256, description="Vector size per kind (item, category).")
    min_count: int = Field(2, ge=1, description="Sessions an item needs to get a vector/rate.")
    max_vocab: int = Field(50_000, ge=10, description="Most frequent items kept per kind.")
    strength: float = Field(5.0, gt=0, description="Pseudo-sessions at the prior (rates).")
    C: float = Field(0.3, gt=0, description="Inverse regularisation of the regression.")


def _keys(s: Session, kind: str) -> list[str]:
    vals = (e.item_id if kind == "item" else e.category for e in s.events)
    return list(dict.fromkeys(v for v in vals if v))


def _vocab(sessions: Sequence[Session], kind: str, p: ItemParams) -> list[str]:
    counts = Counter(k for s in sessions for k in _keys(s, kind))
    kept = [k for k, c in counts.most_common(p.max_vocab) if c >= p.min_count]
    return sorted(kept)


def _vectors(sessions: Sequence[Session], vocab: list[str], kind: str, dim: int,
             seed: int) -> np.ndarray:
    """PPMI of session co-occurrence, truncated SVD: ``[vocab, dim]`` (rows unit length)."""
    from scipy import sparse
    from sklearn.decomposition import TruncatedSVD

    index = {k: i for i, k in enumerate(vocab)}
    rows, cols = [], []
    for r, s in enumerate(sessions):
        for k in _keys(s, kind):
            if k in index:
                rows.append(r)
                cols.append(index[k])
    n = len(vocab)
    if n < 3 or not rows:
        return np.zeros((n, dim))
    x = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(sessions), n))
    co = (x.T @ x).tocoo()
    total, marg = co.data.sum(), np.asarray((x.T @ x).sum(0)).ravel()
    pmi = np.log(co.data * total / (marg[co.row] * marg[co.col]))
    keep = (pmi > 0) & (co.row != co.col)
    m = sparse.csr_matrix((pmi[keep], (co.row[keep], co.col[keep])), shape=(n, n))
    k = min(dim, n - 1)
    v = TruncatedSVD(k, random_state=seed).fit_transform(m) if m.nnz else np.zeros((n, k))
    v = np.hstack([v, np.zeros((n, dim - k))])
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def _rates(sessions: Sequence[Session], y: Sequence[str], vocab: list[str], kind: str,
           classes: list[str], strength: float) -> np.ndarray:
    """``[vocab, classes]`` smoothed log-odds of each label among sessions with the key."""
    index = {k: i for i, k in enumerate(vocab)}
    counts = np.zeros((len(vocab), len(classes)))
    col = {c: j for j, c in enumerate(classes)}
    for s, lab in zip(sessions, y):
        for k in _keys(s, kind):
            if k in index:
                counts[index[k], col[lab]] += 1
    prior = np.array([(np.asarray(y) == c).mean() for c in classes]).clip(1e-3, 1 - 1e-3)
    share = (counts + strength * prior) / (counts.sum(1, keepdims=True) + strength)
    return np.log(share / (1 - share)) - np.log(prior / (1 - prior))


class ItemHead(Head):
    """Logistic regression on the mean item / category vectors and label rates of a session."""

    name = "items"
    needs = frozenset({"events"})

    def __init__(self, classes: Sequence[str], seed: int = 0, items: ItemParams | None = None
                 ) -> None:
        super().__init__(classes, seed)
        self.p = items or ItemParams()
        self.vocab: dict[str, list[str]] = {}
        self.vecs: dict[str, np.ndarray] = {}
        self.rates: dict[str, np.ndarray] = {}
        self.lr: LinearHead | None = None

    # ---- features: per session, the mean over its known keys of [vector, rates] ------------
    def _parts(self, s: Session, rates: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        """(name, feature row) per known key of the session: each key's own feature share."""
        out = []
        for kind in KINDS:
            index = {k: i for i, k in enumerate(self.vocab[kind])}
            keys = [k for k in _keys(s, kind) if k in index]
            for k in keys:
                row = np.zeros(self.width)
                off = KINDS.index(kind) * (self.p.dim + len(self.classes))
                i = index[k]
                row[off: off + self.p.dim] = self.vecs[kind][i]
                row[off + self.p.dim: off + self.p.dim + len(self.classes)] = rates[kind][i]
                out.append((f"{kind}:{k}", row / len(keys)))
        return out

    @property
    def width(self) -> int:
        return len(KINDS) * (self.p.dim + len(self.classes))

    def _matrix(self, sessions: Sequence[Session], rates: dict[str, np.ndarray]) -> np.ndarray:
        x = np.zeros((len(sessions), self.width + 2))
        for r, s in enumerate(sessions):
            parts = self._parts(s, rates)
            if parts:
                x[r, : self.width] = np.sum([row for _, row in parts], axis=0)
            # how much of the session the head knows (unknown items carry no signal)
            for j, kind in enumerate(KINDS):
                keys = _keys(s, kind)
                known = set(self.vocab[kind])
                x[r, self.width + j] = sum(k in known for k in keys) / len(keys) if keys else 0
        return x

    def fit(self, rows: HeadInputs, y: np.ndarray, folds: Folds) -> np.ndarray:
        sessions = rows.sessions
        self.vocab = {k: _vocab(sessions, k, self.p) for k in KINDS}
        self.vecs = {k: _vectors(sessions, self.vocab[k], k, self.p.dim, self.seed)
                     for k in KINDS}
        x_oof = np.zeros((len(sessions), self.width + 2))
        for tr, te in folds:  # a row's label rates come from the other folds
            rates = {k: _rates([sessions[i] for i in tr], y[tr], self.vocab[k], k,
                               self.classes, self.p.strength) for k in KINDS}
            x_oof[te] = self._matrix([sessions[i] for i in te], rates)
        self.rates = {k: _rates(sessions, y, self.vocab[k], k, self.classes, self.p.strength)
                      for k in KINDS}
        oof = np.zeros((len(y), len(self.classes)))
        for tr, te in folds:
            oof[te] = LinearHead(self.classes, C=self.p.C, seed=self.seed).fit(
                x_oof[tr], y[tr]).predict_proba(x_oof[te])
        self.lr = LinearHead(self.classes, C=self.p.C, seed=self.seed).fit(x_oof, y)
        return oof

    def predict_proba(self, rows: HeadInputs) -> np.ndarray:
        return self.lr.predict_proba(self._matrix(rows.sessions, self.rates))

    def contributions(self, rows: HeadInputs, probs: np.ndarray) -> Contributions | None:
        """Per session, the log-odds each of its known items and categories added toward each
        label (the regression is linear in each key's share of the features)."""
        coef = self.lr.coef[:, : self.width]  # [classes, features]
        per = [self._parts(s, self.rates) for s in rows.sessions]
        names = sorted({n for parts in per for n, _ in parts})
        if not names:
            return None
        col = {n: j for j, n in enumerate(names)}
        z = np.zeros((len(per), len(self.classes), len(names)))
        for r, parts in enumerate(per):
            for n, row in parts:
                z[r, :, col[n]] = coef @ row
        # toward class k against the others, weighted by their probabilities (as the facts
        # head's chain rule through the softmax)
        p = probs[:, :, None]
        s = np.einsum("nk,nkf->nf", probs, z)[:, None, :]
        rest = np.clip(1.0 - p, 1e-12, None)
        return Contributions(values=z - (s - p * z) / rest, names=names)

    def params(self) -> dict[str, Any]:
        return {"items": self.p.model_dump(mode="json"), "vocab": self.vocab}

    def save(self, folder: Path) -> list[str]:
        files = save_linear(self.lr, folder, "items_lr")
        for k in KINDS:
            for what, arr in (("vecs", self.vecs[k]), ("rates", self.rates[k])):
                np.save(folder / f"items_{k}_{what}.npy", arr, allow_pickle=False)
                files.append(f"items_{k}_{what}.npy")
        return files

    @classmethod
    def load(cls, folder: Path, classes: Sequence[str], params: dict[str, Any]) -> ItemHead:
        head = cls(classes, items=ItemParams.model_validate(params["items"]))
        head.vocab = {k: [str(v) for v in params["vocab"][k]] for k in KINDS}
        for k in KINDS:
            head.vecs[k] = np.load(folder / f"items_{k}_vecs.npy", allow_pickle=False)
            head.rates[k] = np.load(folder / f"items_{k}_rates.npy", allow_pickle=False)
            if head.vecs[k].shape != (len(head.vocab[k]), head.p.dim) or \
                    head.rates[k].shape != (len(head.vocab[k]), len(head.classes)):
                raise ValueError(f"saved {k} arrays do not match the vocabulary")
        head.lr = load_linear(folder, "items_lr", classes)
        return head
