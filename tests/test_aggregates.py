"""Session-level aggregates come from what a source declares: the facts head reads a new
source's declared aggregate without any change to the heads, codes declared ids as categories,
and a fitted model rebuilds the same columns (missing and unseen values handled)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from behavior_rag.errors import ConfigError, DataError
from behavior_rag.heads.base import HeadInputs
from behavior_rag.heads.features import UNSEEN, AggregateEncoder
from behavior_rag.heads.gbm import FactsHead
from behavior_rag.ingest.aggregates import declared_aggregates, register_aggregates
from behavior_rag.synth import generate
from behavior_rag.types import DeclaredAggregate

SOURCE = "test_loyalty_shop"  # a source that exists only in these tests
register_aggregates(SOURCE, [DeclaredAggregate(name="loyalty", kind="numeric"),
                             DeclaredAggregate(name="store", kind="categorical")])


def _sessions(n: int, seed: int):
    """Synthetic sessions whose label only the declared ``loyalty`` aggregate tells (the events
    are drawn independently of it); ``store`` is an id code that carries nothing."""
    rng = np.random.default_rng(seed)
    out = []
    for s in generate(n, seed=seed).sessions:
        loyalty = float(rng.random())
        out.append(s.model_copy(update={
            "source": SOURCE, "label": "loyal" if loyalty > 0.5 else "casual",
            "aggregates": {"loyalty": round(loyalty, 3), "store": int(rng.integers(1, 6))}}))
    return out


@pytest.fixture(scope="module")
def fitted():
    train = _sessions(300, seed=1)
    y = np.array([s.label for s in train])
    folds = [(np.arange(len(y)) % 3 != k, np.arange(len(y)) % 3 == k) for k in range(3)]
    head = FactsHead(["casual", "loyal"], seed=0)
    head.fit(HeadInputs(sessions=train), y, folds)
    return head


def test_a_new_sources_declared_aggregate_is_read_by_the_facts_head(fitted):
    spec = fitted.spec
    assert spec.facts and spec.columns == ["loyalty", "store"]
    assert spec.categorical == [False, True]  # store's numbers are ids, as declared
    test = _sessions(120, seed=2)
    rows = HeadInputs(sessions=test)
    pred = np.array(fitted.classes)[fitted.predict_proba(rows).argmax(1)]
    assert (pred == np.array([s.label for s in test])).mean() > 0.9
    contrib = fitted.contributions(rows, fitted.predict_proba(rows))
    strength = np.abs(contrib.values).mean(axis=(0, 1))
    assert contrib.names[int(strength.argmax())] == "loyalty"


def test_the_fitted_model_rebuilds_its_columns_after_saving(fitted, tmp_path):
    test = _sessions(40, seed=3)
    odd = [test[0].model_copy(update={"aggregates": {"store": 99}}),  # no loyalty, unseen id
           test[1].model_copy(update={"source": None})]  # the columns do not hang on the source
    files = fitted.save(tmp_path)
    params = json.loads(json.dumps(fitted.params()))
    loaded = FactsHead.load(tmp_path, fitted.classes, params)
    assert files and loaded.spec == fitted.spec
    rows = HeadInputs(sessions=[*test, *odd])
    np.testing.assert_allclose(loaded.predict_proba(rows), fitted.predict_proba(rows))
    x = loaded.spec.transform(odd)
    assert np.isnan(x[0, -2]) and x[0, -1] == UNSEEN
    assert np.isfinite(loaded.predict_proba(HeadInputs(sessions=odd))).all()


def test_declared_kinds_decide_and_bad_values_are_named():
    s = _sessions(3, seed=4)
    undeclared = [x.model_copy(update={"source": None}) for x in s]
    assert AggregateEncoder().fit(undeclared).categorical_mask_ == [False, False]
    assert AggregateEncoder().fit(s).categorical_mask_ == [False, True]
    bad = s[0].model_copy(update={"aggregates": {"loyalty": "high"}})
    with pytest.raises(DataError) as e:
        AggregateEncoder().fit([bad])
    assert e.value.field == "aggregates.loyalty"


def test_two_sources_disagreeing_on_a_kind_is_a_config_error():
    register_aggregates("test_other_shop", [DeclaredAggregate(name="loyalty", kind="bool")])
    a, b = _sessions(2, seed=5)
    with pytest.raises(ConfigError, match="loyalty"):
        declared_aggregates([a, b.model_copy(update={"source": "test_other_shop"})])
    with pytest.raises(ConfigError, match="more than once"):
        register_aggregates("test_twice", [{"name": "x", "kind": "numeric"},
                                           {"name": "x", "kind": "bool"}])
