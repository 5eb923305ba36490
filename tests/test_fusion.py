"""Fusion: kNN vote, calibrated LLM probabilities, and fitting on dev data."""

from __future__ import annotations

import numpy as np

from behavior_rag.fusion import DevExample, FusionParams, fit, fuse, knn_vote

LABELS = ["a", "b", "c"]


def test_knn_vote_weights_closer_neighbours_and_smooths():
    p = knn_vote([("a", 0.90), ("b", 0.80), ("b", 0.79)], LABELS, FusionParams(knn_temperature=0.01))
    assert p["a"] > p["b"] > p["c"] > 0 and abs(sum(p.values()) - 1) < 1e-9


def test_no_llm_means_knn_decides():
    knn = knn_vote([("c", 0.9)], LABELS, FusionParams())
    assert fuse(None, knn, FusionParams(w_llm=0.9)) == knn


def _dev(n: int, llm_informative: bool, rng) -> list[DevExample]:
    out = []
    for _ in range(n):
        y = LABELS[rng.integers(3)]
        # kNN: each of 3 neighbours right 40 % of the time
        nb = [(y if rng.random() < 0.4 else LABELS[rng.integers(3)], 0.9 - 0.01 * i)
              for i in range(3)]
        if llm_informative:  # LLM: right 90 % of the time, with a bias towards "c"
            top = y if rng.random() < 0.9 else LABELS[rng.integers(3)]
            scores = {k: (-1.0 if k == top else -4.0) + (2.5 if k == "c" else 0) for k in LABELS}
        else:
            scores = {k: float(rng.normal()) for k in LABELS}
        out.append(DevExample(llm_scores=scores, neighbors=nb, label=y))
    return out


def test_fit_ignores_a_noise_llm_and_uses_a_good_one():
    rng = np.random.default_rng(0)
    noise = fit(_dev(300, False, rng), LABELS)
    assert noise.w_llm <= 0.2
    dev = _dev(300, True, rng)
    good = fit(dev, LABELS)
    knn_only = fit(dev, LABELS, weights=[0.0])
    assert good.w_llm > 0 and good.dev_macro_f1 > knn_only.dev_macro_f1 + 0.15
    assert good.llm_bias["c"] < good.llm_bias["a"]  # calibration removes the "c" preference


def test_params_round_trip(tmp_path):
    p = FusionParams(w_llm=0.3, llm_bias={"a": 1.0}, fitted_on=12)
    p.save(tmp_path / "fusion.json")
    assert FusionParams.load(tmp_path / "fusion.json") == p


def test_knn_calibration_lets_a_minority_label_win():
    # An index with 10 % "yes": neighbours are mostly "no" whatever the truth, but a "yes"
    # session has a few more "yes" neighbours. Uncalibrated, "yes" never wins a vote.
    rng = np.random.default_rng(3)
    dev = []
    for i in range(200):
        y = "yes" if i % 2 else "no"
        share = 0.25 if y == "yes" else 0.05
        nb = [("yes" if rng.random() < share else "no", 0.9 - 0.001 * j) for j in range(15)]
        dev.append(DevExample(llm_scores=None, neighbors=nb, label=y))
    raw = FusionParams(knn_temperature=0.3)
    assert sum(max(p, key=p.get) == "yes" for p in
               (knn_vote(d.neighbors, ["yes", "no"], raw) for d in dev)) < 10
    fitted = fit(dev, ["yes", "no"], weights=[0.0])
    assert fitted.knn_bias["yes"] > fitted.knn_bias["no"]
    preds = [max(p, key=p.get) for p in (knn_vote(d.neighbors, ["yes", "no"], fitted)
                                         for d in dev)]
    assert preds.count("yes") > 50 and fitted.dev_macro_f1 > 0.7


def test_fit_fusion_commits_with_the_index_and_a_reopen_uses_it(tmp_path, embed_home):
    from behavior_rag import BehaviorRAG, Settings
    from behavior_rag.index.storage import read_config
    from behavior_rag.synth import generate

    s = Settings(home=embed_home, embed={"backend": "onnx-int8"}, llm={"backend": "none"})
    data = generate(60, seed=81).sessions
    rag = BehaviorRAG(s, tmp_path / "ix")
    rag.add_labelled(data[:40])
    rag.save()
    first = rag.fit_fusion(data[40:50])
    name = read_config(tmp_path / "ix").fusion
    assert name and (tmp_path / "ix" / name).exists()  # config.json names it: one commit
    assert BehaviorRAG(s, tmp_path / "ix").classifier.fusion == first
    second = BehaviorRAG(s, tmp_path / "ix").fit_fusion(data[50:])
    cfg = read_config(tmp_path / "ix")
    assert cfg.fusion != name and not (tmp_path / "ix" / name).exists()  # the old one swept
    assert BehaviorRAG(s, tmp_path / "ix").classifier.fusion == second
    assert [p.name for p in (tmp_path / "ix").glob("*fusion*")] == [cfg.fusion]
