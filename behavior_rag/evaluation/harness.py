"""``behavior-rag eval``: every method on the same honest split, metrics, plots, a report.

Baselines (majority, the seed's bag-of-words + logistic regression, gradient boosting on hand
features, logistic regression on embeddings) and the product's methods (kNN vote, few-shot
LLM, fused, stacked) are fitted on the training part; thresholds, fusion weights and stacking
are fitted on the validation part; everything is reported once on the test part.

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
from behavior_rag.evaluation.loaders import LoadedTask, load_task
from behavior_rag.evaluation.methods import BASELINES, METHODS
from behavior_rag.evaluation.metrics import best_threshold, binary_metrics, multiclass_metrics
from behavior_rag.evaluation.product import ProductScores, Stacked
from behavior_rag.evaluation.report import write_report
from behavior_rag.evaluation.result import EvalConfig, EvalResult, MethodResult
from behavior_rag.finetune import FinetuneConfig, FinetuneResult, finetune
from behavior_rag.llm.factory import get_llm
from behavior_rag.llm.local import LocalLLM
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
        return binary_metrics(list(y), proba[:, pos], task.spec.positive,
                                threshold=0.5 if threshold is None else threshold,
                                abstained=abstained)
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
                     drop=cfg.drop, synth_n=cfg.synth_n, data_dir=settings.data_dir)
    settings = settings.model_copy(update={"classify": settings.classify.model_copy(
        update={"taxonomy": task.spec.taxonomy})})
    embedder = get_embedder(settings)
    train, val, test = (_data(task, p, embedder, settings) for p in (task.train, task.val,
                                                                     task.test))
    classes, pos = task.classes, task.spec.positive
    y_val, y_test = np.array(val.labels), np.array(test.labels)
    val_p: dict[str, np.ndarray] = {}
    test_p: dict[str, np.ndarray] = {}
    secs: dict[str, float] = {}

    for name in [m for m in cfg.methods if m in BASELINES]:
        model = _baseline(name)
        model.fit(train)
        val_p[name] = model.predict_proba(val)[:, [model.classes.index(c) for c in classes]]
        t = time.perf_counter()
        test_p[name] = model.predict_proba(test)[:, [model.classes.index(c) for c in classes]]
        secs[name] = (time.perf_counter() - t) / len(test.sessions)

    wants_llm = bool({"llm", "fused", "lora"} & set(cfg.methods))
    product = None
    rng = np.random.default_rng(cfg.seed)
    llm_val = _sample(task.val, cfg.llm_limit, rng)
    llm_test_idx = sorted(rng.choice(len(task.test), size=min(cfg.llm_limit, len(task.test)),
                                     replace=False).tolist())
    llm_test = [task.test[i] for i in llm_test_idx]
    if {"knn", "stacked"} & set(cfg.methods) or wants_llm:
        product = ProductScores(settings, load_taxonomy(task.spec.taxonomy),
                                _llm(cfg, settings) if wants_llm else None, embedder)
        product.fit(task.train, task.val, llm_val=llm_val)
        val_p["knn"] = product.proba("knn", task.val, classes)
        test_p["knn"] = product.proba("knn", task.test, classes)
        secs["knn"] = product.seconds_per_session(task.test, with_llm=False)
    sample_p: dict[str, np.ndarray] = {}
    if wants_llm:
        for name in ("llm", "fused"):
            if name in cfg.methods:
                val_p[name] = product.proba(name, llm_val, classes)
                sample_p[name] = product.proba(name, llm_test, classes)
                secs[name] = product.seconds_per_session(llm_test, with_llm=True)
    lora_res: FinetuneResult | None = None
    stacked_info = None
    if "lora" in cfg.methods:
        lora_res, *lora_p = _lora(cfg, settings, task, embedder, llm_val, llm_test, classes)
        val_p["lora"], sample_p["lora"], secs["lora"] = lora_p
    if "stacked" in cfg.methods:
        # The stacker learns from out-of-fold scores of the training part (kNN retrieval
        # already leaves the session's own user out; baselines refit per fold) plus the
        # validation part: many more rows than validation alone, and still no test rows.
        parts = [p for p in ("knn", "gbm", "embed-lr") if p in val_p]
        oof = {"knn": product.proba("knn", task.train, classes)} if "knn" in parts else {}
        for name in [p for p in parts if p in BASELINES]:
            oof[name] = _out_of_fold(name, train, classes, task, cfg.seed)
        stack = Stacked().fit([np.vstack([oof[p], val_p[p]]) for p in parts],
                              np.concatenate([np.array(train.labels), y_val]), seed=cfg.seed,
                              names=parts, metric=task.spec.metric, positive=pos)
        stacked_info = stack.summary()
        val_p["stacked"] = stack.predict_proba([val_p[p] for p in parts], classes)
        test_p["stacked"] = stack.predict_proba([test_p[p] for p in parts], classes)
        # only the parts it kept run at prediction time
        secs["stacked"] = sum(secs.get(p, 0.0) for p in stack.chosen_names)

    # Thresholds (binary): fitted on validation, for threshold metrics on test.
    thresholds: dict[str, float | None] = {}
    for name, p in val_p.items():
        yv = y_val if name not in sample_p else np.array([s.label for s in llm_val])
        thresholds[name] = best_threshold((yv == pos).astype(int), p[:, classes.index(pos)]) \
            if pos else None

    results = [MethodResult(method=n, metrics=_metrics(task, y_test, p, thresholds.get(n)),
                            seconds_per_session=secs.get(n), threshold=thresholds.get(n))
               for n, p in test_p.items()]
    sample_rows: list[MethodResult] = []
    if sample_p:
        y_s = y_test[llm_test_idx]
        for n, p in list(test_p.items()) + list(sample_p.items()):
            pp = p if n in sample_p else p[llm_test_idx]
            sample_rows.append(MethodResult(method=n, metrics=_metrics(task, y_s, pp,
                                                                       thresholds.get(n)),
                                            seconds_per_session=secs.get(n),
                                            threshold=thresholds.get(n)))
    evidence = _evidence(product, llm_test if wants_llm else task.test[: cfg.llm_limit]) \
        if product else {}
    cv = _cv(task, cfg, settings, embedder) if task.spec.kind == "uci" and cfg.cv_folds > 1 \
        else {}
    out = cfg.out or Path("eval/reports") / cfg.task
    res = EvalResult(task=cfg.task, config=cfg, protocol=task.protocol, sources=task.sources,
                     sizes={"train": len(task.train), "val": len(task.val),
                            "test": len(task.test)},
                     classes=classes, positive=pos, results=results, llm_sample=sample_rows,
                     llm_sample_size=len(llm_test) if sample_p else 0, cv=cv,
                     evidence=evidence, lora=lora_res, prompt=settings.classify.prompt,
                     stacked=stacked_info)
    curves = {n: (y_test, p) for n, p in test_p.items()}
    write_report(res, curves, out, seconds=time.perf_counter() - t_all)
    return res


def _lora(cfg: EvalConfig, settings: Settings, task: LoadedTask, embedder, llm_val, llm_test,
          classes):
    """Fine-tune on the task's training part (validation by user for early stopping), then
    score the LLM sample with the adapter (calibrated on the validation sample)."""
    tax = load_taxonomy(task.spec.taxonomy)
    out = (cfg.out or Path("eval/reports") / cfg.task) / "lora-adapter"
    res = finetune(task.train, task.val, tax, out=out, settings=settings,
                   model=cfg.llm_model or settings.llm.model,
                   config=FinetuneConfig(max_steps=cfg.lora_steps, seed=cfg.seed))
    llm = LocalLLM(cfg.llm_model or settings.llm.model, cache_root=settings.home / "models",
                   adapter=res.adapter)
    # the adapter is scored with the prompt it was trained on (prompt file, few-shot count)
    settings = settings.model_copy(update={"classify": settings.classify.model_copy(
        update={"k_examples": res.card.k_examples, "prompt": res.card.prompt})})
    lp = ProductScores(settings, tax, llm, embedder)
    lp.fit(task.train, task.val, llm_val=llm_val)
    return (res, lp.proba("llm", llm_val, classes), lp.proba("llm", llm_test, classes),
            lp.seconds_per_session(llm_test, with_llm=True))


def _out_of_fold(name: str, data, classes, task: LoadedTask, seed: int, k: int = 5):
    """Probabilities for every training row from a model that did not see its fold (grouped
    by user for event tasks, stratified for UCI)."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    y = np.array(data.labels)
    if task.spec.kind == "uci":
        folds = StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    else:
        groups = [s.user_id for s in data.sessions]
        k = min(k, len(set(groups)))
        folds = GroupKFold(k).split(np.zeros(len(y)), y, groups)
    out = np.zeros((len(y), len(classes)))
    for tr, te in folds:
        model = _baseline(name)
        model.fit(_subset(data, tr))
        got = model.predict_proba(_subset(data, te))
        for j, c in enumerate(classes):
            if c in model.classes:
                out[te, j] = got[:, model.classes.index(c)]
    return out


def _sample(sessions, n, rng):
    if len(sessions) <= n:
        return list(sessions)
    idx = sorted(rng.choice(len(sessions), size=n, replace=False).tolist())
    return [sessions[i] for i in idx]


def _evidence(product, sessions) -> dict[str, float]:
    preds = product.predictions(sessions)
    kept = sum(len(p.evidence) for p in preds)
    return {"sessions": len(preds), "evidence_kept": kept,
            "evidence_dropped": sum(p.evidence_dropped for p in preds),
            "abstain_rate": float(np.mean([p.abstained for p in preds])) if preds else 0.0}


def _cv(task: LoadedTask, cfg: EvalConfig, settings: Settings, embedder) -> dict:
    """k-fold stratified CV over all rows for the cheap methods (auROC / auPR mean and sd)."""
    from sklearn.model_selection import StratifiedKFold

    rows = task.all_rows
    data = _data(task, rows, embedder, settings)
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
