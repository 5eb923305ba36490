"""Evaluation metrics agree with scikit-learn, ECE matches hand computation, plots write PNGs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from behavior_rag.evaluation.metrics import (
    best_threshold,
    binary_metrics,
    confusion,
    expected_calibration_error,
    multiclass_metrics,
)
from behavior_rag.evaluation.plots import confusion_plot, pr_roc_plot, reliability_plot

Y = ["buy", "no", "no", "buy", "no", "buy", "no", "no"]
P = np.array([0.9, 0.1, 0.6, 0.4, 0.3, 0.8, 0.2, 0.55])
YB = np.array([1, 0, 0, 1, 0, 1, 0, 0])


def test_binary_metrics_equal_sklearn():
    m = binary_metrics(Y, P, positive="buy", threshold=0.5)
    pred = (P >= 0.5).astype(int)
    assert m["n"] == 8
    assert m["base_rate"] == pytest.approx(3 / 8)
    assert m["accuracy"] == pytest.approx(accuracy_score(YB, pred))
    assert m["f1_pos"] == pytest.approx(f1_score(YB, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(YB, pred, average="macro"))
    assert m["auroc"] == pytest.approx(roc_auc_score(YB, P))
    assert m["aupr"] == pytest.approx(average_precision_score(YB, P))
    assert m["abstain_rate"] == 0.0
    # By hand: predictions 1,0,1,0,0,1,0,1 -> 5 of 8 right; TP 2, FP 2, FN 1 -> F1 4/7.
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["f1_pos"] == pytest.approx(4 / 7)


def test_binary_metrics_threshold_and_abstentions():
    m = binary_metrics(Y, P, positive="buy", threshold=0.35,
                       abstained=np.array([1, 0, 0, 0, 0, 0, 0, 1], dtype=bool))
    pred = (P >= 0.35).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(YB, pred))
    assert m["n"] == 8  # abstained rows are still scored
    assert m["abstain_rate"] == pytest.approx(0.25)


def test_binary_metrics_single_class_gives_nan_auc():
    m = binary_metrics(["no", "no"], np.array([0.2, 0.7]), positive="buy")
    assert math.isnan(m["auroc"]) and math.isnan(m["aupr"])


def test_multiclass_metrics_and_confusion_equal_sklearn():
    classes = ["a", "b", "c"]
    y = ["a", "b", "c", "a", "c", "b"]
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.2, 0.2, 0.6],
                      [0.3, 0.6, 0.1], [0.4, 0.1, 0.5], [0.5, 0.3, 0.2]])
    pred = [classes[i] for i in proba.argmax(1)]
    m = multiclass_metrics(y, proba, classes)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", labels=classes))
    np.testing.assert_array_equal(confusion(y, pred, classes),
                                  confusion_matrix(y, pred, labels=classes))
    # Top-label ECE by hand: confidences .7 .5 .6 .6 .5 .5, correct 1 1 1 0 1 0.
    # Bin [.5,.6): conf .5,.5,.5 correct 1,1,0 -> |2/3 - .5| * 3/6;
    # bin [.6,.7): .6,.6 correct 1,0 -> |.5 - .6| * 2/6; bin [.7,.8): .7 correct 1 -> .3 * 1/6.
    want = (abs(2 / 3 - 0.5) * 3 + abs(0.5 - 0.6) * 2 + 0.3 * 1) / 6
    assert m["ece"] == pytest.approx(want)


def test_multiclass_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        multiclass_metrics(["a", "b"], np.ones((2, 3)) / 3, ["a", "b"])


def test_ece_perfectly_calibrated_is_zero():
    # In each bin the observed frequency equals the confidence exactly.
    conf = np.array([0.25] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(y, conf) == pytest.approx(0.0, abs=1e-12)


def test_ece_overconfident_by_hand():
    # Bin [.9, 1]: 5 rows at .95 with 3 right -> gap .35; bin [.8, .9): 5 rows at .85, 4 right
    # -> gap .05; ECE = (5 * .35 + 5 * .05) / 10 = .2
    conf = np.array([0.95] * 5 + [0.85] * 5)
    y = np.array([1, 1, 1, 0, 0, 1, 1, 1, 1, 0])
    assert expected_calibration_error(y, conf) == pytest.approx(0.2)
    # 1.0 falls in the last bin, 0.0 in the first
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_best_threshold_maximises_f1():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.35, 0.3, 0.8, 0.7, 0.65])
    # Thresholds by hand: .8 -> F1 .5; .7 -> P.5 R1/3 F1 .4; .65 -> P2/3 R2/3 F1 2/3;
    # .35 -> P.5 R2/3 F1 4/7; .3 -> P3/5 R1 F1 .75; .1 -> P.5 R1 F1 2/3.  Best: .3
    t = best_threshold(y, p)
    assert t == pytest.approx(0.3)
    f1 = {c: f1_score(y, (p >= c).astype(int)) for c in p}
    assert f1[t] == max(f1.values())
    with pytest.raises(ValueError):
        best_threshold(y, p, metric="accuracy")


def test_plots_write_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (the 'eval' extra) is not installed")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    curves = {"good": (y, np.clip(y * 0.6 + rng.random(200) * 0.4, 0, 1)),
              "noise": (y, rng.random(200))}
    pr, roc = pr_roc_plot(curves, tmp_path / "pr.png", tmp_path / "sub" / "roc.png")
    rel = reliability_plot(curves, tmp_path / "rel.png")
    cm = confusion_plot(np.array([[50, 3], [7, 40]]), ["no", "buy"], tmp_path / "cm.png", "cm")
    for path in (pr, roc, rel, cm):
        data = open(path, "rb").read()
        assert data.startswith(b"\x89PNG") and len(data) > 1000
    # Written atomically: no temporary files left beside them.
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "cm.png", "pr.png", "rel.png", "roc.png"]


def test_report_gap_interval_separates_real_gaps_from_noise():
    from types import SimpleNamespace

    from behavior_rag.evaluation.report import _paired_ci

    rng = np.random.default_rng(1)
    y = np.where(rng.random(600) < 0.2, "buy", "no")

    def proba(noise):
        s = (y == "buy") + rng.normal(0, noise, len(y))
        p = 1 / (1 + np.exp(-s))
        return np.stack([p, 1 - p], axis=1)

    res = SimpleNamespace(positive="buy", classes=["buy", "no"])
    good, bad = proba(0.4), proba(1.5)
    lo, hi = (float(x) for x in _paired_ci(res, "aupr", {"g": (y, good), "b": (y, bad)}, "g",
                                             "b").split("[")[1].rstrip("])").split(","))
    assert 0 < lo < hi  # a clear gap: the interval excludes 0
    lo, hi = (float(x) for x in _paired_ci(res, "auroc", {"g": (y, good), "h": (y, good)}, "g",
                                             "h").split("[")[1].rstrip("])").split(","))
    assert lo == hi == 0  # identical rankings
