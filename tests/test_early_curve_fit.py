"""Fitting on prefixes of sessions (issue 32, the early-prediction curve): a session's prefix
copies share one fold key, a one-head model never serves the reverse of its head, and the
curve's functions give every row and a report (real Taobao, REES46 and OTTO logs)."""

from __future__ import annotations

import sys
from pathlib import Path

from scipy.stats import spearmanr

from behavior_rag import BehaviorRAG, Settings
from behavior_rag.evaluation import split_by_user
from behavior_rag.ingest.load import load_events
from behavior_rag.ingest.pseudonym import split_keys
from behavior_rag.labels.outcomes import label_sessions
from behavior_rag.labels.targets import load_target
from tests.conftest import DATA, need

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))

import early_curve as ec  # noqa: E402

OTTO = DATA / "otto_sample" / "train.jsonl"
REES46_17K = DATA / "rees46_sample" / "2019-Oct-head17k.csv"


def facts_only(home: Path) -> Settings:
    # the eval's settings: the shared test home holds the int8 embedder a fresh home would
    # first convert (facts-only models never embed, but the index is made for one)
    return Settings(home=home, ingest={"pseudonym_key": "test-key"}, llm={"backend": "none"},
                    embed={"backend": "onnx-int8"},
                    classify={"taxonomy": "purchase_intent", "llm": "never", "history": False})


def test_a_sessions_prefixes_share_its_fold_key_even_without_user_ids(settings):
    # OTTO has no user ids: each session is its own anonymous user, so the only thing that
    # keeps a session's prefix copies in one cross-validation fold is that they keep its user
    sessions = load_events(need(OTTO), "auto", settings=settings).sessions
    many = ec.prefixes(sessions)
    keys = split_keys(many)
    by_session: dict[str, set[str]] = {}
    for p in many:
        by_session.setdefault(p.session_id.split("@")[0], set()).add(keys[p.user_id])
    assert len(many) > len(sessions)
    assert all(len(k) == 1 for k in by_session.values())
    assert len({next(iter(k)) for k in by_session.values()}) == len(sessions)


def test_a_model_fitted_on_prefixes_ranks_as_its_head_does(taobao, tmp_path, embed_home):
    target = load_target("purchase")
    sp = split_by_user(label_sessions(taobao.sessions, target).sessions, seed=0)
    rag = BehaviorRAG(facts_only(embed_home), tmp_path / "idx", fresh=True)
    rag.fit(ec.prefixes(sp.train[:800]), ec.prefixes(sp.dev[:266]), heads=["facts"],
            target=target)
    got = rag.classify_many([ec.prefix(s, 3) for s in sp.test], heads=["facts"])
    served = [p.probabilities[target.positive] for p in got]
    head = [p.head_probabilities["facts"][target.positive] for p in got]
    # a one-head stack only calibrates: the served order must be the head's order
    assert spearmanr(served, head).statistic > 0.99


def test_the_curve_has_every_row_and_its_report_says_what_is_kept(tmp_path, embed_home):
    target = load_target("purchase")
    s = facts_only(embed_home)
    d = ec.load(need(REES46_17K), "auto", s, target, train_max=200)
    test = d.test[:400]  # enough for every row; scoring all 1,012 eighteen times is slow
    d = d.model_copy(update={"test": test, "test_positives": sum(
        x.label == target.positive for x in test)})
    rows = ec.curve(d, s, target, tmp_path / "fits")
    assert [r.k for r in rows] == [*(str(k) for k in ec.KS), ec.POINT]
    assert rows[0].reached == rows[-1].reached == len(d.test)
    for r in rows:
        for part in (r.product, r.head):
            assert set(part) == set(ec.WAYS)
            assert all(0 <= c.auroc <= 1 and 0 < c.aupr <= 1 for c in part.values())
    # at the prediction point the per-point model is the point model
    assert rows[-1].product["per point"] == rows[-1].product["point"]
    text = ec.render(d, rows, 1.0, "python eval/early_curve.py")
    assert all(f"| first {k} |" in text for k in ec.KS) and "| prediction point |" in text
    assert f"Kept, as served today: **{ec.kept(rows, 'product').keep}**" in text
    assert "live service scores every append with the point model" in text
