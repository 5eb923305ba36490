"""The cheap part of the classifier: the heads (registered by name, :mod:`.registry`) and
the stack that combines the ones cross-validation chooses.

:meth:`HeadsModel.fit` fits each asked-for head on the training sessions, getting its
out-of-fold probabilities by grouped K-fold (a user's sessions stay in one fold); the stack is
fitted on those rows plus the dev rows, and the abstain threshold on the stack's out-of-fold
probabilities of the dev rows. :meth:`HeadsModel.default` is the model of an index nobody
fitted: the kNN vote alone (label definitions are checked after it, as after any model).

Fitting does not depend on the installation: user ids are keyed pseudonyms (each installation
has its own key), and ingest orders sessions by them, so the folds group users by
:func:`~behavior_rag.ingest.pseudonym.split_keys` (what the data records about each user) and
the rows are fitted in an order set by that key and each session's content.

A fitted model is not changed afterwards: fitting again gives a new one.

Example:
    >>> model, stats = HeadsModel.fit(train_rows, dev_rows, taxonomy.names)  # doctest: +SKIP
    >>> model.predict(rows).stacked.argmax(1)                            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from behavior_rag.errors import ConfigError
from behavior_rag.facts import compute_facts
from behavior_rag.heads.base import Contributions, Head, HeadInputs
from behavior_rag.heads.domain import DomainCheck, fit_domain
from behavior_rag.heads.knn import KnnHead
from behavior_rag.heads.registry import head_class
from behavior_rag.heads.stack import Metric, Stack
from behavior_rag.heads.threshold import best_threshold
from behavior_rag.history import Propensity, UserHistory, history_facts
from behavior_rag.ingest.pseudonym import session_content, split_keys
from behavior_rag.types import SessionFacts

DEFAULT_HEADS = ("facts", "forest", "embed", "knn")
__all__ = ["DEFAULT_HEADS", "FitStats", "HeadInputs", "HeadOutputs", "HeadsModel"]


class HeadOutputs(BaseModel):
    """Per-head probabilities ``[sessions, classes]`` (the heads that were run), the stack's,
    and (when asked) what moved each prediction (:meth:`contributions_of`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    heads: dict[str, np.ndarray]
    stacked: np.ndarray
    contributions: Contributions | None = None

    def contributions_of(self, row: int, cls: int) -> dict[str, float]:
        """Input -> summed contribution toward class ``cls`` for one session."""
        return self.contributions.of(row, cls) if self.contributions is not None else {}


class FitStats(BaseModel):
    """What fitting measured on the dev rows (stack out-of-fold, so not in-sample)."""

    n_train: int
    n_dev: int
    dev_metrics: dict[str, float] = Field(default_factory=dict)
    abstain_below: float = 0.0
    threshold: float | None = Field(None, description="Two labels with a positive one: the "
                                    "probability of the positive label from which a session "
                                    "is called positive (F1 of the positive label on dev).")
    facts_rounds: int | None = Field(None, description="Boosting rounds of the facts head, "
                                     "chosen by out-of-fold log-loss.")


def _folds(sessions: Sequence, k: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped K-fold (a user's sessions in one fold), users keyed by :func:`split_keys` so
    the same data gives the same folds on every installation (GroupKFold breaks ties between
    groups of equal size by their keys' order)."""
    from sklearn.model_selection import GroupKFold

    keys = split_keys(sessions)
    groups = [keys[s.user_id] for s in sessions]
    k = min(k, len(set(groups)))
    if k < 2:
        raise ConfigError("fitting needs labelled sessions of at least two users",
                          field="train")
    return list(GroupKFold(k).split(np.zeros(len(groups)), groups=groups))


def _portable_order(sessions: Sequence) -> np.ndarray:
    """Row positions sorted by what the data records (user key, session content, label), not by
    ids or input order, which follow the installation's pseudonym key."""
    keys = split_keys(sessions)
    rank = [(keys[s.user_id], session_content(s), s.label or "") for s in sessions]
    return np.array(sorted(range(len(rank)), key=rank.__getitem__), dtype=int)


def fit_abstain(p: np.ndarray, y: Sequence[str], classes: Sequence[str],
                cost: float = 1.0) -> float:
    """The confidence below which answering loses more than it wins on dev: a right answer
    counts +1, a wrong one ``-cost``, an abstention 0."""
    conf, right = p.max(1), np.asarray(classes)[p.argmax(1)] == np.asarray(list(y))
    order = np.argsort(conf)
    gain = np.where(right[order], 1.0, -cost)
    # abstaining on the i lowest-confidence rows keeps gain[i:]
    kept = np.concatenate([[gain.sum()], gain.sum() - np.cumsum(gain)])
    i = int(np.argmax(kept))
    return 0.0 if i == 0 else float(conf[order][i - 1]) + 1e-9


def fit_threshold(p: np.ndarray, y: Sequence[str], classes: Sequence[str],
                  positive: str | None) -> float | None:
    """For two labels with a ``positive`` one: the dev probability threshold that maximises
    the positive label's F1 (None otherwise). Why: on a rare positive (6 % of Taobao pre-cart
    sessions) its probability seldom passes 0.5, so an argmax labels every session negative."""
    if positive is None or len(classes) != 2 or positive not in classes:
        return None
    return best_threshold(np.asarray(list(y)) == positive, p[:, list(classes).index(positive)])


class HeadsModel:
    """The heads by name and the stack over the ones it chose; immutable once fitted."""

    def __init__(self, classes: Sequence[str], heads: dict[str, Head], stack: Stack, *,
                 abstain_below: float = 0.0, propensity: Propensity | None = None,
                 threshold: float | None = None, history: bool = False,
                 domain: DomainCheck | None = None) -> None:
        self.classes, self.heads, self.stack = list(classes), dict(heads), stack
        self.domain = domain  # what the training sessions looked like (None: not checked)
        self.abstain_below = abstain_below
        self.propensity = propensity  # from the training sessions (history features only)
        self.threshold = threshold  # two labels with a positive one: see fit_threshold
        self.history = history  # the facts carry the users' earlier sessions

    @classmethod
    def default(cls, classes: Sequence[str]) -> HeadsModel:
        """The model of an index nobody fitted: the kNN vote of labelled neighbours."""
        stack = Stack(classes)
        stack.chosen = ["knn"]  # identity: the vote's own probabilities (see predict)
        return cls(classes, {"knn": KnnHead(classes)}, stack)

    @property
    def fitted(self) -> bool:
        return self.stack.model is not None

    @property
    def chosen(self) -> list[str]:
        return list(self.stack.chosen)

    def needs(self, heads: Sequence[str] | None = None) -> set[str]:
        """What the featurizer must compute for ``heads`` (default: the chosen ones)."""
        names = heads or self.chosen
        return {n for h in names if h in self.heads for n in self.heads[h].needs}

    def decision(self) -> tuple[str, float] | None:
        """``(positive label, threshold)`` when labels are decided by a threshold."""
        pos = self.stack.positive
        return (pos, self.threshold) if pos is not None and self.threshold is not None else None

    def predict(self, rows: HeadInputs, *, explain: bool = False,
                heads: Sequence[str] | None = None) -> HeadOutputs:
        """Probabilities of the chosen heads and the stack (``heads``: run these too);
        ``explain``: with what moved each chosen head that can say."""
        names = list(dict.fromkeys([*self.chosen, *(heads or ())]))
        missing = [h for h in names if h not in self.heads]
        if missing:
            raise ConfigError(f"this model has no head {missing[0]!r}; it has "
                              f"{sorted(self.heads)}", field="heads", value=missing[0])
        parts = {h: self.heads[h].predict_proba(rows) for h in names}
        stacked = self.stack.predict_proba(parts) if self.fitted else parts[self.chosen[0]]
        out = HeadOutputs(heads=parts, stacked=stacked)
        if explain and rows.sessions:
            # each head's share of the stacked log-odds: its own contributions times its
            # weight in the pool (exact for the pool's log-linear form)
            w = self.stack.weights() if self.fitted else {}
            got = [(h, c) for h in self.chosen
                   if (c := self.heads[h].contributions(rows, parts[h])) is not None]
            if got:
                out.contributions = Contributions(
                    values=np.concatenate([c.values * w.get(h, 1.0) for h, c in got], axis=2),
                    names=[n for _, c in got for n in c.names])
        return out

    @classmethod
    def fit(cls, train: HeadInputs, dev: HeadInputs, classes: Sequence[str], *,
            heads: Sequence[str] = DEFAULT_HEADS, metric: Metric = "log_loss",
            positive: str | None = None, abstain_cost: float = 1.0, seed: int = 0,
            history: UserHistory | None = None,
            options: dict[str, dict] | None = None) -> tuple[HeadsModel, FitStats]:
        """Fit ``heads`` (names in the registry; ``options``: per head, keyword arguments of
        its class) and the stack. ``history``: the users' sessions, for cross-session facts
        (earlier sessions only; purchase propensities of the positive label from the training
        rows, out-of-fold)."""
        classes = list(classes)
        _check_labels(train, classes, "train")
        _check_labels(dev, classes, "dev")
        # fit in the portable order; the stack's out-of-fold rows go back to the given order
        order_tr, order_dev = _portable_order(train.sessions), _portable_order(dev.sessions)
        train, dev = train.subset(order_tr), dev.subset(order_dev)
        folds = _folds(train.sessions)
        y_tr, y_dev = np.array(train.labels), np.array(dev.labels)
        prop, use_history = None, history_covers(history, train, dev)
        if use_history:
            target = y_tr == positive if positive is not None else None
            train, dev, prop = _with_history(train, dev, history, folds, target)
        fitted, oof = {}, {}
        for name in heads:
            head = head_class(name)(classes, seed=seed, **(options or {}).get(name, {}))
            oof[name] = head.fit(train, y_tr, folds)
            fitted[name] = head
        dev_parts = {n: h.predict_proba(dev) for n, h in fitted.items()}
        stack = Stack(classes, metric, positive, seed=seed).fit(
            {n: np.vstack([oof[n], dev_parts[n]]) for n in fitted},
            np.concatenate([y_tr, y_dev]))
        dev_p = stack.oof[len(y_tr):]
        threshold = fit_threshold(dev_p, y_dev, classes, positive)
        # A threshold calls rare positives at low probability; abstaining below a confidence
        # would drop exactly those, so a two-label model with a threshold always answers.
        abstain = 0.0 if threshold is not None else fit_abstain(dev_p, y_dev, classes,
                                                                abstain_cost)
        stack.oof = stack.oof[np.concatenate([np.argsort(order_tr),
                                              len(order_tr) + np.argsort(order_dev)])]
        model = cls(classes, fitted, stack, abstain_below=abstain, propensity=prop,
                    threshold=threshold, history=use_history,
                    domain=fit_domain(train.sessions, train.facts, dev.sessions, dev.facts))
        facts = fitted.get("facts")
        return model, FitStats(n_train=len(y_tr), n_dev=len(y_dev),
                               dev_metrics=dev_metrics(y_dev, dev_p, classes, positive),
                               abstain_below=abstain, threshold=threshold,
                               facts_rounds=getattr(facts, "rounds", None))


def history_covers(history: UserHistory | None, train: HeadInputs, dev: HeadInputs) -> bool:
    """Whether cross-session facts are worth fitting: the dev rows (which stand for the
    sessions to classify) have earlier sessions about as often as the training rows. When
    only training users have a history (new users' past not recorded), the facts head would
    learn from features that are always empty later on, so they are left out."""
    if history is None or not len(history):
        return False

    def share(rows: HeadInputs) -> float:
        return float(np.mean([bool(history.earlier(s)) for s in rows.sessions]))

    dev_share = share(dev)
    return dev_share > 0 and dev_share >= 0.5 * share(train)


def _with_history(train: HeadInputs, dev: HeadInputs, history: UserHistory, folds,
                  target: np.ndarray | None) -> tuple[HeadInputs, HeadInputs, Propensity | None]:
    """Both parts with cross-session facts; a training row's propensities come from the
    other folds' rows (never its own label), the dev rows' from every training row."""
    def base(rows: HeadInputs) -> list[SessionFacts]:
        return rows.facts or [compute_facts(s) for s in rows.sessions]

    def add(rows: HeadInputs, facts: list[SessionFacts], idx, prop) -> None:
        for i in idx:
            s = rows.sessions[i]
            facts[i] = facts[i].model_copy(update={"history": history_facts(
                s, history.earlier(s), prop)})

    f_tr, f_dev = base(train), base(dev)
    for tr, te in folds:
        prop = Propensity.fit([train.sessions[i] for i in tr], target[tr]) \
            if target is not None else None
        add(train, f_tr, te, prop)
    prop = Propensity.fit(train.sessions, target) if target is not None else None
    add(dev, f_dev, range(len(dev.sessions)), prop)
    return (train.model_copy(update={"facts": f_tr, "history": True}),
            dev.model_copy(update={"facts": f_dev, "history": True}), prop)


def _check_labels(rows: HeadInputs, classes: Sequence[str], part: str) -> None:
    for i, lab in enumerate(rows.labels):
        if lab not in classes:
            raise ConfigError(f"{part} session {rows.sessions[i].session_id!r} has label "
                              f"{lab!r}, not one of {list(classes)}", row=i + 1,
                              field=f"{part}.{i}.label", value=lab)
    if not rows.sessions:
        raise ConfigError(f"no {part} sessions", field=part)


def dev_metrics(y: Sequence[str], p: np.ndarray, classes: Sequence[str],
                positive: str | None) -> dict[str, float]:
    """Macro-F1 and accuracy (and auPR / auROC of ``positive``) of probabilities ``p``."""
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

    y = np.asarray(list(y))
    pred = np.asarray(classes)[p.argmax(1)]
    out = {"macro_f1": float(f1_score(y, pred, labels=list(classes), average="macro",
                                      zero_division=0)),
           "accuracy": float(accuracy_score(y, pred))}
    if positive is not None and 0 < (y == positive).sum() < len(y):
        col = p[:, list(classes).index(positive)]
        out |= {"aupr": float(average_precision_score(y == positive, col)),
                "auroc": float(roc_auc_score(y == positive, col))}
    return out
