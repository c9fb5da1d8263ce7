"""Scores of a model: predictions over a split, and the metrics the series reports for them.

Accuracy with a 95 % bootstrap interval, per-class sensitivity / precision / F1 / AUC, macro-F1, one-vs-rest
AUC and the confusion matrix, all from an unshuffled, unaugmented pass over the images.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

from . import config, pipeline


def classification_metrics(y_true, proba, seed: int = config.SEED, n_resamples: int = 2000) -> dict:
    """Loss, accuracy with a 95 % bootstrap interval, per-class sensitivity / precision / F1 / AUC, macro-F1,
    one-vs-rest AUC and the confusion matrix (rows true, columns predicted, class order of ``config.CLASSES``).

    Undefined values (precision of a class never predicted, AUC of a class absent) are None, not 0. A diverged
    model's NaN outputs count as a prediction of the first class (what ``argmax`` makes of them, and what a
    user of that model would get); its loss and AUC are None.
    """
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    labels = list(range(len(config.CLASSES)))
    finite = bool(np.isfinite(proba).all())
    predicted = np.nan_to_num(proba, nan=-np.inf).argmax(axis=1)
    correct = (predicted == y_true).astype(float)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, predicted, labels=labels, zero_division=np.nan)
    interval = _bootstrap_interval(correct, seed, n_resamples)
    # Keras computes a softmax model's cross-entropy from its logits, unclipped: floor a probability only where
    # float32 underflows, so this loss equals the training log's (scikit-learn's log_loss floors at float64's
    # epsilon, an earlier floor here at 1e-7: both hid the cost of confident errors)
    clipped = np.clip(proba, np.finfo(np.float32).tiny, 1.0)
    per_class = {}
    for k, name in enumerate(config.CLASSES):
        present = 0 < (y_true == k).sum() < len(y_true)
        auc = roc_auc_score(y_true == k, proba[:, k]) if present and finite else np.nan
        per_class[name] = {"sensitivity": recall[k], "precision": precision[k], "f1": f1[k], "auc": auc,
                           "support": int(support[k])}
    aucs = [c["auc"] for c in per_class.values() if not np.isnan(c["auc"])]
    return json_ready({
        "n": len(y_true),
        "loss": _cross_entropy(y_true, clipped / clipped.sum(axis=1, keepdims=True)) if finite else np.nan,
        "accuracy": correct.mean(),
        "accuracy_ci_low": interval[0], "accuracy_ci_high": interval[1],
        "macro_f1": f1_score(y_true, predicted, labels=labels, average="macro", zero_division=0),
        "auc_ovr_macro": float(np.mean(aucs)) if aucs else np.nan,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, predicted, labels=labels).tolist(),
    })


def largest_class_share(labels) -> float:
    """The share of the most frequent label: what always answering the largest class scores on these images,
    the floor a classifier has to beat (33 % only when the classes are balanced)."""
    labels = pd.Series(np.asarray(labels))
    return float(labels.value_counts(normalize=True).iloc[0]) if len(labels) else float("nan")


def accuracy_with_interval(correct, seed: int = config.SEED, n_resamples: int = 2000) -> dict:
    """Images, accuracy and its 95 % bootstrap interval from 0/1 outcomes (True where a prediction is right)."""
    correct = np.asarray(correct, dtype=float)
    if correct.size == 0:
        return {"images": 0, "accuracy": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    low, high = _bootstrap_interval(correct, seed, n_resamples)
    return {"images": int(correct.size), "accuracy": float(correct.mean()), "ci_low": low, "ci_high": high}


def share_with_interval(k: int, n: int, seed: int = config.SEED) -> dict:
    """``k`` of ``n`` (e.g. a published 711 of 720 right, or a sensitivity and its class's support) with the same
    95 % interval ``accuracy_with_interval`` gives ``k`` right answers among ``n``."""
    return accuracy_with_interval(np.r_[np.ones(int(k)), np.zeros(int(n) - int(k))], seed)


def _cross_entropy(y_true, proba) -> float:
    """Mean negative log probability of the true class."""
    y_true = np.asarray(y_true)
    return float(-np.mean(np.log(np.asarray(proba, dtype=np.float64)[np.arange(len(y_true)), y_true])))


def _bootstrap_interval(correct: np.ndarray, seed: int, n_resamples: int) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of 0/1 outcomes (scipy.stats.bootstrap). Where every
    outcome is the same (all right or all wrong), every resample gives the same accuracy and the bootstrap
    collapses to a point, so the Wilson score interval is used instead (33 of 33 right: 0.896-1)."""
    if correct.min() == correct.max():
        wilson = stats.binomtest(int(correct.sum()), correct.size).proportion_ci(0.95, method="wilson")
        return float(wilson.low), float(wilson.high)
    result = stats.bootstrap((correct,), np.mean, n_resamples=n_resamples, confidence_level=0.95,
                             method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def json_ready(value):
    """NumPy scalars to Python, NaN to None, recursively: metrics.json stays standard JSON."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def predict(model: keras.Model, frame: pd.DataFrame, image_size: int, batch_size: int = 32,
            preprocess=None, tta_flip: bool = False) -> pd.DataFrame:
    """Class probabilities for the rows of ``frame`` in their order (an unshuffled, unaugmented pass);
    ``preprocess`` transforms each batch of [0, 255] images first (e.g. ``masks.masking``); ``tta_flip``
    averages the probabilities of each image and its left-right mirror (test-time augmentation)."""
    proba = model.predict(pipeline.make_dataset(frame, image_size, batch_size, preprocess=preprocess), verbose=0)
    if tta_flip:
        def mirrored(images):
            images = images[:, :, ::-1, :]
            return preprocess(images) if preprocess else images
        flipped = pipeline.make_dataset(frame, image_size, batch_size, preprocess=mirrored)
        proba = (proba + model.predict(flipped, verbose=0)) / 2
    out = pd.DataFrame({"relpath": frame["relpath"].to_numpy(), "true": frame["class_id"].to_numpy(),
                        "predicted": np.nan_to_num(proba, nan=-np.inf).argmax(axis=1)})
    if "split" in frame:
        out.insert(1, "split", frame["split"].to_numpy())
    for k, name in enumerate(config.CLASSES):
        out[f"p_{name}"] = proba[:, k]
    return out


def probabilities(predictions: pd.DataFrame) -> np.ndarray:
    """The probability columns of a predictions table as an (n, 3) array."""
    return predictions[[f"p_{name}" for name in config.CLASSES]].to_numpy()


def true_and_proba(predictions: pd.DataFrame, split: str):
    """Class ids and probabilities of one split (val or test) of a predictions table."""
    part = predictions[predictions["split"] == split]
    return part["true"].to_numpy(), probabilities(part)
