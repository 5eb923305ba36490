"""Fitting does not depend on the installation's pseudonym key: the same raw sessions, ingested
under two keys (other user ids, other gap session ids, rows in another order), give the same
cross-validation folds, CV losses, chosen heads and dev numbers."""

from __future__ import annotations

import numpy as np
import pytest

from behavior_rag.api import BehaviorRAG
from behavior_rag.evaluation import purchase_intent, split_by_user
from behavior_rag.heads.base import HeadInputs
from behavior_rag.heads.model import HeadsModel, _folds
from behavior_rag.ingest.pseudonym import UserIds, is_pseudonym
from behavior_rag.ingest.sessionize import gap_session_id
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.types import Session

KEYS = ("installation-a", "installation-b")


def _installed(sessions: list[Session], key: str) -> tuple[list[Session], list[int]]:
    """``sessions`` as ingest under ``key`` stores them: pseudonymised users, session ids
    hashed from the pseudonym, ordered by user id. Returns them and, per row, the index of its
    raw session."""
    ids = UserIds(Settings(ingest={"pseudonym_key": key}))
    out = []
    for i, s in enumerate(ids.sessions(sessions)):
        sid = gap_session_id(s.user_id, s.events[0].timestamp)
        out.append((s.model_copy(update={"session_id": sid, "events": [
            e.model_copy(update={"session_id": sid}) for e in s.events]}), i))
    out.sort(key=lambda x: (x[0].user_id, x[0].events[0].timestamp, x[1]))
    return [s for s, _ in out], [i for _, i in out]


@pytest.fixture(scope="module")
def raw():
    return split_by_user(purchase_intent(generate(400, seed=7).sessions, min_events=2), seed=0,
                         test_frac=0.0)


def _fold_of(sessions: list[Session], origin: list[int]) -> dict[int, int]:
    """raw session index -> the fold whose test part holds it."""
    return {origin[j]: f for f, (_, te) in enumerate(_folds(sessions)) for j in te}


def test_the_folds_are_the_same_under_any_pseudonym_key(raw):
    (a, oa), (b, ob) = (_installed(raw.train, k) for k in KEYS)
    assert all(is_pseudonym(s.user_id) for s in a + b)
    assert [s.user_id for s in a] != [s.user_id for s in b]  # the ids do differ
    assert oa != ob  # and so does the ingest order
    fa, fb = _fold_of(a, oa), _fold_of(b, ob)
    assert fa == fb and len(fa) == len(raw.train) and len(set(fa.values())) == 5
    # a user's sessions stay in one fold
    user = {i: s.user_id for s, i in zip(a, oa, strict=True)}
    assert all(len({fa[i] for i in fa if user[i] == u}) == 1 for u in set(user.values()))


def test_heads_fit_alike_under_any_pseudonym_key_and_keep_the_given_row_order(raw):
    fits = []
    for key in KEYS:
        (tr, otr), (dev, odev) = _installed(raw.train, key), _installed(raw.dev, key)
        model, stats = HeadsModel.fit(HeadInputs(sessions=tr), HeadInputs(sessions=dev),
                                      ["will_buy", "no_purchase"], heads=("facts", "items"),
                                      metric="auroc", positive="will_buy")
        # the stack's out-of-fold rows, keyed by raw session: train then dev as given
        oof = model.stack.oof
        by_raw = ({i: oof[j] for j, i in enumerate(otr)},
                  {i: oof[len(tr) + j] for j, i in enumerate(odev)})
        fits.append((model, stats, by_raw))
    (ma, sa, oa), (mb, sb, ob) = fits
    assert ma.chosen == mb.chosen and ma.stack.cv_loss == mb.stack.cv_loss
    assert sa == sb  # dev metrics, threshold, abstain, facts rounds
    for part_a, part_b in zip(oa, ob, strict=True):
        assert part_a.keys() == part_b.keys()
        assert all(np.array_equal(part_a[i], part_b[i]) for i in part_a)


def test_behavior_rag_fit_chooses_the_same_heads_under_any_pseudonym_key(raw, embed_home,
                                                                       tmp_path):
    """The product's fit (facts, embed, knn; onnx-int8 embedder, no LLM), each installation
    with its own key, on the sessions as its ingest stored them."""
    reports = []
    for key in KEYS:
        train, dev = _installed(raw.train, key)[0], _installed(raw.dev, key)[0]
        s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                     ingest={"pseudonym_key": key}, classify={"taxonomy": "purchase_intent"})
        reports.append(BehaviorRAG(s, tmp_path / key).fit(train, dev))
    a, b = reports
    assert a.chosen == b.chosen and a.cv_loss == b.cv_loss and a.dev == b.dev
