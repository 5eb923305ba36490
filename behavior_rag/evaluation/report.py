"""Markdown report + PNG plots for one evaluation run (written atomically into ``out``).

Example:
    >>> write_report(result, curves, Path("eval/reports/uci-intent"), seconds=12.0)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from behavior_rag.atomic import replace_file
from behavior_rag.evaluation.methods import BASELINES, PRETTY, PRODUCT
from behavior_rag.evaluation.metrics import confusion
from behavior_rag.evaluation.plots import confusion_plot, pr_roc_plot, reliability_plot
from behavior_rag.evaluation.report_splits import link_time_split, time_section_for
from behavior_rag.evaluation.result import EvalResult
from behavior_rag.heads.stack import StackSummary

# Sakar et al. 2019 (Neural Comput & Applic), the UCI data set's authors: best reported model.
PUBLISHED_UCI = {"model": "XGBoost + feature selection + oversampling (Sakar et al. 2019)",
                 "auroc": 0.937, "aupr": 0.754, "accuracy": 0.9065}


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _table(rows, binary: bool) -> list[str]:
    cols = (["accuracy", "macro_f1", "f1_pos", "auroc", "aupr", "ece"] if binary
            else ["accuracy", "macro_f1", "ece"])
    out = ["| method | " + " | ".join(cols) + " | threshold (val) | ms/session | sessions/s |",
           "|---|" + "---|" * (len(cols) + 3)]
    for r in rows:
        s = r.seconds_per_session
        out.append(f"| {PRETTY.get(r.method, r.method)} | "
                   + " | ".join(_fmt(r.metrics.get(c)) for c in cols)
                   + f" | {_fmt(r.threshold)} | {_ms(s)} | {_rate(s)} |")
    return out


TIMES = ("Times: baselines are timed on prediction from inputs made once for the whole split "
         "(rendered texts, embeddings, feature columns); the product's times include rendering, "
         "embedding, retrieval and the LLM for each session.")


def _ms(s: float | None) -> str:
    return "–" if not s else f"{s * 1000:.3g}"


def _rate(s: float | None) -> str:
    """Sessions per second, readable: a timer's resolution makes trivial methods' rates noise."""
    if not s:
        return "–"
    return "> 1M" if 1 / s >= 1e6 else f"{1 / s:,.0f}" if 1 / s >= 10 else f"{1 / s:.2f}"


def _best(rows, key, names):
    got = [(r.metrics.get(key) or -1, r.method) for r in rows if r.method in names]
    return max(got) if got else (None, None)


def _verdict(res, key: str, curves: dict | None = None) -> list[str]:
    base_v, base_n = _best(res.results, key, BASELINES)
    prod_v, prod_n = _best(res.results, key, PRODUCT)
    if base_v is None or prod_v is None:
        return []
    ci = _paired_ci(res, key, curves or {}, prod_n, base_n)
    if prod_v >= base_v - 1e-9:
        return [f"- **{key}**: the product's best method ({prod_n}, {prod_v:.3f}) reaches the "
                f"best baseline ({base_n}, {base_v:.3f}){ci}."]
    return [f"- **{key}**: the product's best method ({prod_n}, {prod_v:.3f}) does **not** "
            f"reach the best baseline ({base_n}, {base_v:.3f}); gap {base_v - prod_v:.3f}{ci}."]


def _paired_ci(res, key: str, curves: dict, a: str, b: str, n_boot: int = 1000) -> str:
    """95 % paired-bootstrap interval of metric(a) - metric(b) over the test sessions: says
    whether a gap is larger than the test set can resolve."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    fn = {"aupr": average_precision_score, "auroc": roc_auc_score}.get(key)
    if fn is None or a not in curves or b not in curves or res.positive is None:
        return ""
    pos = res.classes.index(res.positive)
    y = (curves[a][0] == res.positive).astype(int)
    pa, pb = curves[a][1][:, pos], curves[b][1][:, pos]
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            diffs.append(fn(y[i], pa[i]) - fn(y[i], pb[i]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return (f" (difference {a} - {b}, 95% paired bootstrap over test sessions: "
            f"[{lo:+.3f}, {hi:+.3f}])")


def write_report(res: EvalResult, curves: dict, out: Path, seconds: float) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    binary = res.positive is not None
    plots: list[str] = []
    if binary:
        pos = res.classes.index(res.positive)
        bc = {n: ((y == res.positive).astype(int), p[:, pos]) for n, (y, p) in curves.items()}
        pr_roc_plot(bc, out / "pr.png", out / "roc.png")
        reliability_plot(bc, out / "reliability.png")
        plots += ["pr.png", "roc.png", "reliability.png"]
    else:
        conf = {n: (np.array([c == res.classes[i] for c, i in zip(y, p.argmax(1))]).astype(int),
                    p.max(1)) for n, (y, p) in curves.items()}
        reliability_plot(conf, out / "reliability.png")
        best = max(res.results, key=lambda r: r.metrics.get("macro_f1") or 0).method
        y, p = curves[best]
        cm = confusion(list(y), [res.classes[i] for i in p.argmax(1)], res.classes)
        confusion_plot(cm, res.classes, out / "confusion.png", f"{best}: confusion (test)")
        plots += ["reliability.png", "confusion.png"]
    res.plots = plots
    cfg = res.config
    cmd = f"behavior-rag eval --task {res.task}"
    cmd += (f" --train {cfg.train} --test {cfg.test}" if cfg.train else
            f" --data {cfg.data}" if cfg.data else "")
    cmd += f" --seed {cfg.seed} --methods {','.join(cfg.methods)} --llm-limit {cfg.llm_limit}"
    cmd += "".join(f" --drop {d}" for d in cfg.drop)
    cmd += f" --split {cfg.split}" if cfg.split != "user" else ""
    lines = [f"# Evaluation: `{res.task}`" + (f" without {', '.join(cfg.drop)}" if cfg.drop
                                              else "")
             + (f", split by {cfg.split}" if cfg.split != "user" else ""), "",
             f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {seconds:.0f} s on a shared "
             f"2-core CPU box. Command: `{cmd}`.", "",
             f"- Data: {', '.join(res.sources)}",
             f"- Protocol: {res.protocol}. Sizes: train {res.sizes['train']}, validation "
             f"{res.sizes['val']}, test {res.sizes['test']}. Thresholds, the stack and "
             "stacking are fitted on validation only; the test part is scored once."]
    if binary:
        lines.append("- Thresholds: the product rows (product, cascade, always) are scored at "
                     "the decision threshold `BehaviorRAG.fit` chose on validation, the one "
                     "`classify` labels with; every other row at the F1-best threshold on "
                     "validation for that row.")
        y_all = [r for r in curves.values()][0][0]
        rate = float(np.mean(np.asarray(y_all) == res.positive))
        lines.append(f"- Positive class `{res.positive}`; test base rate {rate:.1%} (auPR of a "
                     "random ranking equals the base rate).")
    lines += ["", "## Test results (all test sessions)", "", *_table(res.results, binary), "",
              TIMES, ""]
    if res.llm_sample:
        lines += [f"## Like-for-like on the LLM sample ({res.llm_sample_size} test sessions, "
                  "seeded random)", "",
                  "LLM calls are the slow part on CPU, so the rows that ask the LLM (cascade, "
                  "always, llm, lora) run on this sample; every method is scored on the same "
                  "sessions here.", "",
                  *_table(res.llm_sample, binary), ""]
    lines += ["## Outcome", ""]
    if binary:
        lines += _verdict(res, "aupr", curves) + _verdict(res, "auroc", curves)
    else:
        lines += _verdict(res, "macro_f1", curves)
    if res.evidence:
        e = res.evidence
        lines.append(f"- Evidence on {e['sessions']:.0f} product predictions: "
                     f"{e['evidence_kept']:.0f} items kept, all verified against the session "
                     f"by code; {e['evidence_dropped']:.0f} dropped; abstain rate "
                     f"{e['abstain_rate']:.1%}"
                     + (f"; the LLM was asked for {e['llm_asked_rate']:.1%} of them"
                        if "llm_asked_rate" in e else "") + ".")
    if res.faithfulness:
        lines += _faith_lines(res.faithfulness)
    if res.fit_seconds is not None:
        lines.append(f"- `BehaviorRAG.fit` (index the training part, heads, stack, abstain "
                     f"threshold, LLM cascade) took {res.fit_seconds:.0f} s.")
    if res.stacked:
        lines.append(_stack_line(res.stacked))
    if res.lora:
        lines += _lora_lines(res)
    if res.cv:
        lines += ["", f"## {next(iter(res.cv.values()))['folds']:.0f}-fold stratified CV (all rows, "
                  "cheap methods)", "", "| method | auROC | auPR |", "|---|---|---|"]
        for n, v in res.cv.items():
            lines.append(f"| {n} | {v['auroc_mean']:.3f} ± {v['auroc_sd']:.3f} | "
                         f"{v['aupr_mean']:.3f} ± {v['aupr_sd']:.3f} |")
    if res.task == "uci-intent":
        p = PUBLISHED_UCI
        lines += ["", "## Published anchor", "",
                  "| source | auROC | auPR | accuracy |", "|---|---|---|---|",
                  f"| {p['model']} | {p['auroc']} | {p['aupr']} | {p['accuracy']:.2%} |"]
        for r in res.results:
            if r.method in ("gbm", "product"):
                m = r.metrics
                lines.append(f"| ours: {r.method}, this run | {_fmt(m.get('auroc'))} | "
                             f"{_fmt(m.get('aupr'))} | {_fmt(m.get('accuracy'))} |")
        lines += ["", "How the protocols differ: the published figures come from random "
                  "cross-validation with oversampling of the minority class and feature "
                  "selection on the full 12,330-row data set; we use the dev file only, one "
                  "stratified hold-out split (plus k-fold CV for the cheap methods), no "
                  "oversampling, thresholds fitted on validation. "
                  + ("This run drops PageValues, which the published models use." if cfg.drop
                     else "PageValues is included, as in the published models.")]
    section = time_section_for(out, res)
    lines += ["", *section, ""] if section else [""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots]
    text = "\n".join(lines) + "\n"
    replace_file(out / "report.md", text)
    replace_file(out / "result.json", json.dumps(res.model_dump(mode="json"), indent=1))
    res.report = str(out / "report.md")
    link_time_split(out, res)
    return out / "report.md"


def _stack_line(st: StackSummary) -> str:
    what = {"aupr": "1 - auPR", "auroc": "1 - auROC"}.get(st.metric, "log-loss")
    losses = ", ".join(f"{k} {v:.4f}" for k, v in st.cv_loss.items())
    return (f"- The product's stack (`BehaviorRAG.fit`) combines {' + '.join(st.parts)}: the "
            f"subset of heads with the fewest members whose 5-fold cross-validated {what} on "
            f"the stacking rows (out-of-fold train + validation) is within one standard error "
            f"of the lowest; {losses}.")


def _lora_lines(res: EvalResult) -> list[str]:
    lo, cfg = res.lora, res.lora.card.config
    best = lo.card.metrics.get("best_step")
    lines = ["", "## LoRA fine-tune", "",
             f"- {lo.n_examples} training examples, batch {cfg.batch_size}, LoRA on the top "
             f"{cfg.top_layers or 'all'} layers, {lo.card.k_examples} few-shot examples in the "
             f"prompt (prompt file `{lo.card.prompt}`; the few-shot rows use `{res.prompt}`)"
             + (f"; prompts average {lo.prompt_tokens:.0f} tokens, of which "
                f"{lo.prefix_tokens} are a prefix all share (the step cost follows the rest)"
                if lo.prompt_tokens else "") + ".",
             f"- {lo.steps} steps; the whole fine-tune (prompt building, training, validation) "
             f"took {lo.seconds:.0f} s ({lo.seconds / 60:.1f} min; target <= 15 min: "
             f"{'met' if lo.seconds <= 900 else 'NOT met'}), {lo.sec_per_step:.2f} s/step, "
             f"peak RSS {lo.peak_rss_mb:.0f} MB."]
    if lo.phase_seconds:
        lines.append("- Time by phase (s): " + ", ".join(
            f"{k} {v:.0f}" for k, v in lo.phase_seconds.items()))
    if lo.steps < cfg.max_steps:
        lines.append(f"- Stopped early at step {lo.steps} of {cfg.max_steps}: validation "
                     "macro-F1 (then log-loss) stopped improving.")
    if best is not None:
        lines.append(f"- Kept the adapter of step {best}, the best validation evaluation"
                     + (" (step 0: the base model unchanged; training did not improve on it)"
                        if best == 0 else "") + ".")
    lines.append("- Validation macro-F1 (gold-label log-loss) by step, scored through the "
                 f"{lo.validation}: " + ", ".join(
                     f"{h.step}: {h.val_macro_f1:.3f} ({h.val_log_loss:.3f})"
                     for h in lo.history) + ".")
    few = next((r for r in res.llm_sample if r.method == "llm"), None)
    lora = next((r for r in res.llm_sample if r.method == "lora"), None)
    if few and lora:
        d = (lora.metrics.get("macro_f1") or 0) - (few.metrics.get("macro_f1") or 0)
        lines.append(f"- LoRA vs few-shot on the same sample: macro-F1 "
                     f"{lora.metrics.get('macro_f1'):.3f} vs {few.metrics.get('macro_f1'):.3f} "
                     f"({d:+.3f}; target +0.10: {'met' if d >= 0.10 else 'NOT met'}).")
    return lines


def _faith_lines(f) -> list[str]:
    ratio = (f"{f.comprehensiveness / f.comprehensiveness_random:.1f}x the random baseline"
             if f.comprehensiveness_random > 0 else "random removal moves nothing")
    return [f"- Faithfulness of the evidence (ERASER, product classify.llm=never, a seeded "
            f"sample of {f.predictions} test sessions; random baselines averaged over 3 draws "
            f"per prediction): on {f.measured} answered predictions whose evidence cites events (on average "
            f"{f.cited_share:.0%} of a session's events), removing the cited events lowers the "
            f"label's probability by {f.comprehensiveness:.3f} (comprehensiveness; the same "
            f"number of random events: {f.comprehensiveness_random:.3f}, so {ratio}"
            + (f"; the difference's 95% bootstrap interval [{f.gap_ci[0]:+.3f}, "
               f"{f.gap_ci[1]:+.3f}]" if f.gap_ci else "") + "); the cited "
            f"events alone keep it within {f.sufficiency:.3f} of the full session (sufficiency; "
            f"random: {f.sufficiency_random:.3f}; lower is better). The rationale is the "
            "events the evidence singles out; facts that rest on every event and timing facts "
            "(start hour, weekday, days since the previous session: their event is the clock, "
            "and erasing it leaves the time in the next one) mark none.",
            f"- Label definitions: {f.contradicting:.1%} of {f.predictions} predictions have a "
            f"label or evidence that contradicts the label's requires/excludes; the definition "
            f"check moved {f.moved:.1%} of them off the model's top label."]
