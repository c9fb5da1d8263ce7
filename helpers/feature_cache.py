"""Cache what a frozen base computes, so EC heads train on features in seconds instead of images in minutes.

A frozen base maps an unaugmented image to the same vector every epoch; computing it once and storing it as
NumPy ``.npz`` (no pickle) is enough. With augmentation, a fixed number of augmented *views* per image is cached
(view 0 is the image itself). A cache file is keyed on everything that produced it: the backbone, the input
size, the weights, the images, and for an augmented view the augmentation's layers with their seeds.
"""
from __future__ import annotations

import hashlib
import warnings
import zipfile

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import config, pipeline, run_records
from .files import atomic_write
from .masks import masking


def cache_path(extractor, frame: pd.DataFrame, view: int, augment: str | None = None, seed: int = config.SEED,
               keep: str | None = None):
    """``data/cache/features/<extractor>-<size>-<architecture>-<weights>-<images>-<view>.npz``.

    The name carries fingerprints of everything that produced the features: the extractor's architecture
    (``run_records.architecture``: layers, their settings and dtype policy, the input size) and its weights
    (``run_records.weights_digest``), so an edited base or other weights compute anew; the images; for an augmented
    view its augmentation layers' configuration (kind, factors, per-layer seeds); and a masked view (``keep``).
    """
    images = hashlib.sha256("\n".join(frame["sha256"] + frame["relpath"]).encode()).hexdigest()[:12]
    model = f"{extractor.name}-{extractor.input_shape[1]}-{run_records.architecture(extractor)[:10]}-" \
            f"{run_records.weights_digest(extractor)[:10]}"
    layers = pipeline.project_augmentation(augment, seed + view) if view else None
    view_key = "view0" if not view else f"view{view}-{augment}-{run_records.architecture(layers)[:10]}"
    view_key += f"-{keep}-only" if keep else ""
    return config.data_dir() / "cache" / "features" / f"{model}-{images}-{view_key}.npz"


def extract(extractor, frame: pd.DataFrame, image_size: int, *, augment=None, seed: int = config.SEED,
            batch_size: int = 64, desc: str = "features", keep: str | None = None,
            progress: bool = True) -> np.ndarray:
    """Run ``extractor`` over the images of ``frame`` in order (optionally through ``augment``, and with only the
    border or the centre of each image kept: ``masks.masking``)."""
    ds = pipeline.make_dataset(frame, image_size, batch_size, training=augment is not None, shuffle=False,
                           augment=augment, seed=seed, cache=False,
                           preprocess=masking(image_size, keep) if keep else None)
    # predict_on_batch runs Keras's compiled predict function: the same numbers as an eager call, about twice as
    # fast on a CPU (benchmarks/results.md, "Planning the cpu profile")
    chunks = [np.asarray(extractor.predict_on_batch(images))
              for images, _ in tqdm(ds, desc=desc, total=-(-len(frame) // batch_size), mininterval=2,
                                    disable=not progress)]
    return np.concatenate(chunks).astype(np.float32)  # bfloat16 features too: the head trains in float32 input


def cached_features(extractor, frame: pd.DataFrame, *, view: int = 0, augment: str | None = None,
                    seed: int = config.SEED, keep: str | None = None, progress: bool = True) -> np.ndarray:
    """The features ``extractor`` computes for ``frame``'s images in one view, read from the cache or computed
    and saved (``cache_path`` says what the file is keyed on).

    View 0 is unaugmented; view k >= 1 passes every image through the project augmentation ``augment``
    (``pipeline.project_augmentation``) seeded with ``seed + k``, so views differ from each other and the same
    view is the same on every rerun. ``keep`` (border or centre) blacks out the rest of every image before
    the base sees it (notebook 07). ``progress=False`` hides the progress bar (executed notebooks).
    """
    if view and augment is None:
        raise ValueError("Augmented views (view >= 1) need an augment layer.")
    path = cache_path(extractor, frame, view, augment, seed, keep)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as stored:
                if stored["relpath"].tolist() == frame["relpath"].tolist():
                    return stored["features"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            # written atomically, so only a disk fault or a hand copy gets here: never trust a damaged file
            warnings.warn(f"The feature cache {path} is damaged ({type(error).__name__}: {error}); "
                          "computed again.", stacklevel=2)
    layer = pipeline.project_augmentation(augment, seed + view) if view else None
    features = extract(extractor, frame, extractor.input_shape[1], augment=layer, seed=seed + view, keep=keep,
                       desc=f"{extractor.name}, view {view}", progress=progress)
    atomic_write(path, lambda tmp: np.savez(tmp, features=features, relpath=frame["relpath"].to_numpy(dtype=str)))
    return features
