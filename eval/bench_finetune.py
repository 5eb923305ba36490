"""What a LoRA fine-tune on 1,000 labelled sessions costs on this CPU (issue 6's 15-min bound).

Runs ``behavior_rag.finetune.finetune`` with the default ``FinetuneConfig`` on a task's training
part (split by user, seeded, as ``behavior-rag eval`` does; the config samples at most
``max_examples`` = 1,000 of it) and writes ``eval/reports/bench_finetune.md``: wall time against
the 15-minute bound, time by phase (prepare, train, validate), seconds per step, peak RSS and
the validation macro-F1 history. The adapter goes to a git-ignored folder under ``.cache/``.

Usage:  python eval/bench_finetune.py [--task taobao-intent|synth-personas] [--max-steps N]
                                      [--top-layers N] [--eval-every N] [--early-stop] [--out F]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "eval" / "reports" / "bench_finetune.md"
BOUND_MIN = 15.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="taobao-intent",
                    choices=["taobao-intent", "synth-personas"])
    ap.add_argument("--max-steps", type=int, default=None, help="default: the config's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-layers", type=int, default=None, help="default: the config's")
    ap.add_argument("--eval-every", type=int, default=None, help="default: the config's")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--prompt", default=None, help="training prompt file (default: the "
                    "config's, classify_compact)")
    ap.add_argument("--early-stop", action="store_true", help="keep the config's early "
                    "stopping (default: off, so the run covers all 1,000 examples)")
    args = ap.parse_args()

    from behavior_rag.atomic import replace_file
    from behavior_rag.evaluation.loaders import load_task
    from behavior_rag.finetune import FinetuneConfig, finetune
    from behavior_rag.settings import default_settings
    from behavior_rag.taxonomy import load_taxonomy

    settings = default_settings()
    task = load_task(args.task, data=None, train=None, test=None, seed=args.seed, drop=(),
                     synth_n=1500, data_dir=settings.data_dir)
    settings = settings.model_copy(update={"classify": settings.classify.model_copy(
        update={"taxonomy": task.spec.taxonomy})})
    cfg = FinetuneConfig(seed=args.seed)
    if args.max_steps is not None:
        cfg = cfg.model_copy(update={"max_steps": args.max_steps})
    for key in ("top_layers", "eval_every", "prompt"):
        if getattr(args, key) is not None:
            cfg = cfg.model_copy(update={key: getattr(args, key)})
    if not args.early_stop:  # the bound is for a whole pass: no stopping after 400 examples
        cfg = cfg.model_copy(update={"patience": cfg.max_steps})
    out = ROOT / ".cache" / "bench-finetune-adapter"
    res = finetune(task.train, task.val, load_taxonomy(task.spec.taxonomy), out=out,
                   settings=settings, config=cfg)
    minutes = res.seconds / 60
    c = res.card.config
    lines = [
        "# LoRA fine-tune cost (`eval/bench_finetune.py`)", "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), shared box. Command: "
        f"`python eval/bench_finetune.py {' '.join(sys.argv[1:])}`.", "",
        f"- Task `{args.task}`: {len(task.train)} training sessions (split by user, seed "
        f"{args.seed}); {res.n_examples} training examples used, {res.card.n_val} validation "
        f"sessions per evaluation (scored through: {res.validation}). Prompts average "
        f"{res.prompt_tokens:.0f} tokens with the label, {res.prefix_tokens} of them a prefix "
        "all share.",
        f"- Config: base `{res.card.base_model}`, LoRA r={c.r}, alpha={c.alpha} on the top "
        f"{c.top_layers or 'all'} layers, batch {c.batch_size}, prompt file `{c.prompt}` with "
        f"{c.k_examples} few-shot examples, lr {c.lr}, dropout {c.dropout}, evaluation every "
        f"{c.eval_every} steps, length-grouped batches: {c.group_by_length}, early stopping "
        f"{'on (patience ' + str(c.patience) + ')' if args.early_stop else 'off (a full pass)'}.",
        f"- **Wall time {res.seconds:.0f} s = {minutes:.1f} min** for {res.steps} steps "
        f"(bound {BOUND_MIN:.0f} min: {'met' if minutes <= BOUND_MIN else 'NOT met'}).",
        "- By phase (s): " + ", ".join(f"{k} {v:.0f}" for k, v in res.phase_seconds.items())
        + f"; {res.sec_per_step:.2f} s per training step.",
        f"- Peak RSS {res.peak_rss_mb:.0f} MB (whole process: embedder, index, model).",
        "- Validation macro-F1 (log-loss) by step: "
        + ", ".join(f"{h.step}: {h.val_macro_f1:.3f} ({h.val_log_loss:.3f})"
                    for h in res.history) + ".",
    ]
    replace_file(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
