"""The time split (issue 31.7: train on earlier days, test on later ones), the split and score
commands a user reproduces the eval with, bootstrap intervals, and the report that puts the
time split beside the user split."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from behavior_rag.errors import ConfigError
from behavior_rag.evaluation.harness import EvalConfig, run_eval
from behavior_rag.evaluation.loaders import load_task
from behavior_rag.evaluation.metrics import _resample_scores, bootstrap_intervals
from behavior_rag.evaluation.report_splits import BEGIN, END, splice
from behavior_rag.evaluation.splits import known_at_of, split_by_time, split_parts
from behavior_rag.ingest.store import read_store, write_store
from behavior_rag.labels import load_target
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.types import Event, PatternPrediction, Session
from tests.conftest import cli_json

SH = ZoneInfo("Asia/Shanghai")


def _session(i: int, start: datetime, minutes: float, label: str = "a") -> Session:
    ev = [Event(user_id=f"u{i % 5}", timestamp=start + timedelta(minutes=m), type="view",
                item_id=str(i)) for m in (0, minutes)]
    return Session(session_id=f"s{i}", user_id=f"u{i % 5}", events=ev, label=label,
                   timezone="Asia/Shanghai")


def _days(n_days: int = 8, per_day: int = 10) -> list[Session]:
    out = []
    for d in range(n_days):
        for k in range(per_day):
            start = datetime(2024, 3, 1 + d, 9, tzinfo=SH) + timedelta(hours=k)
            out.append(_session(d * per_day + k, start, 5, "a" if k % 3 else "b"))
    return out


def test_time_split_cuts_at_local_midnights_and_keeps_order():
    ss = _days()
    parts, info = split_by_time(ss, dev_frac=0.2, test_frac=0.25)
    assert info.test_from == datetime(2024, 3, 7, tzinfo=SH)  # 2 of 8 days: 25%
    assert info.dev_from == datetime(2024, 3, 6, tzinfo=SH)  # 1 of 6 days nearest 20%
    assert (len(parts.train), len(parts.dev), len(parts.test)) == (50, 10, 20)
    assert max(s.end for s in parts.train) < info.dev_from <= min(s.start for s in parts.dev)
    assert max(s.end for s in parts.dev) < info.test_from <= min(s.start for s in parts.test)
    assert parts.test == ss[60:]  # input order within a part
    assert "split by time (Asia/Shanghai days)" in info.protocol()


def test_sessions_whose_outcome_is_known_after_the_boundary_are_dropped():
    ss = _days()
    late = _session(99, datetime(2024, 3, 6, 23, 50, tzinfo=SH), 20)  # ends after midnight
    parts, info = split_by_time([*ss, late], dev_frac=0.2, test_frac=0.25)
    assert late not in parts.dev + parts.test and info.dropped_straddling == 1
    # a look-ahead target knows a session's label only its window later
    week = load_target("return_visit")
    day = week.model_copy(update={"rule": week.rule.model_copy(update={"days": 1.0})})
    known = known_at_of(ss, day)
    parts, info = split_by_time(ss, dev_frac=0.2, test_frac=0.25, known_at=known)
    assert (len(parts.train), len(parts.dev), len(parts.test)) == (30, 10, 20)
    assert info.dropped_straddling == 20
    assert all(known(s) < info.dev_from for s in parts.train)
    assert all(known(s) < info.test_from for s in parts.dev)
    with pytest.raises(ConfigError, match="longer than"):  # a week's window in 8 days
        split_by_time(ss, known_at=known_at_of(ss, week))


def test_time_split_refusals():
    with pytest.raises(ConfigError, match="unknown split"):
        split_parts(_days(), "random")
    with pytest.raises(ConfigError, match="test_frac"):
        split_parts(_days(), "time", test_frac=1.0)
    agg = [Session(session_id="x", user_id="u", aggregates={"pages": 3})]
    with pytest.raises(ConfigError, match="timed events"):
        split_by_time(agg)


def test_the_user_split_is_the_eval_split_it_always_was():
    t = load_task("synth-personas", seed=3, synth_n=300)
    parts, _ = split_parts(t.all_rows, "user", seed=3)
    assert not {s.user_id for s in parts.test} & {s.user_id for s in parts.train + parts.dev}
    assert t.protocol.startswith("one file split by user (seed 3): test 25%")


def test_bootstrap_intervals_score_each_resample_as_sklearn_does():
    rng = np.random.default_rng(2)
    y = (rng.random(300) < 0.2).astype(float)
    p = np.round(rng.random(300) + 0.3 * y, 1)  # many ties
    order = np.argsort(-p, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(p[order]) != 0])
    idx = rng.integers(0, 300, 300)
    w = np.bincount(idx, minlength=300)[order][None, :]
    a, b = _resample_scores(np.add.reduceat(w * y[order], starts, axis=1),
                            np.add.reduceat(w * (1 - y[order]), starts, axis=1))
    assert a[0] == pytest.approx(roc_auc_score(y[idx], p[idx]))
    assert b[0] == pytest.approx(average_precision_score(y[idx], p[idx]))
    ci = bootstrap_intervals(np.where(y == 1, "y", "n"), p, "y")
    assert ci["auroc_lo"] < roc_auc_score(y, p) < ci["auroc_hi"]
    assert bootstrap_intervals(["n", "n"], np.array([0.1, 0.2]), "y") == {}


def test_splice_replaces_the_section_and_keeps_the_rest(tmp_path):
    report = tmp_path / "report.md"
    report.write_text("# R\n\n| a |\n\n## Plots\n\n![x](x.png)\n")
    assert splice(report, [BEGIN, "## Time split", "one", END])
    assert splice(report, [BEGIN, "## Time split", "two", END])
    text = report.read_text()
    assert text.count(BEGIN) == 1 and "two" in text and "one" not in text
    assert text.index(END) < text.index("## Plots") and text.startswith("# R\n\n| a |\n")
    assert not splice(tmp_path / "none.md", [BEGIN, END])


def test_eval_time_split_writes_its_report_beside_the_user_split(tmp_path, embed_home):
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"},
                 index_dir=tmp_path / "indexes")
    out = tmp_path / "synth"
    cfg = dict(task="synth-personas", synth_n=240, seed=1, methods=["majority", "gbm"])
    run_eval(EvalConfig(out=out, **cfg), s)
    res = run_eval(EvalConfig(out=out / "time", split="time", **cfg), s)
    assert res.split.by == "time" and "split by time" in res.protocol
    text = (out / "report.md").read_text()
    assert "## Time split beside the user split" in text and "--split time" in text
    assert text.index(END) < text.index("## Plots")
    # a later user-split run keeps the section
    run_eval(EvalConfig(out=out, **cfg), s)
    assert (out / "report.md").read_text().count(BEGIN) == 1


def _pred(sid: str, p: float, label: str) -> PatternPrediction:
    return PatternPrediction(session_id=sid, label=label, probabilities={"b": p, "n": 1 - p},
                             confidence=max(p, 1 - p), abstained=False, explanation="",
                             evidence=[])


def test_split_then_score_through_the_cli(tmp_path, embed_home):
    env = {"BEHAVIOR_RAG_HOME": str(embed_home)}
    sessions = [s.model_copy(update={"label": None}) for s in generate(200, seed=5).sessions]
    write_store(sessions, tmp_path / "store")
    rep = cli_json(env, "split", str(tmp_path / "store"), "--target", "purchase", "--out",
                   str(tmp_path / "parts"))[0]
    assert rep["target"] == "purchase" and set(rep["parts"]) == {"train", "dev", "test"}
    full = {s.session_id: s for s in sessions}
    test = read_store(tmp_path / "parts" / "test")
    assert all(s.events == full[s.session_id].events for s in test)  # whole sessions
    labels = (tmp_path / "parts" / "test_labels.csv").read_text().splitlines()
    assert labels[0] == "session_id,label" and len(labels) - 1 == rep["labels"]["test"][
        "no_purchase"] + rep["labels"]["test"].get("will_buy", 0)
    by_time = cli_json(env, "split", str(tmp_path / "store"), "--by", "time", "--out",
                       str(tmp_path / "t"))[0]
    assert by_time["split"]["by"] == "time" and by_time["target"] is None
    preds = tmp_path / "preds.json"
    preds.write_text("".join(_pred(*r).model_dump_json() + "\n" for r in
                             (("1", 0.9, "b"), ("2", 0.2, "n"), ("3", 0.6, "b"))))
    (tmp_path / "truth.csv").write_text("session_id,label\n1,b\n2,n\n3,n\n9,b\n")
    sc = cli_json(env, "score", str(preds), "--labels", str(tmp_path / "truth.csv"),
                  "--positive", "b")[0]
    assert (sc["scored"], sc["labels_without_prediction"]) == (3, 1)
    assert sc["metrics"]["auroc"] == 1.0 and sc["metrics"]["f1_pos"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("args, message", [
    (["split", "STORE", "--out", "X", "--by", "random"], "unknown --split"),
    (["split", "STORE", "--out", "X", "--input", "first:3"], "give --target too"),
    (["score", "PREDS", "--labels", "NOPE.csv"], "label file not found"),
])
def test_split_and_score_refusals_name_the_problem(tmp_path, args, message):
    import subprocess
    import sys

    write_store(generate(20, seed=1).sessions, tmp_path / "store")
    (tmp_path / "preds.json").write_text(_pred("1", 0.5, "b").model_dump_json() + "\n")
    subs = {"STORE": str(tmp_path / "store"), "X": str(tmp_path / "x"),
            "PREDS": str(tmp_path / "preds.json"), "NOPE.csv": str(tmp_path / "nope.csv")}
    p = subprocess.run([sys.executable, "-m", "behavior_rag.cli",
                        *[subs.get(a, a) for a in args]], capture_output=True, text=True)
    assert p.returncode == 2 and message in json.loads(p.stderr)["message"]


def test_a_label_file_without_the_columns_is_refused(tmp_path):
    from behavior_rag.errors import DataError
    from behavior_rag.evaluation.score import read_labels

    (tmp_path / "l.csv").write_text("id,label\n1,b\n")
    with pytest.raises(DataError, match="session_id") as e:
        read_labels(tmp_path / "l.csv")
    assert e.value.file == str(tmp_path / "l.csv")


def test_uci_has_no_time_split(tmp_path):
    from tests.conftest import UCI, need

    with pytest.raises(ConfigError, match="timed events"):
        load_task("uci-intent", data=need(UCI), split="time")
