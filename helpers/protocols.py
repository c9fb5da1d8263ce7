"""Protocols and splits: which images a protocol takes, and a seeded train / val / test split that keeps
byte-identical images on one side, saved as CSV so every notebook and rerun sees the same test set.

    split = load_split(index, "thesis", profile)
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from . import config
from .config import CLASSES
from .files import atomic_csv

PROTOCOLS = {
    # first N images of each class by id; random (unstratified) 80/20, then 10 % of train for validation
    # ("val_of": "rest": validation is a share of what is left after test; "all": a share of the whole)
    "thesis": {"per_class": {"COVID": 1200, "Normal": 1200, "Viral Pneumonia": 1200},
               "test": 0.20, "val": 0.10, "val_of": "rest", "stratify": False},
    # the first release's counts (first ids); stratified 70/15/15; COVID training images augmented
    "polazaro": {"per_class": {"COVID": 219, "Normal": 1341, "Viral Pneumonia": None},
                 "test": 0.15, "val": 0.15, "val_of": "all", "stratify": True},
    # everything found; stratified 70/15/15; under a cap (quick profile) a seeded random sample of each class,
    # so every collection stays in it (the first ids of Normal are one paediatric collection)
    "all": {"per_class": {"COVID": None, "Normal": None, "Viral Pneumonia": None},
            "test": 0.15, "val": 0.15, "val_of": "all", "stratify": True, "capped": "random"},
}


def sample_per_class(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A seeded random sample of at most ``n`` rows of each class (``label``) of ``frame``, in its row order:
    the one way the series draws a capped subset (the capped ``all`` protocol, left-out images)."""
    parts = [rows.sample(min(n, len(rows)), random_state=seed) for _, rows in frame.groupby("label", sort=False)]
    return pd.concat(parts).sort_index() if parts else frame


def match_class_counts(split: pd.DataFrame, reference: pd.DataFrame, seed: int = config.SEED) -> pd.DataFrame:
    """``split`` with its training and validation images cut, class by class, to a seeded sample of as many as
    ``reference`` has there (all of them where ``split`` has fewer); test untouched. Trains the ``all`` protocol
    on the thesis protocol's class mix and size, and chooses its kept epoch on a validation set of the same
    size, so that the two runs differ in who is in them (notebook 07)."""
    wanted = reference.groupby(["split", "label"]).size()
    parts = [split[split["split"] == "test"]]
    for (side, label), rows in split[split["split"] != "test"].groupby(["split", "label"]):
        n = min(len(rows), int(wanted.get((side, label), 0)))
        parts.append(rows.sample(n=n, random_state=seed))
    matched = split.loc[sorted(pd.concat(parts).index)]
    matched.attrs = {**split.attrs, "matched_to": reference.attrs.get("file")}  # "file" stays the split's own
    return matched


def run_split(index: pd.DataFrame, protocol: str, profile: config.Profile, match: str | None = None
              ) -> pd.DataFrame:
    """The images a run trains, validates and tests on: the protocol's split (``load_split``), its training and
    validation cut to the class counts of protocol ``match``'s split where given (``match_class_counts``)."""
    split = load_split(index, protocol, profile)
    return split if match is None else match_class_counts(split, load_split(index, match, profile), profile.seed)


def select_protocol(index: pd.DataFrame, protocol: str, max_per_class: int | None = None,
                    seed: int = config.SEED) -> pd.DataFrame:
    """The protocol's images: the first ids of each class, as many as it asks for (and at most ``max_per_class``).

    A protocol that takes every image (``all``) is cut to ``max_per_class`` by a random sample seeded with
    ``seed`` instead (``sample_per_class``), kept in id order, so a capped run still sees every collection."""
    spec = _protocol(protocol)
    parts = []
    for label, wanted in spec["per_class"].items():
        rows = index[index["label"] == label].sort_values(["image_id", "relpath"], na_position="last")
        if rows.empty:
            raise ValueError(f"Protocol {protocol!r} needs class {label!r}, but the index has no image of it.")
        limit = min(x for x in (wanted, max_per_class) if x is not None) if (wanted or max_per_class) else None
        if limit is not None and len(rows) < limit:
            warnings.warn(f"Protocol {protocol!r} asks for {limit} {label} images; only {len(rows)} found.",
                          stacklevel=2)
        if limit is not None and wanted is None and spec.get("capped") == "random" and len(rows) > limit:
            rows = sample_per_class(rows, limit, seed)
        parts.append(rows.head(limit) if limit is not None else rows)
    return pd.concat(parts, ignore_index=True)


def left_out(index: pd.DataFrame, protocol: str, max_per_class: int | None = None,
             seed: int = config.SEED) -> pd.DataFrame:
    """The images a protocol does not use (higher ids of each class), without any duplicate of an image it does
    use (same duplicate group: byte-identical or the same radiograph re-encoded): an outside test set for the
    protocol's models (notebook 07). ``max_per_class`` draws a seeded random sample of at most that many per
    class, in id order. ``attrs["twins_excluded"]`` counts the unused images left out as duplicates of used ones."""
    used = select_protocol(index, protocol)
    rest = index[~index["relpath"].isin(used["relpath"]) & index["label"].isin(CLASSES)]
    twins = rest[_groups(rest).isin(set(_groups(used)))]
    rest = rest.drop(twins.index)
    if max_per_class is not None:
        rest = sample_per_class(rest, max_per_class, seed)
    rest = rest.sort_values(["class_id", "image_id", "relpath"]).reset_index(drop=True)
    rest.attrs["twins_excluded"] = len(twins)
    return rest


def _groups(images: pd.DataFrame) -> pd.Series:
    """Each image's duplicate group (``dataset.index_dataset`` adds it); its sha256 for a frame without one."""
    return images["duplicate_group"] if "duplicate_group" in images else images["sha256"]


def _protocol(name: str) -> dict:
    if name not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}.")
    return PROTOCOLS[name]


def split_images(images: pd.DataFrame, protocol: str, seed: int = config.SEED) -> pd.DataFrame:
    """Add a ``split`` column (train / val / test) to a protocol's images.

    Duplicates (the ``duplicate_group`` column: byte-identical files and the same radiograph re-encoded,
    ``duplicates``) always land on the same side, so no test image has a twin in training. The split is made on
    groups with scikit-learn's ``train_test_split``
    (stratified by class where the protocol says so); ``val`` is a share of the non-test part for ``thesis``
    (10 % of train, as Keras' ``validation_split`` did) and of the whole for the 70/15/15 protocols.
    """
    spec = _protocol(protocol)
    images = images.assign(duplicate_group=_groups(images))
    groups = images.groupby("duplicate_group", sort=True)["label"].agg(lambda s: s.mode().iloc[0]).reset_index()
    val_share = spec["val"] if spec["val_of"] == "rest" else spec["val"] / (1 - spec["test"])
    counts = groups["label"].value_counts()
    try:
        if spec["stratify"] and counts.min() < 3:  # scikit-learn would leave a side without the class, or fail
            raise ValueError(f"{counts.idxmin()} has {counts.min()} distinct image(s), fewer than one per side")
        stratify = groups["label"] if spec["stratify"] else None
        rest, test = train_test_split(groups, test_size=spec["test"], random_state=seed, stratify=stratify)
        stratify = rest["label"] if spec["stratify"] else None
        train, val = train_test_split(rest, test_size=val_share, random_state=seed, stratify=stratify)
    except ValueError as error:  # also scikit-learn's words for too few images of a class to stratify
        raise ValueError(
            f"Protocol {protocol!r} cannot split these images: distinct images per class "
            f"{counts.reindex(CLASSES).fillna(0).astype(int).to_dict()} are too few for a "
            f"{'stratified ' if spec['stratify'] else ''}split into train, validation and test. Every class "
            f"needs images on each side; add images or use another protocol. ({error})") from error
    side = {**dict.fromkeys(train["duplicate_group"], "train"), **dict.fromkeys(val["duplicate_group"], "val"),
            **dict.fromkeys(test["duplicate_group"], "test")}
    return _in_split_order(images.assign(split=images["duplicate_group"].map(side)))


def _in_split_order(split: pd.DataFrame) -> pd.DataFrame:
    """train, val, test; inside each, class order then id: the order of the saved CSV and of every pass."""
    rank = {"train": 0, "val": 1, "test": 2}
    return split.sort_values(["split", "class_id", "image_id", "relpath"],
                             key=lambda col: col.map(rank) if col.name == "split" else col).reset_index(drop=True)


SPLIT_COLUMNS = ["relpath", "label", "class_id", "image_id", "sha256", "phash", "duplicate_group", "split"]


def load_split(index: pd.DataFrame, protocol: str, profile: config.Profile, *, directory: Path | None = None
               ) -> pd.DataFrame:
    """The protocol's split for this profile: read from ``data/splits/`` when it exists, else made and saved.

    The file name carries the protocol, the cap, the seed and a fingerprint of the images chosen, of their
    duplicate groups and of the protocol's definition (shares, stratification), so a different dataset copy, a
    changed grouping or a changed protocol never reuses another's split, while every notebook and rerun on the
    same data sees the identical test set.
    """
    images = select_protocol(index, protocol, profile.max_per_class, profile.seed)
    images = images.assign(duplicate_group=_groups(images))
    definition = json.dumps(_protocol(protocol), sort_keys=True)
    chosen = "".join(sorted(images["sha256"] + images["label"] + images["duplicate_group"]))
    fingerprint = hashlib.sha256((definition + chosen).encode()).hexdigest()[:10]
    cap = profile.max_per_class or "all"
    path = Path(directory or profile.splits_dir) / f"{protocol}-n{cap}-seed{profile.seed}-{fingerprint}.csv"
    if path.exists():
        saved = pd.read_csv(path, dtype={"sha256": str})
        split = images.merge(saved[["relpath", "split"]], on="relpath", how="left", validate="one_to_one")
        if split["split"].isna().any():  # cannot happen when the fingerprint matches, but never guess
            raise RuntimeError(f"{path} does not cover the selected images; delete it to make a new split.")
        split = _in_split_order(split)
    else:
        split = split_images(images, protocol, profile.seed)
        atomic_csv(split[SPLIT_COLUMNS], path)
    split.attrs["file"] = path.name  # run records name the split they were trained and tested on
    return split


def split_counts(split: pd.DataFrame) -> pd.DataFrame:
    """Images per class and split, with totals: the table every notebook shows."""
    table = pd.crosstab(split["label"], split["split"], margins=True, margins_name="total")
    rows = [c for c in CLASSES if c in table.index] + ["total"]
    cols = [c for c in ("train", "val", "test") if c in table.columns] + ["total"]
    return table.loc[rows, cols]


def oversample(frame: pd.DataFrame, label: str = "COVID", copies: int = 5) -> pd.DataFrame:
    """``frame`` plus ``copies`` extra rows of each ``label`` image, marked ``augment=True``.

    This is the smaller project's COVID-only augmentation (Augmentor made 5 augmented copies of each COVID
    training image); here the copies are augmented afresh every epoch by the pipeline, not saved to disk.
    """
    base = frame.assign(augment=frame.get("augment", False))
    extra = pd.concat([base[base["label"] == label].assign(augment=True)] * copies, ignore_index=True)
    return pd.concat([base, extra], ignore_index=True)
