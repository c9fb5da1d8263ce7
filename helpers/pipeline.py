"""Pixels and tf.data: read an image as 8-bit grey, build the batched (and augmented) pipeline a run trains on.

    train = make_dataset(split[split.split == "train"], 224, 32, training=True)
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
from PIL import Image

from . import config
from .config import CLASSES


def read_gray(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """One image as 8-bit grayscale (uint8, H x W), optionally resized bilinearly to ``size`` x ``size``.

    Handles RGB, RGBA (alpha dropped), palette and 16-bit images the same way the pipeline does.
    """
    with Image.open(path) as image:
        image = to_gray(image)
        if size is not None:
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def to_gray(image: Image.Image) -> Image.Image:
    """A Pillow image as 8-bit grey ("L"), converted as the pipeline converts it: RGBA loses its alpha, a palette
    its colours, and a 16-bit image keeps its high byte, as TensorFlow's decoder does."""
    if image.mode.startswith("I;16") or image.mode == "I":
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
    return image.convert("RGB").convert("L")


def _decode(path, size: int):
    """TensorFlow side of ``read_gray``: decode any PNG/JPEG/BMP to one 8-bit channel, resize, keep uint8."""
    import tensorflow as tf

    raw = tf.io.read_file(path)
    image = tf.io.decode_image(raw, channels=3, dtype=tf.uint8, expand_animations=False)  # 16-bit -> 8-bit
    image = tf.image.rgb_to_grayscale(image)
    image = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def make_dataset(frame: pd.DataFrame, image_size: int, batch_size: int, *, training: bool = False,
                 preprocess=None, augment=None, seed: int = config.SEED, cache: bool = True,
                 shuffle: bool | None = None, one_hot: bool = False, mixup: float = 0.0):
    """A ``tf.data.Dataset`` of ``(images, class_ids)`` batches for the rows of ``frame``.

    Images are decoded once to 8-bit grayscale at ``image_size`` and cached in memory, then repeated to
    3 channels as float32 in [0, 255]. Training data is shuffled every epoch and, when ``augment`` (a Keras
    layer, e.g. ``augmentation()``) is given, augmented: every row, or only rows whose ``augment`` column is
    True. ``preprocess`` (a backbone's input convention) runs last. Evaluation data keeps the frame's order;
    ``shuffle=False`` keeps it for training data too (augmented feature views, which must stay aligned).
    ``one_hot`` gives labels as one-hot rows (for label smoothing); ``mixup`` > 0 blends the training images
    and their one-hot labels in pairs with Keras's ``MixUp`` layer (its ``alpha``).
    """
    import tensorflow as tf

    if frame.empty:
        raise ValueError("make_dataset got no rows: the split is empty for this selection.")
    paths = frame["path"].astype(str).to_numpy()
    labels = frame["class_id"].to_numpy(dtype=np.int32)
    flags = (frame["augment"].to_numpy(dtype=bool) if "augment" in frame
             else np.ones(len(frame), dtype=bool))
    ds = tf.data.Dataset.from_tensor_slices((paths, labels, flags))
    ds = ds.map(lambda p, y, a: (_decode(p, image_size), y, a), num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if training if shuffle is None else shuffle:
        ds = ds.shuffle(len(frame), seed=seed, reshuffle_each_iteration=True)

    ds = ds.map(lambda image, label, flag: (tf.cast(image, tf.float32), label, flag),
                num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    if training and augment is not None:
        # Whole batch at once, on the single grey channel: a third of the work of augmenting three identical
        # channels (it was 19 % of SqueezeNet-FT's training time on 2 cores; see benchmarks/results.md).
        def maybe_augment(images, labels, flags):  # then keep the unflagged rows as they were
            augmented = tf.clip_by_value(augment(images, training=True), 0.0, 255.0)
            return tf.where(flags[:, None, None, None], augmented, images), labels, flags
        # Serially: the layers' random state advances batch by batch in order, so a rerun draws the same.
        ds = ds.map(maybe_augment)
    ds = ds.map(lambda images, labels, flags: (tf.image.grayscale_to_rgb(images), labels),
                num_parallel_calls=tf.data.AUTOTUNE)
    if one_hot or (training and mixup):
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, len(CLASSES))), num_parallel_calls=tf.data.AUTOTUNE)
    if training and mixup:
        import keras

        mix = keras.layers.MixUp(alpha=mixup, seed=layer_seeds(seed, 5)[4])  # its own stream, as each layer

        def mixed(images, labels):
            out = mix({"images": images, "labels": labels}, training=True)
            return out["images"], out["labels"]
        ds = ds.map(mixed)  # serially, like the augmentation
    if preprocess is not None:
        ds = ds.map(lambda x, y: (preprocess(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    # tf.data's autotuner off: with it, on 2 cores, many epochs of `fit` ended on a multiple of about 10.3 s
    # whatever the net (one batch a second at 100 % CPU); without it, epochs ran at 83-100 % of the net's bare
    # training rate with both cores busy (benchmarks/results.md, 2026-12-04). AUTOTUNE then means TF's defaults.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def layer_seeds(seed: int, count: int) -> list[int]:
    """``count`` independent seeds derived from ``seed`` (NumPy ``SeedSequence.spawn``).

    Each Keras random layer draws from its own ``SeedGenerator``; layers given one seed draw the same numbers in
    lockstep (a flipped image was almost always also darker and zoomed less). Spawned seeds are unrelated to
    each other and to those spawned from any other ``seed``, so augmented feature views stay independent too.
    """
    return [int(child.generate_state(1)[0] >> 1) for child in np.random.SeedSequence(seed).spawn(count)]


def augmentation(flip: bool = True, rotation: float = 0.0, zoom: tuple | float | None = None,
                 brightness: float | None = None, translation: float = 0.0, contrast: float = 0.0,
                 seed: int = config.SEED):
    """A Keras ``Sequential`` of preprocessing layers for images in [0, 255], each layer with its own seed.

    thesis: ``augmentation(zoom=(0.0, 0.2), brightness=0.2)`` (flip, zoom out up to 20 %, brightness);
    polazaro: ``augmentation(rotation=15 / 360)`` (flip, rotation within +-15 degrees).
    ``translation`` shifts by up to that share of the size, ``contrast`` scales contrast by up to 1 +- it.
    """
    import keras

    # one seed per possible layer, in a fixed order (index 4 is MixUp's, in make_dataset)
    flip_seed, rotation_seed, zoom_seed, brightness_seed, _, translation_seed, contrast_seed = layer_seeds(seed, 7)
    layers = []
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=flip_seed))
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation, fill_mode="constant", seed=rotation_seed))
    if zoom is not None:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="constant", seed=zoom_seed))
    if translation:
        layers.append(keras.layers.RandomTranslation(translation, translation, fill_mode="constant",
                                                     seed=translation_seed))
    if brightness:
        layers.append(keras.layers.RandomBrightness(brightness, value_range=(0, 255), seed=brightness_seed))
    if contrast:
        layers.append(keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=contrast_seed))
    return keras.Sequential(layers, name="augmentation")


PROJECT_AUGMENTATIONS = {
    "thesis": {"flip": True, "zoom": (0.0, 0.2), "brightness": 0.2},  # flip, zoom out to 20 %, brightness
    "polazaro": {"flip": True, "rotation": 15 / 360},                # left-right flip, rotation within +-15 deg
    # stronger, for the improved recipe (notebook 04): no flip (a chest is not symmetric), small rotations and
    # shifts, zoom in and out, brightness and contrast
    "strong": {"flip": False, "rotation": 10 / 360, "zoom": (-0.15, 0.15), "translation": 0.08,
               "brightness": 0.2, "contrast": 0.2},
}


def project_augmentation(kind: str | None, seed: int = config.SEED):
    """The augmentation a project used (``"thesis"`` or ``"polazaro"``), or the improved recipe's
    (``"strong"``), as Keras layers; None gives None."""
    if kind is None:
        return None
    if kind not in PROJECT_AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {kind!r}; use one of {list(PROJECT_AUGMENTATIONS)} or None.")
    return augmentation(seed=seed, **PROJECT_AUGMENTATIONS[kind])
