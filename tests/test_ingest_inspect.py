"""``ingest --inspect`` on real files: what it reports, and that its mapping ingests the file."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from behavior_rag.ingest.inspect import inspect_file
from behavior_rag.ingest.load import load_events
from behavior_rag.ingest.models import ColumnMapping
from behavior_rag.ingest.store import read_store
from tests.conftest import CDNOW_SAMPLE, DATA, TAOBAO, need

OTTO = DATA / "otto_sample" / "train.jsonl"


def _cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"BEHAVIOR_RAG_HOME": str(tmp_path / "home"),
                        "BEHAVIOR_RAG_INGEST__PSEUDONYM_KEY": "k"}
    p = subprocess.run([sys.executable, "-m", "behavior_rag.cli", *args], capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    return p


def _sessions(store):
    return [s.model_dump(exclude={"source"}) for s in read_store(store)]


def test_inspected_mapping_ingests_otto_like_the_adapter(tmp_path):
    # the guesser, not the adapter: --format generic
    p = _cli(tmp_path, "ingest", str(need(OTTO)), "--inspect", "--format", "generic", "--human")
    assert not list(tmp_path.glob("*store*"))
    assert "aid" in p.stderr and "unix_ms" in p.stderr
    (tmp_path / "mapping.yaml").write_text(p.stdout)
    _cli(tmp_path, "ingest", str(OTTO), "--format", "generic", "--mapping",
         str(tmp_path / "mapping.yaml"), "--out", str(tmp_path / "guessed-store"))
    _cli(tmp_path, "ingest", str(OTTO), "--format", "otto", "--out", str(tmp_path / "otto-store"))
    guessed, adapter = _sessions(tmp_path / "guessed-store"), _sessions(tmp_path / "otto-store")
    assert len(adapter) == 20 and guessed == adapter


def test_inspect_json_reports_delimiter_nulls_and_timestamps(tmp_path):
    with open(need(TAOBAO), newline="") as f:
        rows = list(csv.reader(f))[:201]
    rows[1:51] = [["NA", *r[1:]] for r in rows[1:51]]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        csv.writer(f, delimiter=";").writerows(rows)
    p = _cli(tmp_path, "ingest", str(tmp_path / "t.csv"), "--inspect", "--format", "generic")
    ins = json.loads(p.stdout)
    assert (ins["file_type"], ins["delimiter"], ins["rows_sampled"]) == ("csv", ";", 200)
    cols = {c["name"]: c for c in ins["columns"]}
    assert cols["user_id"]["null_rate"] == 0.25  # NA is a null token by default
    assert cols["behavior_type"]["samples"][0] == rows[51][3]
    assert (ins["timestamp_format"], ins["timestamp_resolution"]) == ("unix_s", "second")
    m = ins["proposed_mapping"]
    assert (m["user_id"], m["event_type"], m["category"]) == ("user_id", "behavior_type",
                                                              "category_id")
    assert list(tmp_path.iterdir()) == [tmp_path / "t.csv"]  # nothing written


def test_inspect_day_resolution_and_session_only_log(tmp_path, settings):
    ins = inspect_file(need(CDNOW_SAMPLE))
    assert ins.format == "cdnow" and ins.timestamp_resolution == "day"
    assert any("day resolution" in n for n in ins.notes)
    with open(tmp_path / "clicks.tsv", "w") as f:
        f.write("SessionId\tItemId\tTime\n")
        for line in need(OTTO).read_text().splitlines()[:5]:
            r = json.loads(line)
            f.writelines(f"{r['session']}\t{e['aid']}\t{e['ts']}\n" for e in r["events"])
    ins = inspect_file(tmp_path / "clicks.tsv")
    m = ins.proposed_mapping
    assert (ins.delimiter, m.session_id, m.item_id, m.timestamp, m.user_id) == (
        "\t", "SessionId", "ItemId", "Time", None)
    assert (m.timestamp_format, m.event_type_constant) == ("unix_ms", "view")
    res = load_events(tmp_path / "clicks.tsv", mapping=ColumnMapping.model_validate(
        m.model_dump()), settings=settings)
    assert res.report.sessions == 5 and not res.report.users_known
