"""The early-prediction curve (eval/early_curve.py): prefixes never show the model more than the
prediction point allows, and the eval writes a report with every row (slow: it fits models)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from behavior_rag.labels.outcomes import label_sessions
from behavior_rag.labels.targets import load_target
from behavior_rag.synth import generate
from tests.conftest import TAOBAO, need

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))

from early_curve import KS, POINT, prefix, prefixes  # noqa: E402


def test_prefixes_stay_before_the_prediction_point_and_keep_the_label():
    target = load_target("purchase")
    cut = label_sessions(generate(80, seed=4).sessions, target).sessions
    for s in cut:
        many = prefixes([s])
        assert [p.n_events for p in many] == [*(k for k in KS if k < s.n_events), s.n_events]
        assert len({p.session_id for p in many}) == len(many)
        for p in many:
            assert p.events == s.events[: p.n_events] and p.label == s.label
            assert not any(e.type in ("cart", "purchase") for e in p.events)
        assert prefix(s, POINT).events == s.events and prefix(s, 2).n_events == min(2, s.n_events)


@pytest.mark.slow
def test_the_curve_report_has_every_row(tmp_path, embed_home):
    need(TAOBAO)
    out = tmp_path / "curve.md"
    p = subprocess.run([sys.executable, str(ROOT / "eval" / "early_curve.py"), "--train-max",
                        "150", "--home", str(embed_home), "--out", str(out)],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    text = out.read_text()
    for k in KS:
        assert f"| first {k} |" in text
    assert "| prediction point |" in text and "Kept, as served today: **" in text
