"""The ``forest`` head: the facts head's features into a random forest of extremely
randomised trees, for the few-labels regime.

Why a second head on the same facts: boosting needs rows to fit its sequence of corrections,
and with a few dozen labels (an analyst's first hours in the labelling queue) it can barely
split; an average of deep, randomised trees is the small-data workhorse on tabular data.
LightGBM's ``rf`` boosting with ``extra_trees`` keeps everything the facts head has: a plain
text model (no pickle) and exact TreeSHAP contributions for the evidence. The stack decides
by cross-validation whether the forest, the boosted head, or both are kept, so with many
labels the boosted head takes over where it is better (eval/reports/label_efficiency).

Example:
    >>> import numpy as np
    >>> from behavior_rag.synth import generate
    >>> from behavior_rag.heads.base import HeadInputs
    >>> s = generate(60, seed=1).sessions
    >>> y = np.array([x.label for x in s])
    >>> folds = [(np.arange(60) % 2 != i, np.arange(60) % 2 == i) for i in (0, 1)]
    >>> head = ForestHead(sorted(set(y)))
    >>> head.fit(HeadInputs(sessions=s), y, folds).shape[0]
    60
"""

from __future__ import annotations

from collections.abc import Sequence

from behavior_rag.heads.gbm import FactsHead, GBMParams


def forest_params(seed: int = 0) -> GBMParams:
    """100 fully grown (up to 31 leaves, one row per leaf) randomised trees, each on 63 % of
    the rows (drawn without replacement) and 60 % of the features: the usual random-forest
    recipe in LightGBM's terms. 100 rather than 300 trees: TreeSHAP for the evidence costs
    in proportion to the trees (300 made a facts + forest model 8x slower to classify than
    facts alone on Taobao), and 300 gained 0.005 macro-F1 at 64 labels, within the noise."""
    return GBMParams(boosting="rf", extra_trees=True, n_estimators=100, num_leaves=31,
                     min_data_in_leaf=1, min_sum_hessian_in_leaf=0.0, lambda_l2=0.0,
                     feature_fraction=0.6, bagging_fraction=0.632, bagging_freq=1,
                     rounds_by_cv=False, seed=seed)


class ForestHead(FactsHead):
    """Random forest over the session's facts; contributions as the facts head's."""

    name = "forest"
    FILE = "forest_gbm.txt"

    def __init__(self, classes: Sequence[str], seed: int = 0, gbm: GBMParams | None = None
                 ) -> None:
        super().__init__(classes, seed, gbm or forest_params(seed))
