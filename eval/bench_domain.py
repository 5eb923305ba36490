"""How often the out-of-domain check flags sessions (one run): a model fitted on synthetic
personas applied to held-out synthetic users and to real Taobao sessions, and a model fitted
on Taobao (purchase target) applied to held-out Taobao users and to synthetic sessions.

Usage:  python eval/bench_domain.py [--out eval/reports/out_of_domain.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from behavior_rag.api import BehaviorRAG  # noqa: E402
from behavior_rag.atomic import replace_file  # noqa: E402
from behavior_rag.evaluation import split_by_user  # noqa: E402
from behavior_rag.evaluation.loaders import load_task  # noqa: E402
from behavior_rag.labels.targets import load_target  # noqa: E402
from behavior_rag.settings import Settings  # noqa: E402
from behavior_rag.synth import generate  # noqa: E402


def _rates(rag: BehaviorRAG, sessions) -> tuple[float, float, Counter]:
    preds = rag.classify(list(sessions))
    flagged = [p for p in preds if p.out_of_domain]
    why = Counter(w.split(": ", 1)[1].split(" (")[0].split(" ")[0] for p in flagged
                  for w in p.warnings if w.startswith("outside what"))
    conf = float(np.mean([p.confidence for p in preds if not p.out_of_domain] or [0]))
    return len(flagged) / len(preds), conf, why


def main(args) -> None:
    synth = split_by_user(generate(1500, seed=0).sessions, seed=0)
    task = load_task("taobao-intent", seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        s = Settings(embed={"backend": "onnx-int8"}, llm={"backend": "none"})
        rag = BehaviorRAG(s, Path(d) / "synth")
        rag.fit(synth.train, synth.dev)
        for name, sess in (("held-out synthetic users", synth.test),
                           ("real Taobao sessions (pre-cart)", task.test[:1000])):
            rate, _, why = _rates(rag, sess)
            rows.append(("personas (synthetic)", name, len(sess), rate, why.most_common(3)))
        st = s.model_copy(update={"classify": s.classify.model_copy(
            update={"taxonomy": "purchase_intent", "llm": "never"})})
        rag = BehaviorRAG(st, Path(d) / "taobao")
        rag.fit(task.train, task.val, heads=["facts"], target=load_target("purchase"))
        for name, sess in (("held-out Taobao users", task.test),
                           ("synthetic sessions", synth.test)):
            rate, _, why = _rates(rag, sess)
            rows.append(("Taobao purchase target", name, len(sess), rate, why.most_common(3)))
    lines = ["# Out-of-domain flags (`eval/bench_domain.py`)", "",
             f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. A prediction is flagged "
             "(and abstains) when the session's facts are outside what the training sessions "
             "spanned in more features than about 1 % of dev sessions are (`heads/domain.py`).",
             "Command: `python eval/bench_domain.py`", "",
             "| model fitted on | sessions classified | n | flagged | most frequent reasons |",
             "|---|---|---|---|---|"]
    lines += [f"| {m} | {n} | {k} | {r:.1%} | {', '.join(f'{w} ({c})' for w, c in why)} |"
              for m, n, k, r, why in rows]
    replace_file(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "reports" / "out_of_domain.md")
    main(ap.parse_args())
