"""The index's label set: append-only and audited (who, when, source, previous label),
committed atomically with the folder, checked on load, refused with one clear error for bad
labels, written by `labels import` / `label --rules`, and used by `fit` (latest label wins)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from behavior_rag.api import BehaviorRAG
from behavior_rag.errors import DataError, StoreError, TaxonomyError
from behavior_rag.labels import LabelSet, NewLabel
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from tests.conftest import cli_json


def _unlabelled(n: int = 120, seed: int = 4):
    return [s.model_copy(update={"label": None}) for s in generate(n, seed=seed).sessions]


@pytest.fixture(scope="module")
def built(embed_home, tmp_path_factory):
    """An index of unlabelled synthetic sessions (copied by each test)."""
    ix = tmp_path_factory.mktemp("labelset") / "ix"
    rag = BehaviorRAG(_settings(embed_home), ix)
    rag.index_sessions(_unlabelled())
    rag.save()
    return ix


def _settings(home) -> Settings:
    return Settings(home=home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                    classify={"llm": "never"})


@pytest.fixture()
def ix(built, tmp_path):
    shutil.copytree(built, tmp_path / "ix")
    return tmp_path / "ix"


def test_labels_are_appended_audited_and_survive_a_reopen(ix, embed_home):
    rag = BehaviorRAG(_settings(embed_home), ix)
    a, b = sorted(rag.sessions.ids())[:2]
    rag.labels.add([NewLabel(session_id=a, label="deal_hunter"),
                    NewLabel(session_id=b, label="window_shopper")], source="human", who="ana")
    rag.labels.add([NewLabel(session_id=a, label="focused_buyer")], source="human", who="bo")
    again = BehaviorRAG(_settings(embed_home), ix).labels.current()
    assert len(again) == 3
    last = again.latest()[a]
    assert (last.label, last.previous, last.previous_source, last.who, last.source) == (
        "focused_buyer", "deal_hunter", "human", "bo", "human")
    # the first event is still there, unchanged: a correction never rewrites history
    assert [e.label for e in again.events if e.session_id == a] == ["deal_hunter",
                                                                     "focused_buyer"]
    # one label-set folder named by config.json: the older one was swept by the commit
    cfg = json.loads((ix / "config.json").read_text())
    assert [p.name for p in ix.glob("labels-*")] == [cfg["artifacts"]["labels"]["path"]]


def test_rules_and_llm_never_overwrite_a_persons_label(ix, embed_home):
    rag = BehaviorRAG(_settings(embed_home), ix)
    a = sorted(rag.sessions.ids())[0]
    rag.labels.add([NewLabel(session_id=a, label="deal_hunter")], source="human", who="ana")
    got = rag.labels.add([NewLabel(session_id=a, label="window_shopper")], source="rule",
                         who="rules", protect=True)
    assert (got.added, got.kept) == (0, 1)
    assert rag.labels.current().latest()[a].label == "deal_hunter"


def test_bad_labels_are_refused_in_one_error_and_nothing_is_written(ix, embed_home):
    rag = BehaviorRAG(_settings(embed_home), ix)
    a = sorted(rag.sessions.ids())[0]
    with pytest.raises(TaxonomyError, match="outside the taxonomy"):
        rag.labels.add([NewLabel(session_id=a, label="space_pirate")], source="human", who="x")
    with pytest.raises(DataError, match="2 session id.* not in this index") as e:
        rag.labels.add([NewLabel(session_id="nope", label="deal_hunter"),
                        NewLabel(session_id="nope2", label="deal_hunter")], source="human",
                       who="x")
    assert e.value.field == "session_id"
    assert len(BehaviorRAG(_settings(embed_home), ix).labels.current()) == 0


def test_an_edited_or_truncated_label_set_is_refused_on_load(ix, embed_home):
    rag = BehaviorRAG(_settings(embed_home), ix)
    a, b = sorted(rag.sessions.ids())[:2]
    rag.labels.add([NewLabel(session_id=a, label="deal_hunter"),
                    NewLabel(session_id=b, label="deal_hunter")], source="human", who="ana")
    folder = next(ix.glob("labels-*"))
    f = folder / "labels.jsonl"
    good = f.read_text()
    f.write_text(good.replace('"deal_hunter"', '"window_shopper"', 1))
    with pytest.raises(StoreError, match="checksum"):
        BehaviorRAG(_settings(embed_home), ix).labels.current()
    # even with the manifest's checksum recomputed, the audit chain names the edited line
    import hashlib
    man = json.loads((folder / "manifest.json").read_text())
    man["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(StoreError, match="chain") as e:
        LabelSet.load(folder)
    assert e.value.row == 1
    # and the index no longer opens its label set: the artifact's manifest checksum changed
    with pytest.raises(StoreError, match="not the one this index committed"):
        BehaviorRAG(_settings(embed_home), ix).labels.current()


@pytest.mark.parametrize("point", ["data-written", "data-renamed", "committed"])
def test_a_crash_while_committing_labels_leaves_the_last_label_set_or_the_new_one(
        ix, embed_home, point):
    rag = BehaviorRAG(_settings(embed_home), ix)
    a, b = sorted(rag.sessions.ids())[:2]
    rag.labels.add([NewLabel(session_id=a, label="deal_hunter")], source="human", who="ana")
    code = (f"from behavior_rag.api import BehaviorRAG; from behavior_rag.labels import NewLabel;"
            f"from behavior_rag.settings import Settings;"
            f"r = BehaviorRAG(Settings(home={str(embed_home)!r}, embed={{'backend': "
            f"'onnx-int8'}}, llm={{'backend': 'none'}}), {str(ix)!r});"
            f"r.labels.add([NewLabel(session_id={b!r}, label='window_shopper')], "
            f"source='human', who='bo')")
    p = subprocess.run([sys.executable, "-c", code], env=os.environ | {
        "BEHAVIOR_RAG_CRASH_AT": point}, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    after = BehaviorRAG(_settings(embed_home), ix)
    labels = after.labels.current().latest()
    assert labels[a].label == "deal_hunter"  # the acknowledged label is always there
    assert (b in labels) == (point == "committed")
    assert len(after.index) == 120  # and the vectors load as before
    # the next writer goes on from there
    after.labels.add([NewLabel(session_id=b, label="impulse_buyer")], source="human", who="c")
    assert BehaviorRAG(_settings(embed_home), ix).labels.current().latest()[b].label == \
        "impulse_buyer"


def test_cli_rules_import_export_and_fit_on_the_label_set(ix, embed_home, tmp_path):
    env = {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8",
           "BEHAVIOR_RAG_LLM__BACKEND": "none"}
    truth = {s.session_id: s.label for s in generate(120, seed=4).sessions}
    [rules] = cli_json(env, "label", "--index", str(ix), "--rules")
    assert rules["labelled"] == rules["label_set"]["added"] > 0
    assert rules["precision"] is None  # the index's sessions carry no gold labels
    by_rule = {r["label"]: r for r in rules["per_label"]}
    assert sum(r["labelled"] for r in by_rule.values()) == rules["labelled"]
    # a person's labels arrive as a file; rules never overwrite them
    ids = sorted(truth)[:60]
    f = tmp_path / "mine.csv"
    f.write_text("session_id,label\n" + "".join(f"{i},{truth[i]}\n" for i in ids))
    [imp] = cli_json(env, "labels", "import", str(f), "--index", str(ix), "--who", "ana")
    assert imp["label_set"]["added"] + imp["label_set"]["unchanged"] == 60
    [again] = cli_json(env, "label", "--index", str(ix), "--rules")
    assert again["precision"] is not None and again["label_set"]["added"] == 0
    out = tmp_path / "export.csv"
    [exp] = cli_json(env, "labels", "export", str(out), "--index", str(ix))
    import polars as pl
    df = pl.read_csv(out)
    assert exp["rows"] == df.height and set(df["session_id"]) >= set(ids)
    assert set(df.filter(pl.col("source") == "file")["who"]) == {"ana"}
    # fit on the index's own sessions: the latest label per session
    [fit] = cli_json(env, "fit", "--index", str(ix), "--heads", "facts,knn",
                     "--cascade", "never")
    lab = fit["labelling"]
    assert lab["sessions"] == df.height  # dev is split off afterwards
    assert fit["dev"]["n_train"] + fit["dev"]["n_dev"] == df.height
    assert lab["left_out"] == 120 - df.height


def test_llm_suggestions_are_weak_labels_judged_by_the_analyst(ix, embed_home, tmp_path):
    """`label --llm` records the configured LLM's suggestions (a fake at the LLM seam that
    always says deal_hunter); the analyst's later labels judge them; while they do not beat
    the heads they count for nothing in fit."""
    from behavior_rag.labels.agreement import llm_agreement
    from tests.test_plugins import _plugin

    env = _plugin(tmp_path) | {"BEHAVIOR_RAG_HOME": str(embed_home),
                               "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8",
                               "BEHAVIOR_RAG_LLM__BACKEND": "fixed"}
    [out] = cli_json(env, "label", "--index", str(ix), "--llm", "--limit", "30")
    assert out["asked"] == 30 and out["label_set"]["added"] == 30
    rag = BehaviorRAG(_settings(embed_home), ix)
    cur = rag.labels.current()
    suggested = [e for e in cur.events if e.source == "llm"]
    assert {e.label for e in suggested} == {"deal_hunter"} and suggested[0].who == "llm:fixed"
    # the analyst labels those sessions: each event records the LLM's label it replaces
    truth = {s.session_id: s.label for s in generate(120, seed=4).sessions}
    rag.labels.add([NewLabel(session_id=e.session_id, label=truth[e.session_id])
                    for e in suggested[:25]], source="human", who="ana")
    a = llm_agreement(rag.labels.current(), heads_rate=None)
    right = sum(truth[e.session_id] == "deal_hunter" for e in suggested[:25])
    assert (a.judged, a.agreed) == (25, right) and a.weight == 0.0  # a constant guess
    # fit uses the analyst's 25 labels, not the 5 suggestions still standing (weight 0)
    train, summary = rag.labels.training(list(rag.sessions.values()))
    assert summary.sessions == len(train) == 25
    # an LLM that agrees with the analyst more often than the heads earns weight
    good = LabelSet().append([NewLabel(session_id=str(i), label="x") for i in range(20)],
                             source="llm", who="llm")
    good = good.append([NewLabel(session_id=str(i), label="x" if i < 18 else "y")
                        for i in range(20)], source="human", who="ana")
    assert llm_agreement(good, heads_rate=0.6).weight == pytest.approx((0.9 - 0.6) / 0.4)
    assert llm_agreement(good, heads_rate=0.95).weight == 0.0
