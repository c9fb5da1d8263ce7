"""Speed measurements the notebooks show: how fast an architecture trains here, and what the feature cache saves.

Measurements, not tests: the numbers depend on the machine, and notebooks print them with the machine they ran on.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from . import config, feature_cache, models, pipeline, training
from .experiments import Experiment


def training_speed(model_name: str, image_size: int, batch_size: int = 32, steps: int = 3) -> float:
    """Training images per second of a scratch architecture on random data (after one warm-up step)."""
    model = models.build(model_name, image_size)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)  # the warm-up step traces once (as training.compile_model)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, len(config.CLASSES), batch_size)
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return batch_size * steps / (time.perf_counter() - start)


def cache_speedup(exp: Experiment, profile: config.Profile, rows: pd.DataFrame, epochs: int = 3) -> dict:
    """Seconds per epoch of ``exp``'s head trained on cached features and of the same classifier trained on
    images through its frozen base (median over ``epochs`` epochs after a warm-up); also the one-off cost of
    building the cache."""
    def per_epoch(fit):
        fit()
        times = []
        for _ in range(epochs):
            start = time.perf_counter()
            fit()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    model, pretrained = training.build_model(exp, profile)
    extractor, top = model.get_layer(f"{exp.model}_features"), model.get_layer(f"head_{exp.head}")
    labels = rows["class_id"].to_numpy()
    start = time.perf_counter()
    cached = feature_cache.extract(extractor, rows, exp.image_size, progress=False)
    build = time.perf_counter() - start
    top.compile("adam", "sparse_categorical_crossentropy")
    top.optimizer.build(top.trainable_variables)  # each warm-up fit traces once (as training.compile_model)
    with_cache = per_epoch(lambda: top.fit(cached, labels, batch_size=exp.batch_size, epochs=1, verbose=0))
    extractor.trainable = False
    model.compile("adam", "sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    images = pipeline.make_dataset(rows, exp.image_size, exp.batch_size, training=True)  # decoded images in RAM
    without = per_epoch(lambda: model.fit(images, epochs=1, shuffle=False, verbose=0))  # tf.data shuffles
    return {"images": len(rows), "cached_epoch_s": with_cache, "base_epoch_s": without,
            "speedup": without / with_cache, "build_cache_s": build, "pretrained": pretrained}
