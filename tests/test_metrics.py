"""metrics: the numbers every notebook reports, checked against counts and distributions worked out by hand."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers import metrics


def test_metrics_on_a_known_confusion():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    proba = np.eye(3)[pred] * 0.8 + 0.2 / 3
    m = metrics.classification_metrics(y, proba)
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 3, 0], [0, 1, 2]]
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["per_class"]["COVID"]["sensitivity"] == pytest.approx(0.75)
    assert m["per_class"]["Normal"]["precision"] == pytest.approx(0.6)
    assert m["per_class"]["Viral Pneumonia"]["sensitivity"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx(np.mean([2 * 1 * 0.75 / 1.75, 2 * 0.6 / 1.6, 2 * (2 / 3) / (5 / 3)]))
    json.dumps(m, allow_nan=False)  # standard JSON


@pytest.mark.parametrize("right, n", [(160, 200), (45, 60)])
def test_the_bootstrap_interval_is_the_binomial_spread_of_the_accuracy(right, n):
    """Resampling n outcomes with k right gives accuracies distributed as Binomial(n, k/n) / n: the 95 % interval
    must be that distribution's 2.5 and 97.5 percentiles (within one image either way), not any interval around
    the mean."""
    correct = np.r_[np.ones(right), np.zeros(n - right)]
    low, high = stats.binom.ppf([0.025, 0.975], n, right / n) / n
    result = metrics.accuracy_with_interval(correct)
    assert result["ci_low"] == pytest.approx(low, abs=1.01 / n)
    assert result["ci_high"] == pytest.approx(high, abs=1.01 / n)
    m = metrics.classification_metrics(correct.astype(int) * 0, np.eye(3)[(1 - correct).astype(int)])
    assert (m["accuracy_ci_low"], m["accuracy_ci_high"]) == (result["ci_low"], result["ci_high"])


def test_undefined_metrics_are_none_not_zero():
    y = np.array([0, 1, 1, 0])
    proba = np.tile([0.1, 0.8, 0.1], (4, 1))  # always predicts Normal; no Viral Pneumonia in the data
    m = metrics.classification_metrics(y, proba)
    assert m["per_class"]["COVID"]["precision"] is None
    assert m["per_class"]["Viral Pneumonia"]["auc"] is None
    assert m["per_class"]["COVID"]["sensitivity"] == 0.0


def test_all_right_or_all_wrong_gets_the_wilson_interval_not_a_point():
    """The bootstrap of identical outcomes is a point; 33 of 33 right must still say how little 33 images show."""
    y = np.array([0, 1, 2, 1])
    m = metrics.classification_metrics(y, np.eye(3)[y])
    assert m["accuracy"] == 1.0 and m["accuracy_ci_high"] == pytest.approx(1.0)
    assert m["accuracy_ci_low"] == pytest.approx(0.510, abs=1e-3)  # Wilson, 4 of 4
    assert m["auc_ovr_macro"] == 1.0
    right = metrics.accuracy_with_interval(np.ones(33))
    assert (right["ci_low"], right["ci_high"]) == (pytest.approx(0.8957, abs=1e-3), pytest.approx(1.0))
    wrong = metrics.accuracy_with_interval(np.zeros(4))
    assert wrong["accuracy"] == 0.0 and wrong["ci_low"] == pytest.approx(0.0) and wrong["ci_high"] > 0.4


def test_accuracy_with_interval_of_an_empty_group_is_undefined():
    empty = metrics.accuracy_with_interval([])
    assert empty["images"] == 0 and np.isnan(empty["accuracy"]) and np.isnan(empty["ci_low"])


def test_largest_class_share_is_the_score_of_always_answering_the_largest_class():
    labels = ["COVID"] * 6 + ["Normal"] * 3 + ["Viral Pneumonia"]
    assert metrics.largest_class_share(labels) == pytest.approx(0.6)
    assert metrics.largest_class_share(pd.Series(["Normal"] * 4)) == 1.0
    assert np.isnan(metrics.largest_class_share([]))


def test_a_share_gets_the_interval_of_as_many_right_answers():
    share = metrics.share_with_interval(711, 720, seed=3)
    assert share == metrics.accuracy_with_interval(np.r_[np.ones(711), np.zeros(9)], seed=3)
    assert share["images"] == 720 and share["accuracy"] == pytest.approx(711 / 720)


def test_the_loss_is_the_one_keras_logs_even_for_a_confident_error():
    """Keras computes a softmax model's cross-entropy from its logits: a confident error (probability 1e-12 for the
    true class) costs about 28, not the 16 a floor at 1e-7 would allow, and the metrics' loss must agree."""
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")])
    model.layers[0].set_weights([np.array([[30.0, 0.0, -30.0], [0.0, 1.0, 0.0]]), np.zeros(3)])
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]], dtype="float32")
    y = np.array([2, 1, 0, 2])  # the first is a confident error: p(class 2) is about e^-60
    model.compile(loss="sparse_categorical_crossentropy")
    logged = model.evaluate(x, y, verbose=0)
    ours = metrics.classification_metrics(y, model.predict(x, verbose=0))["loss"]
    assert logged > 10 and ours == pytest.approx(logged, rel=1e-3)
