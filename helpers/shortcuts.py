"""Checks for shortcuts (notebook 07): does a model still score when the centre of the image is hidden, how does
it do on the images its protocol left out, per collection (group), and what do linear probes on frozen features
learn when the collections are confounded with the label on purpose?

The central square is a crude stand-in for the lung fields (``masks.central_mask``), not a lung mask.
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from . import backbones, config, feature_cache, masks, metrics

VIEWS = {"whole image": None, "centre hidden": "border", "centre only": "centre"}
PAEDIATRIC_NORMAL_IDS = 1341  # Normal ids up to here come from the paediatric collection (the first release)
PAEDIATRIC, ADULT = f"Normal, ids <= {PAEDIATRIC_NORMAL_IDS}", f"Normal, ids > {PAEDIATRIC_NORMAL_IDS}"
GROUPS = ("COVID", PAEDIATRIC, ADULT, "Viral Pneumonia")


def masked_accuracy(model, frame: pd.DataFrame, image_size: int, seed: int = config.SEED) -> pd.DataFrame:
    """Accuracy (95 % bootstrap interval), per-class sensitivity and the share called COVID of ``model`` on
    ``frame``, once per view in ``VIEWS``: the whole image, the central square blacked out, only it kept."""
    rows = []
    for view, keep in VIEWS.items():
        predictions = metrics.predict(model, frame, image_size, preprocess=keep and masks.masking(image_size, keep))
        m = metrics.classification_metrics(predictions["true"], metrics.probabilities(predictions), seed=seed)
        rows.append({"view": view, "images": m["n"], "accuracy": m["accuracy"], "ci_low": m["accuracy_ci_low"],
                     "ci_high": m["accuracy_ci_high"],
                     **{f"sensitivity {c}": m["per_class"][c]["sensitivity"] for c in config.CLASSES},
                     "called COVID": (predictions["predicted"] == 0).mean()})
    return pd.DataFrame(rows)


def with_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``group`` column: COVID, Viral Pneumonia, and Normal split by collection (paediatric
    ids <= 1341, adult ids above), the groups whose labels the dataset's sources confound."""
    if frame["image_id"].isna().any():
        raise ValueError("with_groups needs an image id for every image (release file names, e.g. Normal-17.png).")
    normal_group = np.where(frame["image_id"] <= PAEDIATRIC_NORMAL_IDS, PAEDIATRIC, ADULT)
    return frame.assign(group=np.where(frame["label"] == "Normal", normal_group, frame["label"]))


def unseen_by_thesis_run(every: pd.DataFrame, thesis: pd.DataFrame) -> pd.DataFrame:
    """The ``all`` split's test images (``every``) that the thesis protocol's run neither trained nor validated on,
    nor on a duplicate of one (``thesis``: its split): images both protocols' models have never seen, on which
    notebook 07 compares them."""
    seen = set(thesis.loc[thesis["split"] != "test", "duplicate_group"])
    test = every[every["split"] == "test"]
    return test[~test["duplicate_group"].isin(seen)].reset_index(drop=True)


def group_accuracy(model, frame: pd.DataFrame, image_size: int, seed: int = config.SEED) -> pd.DataFrame:
    """Per group of ``frame`` (``with_groups``): images, accuracy with its interval, and the share called each
    class."""
    predictions = metrics.predict(model, frame, image_size)
    return group_table(frame["group"], predictions["true"], predictions["predicted"], seed)


def group_table(groups, true, predicted, seed: int = config.SEED, classes=config.CLASSES) -> pd.DataFrame:
    """Per group: images, accuracy (95 % bootstrap interval) and the share of the group called each class.
    Every image of a group has one true class, so a group's accuracy is that class's sensitivity in it."""
    groups, true, predicted = (np.asarray(v) for v in (groups, true, predicted))
    rows = {}
    for group in [g for g in GROUPS if g in set(groups)] + sorted(set(groups) - set(GROUPS)):
        inside = groups == group
        rows[group] = {**metrics.accuracy_with_interval(true[inside] == predicted[inside], seed),
                       **{f"called {c}": float((predicted[inside] == k).mean()) for k, c in enumerate(classes)}}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("group")


# --------------------------------------------------------------------------------------------------
# Linear probes on frozen ImageNet features (seconds each, once the features are cached)
# --------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def probe_extractor(backbone: str, image_size: int, allow_random: bool):
    """A frozen ImageNet extractor, built once per backbone and input size (notebook 07 asks for features many
    times)."""
    return backbones.feature_extractor(backbone, image_size, allow_random=allow_random)


def frozen_features(frame: pd.DataFrame, image_size: int, profile: config.Profile,
                    keep: str | None = None) -> np.ndarray:
    """Pooled features of the profile's progression backbone (frozen, ImageNet weights: EfficientNet-Lite0 in the cpu
    profile) for ``frame``'s images, whole or with only the border or the centre kept (``keep``); cached in
    ``data/cache/features`` like notebook 03's."""
    extractor, _ = probe_extractor(profile.progression_backbone, image_size, profile.allow_random_weights)
    return feature_cache.cached_features(extractor, frame, keep=keep, progress=False)


def probe_sample(frame: pd.DataFrame, n: int | None, seed: int = config.SEED) -> pd.DataFrame:
    """A seeded sample of at most ``n`` rows of ``frame`` (which has a ``group`` column), the same share of every
    group, so every split and protocol drawn from it keeps its mix of classes and collections; ``n`` None or at
    least the rows: all of them, in their order."""
    if n is None or n >= len(frame):
        return frame
    return frame.groupby("group", sort=False).sample(frac=n / len(frame), random_state=seed).sort_index()


def fit_probe(features: np.ndarray, labels, seed: int = config.SEED):
    """A linear probe: standardised features into a logistic regression (scikit-learn), with its strength of
    regularisation chosen by 5-fold cross-validation on the training rows only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    # the 20 fits of the search in two processes: the same probe, sooner on two cores
    search = GridSearchCV(probe, {"logisticregression__C": np.logspace(-3, 0, 4)}, cv=folds, scoring="neg_log_loss",
                          n_jobs=2)
    return search.fit(features, np.asarray(labels))


def probe_scores(probe, features: np.ndarray, labels, seed: int = config.SEED) -> dict:
    """Accuracy with its 95 % bootstrap interval, macro-averaged one-vs-rest AUC, and the accuracy of always
    answering the most frequent class of ``labels`` (what a probe that learned nothing scores)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    proba = probe.predict_proba(features)
    predicted = probe.classes_[proba.argmax(axis=1)]
    present = np.isin(probe.classes_, labels)
    if len(set(labels)) < 2:
        auc = np.nan
    elif len(probe.classes_) == 2:
        auc = roc_auc_score(labels == probe.classes_[1], proba[:, 1])
    else:
        auc = roc_auc_score(labels, proba[:, present] / proba[:, present].sum(axis=1, keepdims=True),
                            multi_class="ovr", labels=probe.classes_[present])
    return {**metrics.accuracy_with_interval(predicted == labels, seed), "auc": float(auc),
            "majority_class": metrics.largest_class_share(labels)}
