"""Cache what a frozen base computes, so EC heads train on features in seconds instead of images in minutes.

A frozen base maps an unaugmented image to the same vector every epoch; computing it once per
(backbone, input size, weights, images, view) and storing it as NumPy ``.npz`` (no pickle) is enough. With
augmentation, a fixed number of augmented *views* per image is cached (view 0 is the image itself).
"""
from __future__ import annotations

import hashlib
import os
import time
import warnings
import zipfile

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import backbones, config, data


def cache_path(backbone: str, image_size: int, pretrained: bool, frame: pd.DataFrame, view: int):
    """``data/cache/features/<backbone>-<size>-<weights>-<images fingerprint>-view<k>.npz``."""
    fingerprint = hashlib.sha256("\n".join(frame["sha256"] + frame["relpath"]).encode()).hexdigest()[:12]
    weights = "imagenet" if pretrained else "random"
    return config.DATA_DIR / "cache" / "features" / f"{backbone}-{image_size}-{weights}-{fingerprint}-view{view}.npz"


def extract(extractor, frame: pd.DataFrame, image_size: int, *, augment=None, seed: int = config.SEED,
            batch_size: int = 64, desc: str = "features") -> np.ndarray:
    """Run ``extractor`` over the images of ``frame`` in order (optionally through ``augment``)."""
    ds = data.make_dataset(frame, image_size, batch_size, training=augment is not None, shuffle=False,
                           augment=augment, seed=seed, cache=False)
    chunks = [extractor(images, training=False).numpy()
              for images, _ in tqdm(ds, desc=desc, total=-(-len(frame) // batch_size), mininterval=2)]
    return np.concatenate(chunks).astype(np.float32)


def cached_features(extractor, backbone: str, image_size: int, pretrained: bool, frame: pd.DataFrame, *,
                    view: int = 0, augment: str | None = None, seed: int = config.SEED) -> np.ndarray:
    """The features of ``frame``'s images for one view, read from the cache or computed and saved.

    View 0 is unaugmented; view k >= 1 passes every image through the project augmentation ``augment``
    (``data.project_augmentation``) seeded with ``seed + k``, so views differ from each other and the same
    view is the same on every rerun.
    """
    if view and augment is None:
        raise ValueError("Augmented views (view >= 1) need an augment layer.")
    path = cache_path(backbone, image_size, pretrained, frame, view)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as stored:
                if stored["relpath"].tolist() == frame["relpath"].tolist():
                    return stored["features"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            # written atomically, so only a disk fault or a hand copy gets here: never trust a damaged file
            warnings.warn(f"The feature cache {path} is damaged ({type(error).__name__}: {error}); "
                          "computed again.", stacklevel=2)
    layer = data.project_augmentation(augment, seed + view) if view else None
    features = extract(extractor, frame, image_size, augment=layer, seed=seed + view,
                       desc=f"{backbone} features, view {view}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, features=features, relpath=frame["relpath"].to_numpy(dtype=str))
    os.replace(tmp, path)
    return features


def epoch_seconds_with_and_without_cache(extractor, rows: pd.DataFrame, image_size: int, head_kind: str = "v2reg",
                                         batch_size: int = 32, epochs: int = 3) -> dict:
    """Seconds per epoch of the same head trained on cached features and on images through the frozen base.

    Median over ``epochs`` epochs after a warm-up epoch; also the one-off cost of building the cache.
    """
    def per_epoch(fit):
        fit()
        times = []
        for _ in range(epochs):
            start = time.perf_counter()
            fit()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    labels = rows["class_id"].to_numpy()
    start = time.perf_counter()
    cached = extract(extractor, rows, image_size, desc="building the cache once")
    build = time.perf_counter() - start
    top = backbones.head(cached.shape[1], head_kind)
    top.compile("adam", "sparse_categorical_crossentropy")
    with_cache = per_epoch(lambda: top.fit(cached, labels, batch_size=batch_size, epochs=1, verbose=0))
    extractor.trainable = False
    full = backbones.classifier(extractor, backbones.head(cached.shape[1], head_kind))
    full.compile("adam", "sparse_categorical_crossentropy")
    images = data.make_dataset(rows, image_size, batch_size, training=True)  # decoded images cached in RAM
    without = per_epoch(lambda: full.fit(images, epochs=1, shuffle=False, verbose=0))  # tf.data shuffles
    return {"images": len(rows), "cached_epoch_s": with_cache, "base_epoch_s": without,
            "speedup": without / with_cache, "build_cache_s": build}
