"""The cheap part of the classifier: three heads and the stack that combines them.

* ``facts``: LightGBM over the session's feature vector (:mod:`behavior_rag.heads.gbm`);
* ``embed``: logistic regression on the session's embedding (:mod:`behavior_rag.heads.linear`);
* ``knn``: the similarity-weighted vote of the nearest labelled sessions of other users, its
  temperature and label calibration fitted on the training rows (:func:`behavior_rag.fusion.fit`).

:meth:`HeadsModel.fit` trains the facts and embedding heads on the training sessions and gets
their out-of-fold probabilities by grouped K-fold (a user's sessions stay in one fold); the kNN
vote is out-of-fold by construction (never the session's own user). The stack is fitted on
those rows plus the dev rows, and the abstain threshold on the stack's out-of-fold
probabilities of the dev rows.

Example:
    >>> model = HeadsModel.fit(train_rows, dev_rows, taxonomy)          # doctest: +SKIP
    >>> model.predict(rows).stacked.argmax(1)                            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from behavior_rag.errors import ConfigError
from behavior_rag.facts import compute_facts
from behavior_rag.fusion import DevExample, FusionParams, fit, knn_vote
from behavior_rag.heads.features import FeatureSpec
from behavior_rag.heads.gbm import FactsHead, GBMParams
from behavior_rag.heads.linear import LinearHead
from behavior_rag.heads.stack import Metric, Stack
from behavior_rag.heads.threshold import best_threshold
from behavior_rag.history import Propensity, UserHistory, history_facts
from behavior_rag.types import Session, SessionFacts

HEADS = ("facts", "embed", "knn")


class HeadInputs(BaseModel):
    """Sessions with what the heads read besides the events: their embedding vectors and their
    labelled neighbours ``(label, cosine)`` (never the session's own user)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sessions: list[Session]
    vectors: np.ndarray
    neighbors: list[list[tuple[str, float]]]
    facts: list[SessionFacts] | None = None  # computed once upstream (else here)

    @property
    def labels(self) -> list[str | None]:
        return [s.label for s in self.sessions]


class HeadOutputs(BaseModel):
    """Per-head probabilities ``[sessions, classes]``, the stack's, and (when asked) the facts
    head's per-fact contributions to each class's log-odds (:meth:`fact_contributions`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    heads: dict[str, np.ndarray]
    stacked: np.ndarray
    contributions: np.ndarray | None = None  # [sessions, classes, features]
    fact_names: list[str] = []  # per feature

    def fact_contributions(self, row: int, cls: int) -> dict[str, float]:
        """Fact -> summed contribution of its features toward class ``cls`` for one session."""
        if self.contributions is None:
            return {}
        out: dict[str, float] = {}
        for name, c in zip(self.fact_names, self.contributions[row, cls].tolist()):
            out[name] = out.get(name, 0.0) + c
        return out


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


def _folds(sessions: Sequence[Session], k: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold

    users = [s.user_id for s in sessions]
    k = min(k, len(set(users)))
    if k < 2:
        raise ConfigError("fitting needs labelled sessions of at least two users",
                          field="train")
    return list(GroupKFold(k).split(np.zeros(len(users)), groups=users))


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
    """Feature spec, facts head, embedding head, kNN vote parameters and the stack."""

    def __init__(self, classes: Sequence[str], spec: FeatureSpec, facts: FactsHead,
                 embed: LinearHead, knn: FusionParams, stack: Stack,
                 abstain_below: float = 0.0, propensity: Propensity | None = None,
                 threshold: float | None = None) -> None:
        self.classes, self.spec, self.facts, self.embed = list(classes), spec, facts, embed
        self.knn, self.stack, self.abstain_below = knn, stack, abstain_below
        self.propensity = propensity  # from the training sessions (history features only)
        self.threshold = threshold  # two labels with a positive one: see fit_threshold

    def decision(self) -> tuple[str, float] | None:
        """``(positive label, threshold)`` when labels are decided by a threshold."""
        pos = self.stack.positive
        return (pos, self.threshold) if pos is not None and self.threshold is not None else None

    def knn_probs(self, neighbors: Sequence[Sequence[tuple[str, float]]]) -> np.ndarray:
        return np.array([[v[c] for c in self.classes]
                         for v in (knn_vote(n, self.classes, self.knn) for n in neighbors)])

    def predict_heads(self, rows: HeadInputs, x: np.ndarray | None = None
                      ) -> dict[str, np.ndarray]:
        x = self.spec.transform(rows.sessions, rows.facts) if x is None else x
        return {"facts": self.facts.predict_proba(x),
                "embed": self.embed.predict_proba(rows.vectors),
                "knn": self.knn_probs(rows.neighbors)}

    def predict(self, rows: HeadInputs, *, explain: bool = False) -> HeadOutputs:
        """Probabilities; ``explain``: with the facts head's contributions too."""
        x = self.spec.transform(rows.sessions, rows.facts)
        heads = self.predict_heads(rows, x)
        out = HeadOutputs(heads=heads, stacked=self.stack.predict_proba(heads))
        if explain and len(x):
            out.contributions = self.facts.logodds_contributions(x, heads["facts"])
            out.fact_names = self.spec.fact_names
        return out

    @classmethod
    def fit(cls, train: HeadInputs, dev: HeadInputs, classes: Sequence[str], *,
            metric: Metric = "log_loss", positive: str | None = None,
            gbm: GBMParams | None = None, abstain_cost: float = 1.0, seed: int = 0,
            history: UserHistory | None = None) -> tuple[HeadsModel, FitStats]:
        """``history``: the users' sessions, for cross-session facts (earlier sessions only;
        purchase propensities of the positive label from the training rows, out-of-fold)."""
        classes = list(classes)
        _check_labels(train, classes, "train")
        _check_labels(dev, classes, "dev")
        folds = _folds(train.sessions)
        y_tr = np.array(train.labels)
        prop, use_history = None, history_covers(history, train, dev)
        if use_history:
            target = y_tr == positive if positive is not None else None
            train, dev, prop = _with_history(train, dev, history, folds, target)
        spec = FeatureSpec.fit(train.sessions, history=use_history)
        x_tr = spec.transform(train.sessions, train.facts)

        facts = FactsHead(classes, spec.names, gbm, spec.categorical_index)
        oof = {"facts": facts.fit_folds(x_tr, y_tr, folds),
               "embed": np.zeros((len(y_tr), len(classes)))}
        for tr, te in folds:
            oof["embed"][te] = LinearHead(classes, seed=seed).fit(
                train.vectors[tr], y_tr[tr]).predict_proba(train.vectors[te])
        knn = fit([DevExample(llm_scores=None, neighbors=n, label=lab) for n, lab in
                   zip(train.neighbors, y_tr)], classes, weights=[0.0])
        model = cls(classes, spec, facts,
                    LinearHead(classes, seed=seed).fit(train.vectors, y_tr), knn,
                    Stack(classes, metric, positive, seed=seed), propensity=prop)
        oof["knn"] = model.knn_probs(train.neighbors)
        dev_heads = model.predict_heads(dev)
        y_dev = np.array(dev.labels)
        model.stack.fit({h: np.vstack([oof[h], dev_heads[h]]) for h in HEADS},
                        np.concatenate([y_tr, y_dev]))
        dev_p = model.stack.oof[len(y_tr):]
        model.threshold = fit_threshold(dev_p, y_dev, classes, positive)
        # A threshold calls rare positives at low probability; abstaining below a confidence
        # would drop exactly those, so a two-label model with a threshold always answers.
        model.abstain_below = 0.0 if model.threshold is not None else fit_abstain(
            dev_p, y_dev, classes, abstain_cost)
        return model, FitStats(n_train=len(y_tr), n_dev=len(y_dev),
                               dev_metrics=dev_metrics(y_dev, dev_p, classes, positive),
                               abstain_below=model.abstain_below, facts_rounds=facts.rounds,
                               threshold=model.threshold)

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
    return (train.model_copy(update={"facts": f_tr}), dev.model_copy(update={"facts": f_dev}),
            prop)


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
