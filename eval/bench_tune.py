"""What tuning the embedder on 1,000 sessions costs on this CPU, and what it buys (issue 18).

Generates 1,000 synthetic persona sessions (seed 11: no test uses it), splits them by user
(70% tune, 30% held out), tunes all-MiniLM-L6-v2 on the tune part twice — labelled (same-label
pairs of different users) and self-supervised (labels dropped: two views of a session,
consecutive sessions of a user) — with the default :class:`TuneConfig`, and writes
``eval/reports/bench_tune.md``: seconds, s/step, peak RSS, and same-label agreement@10 of the
held-out users' sessions against the tune part (other users only), base vs tuned.
Models go to the git-ignored ``.cache/bench_tune/``. Run it under the heavy-jobs lock:

Usage:  flock /tmp/br-heavy.lock python eval/bench_tune.py [--n 1000] [--seed 11] [--steps N]
"""

from __future__ import annotations

import argparse
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "eval" / "reports" / "bench_tune.md"
BOUND_S = 15 * 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--steps", type=int, default=None, help="default: the config's")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from behavior_rag.atomic import replace_file
    from behavior_rag.embed.sentence_transformers import SentenceTransformerEmbedder
    from behavior_rag.embed.tune import TuneConfig, tune_embedder
    from behavior_rag.evaluation import split_by_user
    from behavior_rag.render import render
    from behavior_rag.synth import generate
    from behavior_rag.vectors import agreement_at_k

    sessions = generate(args.n, seed=args.seed).sessions
    sp = split_by_user(sessions, seed=args.seed, dev_frac=0.0, test_frac=0.3)
    tune, held = sp.train, sp.test
    cfg = TuneConfig(**({"max_steps": args.steps} if args.steps else {}))

    def agree(emb) -> float:
        q, r = emb.embed([render(s) for s in held]), emb.embed([render(s) for s in tune])
        return agreement_at_k(q, [s.label for s in held], [s.user_id for s in held],
                              r, [s.label for s in tune], [s.user_id for s in tune], k=10)

    base = agree(SentenceTransformerEmbedder())
    rows = []
    for mode, data in (("labelled", tune),
                       ("self-supervised", [s.model_copy(update={"label": None}) for s in tune])):
        out = ROOT / ".cache" / "bench_tune" / mode
        rep = tune_embedder(data, out, config=cfg.model_copy(update={"mode": mode}))
        rows.append((rep, agree(SentenceTransformerEmbedder(str(out)))))
        print(rep.model_dump_json(), rows[-1][1], flush=True)

    lines = [
        "# Tuned embedder: cost and gain on 1,000 sessions (eval/bench_tune.py)", "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {platform.processor() or 'cpu'} · "
        f"{os.cpu_count()} cores visible (2 shared) · {args.n} synthetic sessions, seed "
        f"{args.seed}; {len(tune)} tune sessions, {len(held)} held-out of other users", "",
        f"Config: {cfg.model_dump_json()}", "",
        "Agreement@10: mean share of a held-out session's 10 nearest tune-part sessions (other "
        "users) with its label; higher is better.", "",
        "| mode | pairs | batches | steps | seconds | s/step | peak RSS MB | last loss | "
        "agreement@10 base | tuned | within 15 min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rep, tuned in rows:
        lines.append(f"| {rep.mode} | {rep.pairs} | {rep.batches} | {rep.steps} | "
                     f"{rep.seconds:.0f} | {rep.s_per_step:.2f} | {rep.peak_rss_mb:.0f} | "
                     f"{rep.loss} | {base:.3f} | {tuned:.3f} | "
                     f"{'yes' if rep.seconds <= BOUND_S else 'NO'} |")
    lines += ["", "Seconds are the trainer's wall time (model load + training, not pair "
              "rendering or saving); peak RSS is the whole process's (ru_maxrss), so it "
              "includes the base-model evaluation before tuning. Other jobs may share the "
              "two cores. The cost is bounded by max_steps, not by the session count: "
              "labelled pairs are capped per label and every step is one batch, so "
              "tuning on all 1,000 sessions takes the same steps (only the pair "
              "rendering, a few seconds, grows)."]
    replace_file(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
