"""What the items head adds to the product (one run): ``BehaviorRAG.fit`` with the default
heads and with ``items`` added, on the eval's own splits, scored on the same test sessions,
with a paired bootstrap interval of the difference.

* Taobao purchase intent (the ``purchase`` target, users' history recorded): auROC / auPR;
* synthetic personas: macro-F1.

Usage:  python eval/items_gain.py [--out eval/reports/items_head.md] [--boot 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from behavior_rag.api import BehaviorRAG  # noqa: E402
from behavior_rag.atomic import replace_file  # noqa: E402
from behavior_rag.evaluation.loaders import load_task  # noqa: E402
from behavior_rag.labels.targets import load_target  # noqa: E402
from behavior_rag.settings import Settings  # noqa: E402

DEFAULT = ["facts", "embed", "knn"]


def _run(task, heads: list[str], tmp: Path):
    s = Settings(embed={"backend": "onnx-int8"}, llm={"backend": "none"},
                 classify={"taxonomy": task.spec.taxonomy, "llm": "never"})
    rag = BehaviorRAG(s, tmp / "+".join(heads), fresh=True)
    if task.history:
        rag.add_history(task.history)
    target = load_target(task.spec.target) if task.spec.target else None
    report = rag.fit(task.train, task.val, heads=heads, target=target)
    preds = BehaviorRAG(s, tmp / "+".join(heads)).classify(task.test)
    return report.chosen, preds


def _score(task, preds) -> dict[str, np.ndarray]:
    y = np.array([s.label for s in task.test])
    if task.spec.positive:
        return {"y": y == task.spec.positive,
                "p": np.array([p.probabilities[task.spec.positive] for p in preds])}
    return {"y": y, "p": np.array([p.label for p in preds])}


def _metric(task, y, p) -> dict[str, float]:
    if task.spec.positive:
        return {"auroc": roc_auc_score(y, p), "aupr": average_precision_score(y, p)}
    return {"macro_f1": f1_score(y, p, average="macro")}


def _boot(task, y, a, b, n: int) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(0)
    diffs: dict[str, list[float]] = {}
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        if task.spec.positive and (y[i].all() or not y[i].any()):
            continue
        ma, mb = _metric(task, y[i], a[i]), _metric(task, y[i], b[i])
        for k in ma:
            diffs.setdefault(k, []).append(mb[k] - ma[k])
    return {k: (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975)))
            for k, v in diffs.items()}


def main(args) -> None:
    lines = ["# The items head (`eval/items_gain.py`)", "",
             f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on a shared 2-core CPU box. "
             "`BehaviorRAG.fit` on each task's training part (dev: its validation part) with the "
             f"default heads ({', '.join(DEFAULT)}) and with `items` added, `classify` on the "
             f"same test sessions; 95 % paired bootstrap ({args.boot} resamples) of the "
             "difference (with items minus without).",
             f"Command: `python eval/items_gain.py --boot {args.boot}`", "",
             "| task | heads fitted | stack chose | metric | value | difference [95 % CI] |",
             "|---|---|---|---|---|---|"]
    for name in ("taobao-intent", "synth-personas"):
        task = load_task(name, seed=0)
        with tempfile.TemporaryDirectory() as d:
            base_chosen, base = _run(task, DEFAULT, Path(d))
            item_chosen, items = _run(task, [*DEFAULT, "items"], Path(d))
        a, b = _score(task, base), _score(task, items)
        ma, mb = _metric(task, a["y"], a["p"]), _metric(task, b["y"], b["p"])
        ci = _boot(task, a["y"], a["p"], b["p"], args.boot)
        for k in ma:
            lines.append(f"| {name} | {', '.join(DEFAULT)} | {'+'.join(base_chosen)} | {k} | "
                         f"{ma[k]:.4f} | |")
            lines.append(f"| {name} | {', '.join(DEFAULT)}, items | {'+'.join(item_chosen)} | "
                         f"{k} | {mb[k]:.4f} | {mb[k] - ma[k]:+.4f} [{ci[k][0]:+.4f}, "
                         f"{ci[k][1]:+.4f}] |")
        print("\n".join(lines[-2 * len(ma):]), flush=True)
    replace_file(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "reports" / "items_head.md")
    main(ap.parse_args())
