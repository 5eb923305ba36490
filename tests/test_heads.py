"""Heads as a seam: the kNN head, a head added by entry point without touching the package,
a featurizer that computes only what the chosen heads read, the default model of an unfitted
index, model folders of format 1, and one commit per fit."""

from __future__ import annotations

import hashlib
import json
import shutil
import textwrap

import numpy as np
import pytest

from behavior_rag.api import BehaviorRAG
from behavior_rag.classify.decider import DEFAULT_CASCADE
from behavior_rag.heads.cascade import combine
from behavior_rag.heads.knn import KnnParams, fit_knn, knn_vote
from behavior_rag.heads.registry import available_heads, head_class
from behavior_rag.heads.store import load_model
from behavior_rag.index.storage import read_config
from behavior_rag.settings import Settings
from behavior_rag.taxonomy import load_taxonomy

LABELS = ["a", "b", "c"]


def test_knn_vote_weights_closer_neighbours_and_smooths():
    p = knn_vote([("a", 0.90), ("b", 0.80), ("b", 0.79)], LABELS, KnnParams(temperature=0.01))
    assert p["a"] > p["b"] > p["c"] > 0 and abs(sum(p.values()) - 1) < 1e-9


def test_knn_calibration_lets_a_minority_label_win():
    # An index with 10 % "yes": neighbours are mostly "no" whatever the truth, but a "yes"
    # session has a few more "yes" neighbours. Uncalibrated, "yes" never wins a vote.
    rng = np.random.default_rng(3)
    y = ["yes" if i % 2 else "no" for i in range(200)]
    nbs = [[("yes" if rng.random() < (0.25 if lab == "yes" else 0.05) else "no", 0.9 - 0.001 * j)
            for j in range(15)] for lab in y]
    raw = KnnParams(temperature=0.3)
    assert sum(max(p, key=p.get) == "yes" for p in
               (knn_vote(n, ["yes", "no"], raw) for n in nbs)) < 10
    fitted = fit_knn(nbs, y, ["yes", "no"])
    assert fitted.bias["yes"] > fitted.bias["no"]
    preds = [max(p, key=p.get) for p in (knn_vote(n, ["yes", "no"], fitted) for n in nbs)]
    assert preds.count("yes") > 50


def test_the_default_model_combines_the_llm_as_fusion_did():
    """No fitted model: the kNN vote, moved by the LLM's scores at half weight."""
    knn = np.array([[0.6, 0.3, 0.1]])
    assert combine(knn, [{"a": -5.0, "b": -0.1, "c": -5.0}], LABELS,
                   DEFAULT_CASCADE).argmax(1).tolist() == [1]
    flat = combine(knn, [{"a": -1.0, "b": -1.0, "c": -1.0}], LABELS, DEFAULT_CASCADE)
    assert flat.argmax(1).tolist() == [0] and DEFAULT_CASCADE.threshold > 1.0  # asks always


PLUGIN = '''
from pathlib import Path

import numpy as np

from behavior_rag.heads.base import Head
from behavior_rag.heads.linear import LinearHead, load_linear, save_linear


class CartsHead(Head):
    """Logistic regression on two counts read from the events alone."""

    name = "carts"
    needs = frozenset({"events"})

    def _x(self, rows):
        return np.array([[len(s.events), sum(e.type == "cart" for e in s.events)]
                         for s in rows.sessions], dtype=float)

    def fit(self, rows, y, folds):
        oof = np.zeros((len(y), len(self.classes)))
        for tr, te in folds:
            lr = LinearHead(self.classes).fit(self._x(rows)[tr], y[tr])
            oof[te] = lr.predict_proba(self._x(rows)[te])
        self.lr = LinearHead(self.classes).fit(self._x(rows), y)
        return oof

    def predict_proba(self, rows):
        return self.lr.predict_proba(self._x(rows))

    def params(self):
        return {"features": 2}

    def save(self, folder: Path):
        return save_linear(self.lr, folder, "carts")

    @classmethod
    def load(cls, folder, classes, params):
        head = cls(classes)
        head.lr = load_linear(folder, "carts", classes)
        return head
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A package outside behavior_rag that declares a head under the entry point group, as
    an installed plugin would (its dist-info on the path)."""
    (tmp_path / "carts_plugin.py").write_text(PLUGIN)
    info = tmp_path / "carts_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: carts-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [behavior_rag.heads]
        carts = carts_plugin:CartsHead
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "carts"


def test_a_head_added_by_entry_point_is_fitted_saved_and_loaded(plugin, fitted, embed_home,
                                                               tmp_path):
    assert plugin in available_heads() and head_class(plugin).needs == {"events"}
    _, _, sp, _ = fitted
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})
    rag = BehaviorRAG(s, tmp_path / "ix")
    report = rag.fit(sp.train, sp.dev, heads=["facts", plugin])
    assert any(plugin in k for k in report.cv_loss)  # the stack weighed it
    again = BehaviorRAG(s, tmp_path / "ix")
    preds = again.classify(sp.test[:10])
    assert preds[0].source == "stack"
    extra = again.classify_many(sp.test[:10], heads=[plugin])
    assert set(extra[0].head_probabilities) >= {plugin}
    assert abs(sum(extra[0].head_probabilities[plugin].values()) - 1) < 1e-9


def test_a_facts_only_model_embeds_nothing_unless_voters_are_asked(fitted, embed_home,
                                                                   tmp_path):
    _, _, sp, _ = fitted
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})
    BehaviorRAG(s, tmp_path / "ix").fit(sp.train, sp.dev, heads=["facts"])
    rag = BehaviorRAG(s, tmp_path / "ix")
    preds = rag.classify(sp.test[:20])
    stats = rag.classifier.featurizer.stats
    assert stats.sessions == 20 and stats.embedded == stats.searched == stats.rendered == 0
    assert all(p.voters == [] and p.evidence for p in preds)
    with_voters = rag.classify(sp.test[:20], voters=True)
    assert stats.embedded == stats.searched == 20
    assert [p.probabilities for p in with_voters] == [p.probabilities for p in preds]
    assert any(p.voters for p in with_voters)


def test_a_model_saved_in_format_1_still_loads(fitted, embed_home, tmp_path):
    """A model folder from before heads were registered (fixed facts / embed / kNN fields)
    gives the same probabilities."""
    _, _, sp, ix = fitted
    shutil.copytree(ix, tmp_path / "ix")  # format 1 knew three heads: fit those
    rag = BehaviorRAG(Settings(home=embed_home, embed={"backend": "onnx-int8"},
                               llm={"backend": "none"}), tmp_path / "ix")
    rag.fit(sp.train, sp.dev, heads=["facts", "embed", "knn"])
    src = rag.model_path()
    old = tmp_path / "old"
    shutil.copytree(src, old)
    man = json.loads((old / "manifest.json").read_text())
    heads = man.pop("heads")
    v1 = {**man, "format_version": 1, "heads": list(heads),
          "features": heads["facts"]["params"]["spec"], "feature_names": [],
          "gbm": heads["facts"]["params"]["gbm"],
          "knn": {"knn_temperature": heads["knn"]["params"]["knn"]["temperature"],
                  "knn_smoothing": heads["knn"]["params"]["knn"]["smoothing"],
                  "knn_bias": heads["knn"]["params"]["knn"]["bias"]}}
    (old / "manifest.json").write_text(json.dumps(v1))
    tax, info = load_taxonomy("personas"), rag.embedder.info
    new, back = load_model(src, taxonomy=tax, embedder=info), load_model(old, taxonomy=tax,
                                                                         embedder=info)
    assert back.heads.chosen == new.heads.chosen
    assert back.heads.heads["knn"].knn == new.heads.heads["knn"].knn
    assert back.heads.heads["facts"].spec == new.heads.heads["facts"].spec


def test_fit_is_one_commit_and_names_its_model_with_a_checksum(fitted, embed_home, tmp_path):
    _, _, sp, _ = fitted
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})
    rag = BehaviorRAG(s, tmp_path / "ix")
    rag.index_sessions(sp.test[:5])
    rag.save()
    before = read_config(tmp_path / "ix").data
    rag.fit(sp.train, sp.dev, heads=["facts"])
    cfg = read_config(tmp_path / "ix")
    assert int(cfg.data[2:]) == int(before[2:]) + 1  # vectors, sessions and model: one commit
    art = cfg.artifacts["model"]
    digest = hashlib.sha256((tmp_path / "ix" / art.path / "manifest.json").read_bytes())
    assert art.sha256 == digest.hexdigest()


def test_a_committed_model_that_vanished_or_was_swapped_is_an_error(fitted, embed_home,
                                                                     tmp_path):
    """Never the silent fallback to the unfitted default model (issue 30, finding 2)."""
    from behavior_rag.errors import StoreError

    _, _, sp, ix = fitted
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})
    BehaviorRAG(s, tmp_path / "other").fit(sp.train[:200], sp.dev, heads=["facts"])
    for case in ("deleted", "swapped", "symlinked"):
        dst = tmp_path / case
        shutil.copytree(ix, dst)
        name = read_config(dst).artifacts["model"].path
        shutil.rmtree(dst / name)
        other = BehaviorRAG(s, tmp_path / "other").model_path()
        if case == "swapped":
            shutil.copytree(other, dst / name)
        elif case == "symlinked":
            (dst / name).symlink_to(other)
        with pytest.raises(StoreError) as e:
            BehaviorRAG(s, dst).classify(sp.test[:1])
        assert e.value.context["field"] == "artifacts.model", case
        assert ("missing" if case != "swapped" else "not the one") in e.value.message


def test_the_items_head_learns_the_shops_items_and_its_evidence_names_real_events(
        fitted, embed_home, tmp_path):
    """Item and category vectors (no labels) and label rates feed a head the stack keeps when
    CV says so; the items and categories it cites are checked against the session's events."""
    from behavior_rag.evidence import check
    from behavior_rag.facts import compute_facts
    from behavior_rag.types import Evidence

    _, _, sp, _ = fitted
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})
    report = BehaviorRAG(s, tmp_path / "ix").fit(sp.train, sp.dev, heads=["facts", "items"])
    assert "items" in report.chosen  # on personas, items add to the facts (CV log-loss)
    assert report.cv_loss["facts+items"] < report.cv_loss["facts"]
    preds = BehaviorRAG(s, tmp_path / "ix").classify(sp.test[:60])
    cited = [(p, e) for p in preds for e in p.evidence + p.against
             if e.fact in ("item_id", "category")]
    assert cited
    by_id = {x.session_id: x for x in sp.test}
    for p, e in cited:
        events = by_id[p.session_id].events
        assert e.events and all(getattr(events[i], e.fact) == e.value for i in e.events)
        assert e.text.startswith(("item ", "category "))
    sess = sp.test[0]
    lie = Evidence(fact="item_id", value="no-such-item", events=[0])
    assert check(lie, sess, compute_facts(sess)) is None
