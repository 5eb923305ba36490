"""DataFrames out: predictions, neighbours and profiles from a real (kNN-only) index as polars and
pandas frames, one row per item, back into the same models through parquet, jsonl and csv, and
``behavior-rag classify --out FILE`` writing those tables."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import polars as pl
import pytest

import behavior_rag
from behavior_rag import frames
from behavior_rag.errors import ConfigError, DataError
from behavior_rag.ingest.store import write_store
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.types import Citation, Evidence, PatternPrediction

# A fact's value may be any of these; JSON text must keep each one's type (1 is not 1.0 or True)
ODD_VALUES = [3, 2.5, 1.0, True, False, "evening", ["a", "b"], [[1, 0.5]], None, 0, "",
              {"k": [1, None]}, 1e-300, "ünïcode \"quoted\", with comma\nand newline"]


@pytest.fixture(scope="module")
def setup(embed_home, tmp_path_factory):
    """A small labelled index (kNN only, no LLM), saved, and real predictions from it."""
    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})
    data = generate(120, seed=31).sessions
    ix = tmp_path_factory.mktemp("frames") / "ix"
    rag = behavior_rag.BehaviorRAG.from_settings(s, ix)
    rag.add_labelled(data[:100])
    rag.save()
    return rag, data, rag.classify_many(data[100:110]), ix


def _rich(p: PatternPrediction) -> PatternPrediction:
    """``p`` with every optional field set and evidence values of every type."""
    ev = [Evidence(fact=f"f{i}", value=v, events=[i, i + 1], event_type="view", text=f"t{i}",
                   cites=[Citation(session_id="earlier", events=[0, 2])], contribution=0.1 * i)
          for i, v in enumerate(ODD_VALUES)]
    return p.model_copy(update={
        "against": ev, "llm_margin": -0.75, "fallback_reason": "llm timed out",
        "llm_scores": {"a": -1.5, "b": -0.25}, "llm_asked": True, "source": "stack+llm",
        "head_probabilities": {"knn": {"a": 0.5, "b": 0.5}, "facts": {}},
        "warnings": ["free text cut"], "knn_vote": {}, "decided_by": ["knn", "llm"]})


def _value_types(preds):
    return [[type(e.value) for e in p.evidence + p.against] for p in preds]


@pytest.fixture(scope="module")
def preds(setup):
    real = setup[2]
    return real + [_rich(real[0])]


def test_one_row_per_prediction_with_its_evidence_nested(setup):
    rag, data, real, _ = setup
    df = behavior_rag.to_polars(rag.classify_many(data[100:110]))  # what users write
    assert df.height == 10 and df["session_id"].to_list() == [p.session_id for p in real]
    assert [f.name for f in df.schema["evidence"].inner.fields] == list(Evidence.model_fields)
    assert df["label"].to_list() == [p.label for p in real]
    for row, p in zip(df.iter_rows(named=True), real):
        assert p.evidence  # kNN predictions carry their label's definition as evidence
        assert [(e["fact"], e["text"], e["events"]) for e in row["evidence"]] == \
            [(e.fact, e.text, e.events) for e in p.evidence]
        assert [json.loads(e["value"]) for e in row["evidence"]] == [e.value for e in p.evidence]
        assert {d["key"]: d["value"] for d in row["probabilities"]} == p.probabilities


def test_round_trip_keeps_every_field_and_value_type(preds):
    back = frames.from_polars(frames.to_polars(preds))
    assert back == preds
    assert _value_types(back) == _value_types(preds)
    rich = back[-1]
    assert rich.head_probabilities == {"knn": {"a": 0.5, "b": 0.5}, "facts": {}}
    assert rich.knn_vote == {} and preds[0].llm_scores is None and back[0].llm_scores is None


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_files_round_trip(preds, tmp_path, fmt):
    path = frames.write_frame(frames.to_polars(preds), tmp_path / f"preds.{fmt}")
    # plain polars reads parquet and (given the schema) jsonl; csv needs its nested JSON decoded
    frame = {"parquet": lambda: pl.read_parquet(path),
             "jsonl": lambda: pl.read_ndjson(path, schema=frames.schema("prediction")),
             "csv": lambda: frames.read_frame(path, "prediction")}[fmt]()
    back = frames.from_polars(frame)
    assert back == preds and _value_types(back) == _value_types(preds)
    assert frames.from_polars(frames.read_frame(path, "prediction")) == preds
    assert [p.name for p in tmp_path.iterdir()] == [f"preds.{fmt}"]  # no temp left behind


def test_neighbours_and_profiles_round_trip(setup, tmp_path):
    rag, data, _, _ = setup
    hits = rag.similar(session_id=data[3].session_id, k=5, with_text=True)
    users = sorted({s.user_id for s in data[:100]})[:4]
    profiles = [rag.profile(u, patterns=True) for u in users]
    assert any("dominant_patterns" in p.facts for p in profiles)
    for kind, items in (("neighbor", hits), ("profile", profiles)):
        df = frames.to_polars(items)
        assert df.height == len(items) and df.schema == frames.schema(kind)
        assert frames.from_polars(df) == items
        for fmt in frames.FILE_FORMATS:
            path = frames.write_frame(df, tmp_path / f"{kind}.{fmt}")
            assert frames.from_polars(frames.read_frame(path, kind)) == items, fmt
    df = frames.to_polars(profiles)
    facts = {d["key"]: json.loads(d["value"]["value"]) for d in df["facts"][0]}
    assert facts == {k: f.value for k, f in profiles[0].facts.items()}
    assert df["as_of"].to_list() == [p.as_of for p in profiles]


def test_to_pandas_gives_the_same_values(preds):
    pd_rows = behavior_rag.to_pandas(preds).to_dict("records")
    assert pd_rows == frames.to_polars(preds).to_dicts()
    assert pd_rows[0]["llm_scores"] is None and pd_rows[-1]["against"][0]["value"] == "3"


def test_to_pandas_without_pandas_names_what_to_install(preds, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"behavior_rag\[pandas\]"):
        frames.to_pandas(preds)


def test_kinds_empty_lists_and_bad_input(setup, preds):
    rag, data, _, _ = setup
    hits = rag.similar(session_id=data[0].session_id, k=2)
    with pytest.raises(ConfigError, match="mixed kinds"):
        frames.to_polars([preds[0], hits[0]])
    with pytest.raises(ConfigError, match="cannot make a frame of Session"):
        frames.to_polars(data[:2])
    with pytest.raises(ConfigError, match="empty list has no kind"):
        frames.to_polars([])
    with pytest.raises(ConfigError, match="not neighbor"):
        frames.to_polars(preds, kind="neighbor")
    for kind in frames.MODELS:
        empty = frames.to_polars([], kind=kind)
        assert empty.height == 0 and empty.schema == frames.schema(kind)
        assert frames.from_polars(empty) == []
    assert frames.to_polars(preds[0]).height == 1  # one model: one row
    with pytest.raises(ConfigError, match="closest is prediction"):
        frames.from_polars(frames.to_polars(preds).drop("evidence"))
    bad = frames.to_polars(preds[:1]).with_columns(pl.lit("x").alias("confidence"))
    with pytest.raises(ConfigError, match="do not fit the prediction schema"):
        frames.from_polars(bad)
    broken = frames.to_polars(preds[:1]).with_columns(pl.lit("maybe").alias("source"))
    with pytest.raises(DataError, match="not a valid prediction"):
        frames.from_polars(broken)


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "behavior_rag.cli", *args], capture_output=True,
                          text=True, env=os.environ | env, timeout=600)


@pytest.fixture(scope="module")
def cli_env(embed_home) -> dict:
    return {"BEHAVIOR_RAG_HOME": str(embed_home), "BEHAVIOR_RAG_EMBED__BACKEND": "onnx-int8"}


def test_cli_classify_writes_tables_that_read_back_as_its_json(setup, cli_env, tmp_path):
    _, data, _, ix = setup
    write_store(data[100:106], tmp_path / "new")
    base = ["classify", str(tmp_path / "new"), "--index", str(ix), "--llm", "none"]
    p = _cli(cli_env, *base)
    assert p.returncode == 0, p.stderr[-2000:]
    as_json = [PatternPrediction.model_validate_json(x) for x in p.stdout.splitlines()]
    assert len(as_json) == 6
    # --out-format parquet; csv from --out's suffix
    p = _cli(cli_env, *base, "--out-format", "parquet", "--out", str(tmp_path / "f.parquet"))
    assert p.returncode == 0 and p.stdout == "", p.stderr[-2000:]
    assert _cli(cli_env, *base, "--out", str(tmp_path / "f.csv")).returncode == 0
    p = _cli(cli_env, *base, "--out-format", "jsonl")  # text tables may go to stdout
    assert p.returncode == 0, p.stderr[-2000:]
    rows = pl.read_ndjson(io.StringIO(p.stdout), schema=frames.schema("prediction"))

    def same(ps):  # timings are the run's own wall-clock seconds
        return [x.model_copy(update={"timings": {}}) for x in ps]

    got = frames.from_polars(pl.read_parquet(tmp_path / "f.parquet"))
    assert same(got) == same(as_json)
    assert same(frames.from_polars(frames.read_frame(tmp_path / "f.csv", "prediction"))) == \
        same(as_json)
    assert same(frames.from_polars(rows)) == same(as_json)


@pytest.mark.parametrize("args, field", [
    (["--out-format", "parquet"], "out_format"),  # binary to stdout
    (["--out", "{tmp}/no/such/f.parquet"], "out"),
    (["--out", "{tmp}"], "out"),  # a folder
    (["--out-format", "xlsx", "--out", "{tmp}/f.xlsx"], "out_format"),
    (["--out-format", "csv", "--human"], "human"),
])
def test_cli_bad_output_options_are_json_errors(cli_env, tmp_path, args, field):
    # checked before the index or the sessions are opened: neither exists here
    args = [a.format(tmp=tmp_path) for a in args]
    p = _cli(cli_env, "classify", str(tmp_path / "missing"), *args)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    e = json.loads(p.stderr)
    assert e["error"] == "ConfigError" and e["field"] == field, e
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_fitted_stack_predictions_round_trip(fitted, tmp_path):
    # the fitted heads fill what kNN-only predictions leave empty: TreeSHAP contributions,
    # `against`, voters, head probabilities (the `fitted` fit takes minutes on 2 cores)
    rag, _, sp, _ = fitted
    preds = rag.classify(sp.test[:40])
    assert any(p.against for p in preds) and any(p.voters for p in preds)
    df = frames.to_polars(preds)
    for fmt in frames.FILE_FORMATS:
        path = frames.write_frame(df, tmp_path / f"p.{fmt}")
        back = frames.from_polars(frames.read_frame(path, "prediction"))
        assert back == preds and _value_types(back) == _value_types(preds), fmt
