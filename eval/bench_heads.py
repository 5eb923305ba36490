"""Throughput of the classifier users call, by what its chosen heads read (one run, one box).

On the real Taobao purchase-intent task (the eval's split and history), ``BehaviorRAG.fit``
twice on the training part:

* a facts-only model (``heads=["facts"]``, what the stack chooses on Taobao): the featurizer
  renders, embeds and searches nothing; ``classify_many`` on the test part against LightGBM's
  own ``predict`` on the same fact features (the eval's gradient-boosting baseline);
* a model whose heads read vectors and neighbours (``heads=["embed", "knn"]``):
  ``classify_many`` with a cold embedding cache against the embedder's own rate on the same
  texts, also cold.

The facts-only rate is the median of ``--rounds`` fresh processes (each warms up on the first
sessions, then times one ``classify_many``: the box is shared and noisy). ``--baseline DIR``
times another source tree (an earlier version of the code) on the same fitted index, its
rounds interleaved with ours, so both rates come from one run.

Usage:  python eval/bench_heads.py [--n 2000] [--rounds 3] [--baseline DIR]
        [--out eval/reports/bench_heads.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from behavior_rag.api import BehaviorRAG  # noqa: E402
from behavior_rag.atomic import replace_file  # noqa: E402
from behavior_rag.evaluation.baselines import GradientBoosting, TaskData  # noqa: E402
from behavior_rag.evaluation.loaders import load_task  # noqa: E402
from behavior_rag.render import render  # noqa: E402
from behavior_rag.settings import Settings  # noqa: E402


def _home(tmp: Path, name: str) -> Path:
    """A fresh home (empty embedding cache) sharing the converted models."""
    home = tmp / name
    home.mkdir()
    models = Settings().home / "models"
    models.mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(models)
    return home


def _rag(home: Path, ix: Path, task) -> BehaviorRAG:
    s = Settings(home=home, embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                 classify={"taxonomy": task.spec.taxonomy, "llm": "never"})
    return BehaviorRAG(s, ix)


def _fit(home: Path, ix: Path, task, heads: list[str]) -> list[str]:
    rag = _rag(home, ix, task)
    rag.add_history(task.history)
    return rag.fit(task.train, task.val, heads=heads).chosen


def _rate(rag: BehaviorRAG, sessions) -> tuple[float, object]:
    rag.classifier  # noqa: B018 - index, model, history loaded before the clock
    t = time.perf_counter()
    preds = rag.classify_many(sessions)
    return len(sessions) / (time.perf_counter() - t), preds


# One timing in a fresh process, by the code of the tree named first on the command line.
_TIMED = """
import json, sys, time
from pathlib import Path
tree, home, ix, n = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
sys.path[:0] = [tree, tree + "/eval"]
from bench_heads import _rag
from behavior_rag.evaluation.loaders import load_task
task = load_task("taobao-intent", seed=0)
test = (task.test * (1 + n // max(len(task.test), 1)))[:n]
rag = _rag(home, ix, task)
rag.classify_many(test[:50])
t = time.perf_counter()
rag.classify_many(test)
print(json.dumps(n / (time.perf_counter() - t)))
"""


def _timed(tree: Path, home: Path, ix: Path, n: int) -> float:
    """Sessions/s of one facts-only ``classify_many`` by ``tree``'s code, in its own process."""
    got = subprocess.run([sys.executable, "-c", _TIMED, str(tree), str(home), str(ix), str(n)],
                         capture_output=True, text=True, check=True)
    return float(json.loads(got.stdout.strip().splitlines()[-1]))


def _rounds(args, home: Path, ix: Path, n: int) -> tuple[list[float], list[float]]:
    """(ours, the baseline's) rates, interleaved round by round."""
    ours, base = [], []
    for _ in range(args.rounds):
        ours.append(_timed(ROOT, home, ix, n))
        if args.baseline is not None:
            base.append(_timed(args.baseline, home, ix, n))
    return ours, base


def main(args) -> None:
    task = load_task("taobao-intent", seed=0)
    test = (task.test * (1 + args.n // max(len(task.test), 1)))[: args.n]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        home = _home(tmp, "fit")
        chosen = _fit(home, tmp / "facts", task, ["facts"])
        rag = _rag(home, tmp / "facts", task)
        rag.classify_many(test[:50])  # warm: LightGBM, jinja templates
        _, preds = _rate(rag, test)
        stats = rag.classifier.featurizer.stats
        ours, base = _rounds(args, home, tmp / "facts", len(test))
        facts_rate = statistics.median(ours)
        gbm = GradientBoosting(n_threads=1)
        gbm.fit(TaskData(sessions=task.train, labels=[x.label for x in task.train]))
        t = time.perf_counter()
        gbm.predict_proba(TaskData(sessions=test, labels=[x.label for x in test]))
        gbm_rate = len(test) / (time.perf_counter() - t)
        rows.append(("facts-only model: classify_many", facts_rate,
                     f"chosen {'+'.join(chosen)}; rendered {stats.rendered}, embedded "
                     f"{stats.embedded}, searched {stats.searched}; median of "
                     f"{', '.join(f'{r:,.0f}' for r in ours)}"))
        if base:
            rows.append(("facts-only model: classify_many, baseline code", statistics.median(base),
                         f"{args.baseline_name}; median of {', '.join(f'{r:,.0f}' for r in base)}"
                         ", interleaved with the row above"))
        rows.append(("gradient boosting on the same facts (the eval's baseline)", gbm_rate,
                     "facts computed inside; probabilities only, no evidence"))
        chosen_v = _fit(home, tmp / "vec", task, ["embed", "knn"])
        cold = _home(tmp, "cold")
        rag_v = _rag(cold, tmp / "vec", task)
        vec_rate, _ = _rate(rag_v, test[: args.n_vec])
        cold2 = _home(tmp, "cold2")
        emb = _rag(cold2, tmp / "vec", task).embedder
        texts = [render(s) for s in test[: args.n_vec]]
        t = time.perf_counter()
        emb.embed(texts)
        emb_rate = len(texts) / (time.perf_counter() - t)
        rows.append(("vector model: classify_many, cold cache", vec_rate,
                     f"chosen {'+'.join(chosen_v)}"))
        rows.append(("embedder alone, same texts, cold cache", emb_rate, "onnx-int8"))
    write(args, rows, facts_rate, gbm_rate, vec_rate, emb_rate, len(test),
          statistics.median(base) if base else None)


def write(args, rows, facts_rate, gbm_rate, vec_rate, emb_rate, n, base_rate=None) -> None:
    lines = [
        "# Classify throughput by what the chosen heads read (`eval/bench_heads.py`)", "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on a shared 2-core CPU box, "
        f"all numbers from this one run. Real Taobao purchase-intent task (the eval's split, "
        f"users' history recorded), {n} test sessions (the test part repeated to {n}); "
        f"vector rows on the first {args.n_vec}. `BehaviorRAG.fit` then `classify_many` "
        "(classify.llm=never), every prediction with its verified evidence.",
        f"Command: `python eval/bench_heads.py --n {args.n} --n-vec {args.n_vec} --rounds "
        f"{args.rounds}{' --baseline DIR' if args.baseline else ''}`", "",
        "| run | sessions/s | notes |", "|---|---|---|"]
    lines += [f"| {name} | {rate:,.0f} | {note} |" for name, rate, note in rows]
    lines += ["", "## Outcome", "",
              f"- facts-only `classify_many`: {facts_rate:,.0f} sessions/s (target >= 2,000: "
              f"{'met' if facts_rate >= 2000 else f'missed by {2000 - facts_rate:,.0f}'}); "
              f"{facts_rate / gbm_rate:.2f}x the gradient-boosting baseline's predict"
              + (f"; {facts_rate / base_rate:.2f}x the baseline code's rate."
                 if base_rate else "."),
              f"- vector model: {vec_rate / emb_rate:.2f}x the embedder's own rate (target "
              f">= 0.8x: {'met' if vec_rate >= 0.8 * emb_rate else 'missed'})."]
    replace_file(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--n-vec", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a source tree (earlier code) to time on the same fitted index")
    ap.add_argument("--baseline-name", default="baseline",
                    help="how the report names the baseline tree")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "reports" / "bench_heads.md")
    main(ap.parse_args())
