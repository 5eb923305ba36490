"""Similar shoppers with the real model on synthetic personas (labels known by construction)."""

from __future__ import annotations

from collections import Counter

import pytest

from behavior_rag.api import BehaviorRAG
from behavior_rag.errors import ConfigError
from behavior_rag.index.base import Filter
from behavior_rag.settings import Settings


@pytest.fixture(scope="module")
def rag(embed_home, synth_sessions, tmp_path_factory):
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"})
    r = BehaviorRAG(s, tmp_path_factory.mktemp("ix") / "synth")
    report = r.index_sessions(synth_sessions)
    assert report.embedded == len(synth_sessions)
    r.save()
    return r


def test_neighbours_share_the_persona_far_above_chance(rag, synth_sessions):
    agree = []
    for s in synth_sessions[:120]:
        hits = rag.similar(session_id=s.session_id, k=5)
        assert len(hits) == 5 and s.session_id not in {h.session_id for h in hits}
        vote = Counter(h.meta.label for h in hits).most_common(1)[0][0]
        agree.append(vote == s.label)
    assert sum(agree) / len(agree) > 0.45  # chance is 1/8


def test_session_object_and_session_id_queries_agree(rag, synth_sessions):
    s = synth_sessions[7]
    by_obj = [h.session_id for h in rag.similar(session=s, k=5)]
    by_id = [h.session_id for h in rag.similar(session_id=s.session_id, k=5)]
    assert by_obj == by_id


def test_user_query_returns_other_distinct_users(rag, synth_sessions):
    user = synth_sessions[0].user_id
    hits = rag.similar(user_id=user, k=8)
    users = [h.user_id for h in hits]
    assert len(hits) == 8 and len(set(users)) == 8 and user not in users
    assert hits == sorted(hits, key=lambda h: -h.score)


def test_text_query_with_filter_and_text_on_request(rag):
    hits = rag.similar(text='search "gift for her" then buy a necklace', k=5,
                       filter=Filter(has_purchase=True), with_text=True)
    assert len(hits) == 5 and all(h.meta.has_purchase for h in hits)
    assert all(h.text and h.text.startswith("facts:") for h in hits)
    assert Counter(h.meta.label for h in hits)["gift_shopper"] >= 2


def test_reindexing_unchanged_sessions_embeds_nothing(rag, synth_sessions):
    report = rag.index_sessions(synth_sessions[:50])
    assert (report.embedded, report.unchanged) == (0, 50)


def test_bad_queries_are_clear_errors(rag):
    with pytest.raises(ConfigError):
        rag.similar(session_id="nope", k=3)
    with pytest.raises(ConfigError):
        rag.similar(text="a", user_id="b")
    with pytest.raises(ConfigError):
        rag.similar(user_id="nobody")


def test_cli_index_build_info_similar_delete(tmp_path, embed_home):
    from functools import partial

    from tests.conftest import cli_json

    run = partial(cli_json, {"BEHAVIOR_RAG_HOME": str(embed_home)})

    run("synth", "--n", "120", "--seed", "5", "--out", str(tmp_path / "st"))
    ix = str(tmp_path / "ix")
    (built,) = run("index", "build", str(tmp_path / "st"), "--index", ix, "--backend",
                   "onnx-int8")
    assert built["index_size"] == 120 and built["embedder"]["backend"] == "onnx-int8"
    (info,) = run("index", "info", "--index", ix)
    assert info["config"]["count"] == 120 and sum(info["labels"].values()) == 120
    hits = run("similar", "--index", ix, "--session-id", "synth_s000001", "-k", "4",
               "--labelled")
    assert len(hits) == 4 and "synth_s000001" not in {h["session_id"] for h in hits}
    (deleted,) = run("index", "delete", "synth_s000002", "--index", ix)
    assert deleted == {"deleted": 1, "requested": 1, "index_size": 119}
    (added,) = run("index", "add", str(tmp_path / "st"), "--index", ix)
    assert (added["embedded"], added["unchanged"], added["index_size"]) == (1, 119, 120)


def test_naive_filter_times_mean_utc_in_process_as_over_http(rag, synth_sessions):
    from datetime import timezone

    first = min(s.start for s in synth_sessions)
    naive = Filter(start_from=first.replace(tzinfo=None))
    aware = Filter(start_from=first.astimezone(timezone.utc))
    assert naive == aware
    q = "views of discounted items"
    assert [h.session_id for h in rag.similar(text=q, k=5, filter=naive)] == \
        [h.session_id for h in rag.similar(text=q, k=5, filter=aware)]


def test_index_sessions_refuses_a_label_outside_the_taxonomy(rag, synth_sessions):
    from behavior_rag.errors import TaxonomyError

    before = len(rag.index)
    plain = synth_sessions[3].model_copy(update={"session_id": "plain_x", "label": None})
    bad = plain.model_copy(update={"session_id": "bad_x", "label": "martian"})
    with pytest.raises(TaxonomyError) as e:
        rag.index_sessions([plain, bad])
    assert e.value.context["field"] == "sessions.1.label" and e.value.context["row"] == 2
    assert len(rag.index) == before and rag.index.get("plain_x") is None  # nothing embedded
