"""The stack over the heads: which heads it keeps (CV, one-standard-error rule) and by which
metric (moved here from the eval harness with the stack itself)."""

from __future__ import annotations

import numpy as np
import pytest

from behavior_rag.errors import ConfigError
from behavior_rag.heads.stack import Stack, hedging


def test_stacker_drops_a_method_that_only_adds_noise_and_keeps_complementary_ones():
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.random(n) < 0.3
    labels = np.where(y, "buy", "no")

    def proba(signal):
        p = 1 / (1 + np.exp(-signal))
        return np.stack([p, 1 - p], axis=1)  # classes ["buy", "no"]

    strong = proba(2.5 * (y - 0.5) * 2 + rng.normal(0, 1.2, n))
    noise = proba(rng.normal(0, 1.0, n))
    st = Stack(["buy", "no"]).fit({"noise": noise, "strong": strong}, labels)
    assert st.chosen == ["strong"]
    assert set(st.cv_loss) == {"noise", "strong", "noise+strong"}
    other = proba(2.0 * (y - 0.5) * 2 + rng.normal(0, 1.2, n))  # independent evidence
    both = Stack(["buy", "no"]).fit({"strong": strong, "other": other}, labels)
    assert both.chosen == ["strong", "other"]
    p = both.predict_proba({"strong": strong, "other": other})
    assert p.shape == (n, 2) and np.allclose(p.sum(1), 1)


def test_stacker_keeps_the_smaller_subset_when_a_part_wins_cv_by_less_than_its_noise():
    """A second head with a weak signal of its own: the pair's CV loss is lower by less
    than the folds' spread, so the stack keeps the single head (a coin-flip of CV does not
    add a head); a pure-noise head is never added either."""
    y = np.random.default_rng(0).random(300) < 0.3
    labels = np.where(y, "buy", "no")
    rng = np.random.default_rng(0)

    def proba(signal):
        p = 1 / (1 + np.exp(-signal))
        return np.stack([p, 1 - p], axis=1)

    strong = proba(5.0 * (y - 0.5) + rng.normal(0, 1.2, len(y)))
    tiny = proba(0.3 * (y - 0.5) + rng.normal(0, 1.0, len(y)))  # real but negligible signal
    st = Stack(["buy", "no"]).fit({"strong": strong, "tiny": tiny}, labels)
    assert st.cv_loss["strong+tiny"] - st.cv_loss["strong"] < 0.01
    assert st.chosen == ["strong"]


def test_stacker_scores_subsets_by_the_task_metric_in_cross_validation():
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(3)
    y = np.where(rng.random(1500) < 0.2, "buy", "no")
    s = 1 / (1 + np.exp(-((y == "buy") * 2.0 + rng.normal(0, 1.0, len(y)))))
    part = np.stack([s, 1 - s], axis=1)
    st = Stack(["buy", "no"], metric="auroc", positive="buy", seed=0).fit({"a": part}, y)
    folds = StratifiedKFold(5, shuffle=True, random_state=0).split(y, y)
    # one part: the stacker is monotone in its score, so each fold's auROC is the part's own
    want = np.mean([1 - roc_auc_score(y[te] == "buy", s[te]) for _, te in folds])
    assert st.metric == "auroc" and abs(st.cv_loss["a"] - want) < 1e-9
    with pytest.raises(ConfigError, match="positive"):
        Stack(["buy", "no"], metric="aupr")


def test_the_stack_trusts_a_head_more_or_less_but_never_turns_it_round():
    """Rows where a head ranks below chance (its out-of-fold rows on repeated sessions did)
    must not make the served score fall as the head's rises."""
    rng = np.random.default_rng(5)
    y = np.where(rng.random(600) < 0.2, "buy", "no")
    s = 1 / (1 + np.exp((y == "buy") * 1.0 + rng.normal(0, 1.0, len(y))))  # reversed signal
    part = np.stack([s, 1 - s], axis=1)
    st = Stack(["buy", "no"], "auroc", "buy").fit({"facts": part}, y)
    grid = np.linspace(0.01, 0.99, 50)
    served = st.predict_proba({"facts": np.stack([grid, 1 - grid], axis=1)})[:, 0]
    assert np.all(np.diff(served) >= -1e-12)


def test_with_few_labels_the_forest_head_beats_the_boosted_one_in_cv(embed_home):
    """64 labelled sessions over 8 personas (an analyst's first hour): boosting can barely
    split; the forest of randomised trees on the same facts is what the stack can use."""
    from behavior_rag.evaluation import split_by_user
    from behavior_rag.heads.model import HeadInputs, HeadsModel
    from behavior_rag.synth import generate
    from behavior_rag.taxonomy import load_taxonomy

    sp = split_by_user(generate(400, seed=3).sessions, seed=0, dev_frac=0.2, test_frac=0.0)
    train, dev = sp.train[:51], sp.dev[:13]
    model, _ = HeadsModel.fit(HeadInputs(sessions=train), HeadInputs(sessions=dev),
                              load_taxonomy("personas").names, heads=["facts", "forest"])
    loss = model.stack.cv_loss
    assert loss["forest"] < loss["facts"] - 0.1
    assert "forest" in model.chosen


def test_with_a_few_labels_per_class_the_stack_hedges_instead_of_betting_on_one_head():
    classes = ["a", "b", "c", "d"]

    def heads(n, seed=3):
        rng = np.random.default_rng(seed)
        y = np.array(classes * (n // 4))
        # two heads that see the labels through independent noise
        one, two = (rng.dirichlet([1] * 4, size=n) + 0.1 * (y[:, None] == classes)
                    for _ in range(2))
        return {"one": one / one.sum(1, keepdims=True),
                "two": two / two.sum(1, keepdims=True)}, y

    parts, y = heads(24)  # 6 labelled sessions per label: CV cannot rank the subsets
    assert hedging(len(y), 4)
    st = Stack(classes).fit(parts, y)
    assert st.chosen == ["one", "two"]
    # CV alone does not separate them here: the pair is not clearly better than one head
    assert st.cv_loss["one+two"] > min(st.cv_loss["one"], st.cv_loss["two"]) - 0.1
    # with many labels the rule is parsimonious again: a copy of a head is not kept
    parts, y = heads(800)
    assert not hedging(len(y), 4)
    assert Stack(classes).fit({"one": parts["one"], "copy": parts["one"].copy()},
                              y).chosen == ["one"]


def test_a_forests_contributions_add_up_to_its_own_log_odds():
    """LightGBM sums a random forest's trees in its contributions where its probabilities
    average them; the evidence must be in the units of the probabilities it explains."""
    from behavior_rag.heads.forest import forest_params
    from behavior_rag.heads.gbm import GBM

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = np.where(x[:, 0] + rng.normal(0, 0.5, 200) > 0, "buy", "no")
    gbm = GBM(["no", "buy"], ["a", "b", "c", "d"], forest_params()).fit(x, y)
    p = np.clip(gbm.predict_proba(x[:20])[:, 1], 1e-9, 1 - 1e-9)
    logit = np.log(p / (1 - p))
    total = gbm.contributions(x[:20])[:, 1, :].sum(1)  # toward "buy", bias left out
    assert np.allclose(total - total[0], logit - logit[0], atol=1e-6)


def test_the_evidence_numbers_add_up_to_the_stacked_log_odds():
    """Each head's contributions count with its weight in the pool: on two labels with tree
    heads, the summed contributions move exactly as the stack's log-odds do."""
    from behavior_rag.heads.model import HeadInputs, HeadsModel
    from behavior_rag.synth import generate

    sessions = generate(300, seed=5).sessions
    label = ["buy" if any(e.type == "purchase" for e in s.events[1:]) or
             s.label == "deal_hunter" else "no" for s in sessions]
    rows = [s.model_copy(update={"label": y}) for s, y in zip(sessions, label)]
    model, _ = HeadsModel.fit(HeadInputs(sessions=rows[:200]), HeadInputs(sessions=rows[200:]),
                              ["no", "buy"], heads=["facts", "forest"])
    test = HeadInputs(sessions=rows[200:230])
    out = model.predict(test, explain=True)
    p = np.clip(out.stacked[:, 1], 1e-12, 1 - 1e-12)
    logit = np.log(p / (1 - p))
    total = out.contributions.values[:, 1, :].sum(1)
    assert np.allclose(total - total[0], logit - logit[0], atol=1e-5)
