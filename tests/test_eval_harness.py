"""`behavior-rag eval` end to end on small slices of each real file (full runs: `make eval`)."""

from __future__ import annotations

import json

import pytest

from behavior_rag.evaluation.harness import FAITH_MAX, EvalConfig, run_eval
from behavior_rag.settings import Settings
from tests.conftest import TAOBAO, UCI, need


def _slice(src, dst, n_lines):
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as g:
        for i, line in enumerate(f):
            if i > n_lines:
                break
            g.write(line)
    return dst


@pytest.fixture()
def settings(embed_home, tmp_path):
    return Settings(home=embed_home, embed={"backend": "onnx-int8"},
                    index_dir=tmp_path / "indexes")


def test_uci_slice_with_and_without_page_values(tmp_path, settings):
    data = _slice(need(UCI), tmp_path / "uci.csv", 1500)
    runs = {}
    for drop in ([], ["PageValues"]):
        out = tmp_path / ("no-pv" if drop else "pv")
        res = run_eval(EvalConfig(task="uci-intent", data=data, out=out, seed=3, drop=drop,
                                  methods=["majority", "bow", "gbm", "knn", "product"],
                                  cv_folds=2), settings)
        runs[bool(drop)] = {r.method: r.metrics for r in res.results}
        report = (out / "report.md").read_text()
        assert "Published anchor" in report and "0.937" in report
        assert ("drops PageValues" in report) == bool(drop)
        for png in ("pr.png", "roc.png", "reliability.png"):
            assert (out / png).stat().st_size > 1000
        assert set(res.cv) == {"majority", "bow", "gbm"} and res.cv["gbm"]["folds"] == 2
        assert sum(res.sizes.values()) == 1500
    # the leak is real: without PageValues gradient boosting ranks purchases worse
    assert runs[False]["gbm"]["auroc"] > runs[True]["gbm"]["auroc"]
    assert runs[False]["gbm"]["aupr"] > runs[False]["majority"]["aupr"]


def test_uci_rerun_gives_the_same_numbers(tmp_path, settings):
    data = _slice(need(UCI), tmp_path / "uci.csv", 800)
    cfg = dict(task="uci-intent", data=data, seed=5, methods=["majority", "gbm", "knn"],
               cv_folds=0)
    a = run_eval(EvalConfig(out=tmp_path / "a", **cfg), settings)
    b = run_eval(EvalConfig(out=tmp_path / "b", **cfg), settings)
    assert [r.metrics for r in a.results] == [r.metrics for r in b.results]


def test_taobao_train_test_files_split_nothing_and_report_base_rate(tmp_path, settings):
    lines = open(need(TAOBAO), encoding="utf-8").read().splitlines()
    head = lines[0] if not lines[0][0].isdigit() else None
    body = lines[1:] if head else lines
    # UserBehavior is ordered by user: the two files share no user
    users = sorted({row.split(",")[0] for row in body[:12000]})
    cut = set(users[: len(users) * 2 // 3])
    tr = [r for r in body[:12000] if r.split(",")[0] in cut]
    te = [r for r in body[:12000] if r.split(",")[0] not in cut]
    for name, rows in (("train.csv", tr), ("test.csv", te)):
        (tmp_path / name).write_text("\n".join(([head] if head else []) + rows) + "\n")
    res = run_eval(EvalConfig(task="taobao-intent", train=tmp_path / "train.csv",
                              test=tmp_path / "test.csv", out=tmp_path / "r", seed=1,
                              methods=["majority", "gbm", "embed-lr", "knn"]), settings)
    assert "fitted on the --train file" in res.protocol
    report = (tmp_path / "r" / "report.md").read_text()
    assert "base rate" in report and "will_buy" in report
    assert json.loads((tmp_path / "r" / "result.json").read_text())["task"] == "taobao-intent"


def test_synth_personas_with_the_embedded_llm(tmp_path, settings):
    pytest.importorskip("gguf", reason="the 'local' extra is not installed")
    res = run_eval(EvalConfig(task="synth-personas", synth_n=360, out=tmp_path / "s", seed=2,
                              methods=["majority", "bow", "knn", "llm", "cascade"],
                              llm_limit=6), settings)
    by = {r.method: r.metrics for r in res.results}
    assert by["knn"]["macro_f1"] > by["majority"]["macro_f1"]
    assert {r.method for r in res.llm_sample} >= {"llm", "cascade", "knn"}
    assert res.llm_sample_size == 6
    assert res.evidence["evidence_kept"] > 0 and res.evidence["evidence_dropped"] == 0
    # faithfulness reclassifies without the LLM, so it measures every test session here
    assert res.faithfulness.predictions == min(FAITH_MAX, res.sizes["test"])
    assert res.faithfulness.contradicting == 0.0
    assert "Faithfulness of the evidence" in (tmp_path / "s" / "report.md").read_text()
    assert (tmp_path / "s" / "confusion.png").stat().st_size > 1000


@pytest.mark.slow  # ~4-9 min on 2 cores: trains, validates and scores with an adapter
def test_lora_method_trains_on_the_train_split_and_is_reported_next_to_few_shot(tmp_path,
                                                                                settings):
    pytest.importorskip("peft", reason="the 'finetune' extra is not installed")
    res = run_eval(EvalConfig(task="synth-personas", synth_n=240, out=tmp_path / "s", seed=4,
                              methods=["knn", "llm", "lora"], llm_limit=4, lora_steps=2),
                   settings)
    lo = res.lora  # the FinetuneResult itself
    assert lo.steps == 2 and lo.n_examples > 0 and lo.sec_per_step > 0
    assert lo.peak_rss_mb > 0 and lo.card.k_examples == 0
    assert lo.phase_seconds["train"] > 0 and lo.phase_seconds["validate"] > 0
    assert (tmp_path / "s" / "lora-adapter" / "adapter_config.json").exists()
    assert {r.method for r in res.llm_sample} >= {"llm", "lora"}  # same sample, side by side
    report = (tmp_path / "s" / "report.md").read_text()
    assert "## LoRA fine-tune" in report and "few-shot LLM" in report
    assert lo.validation == "lora-layers" and "scored through the lora-layers" in report
    assert "Kept the adapter of step" in report
