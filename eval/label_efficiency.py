"""Label efficiency: macro-F1 of `fit` on labels the queue chose vs labels chosen at random.

Synthetic personas: the pool (training users' sessions) is indexed unlabelled, as a shop's own
sessions are; held-out users are the test set. A simulated analyst answers each queued session
with its true label. Per budget (16/32/64/128/256 labels):

* **queue**: what ``/v1/labels/queue`` serves (:class:`behavior_rag.annotate.LabelDesk`,
  TypiClust): the most typical session of each unlabelled cluster for the first 16, then
  after each fit the model's least-sure session of each cluster with the fewest labels, up
  to the next budget;
* **random**: a random sample of the pool of the same size (nested across budgets).

Each fit is what `behavior-rag fit --index IDX` does with the label set: the latest label per
session, 20 % of the labelled users held out as dev, the default heads, no LLM
(``classify.llm=never``). Also reported: the rules alone (coverage and precision per label),
all pool labels, and (``--llm``) the embedded LLM's agreement with the analyst.

Run:  .venv/bin/python eval/label_efficiency.py [--seeds 3] [--n 1500] [--llm]
Writes eval/reports/label_efficiency.md and .json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from behavior_rag.annotate import LabelDesk  # noqa: E402
from behavior_rag.annotate.desk import llm_labels  # noqa: E402
from behavior_rag.api import BehaviorRAG  # noqa: E402
from behavior_rag.evaluation import split_by_user  # noqa: E402
from behavior_rag.labels import LabelSet, NewLabel  # noqa: E402
from behavior_rag.labels.rules import rule_labels  # noqa: E402
from behavior_rag.settings import Settings  # noqa: E402
from behavior_rag.synth import generate  # noqa: E402
from behavior_rag.taxonomy import load_taxonomy  # noqa: E402

BUDGETS = (16, 32, 64, 128, 256)
OUT = ROOT / "eval" / "reports" / "label_efficiency"


def settings(home: Path, llm: str = "none", history: bool = False) -> Settings:
    """The eval's settings; ``history``: the fits and the classifier read each user's earlier
    sessions recorded in the index (``classify.history``, as `fit --history` gives them)."""
    return Settings(home=home, embed={"backend": "onnx-int8"}, llm={"backend": llm},
                    classify={"llm": "never", "history": history})


def macro_f1(rag: BehaviorRAG, test) -> float:
    from sklearn.metrics import f1_score

    preds = rag.classify_many([s.model_copy(update={"label": None}) for s in test])
    return float(f1_score([s.label for s in test], [p.label for p in preds], average="macro"))


def fit_on(base: Path, work: Path, home: Path, pool, truth: dict[str, str], chosen: list[str],
           name: str, dev_seed: int = 0, rules: list[NewLabel] = (),
           history: bool = False) -> BehaviorRAG:
    """A copy of the unlabelled index, the analyst's labels in its label set (after the
    rules' labels, when given: `label --rules` first), then fit as `fit --index` does (latest
    label per session; dev = 20 % of the labelled users)."""
    path = work / name
    shutil.copytree(base, path)
    rag = BehaviorRAG(settings(home, history=history), path)
    if rules:
        rag.labels.add(rules, source="rule", who="rules", protect=True)  # as `label --rules`
    rag.labels.add([NewLabel(session_id=s, label=truth[s]) for s in chosen], source="human",
                   who="simulated-analyst")
    labelled, _ = rag.labels.training(pool)  # exactly what `fit --index` fits on
    sp = split_by_user(labelled, seed=dev_seed, dev_frac=0.2, test_frac=0.0)
    rag.fit(sp.train, sp.dev)
    return rag


def one_seed(seed: int, n: int, home: Path, work: Path, with_rules: bool = False,
             out_dir: Path = OUT, history: bool = False) -> dict:
    """One seed's curve, cached in ``out_dir/seed<N>.json`` as soon as it is measured (a later
    run with the same seed reuses the budgets there and adds what is missing)."""
    cache = out_dir / f"seed{seed}.json"
    done = json.loads(cache.read_text()) if cache.exists() else {}
    data = generate(n, seed=100 + seed).sessions
    sp = split_by_user(data, seed=seed, dev_frac=0.0, test_frac=0.3)
    pool, test = sp.train, sp.test
    truth = {s.session_id: s.label for s in pool}
    unlabelled = [s.model_copy(update={"label": None}) for s in pool]
    base = work / f"base{seed}"
    rag = BehaviorRAG(settings(home, history=history), base)
    rag.index_sessions(unlabelled)
    if history:  # every user's sessions, the held-out users' too: a shop's whole log
        rag.add_history(unlabelled + [s.model_copy(update={"label": None}) for s in test])
    rag.save()
    desk = LabelDesk(rag.embedder, load_taxonomy("personas"), seed=seed)
    # `label --rules` first (both arms): the sessions where exactly one definition holds
    rules = rule_labels(unlabelled, load_taxonomy("personas")).labels if with_rules else []
    ruled = {r.session_id for r in rules}
    out: dict = {"seed": seed, "pool": len(pool), "test": len(test), "queue": {},
                 "random": {}, "strategies": {}}
    if all(str(b) in done.get("queue", {}) for b in BUDGETS):
        out |= {k: {int(b): v for b, v in done[k].items()}
                for k in ("queue", "random", "strategies")}
        return finish(out, base, work, home, unlabelled, truth, pool, test, cache, history)
    order = random.Random(seed).sample([s.session_id for s in pool if s.session_id not in
                                        ruled], len(pool) - len(ruled))
    chosen: list[str] = []
    clf = None
    for b in BUDGETS:
        got = desk.order(unlabelled, LabelSet().append(rules, source="rule", who="rules").append(
            [NewLabel(session_id=s, label=truth[s]) for s in chosen], source="human",
            who="sim"), clf, b - len(chosen))
        out["strategies"][b] = got.strategy
        chosen += [e.session_id for e in got.entries]
        fitted = fit_on(base, work, home, unlabelled, truth, chosen, f"q{seed}-{b}",
                        rules=rules, history=history)
        out["queue"][b] = round(macro_f1(fitted, test), 4)
        clf = fitted.classifier
        r = fit_on(base, work, home, unlabelled, truth, order[:b], f"r{seed}-{b}", rules=rules,
                   history=history)
        out["random"][b] = round(macro_f1(r, test), 4)
        print(f"seed {seed} budget {b}: queue {out['queue'][b]} ({got.strategy}) random "
              f"{out['random'][b]}", flush=True)
    return finish(out, base, work, home, unlabelled, truth, pool, test, cache, history)


def finish(out: dict, base: Path, work: Path, home: Path, unlabelled, truth, pool, test,
           cache: Path, history: bool = False) -> dict:
    """All pool labels and the rules alone, then the seed's cache."""
    everything = fit_on(base, work, home, unlabelled, truth, list(truth), f"all{out['seed']}",
                        history=history)
    out["all"] = round(macro_f1(everything, test), 4)
    out["rules"] = rule_labels(pool, load_taxonomy("personas")).report.model_dump()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out, indent=1))
    return out




def llm_agreement(home: Path, work: Path, seed: int, n: int) -> dict:
    """The embedded LLM's suggestions (zero-shot from the taxonomy's descriptions: nothing
    is labelled yet) for the first ``n`` sessions the queue serves at cold start, against
    the analyst's (true) labels."""
    from behavior_rag.classify import Classifier
    from behavior_rag.llm.factory import get_llm

    data = {s.session_id: s for s in generate(1500, seed=100 + seed).sessions}
    s = settings(home, llm="local").model_copy(update={"classify": settings(
        home).classify.model_copy(update={"k_examples": 0})})
    rag = BehaviorRAG(s, work / f"base{seed}")
    unlabelled = list(rag.sessions.values())
    order = LabelDesk(rag.embedder, load_taxonomy("personas"), seed=seed).order(
        unlabelled, LabelSet(), None, n)
    clf = Classifier(rag.index, rag.embedder, get_llm(s), load_taxonomy("personas"),
                     settings=s)
    sessions = [data[e.session_id] for e in order.entries]
    t = time.perf_counter()
    got = llm_labels(clf, sessions)
    said = {x.session_id: x.label for x in got}
    agreed = sum(said.get(x.session_id) == x.label for x in sessions)
    return {"asked": len(sessions), "answered": len(got), "agreed": agreed,
            "rate": round(agreed / len(sessions), 4) if sessions else None,
            "seconds_per_session": round((time.perf_counter() - t) / max(1, len(sessions)), 2),
            "model": s.llm.local_model if hasattr(s.llm, "local_model") else "local"}


def stability(home: Path, work: Path, seed: int, b: int = 64, dev_seeds: int = 4) -> dict:
    """How much `fit` alone moves macro-F1 on the SAME ``b`` random labels: the CLI's dev
    split (``fit --seed``) drawn ``dev_seeds`` ways."""
    data = generate(1500, seed=100 + seed).sessions
    sp = split_by_user(data, seed=seed, dev_frac=0.0, test_frac=0.3)
    truth = {s.session_id: s.label for s in sp.train}
    unlabelled = [s.model_copy(update={"label": None}) for s in sp.train]
    base = work / f"stab{seed}"
    rag = BehaviorRAG(settings(home), base)
    rag.index_sessions(unlabelled)
    rag.save()
    chosen = random.Random(seed).sample(list(truth), len(truth))[:b]
    f1 = [round(macro_f1(fit_on(base, work, home, unlabelled, truth, chosen, f"s{seed}-{d}",
                                dev_seed=d), sp.test), 4) for d in range(dev_seeds)]
    return {"seed": seed, "labels": b, "macro_f1": f1}


def report(runs: list[dict], llm: dict | None) -> str:
    def mean(key: str, b: int) -> float:
        return statistics.mean(r[key][b] for r in runs)

    def sd(key: str, b: int) -> float:
        return statistics.stdev([r[key][b] for r in runs]) if len(runs) > 1 else 0.0

    lines = ["# Label efficiency: the queue's labels vs random labels", "",
             f"Synthetic personas, {len(runs)} seeds (pool {runs[0]['pool']} sessions of "
             f"training users indexed unlabelled, test {runs[0]['test']} sessions of held-out "
             "users). A simulated analyst gives the true label. Each fit is `fit --index` on "
             "the label set (dev = 20 % of the labelled users, default heads, no LLM). "
             "Macro-F1 on the test users, mean ± sd over seeds. Produced by "
             "`eval/label_efficiency.py`.", "",
             "| labels | queue | random | queue − random | queue strategy |",
             "|---:|---:|---:|---:|---|"]
    for b in BUDGETS:
        d = mean("queue", b) - mean("random", b)
        lines.append(f"| {b} | {mean('queue', b):.3f} ± {sd('queue', b):.3f} | "
                     f"{mean('random', b):.3f} ± {sd('random', b):.3f} | {d:+.3f} | "
                     f"{runs[0]['strategies'][b]} |")
    all_f1 = statistics.mean(r["all"] for r in runs)
    lines += ["", f"All {runs[0]['pool']} pool labels: macro-F1 {all_f1:.3f}.", ""]
    lines += targets(runs, mean)
    lines += rules_section(runs[0]["rules"])
    if llm is not None:
        lines += ["", "## The LLM's suggestions", "",
                  f"The embedded LLM ({llm['model']}, zero-shot from the taxonomy's "
                  f"descriptions) on the first {llm['asked']} sessions the queue serves at "
                  f"cold start: agrees with the analyst on {llm['agreed']} "
                  f"({llm['rate']:.0%}; chance is 1/8); {llm['seconds_per_session']} s per "
                  "session on this CPU. In `fit` its labels weigh (a − h) / (1 − h) with a its "
                  "agreement and h the heads' dev accuracy (labels/agreement.py): 0 whenever "
                  "the heads are right more often than it agrees with you."]
    return "\n".join(lines) + "\n"


def targets(runs: list[dict], mean) -> list[str]:
    out = ["## Targets", ""]
    for b in (32, 64):
        d = mean("queue", b) - mean("random", b)
        out.append(f"- queue ≥ random + 0.05 at {b} labels: {d:+.3f} "
                   + ("(met)" if d >= 0.05 else f"(missed by {0.05 - d:.3f})"))
    q = mean("queue", 64)
    out.append(f"- queue at 64 labels ≥ 0.85: {q:.3f} "
               + ("(met)" if q >= 0.85 else f"(missed by {0.85 - q:.3f})"))
    return out + [""]


def rules_section(r: dict) -> list[str]:
    out = ["## Rules alone (`behavior-rag label --rules`)", "",
           f"Exactly one definition holds in {r['labelled']} of {r['sessions']} pool sessions "
           f"(coverage {r['coverage']:.1%}); several hold in {r['conflicting']}, none in "
           f"{r['none_hold']}. Precision against the true labels: {r['precision']}.", "",
           "| label | labelled alone | definition holds | precision |", "|---|---:|---:|---:|"]
    for c in r["per_label"]:
        out.append(f"| {c['label']} | {c['labelled']} | {c['holds']} | "
                   f"{c['precision'] if c['precision'] is not None else '–'} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--llm", action="store_true")
    ap.add_argument("--with-rules", action="store_true", help="Both arms start from the "
                    "rules' labels (`label --rules` first); writes label_efficiency/with_rules/.")
    ap.add_argument("--history", action="store_true", help="Every user's sessions recorded "
                    "as history (`fit --history`): fits and the classifier read the users' "
                    "earlier sessions; writes .../with_history/.")
    ap.add_argument("--llm-n", type=int, default=32)
    ap.add_argument("--stability", action="store_true", help="Only: fit the same 64 random "
                    "labels with several dev splits (writes stability.json).")
    args = ap.parse_args()
    home = ROOT / ".cache" / "test-home"
    out_dir = OUT / "with_rules" if args.with_rules else OUT
    out_dir = out_dir / "with_history" if args.history else out_dir
    if args.stability:
        with tempfile.TemporaryDirectory() as tmp:
            out = [stability(home, Path(tmp), s) for s in range(args.seeds)]
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "stability.json").write_text(json.dumps(out, indent=1))
        print(json.dumps(out))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = [one_seed(s, args.n, home, work, args.with_rules, out_dir, args.history)
                for s in range(args.seeds)]
        llm = llm_agreement(home, work, 0, args.llm_n) if args.llm else None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").write_text(json.dumps({"runs": runs, "llm": llm}, indent=1))
    (out_dir / "report.md").write_text(report(runs, llm))
    print(report(runs, llm))


if __name__ == "__main__":
    main()
