"""Checks for shortcuts: does a model still score when the centre of the image is hidden, and how does it do on
the images its protocol left out, per collection (group)?

The central square is a crude stand-in for the lung fields (``explain.central_mask``), not a lung mask.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import config, data, explain, metrics

VIEWS = {"whole image": None, "centre hidden": "border", "centre only": "centre"}
PAEDIATRIC_NORMAL_IDS = 1341  # Normal ids up to here come from the paediatric collection (the first release)


def masked_accuracy(model, frame: pd.DataFrame, image_size: int, seed: int = config.SEED) -> pd.DataFrame:
    """Accuracy (95 % bootstrap interval), per-class sensitivity and the share called COVID of ``model`` on
    ``frame``, once per view in ``VIEWS``: the whole image, the central square blacked out, only it kept."""
    rows = []
    for view, keep in VIEWS.items():
        predictions = metrics.predict(model, frame, image_size, preprocess=keep and explain.masking(image_size, keep))
        m = metrics.classification_metrics(predictions["true"], metrics.probabilities(predictions), seed=seed)
        rows.append({"view": view, "accuracy": m["accuracy"], "ci_low": m["accuracy_ci_low"],
                     "ci_high": m["accuracy_ci_high"],
                     **{f"sensitivity {c}": m["per_class"][c]["sensitivity"] for c in data.CLASSES},
                     "called COVID": (predictions["predicted"] == 0).mean()})
    return pd.DataFrame(rows)


def with_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``group`` column: COVID, Viral Pneumonia, and Normal split by collection (paediatric
    ids <= 1341, adult ids above), the groups whose labels the dataset's sources confound."""
    normal_group = np.where(frame["image_id"] <= PAEDIATRIC_NORMAL_IDS, f"Normal, ids <= {PAEDIATRIC_NORMAL_IDS}",
                            f"Normal, ids > {PAEDIATRIC_NORMAL_IDS}")
    return frame.assign(group=np.where(frame["label"] == "Normal", normal_group, frame["label"]))


def group_accuracy(model, frame: pd.DataFrame, image_size: int) -> pd.DataFrame:
    """Per group of ``frame`` (``with_groups``): images, accuracy, and the share called each class."""
    predictions = metrics.predict(model, frame, image_size)
    called = pd.crosstab(frame["group"].to_numpy(), predictions["predicted"].map(dict(enumerate(data.CLASSES))),
                         normalize="index").reindex(columns=list(data.CLASSES), fill_value=0.0)
    right = (predictions["true"] == predictions["predicted"]).groupby(frame["group"].to_numpy())
    table = pd.DataFrame({"images": right.size(), "accuracy": right.mean()})
    return table.join(called.add_prefix("called ")).rename_axis("group")
