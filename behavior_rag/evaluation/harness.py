"""``behavior-rag eval``: every method on the same honest split, metrics, plots, a report.

Baselines (majority, the seed's bag-of-words + logistic regression, gradient boosting on hand
features, logistic regression on embeddings) are fitted on the training part. The product
rows are what users get: :meth:`BehaviorRAG.fit` on the training part with the validation
part as dev, then :meth:`BehaviorRAG.classify` (``classify.llm`` never / cascade / always);
event tasks split by user (held-out shoppers) or by time (``split="time"``: earlier days train,
later days test; :mod:`behavior_rag.evaluation.splits`);
the heads' and the LLM's own rows are read from those same predictions
(:mod:`behavior_rag.evaluation.product`). Thresholds are fitted on the validation part;
everything is reported once on the test part.

LLM calls are the slow part on CPU, so the LLM-based methods run on a seeded random sample of
``llm_limit`` validation and test sessions; the report compares *all* methods on that sample
too, so every comparison is like for like.

Example:
    >>> result = run_eval(EvalConfig(task="synth-personas", methods=["majority", "knn"]))  # doctest: +SKIP
    >>> result.report                                                         # doctest: +SKIP
    'eval/reports/synth-personas/report.md'
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from behavior_rag.embed import get_embedder
from behavior_rag.errors import ConfigError
from behavior_rag.evaluation import baselines as b
from behavior_rag.evaluation.baselines import TaskData
from behavior_rag.evaluation.faithfulness import faithfulness
from behavior_rag.evaluation.loaders import LoadedTask, load_task
from behavior_rag.evaluation.methods import BASELINES, HEAD_COMPONENTS, METHODS, NEEDS_FIT
from behavior_rag.evaluation.metrics import (
    best_threshold,
    binary_metrics,
    bootstrap_intervals,
    multiclass_metrics,
)
from behavior_rag.evaluation.product import ProductRun, evidence_summary, llm_proba, proba
from behavior_rag.evaluation.report import write_report
from behavior_rag.evaluation.result import EvalConfig, EvalResult, MethodResult
from behavior_rag.finetune import FinetuneConfig, finetune
from behavior_rag.heads.stack import StackSummary
from behavior_rag.llm.factory import get_llm
from behavior_rag.llm.vllm import VLLMBackend
from behavior_rag.render import render
from behavior_rag.settings import Settings, default_settings
from behavior_rag.taxonomy import load_taxonomy

__all__ = ["EvalConfig", "EvalResult", "MethodResult", "run_eval"]

def _llm(cfg: EvalConfig, settings: Settings):
    if cfg.llm_url:
        return VLLMBackend(cfg.llm_url, model=cfg.llm_model or settings.llm.model,
                           concurrency=settings.llm.concurrency)
    s = settings if settings.llm.backend != "none" else settings.model_copy(
        update={"llm": settings.llm.model_copy(update={"backend": "local"})})
    if cfg.llm_model:
        s = s.model_copy(update={"llm": s.llm.model_copy(update={"model": cfg.llm_model})})
    return get_llm(s)


def _data(task: LoadedTask, sessions, embedder, settings):
    texts = [render(s, settings=settings) for s in sessions]
    vecs = embedder.embed(texts) if texts else None
    return TaskData(sessions=list(sessions), labels=[s.label for s in sessions], texts=texts,
                    vectors=vecs, kind=task.spec.kind)


def _baseline(name: str):
    if name == "gbm":
        # One thread: on a shared 2-core box OpenMP oversubscription made a fit ~25x slower.
        return b.GradientBoosting(n_threads=1)
    return {"majority": b.Majority, "bow": b.BowLogReg, "embed-lr": b.EmbeddingLogReg}[name]()


def _metrics(task: LoadedTask, y, proba, threshold=None, abstained=None) -> dict:
    if task.spec.positive:
        pos = task.classes.index(task.spec.positive)
        m = binary_metrics(list(y), proba[:, pos], task.spec.positive,
                           threshold=0.5 if threshold is None else threshold,
                           abstained=abstained)
        return m | bootstrap_intervals(list(y), proba[:, pos], task.spec.positive)
    return multiclass_metrics(list(y), proba, task.classes, abstained=abstained)


def run_eval(cfg: EvalConfig, settings: Settings | None = None) -> EvalResult:
    """Run every method in ``cfg.methods`` on one split; write the report and plots."""
    t_all = time.perf_counter()
    settings = settings or default_settings()
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown methods {unknown}; choose from {list(METHODS)}",
                          field="methods", value=",".join(unknown))
    task = load_task(cfg.task, data=cfg.data, train=cfg.train, test=cfg.test, seed=cfg.seed,
                     drop=cfg.drop, synth_n=cfg.synth_n, data_dir=settings.data_dir,
                     split=cfg.split, settings=settings)
    settings = settings.model_copy(update={"classify": settings.classify.model_copy(
        update={"taxonomy": task.spec.taxonomy})})
    rows = _Rows(task, cfg)
    if set(cfg.methods) & set(BASELINES):
        _baselines(cfg, settings, task, rows)
    fit, lora_res, evidence, faith = None, None, {}, None
    if set(cfg.methods) & set(NEEDS_FIT):
        fit, evidence, faith = _product(cfg, settings, task, rows)
    if "lora" in cfg.methods:
        lora_res = _lora(cfg, settings, task, rows)
    cv = _cv(task, cfg, settings) if task.spec.kind == "uci" and cfg.cv_folds > 1 else {}
    out = cfg.out or default_out(cfg)
    results, sample_rows = rows.results()
    res = EvalResult(task=cfg.task, config=cfg, protocol=task.protocol, sources=task.sources,
                     sizes={"train": len(task.train), "val": len(task.val),
                            "test": len(task.test)},
                     classes=task.classes, positive=task.spec.positive, results=results,
                     llm_sample=sample_rows, llm_sample_size=len(rows.llm_test)
                     if rows.sample_p else 0, cv=cv, evidence=evidence, faithfulness=faith,
                     lora=lora_res,
                     prompt=settings.classify.prompt, stacked=StackSummary(
                         parts=fit.chosen, metric=fit.metric, cv_loss=fit.cv_loss) if fit else None,
                     fit_seconds=rows.fit_seconds, split=task.split)
    curves = {n: (rows.y_test, p) for n, p in rows.test_p.items()}
    write_report(res, curves, out, seconds=time.perf_counter() - t_all)
    return res


FAITH_MAX = 500  # test sessions the ERASER measures reclassify (seeded sample)

class _Rows:
    """Probabilities per method on validation (for thresholds) and test, and timings."""

    def __init__(self, task: LoadedTask, cfg: EvalConfig) -> None:
        self.task = task
        rng = np.random.default_rng(cfg.seed)
        self.llm_val = _sample(task.val, cfg.llm_limit, rng)
        self.llm_test_idx = sorted(rng.choice(len(task.test), size=min(cfg.llm_limit,
                                   len(task.test)), replace=False).tolist())
        self.llm_test = [task.test[i] for i in self.llm_test_idx]
        # faithfulness reclassifies without the LLM: cheap enough for a larger sample
        self.faith_idx = sorted(np.random.default_rng(cfg.seed + 1).choice(
            len(task.test), size=min(FAITH_MAX, len(task.test)), replace=False).tolist())
        self.y_val = np.array([s.label for s in task.val])
        self.y_test = np.array([s.label for s in task.test])
        self.val_p: dict[str, np.ndarray] = {}
        self.test_p: dict[str, np.ndarray] = {}
        self.sample_p: dict[str, np.ndarray] = {}  # LLM methods: on the seeded sample only
        self.secs: dict[str, float] = {}
        self.fit_seconds: float | None = None
        self.fixed: dict[str, float] = {}  # method -> the threshold BehaviorRAG.fit chose

    def add(self, name: str, val: np.ndarray, test: np.ndarray, secs: float | None,
            sample: bool = False) -> None:
        self.val_p[name] = val
        (self.sample_p if sample else self.test_p)[name] = test
        if secs is not None:
            self.secs[name] = secs

    def _threshold(self, name: str) -> float | None:
        pos = self.task.spec.positive
        if not pos:
            return None
        if name in self.fixed:  # the product's own: what classify labels with
            return self.fixed[name]
        yv = self.y_val if name not in self.sample_p else np.array([s.label for s in
                                                                     self.llm_val])
        return best_threshold((yv == pos).astype(int),
                              self.val_p[name][:, self.task.classes.index(pos)])

    def results(self) -> tuple[list[MethodResult], list[MethodResult]]:
        th = {n: self._threshold(n) for n in self.val_p}

        def row(n, y, p):
            return MethodResult(method=n, metrics=_metrics(self.task, y, p, th[n]),
                                seconds_per_session=self.secs.get(n), threshold=th[n])

        full = [row(n, self.y_test, p) for n, p in self.test_p.items()]
        if not self.sample_p:
            return full, []
        y_s = self.y_test[self.llm_test_idx]
        sample = [row(n, y_s, p[self.llm_test_idx]) for n, p in self.test_p.items()]
        return full, sample + [row(n, y_s, p) for n, p in self.sample_p.items()]


def _baselines(cfg: EvalConfig, settings: Settings, task: LoadedTask, rows: _Rows) -> None:
    embedder = get_embedder(settings)
    train, val, test = (_data(task, p, embedder, settings) for p in (task.train, task.val,
                                                                     task.test))
    classes = task.classes
    for name in [m for m in cfg.methods if m in BASELINES]:
        model = _baseline(name)
        model.fit(train)
        cols = [model.classes.index(c) for c in classes]
        t = time.perf_counter()
        test_p = model.predict_proba(test)[:, cols]
        rows.add(name, model.predict_proba(val)[:, cols], test_p,
                 (time.perf_counter() - t) / len(test.sessions))


def _product(cfg: EvalConfig, settings: Settings, task: LoadedTask, rows: _Rows):
    """The product's rows, all through ``BehaviorRAG.fit`` / ``classify``."""
    wants_llm = bool(set(cfg.methods) & {"cascade", "always", "llm"})
    run = ProductRun(settings, task, _index_dir(cfg, settings), _llm(cfg, settings)
                     if wants_llm else None)
    fit = run.fit()
    rows.fit_seconds = run.fit_seconds
    if fit.dev.threshold is not None:
        rows.fixed = dict.fromkeys(("product", "cascade", "always"), fit.dev.threshold)
    classes = task.classes
    val, _ = run.classify(task.val, "never")
    test, secs = run.classify(task.test, "never")  # timed: what users run
    if "product" in cfg.methods:
        rows.add("product", proba(val, classes), proba(test, classes), secs)
    fitted = {k for k in fit.cv_loss if "+" not in k}  # every head fit fitted
    heads = [h for h in HEAD_COMPONENTS if h in cfg.methods and h in fitted]
    if heads:  # each head's own row, read from the same model run with those heads too
        hv, _ = run.classify(task.val, "never", heads=heads)
        ht, _ = run.classify(task.test, "never", heads=heads)
        for h in heads:
            rows.add(h, proba(hv, classes, h), proba(ht, classes, h), None)
    evidence = evidence_summary(test)
    faith = None
    if any(s.events for s in task.test):  # aggregate-only sessions cite no events
        faith = faithfulness([task.test[i] for i in rows.faith_idx],
                             [test[i] for i in rows.faith_idx],
                             lambda ss: run.classify(ss, "never")[0],
                             load_taxonomy(task.spec.taxonomy), seed=cfg.seed)
    for mode in ("cascade", "always"):
        if mode in cfg.methods or (mode == "always" and "llm" in cfg.methods):
            v, _ = run.classify(rows.llm_val, mode)
            t, secs = run.classify(rows.llm_test, mode)
            if mode in cfg.methods:
                rows.add(mode, proba(v, classes), proba(t, classes), secs, sample=True)
            if mode == "always" and "llm" in cfg.methods:
                rows.add("llm", llm_proba(v, classes), llm_proba(t, classes), None,
                         sample=True)
            if mode == "cascade":
                evidence = evidence_summary(t)
    return fit, evidence, faith


def default_out(cfg: EvalConfig) -> Path:
    """Where the report goes without ``--out``: ``eval/reports/<task>``, and its ``time/``
    folder for the time split (the task's report then shows both side by side)."""
    out = Path("eval/reports") / cfg.task
    return out / "time" if cfg.split == "time" else out


def _index_dir(cfg: EvalConfig, settings: Settings) -> Path:
    # the product's index folder for this run (git-ignored; the report says where it went)
    return settings.index_dir / "eval" / f"{cfg.task}-seed{cfg.seed}" \
        f"{'-no-' + '-'.join(cfg.drop) if cfg.drop else ''}" \
        f"{'-' + cfg.split if cfg.split != 'user' else ''}"


def _lora(cfg: EvalConfig, settings: Settings, task: LoadedTask, rows: _Rows):
    """Fine-tune on the task's training part (validation by user for early stopping), then
    ask the adapter about the LLM sample through the product (``classify.llm=always``) and
    report its own label scores."""
    tax = load_taxonomy(task.spec.taxonomy)
    out = (cfg.out or Path("eval/reports") / cfg.task) / "lora-adapter"
    res = finetune(task.train, task.val, tax, out=out, settings=settings,
                   model=cfg.llm_model or settings.llm.model,
                   config=FinetuneConfig(max_steps=cfg.lora_steps, seed=cfg.seed))
    # a user sets llm.adapter: settings then take the card's prompt file and few-shot count
    adapted = settings.model_copy(update={
        "llm": settings.llm.model_copy(update={"backend": "local", "adapter": res.adapter}),
        "classify": settings.classify.model_copy(update={"k_examples": res.card.k_examples,
                                                         "prompt": res.card.prompt})})
    run = ProductRun(adapted, task, _index_dir(cfg, settings) / "lora", get_llm(adapted))
    run.fit()
    v, _ = run.classify(rows.llm_val, "always")
    t, secs = run.classify(rows.llm_test, "always")
    rows.add("lora", llm_proba(v, task.classes), llm_proba(t, task.classes), secs, sample=True)
    return res


def _sample(sessions, n, rng):
    if len(sessions) <= n:
        return list(sessions)
    idx = sorted(rng.choice(len(sessions), size=n, replace=False).tolist())
    return [sessions[i] for i in idx]


def _cv(task: LoadedTask, cfg: EvalConfig, settings: Settings) -> dict:
    """k-fold stratified CV over all rows for the cheap methods (auROC / auPR mean and sd)."""
    from sklearn.model_selection import StratifiedKFold

    data = _data(task, task.all_rows, get_embedder(settings), settings)
    y = np.array(data.labels)
    folds = StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed)
    got: dict[str, list[tuple[float, float]]] = {}
    for tr, te in folds.split(np.zeros(len(y)), y):
        d_tr, d_te = _subset(data, tr), _subset(data, te)
        for name in [m for m in cfg.methods if m in BASELINES]:
            model = _baseline(name)
            model.fit(d_tr)
            p = model.predict_proba(d_te)[:, model.classes.index(task.spec.positive)]
            m = binary_metrics(list(y[te]), p, task.spec.positive)
            got.setdefault(name, []).append((m["auroc"], m["aupr"]))
    return {n: {"auroc_mean": float(np.mean([a for a, _ in v])),
                "auroc_sd": float(np.std([a for a, _ in v])),
                "aupr_mean": float(np.mean([b for _, b in v])),
                "aupr_sd": float(np.std([b for _, b in v])), "folds": len(v)}
            for n, v in got.items()}


def _subset(data, idx):
    return TaskData(sessions=[data.sessions[i] for i in idx],
                    labels=[data.labels[i] for i in idx],
                    texts=[data.texts[i] for i in idx] if data.texts is not None else None,
                    vectors=data.vectors[idx] if data.vectors is not None else None,
                    kind=data.kind)
