"""Where a model looks: Grad-CAM heatmaps, layer activations, and the masks of the shortcut checks.

Grad-CAM (Selvaraju et al. 2017) in its two-stage form: one forward pass gives the last convolutional feature
map A and the class scores; the gradient of the chosen class score with respect to A, averaged over space,
weights A's channels; their ReLU-ed sum, divided by its maximum, is the map. It works on flat models and on
our nested transfer models (image -> extractor(preprocess -> base -> pool) -> head), where the feature map
lives inside a sub-model.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

from . import models
from .masks import central_mask, masking

# The masks of the shortcut checks live in ``masks``; the notebooks reach them here, beside Grad-CAM.
__all__ = ["activations", "central_mask", "centre_share", "centre_shares", "class_score_layer", "feature_layers",
           "gradcam", "last_conv_layer", "layer_probe", "masking", "resize_maps"]

SKIPPED_FOR_CAM = (layers.InputLayer, layers.MaxPooling2D, layers.AveragePooling2D, layers.Dropout,
                   layers.SpatialDropout2D)


def _walk(model: keras.Model):
    """Every layer of ``model``, depth first, nested models' layers in place of the nested model."""
    return (layer for layer in models.all_layers(model) if not isinstance(layer, keras.Model))


def feature_layers(model: keras.Model) -> list[str]:
    """Names of the layers with a 4-D (image-like) output, at any depth, in order, leaving out inputs,
    pooling, dropout and the preprocessing layer: the candidates for activation maps and Grad-CAM."""
    return [layer.name for layer in _walk(model)
            if not isinstance(layer, SKIPPED_FOR_CAM) and len(layer.output.shape) == 4
            and layer.name != "preprocess"]


def last_conv_layer(model: keras.Model) -> str:
    """The layer Grad-CAM uses by default: the last of ``feature_layers``. For our transfer models this is the
    base's last feature map (``fire9_concat`` of SqueezeNet, ``head_relu6`` of EfficientNet-Lite0,
    ``block14_sepconv2_act`` of Xception, ``block5_conv3`` of VGG16)."""
    candidates = feature_layers(model)
    if not candidates:
        raise ValueError(f"{model.name} has no layer with a 4-D output: Grad-CAM needs a convolutional map.")
    return candidates[-1]


def _contains(model: keras.Model, name: str) -> bool:
    return any(layer.name == name for layer in _walk(model))


def layer_probe(model: keras.Model, names: list[str]):
    """A function ``images -> ([output of each named layer], predictions)`` computed in one forward pass
    (inference mode), for named layers at any depth of a nested model."""
    names = list(names)
    for name in names:
        if not _contains(model, name):
            raise ValueError(f"{model.name} has no layer named {name!r}.")
    own = {layer.name for layer in model.layers}
    if isinstance(model, keras.Sequential):  # reloaded from a file it has no symbolic input: call it anew
        if not all(name in own for name in names):
            raise ValueError(f"{model.name}: layers nested inside a Sequential model are not supported.")
        x = inputs = keras.Input(model.input_shape[1:])
        outputs = {}
        for layer in model.layers:
            x = outputs[layer.name] = layer(x)
        return _run_flat(keras.Model(inputs, [outputs[n] for n in names] + [x]))
    if all(name in own for name in names):
        return _run_flat(keras.Model(model.input, [model.get_layer(n).output for n in names] + [model.output]))

    inner = {layer.name: [n for n in names if n not in own and _contains(layer, n)]
             for layer in model.layers if isinstance(layer, keras.Model)}
    # each nested model's own probe, built once: building a Keras model per batch cost more than running it
    inner_probes = {layer.name: layer_probe(layer, inner[layer.name]) for layer in model.layers if inner.get(layer.name)}
    checked = []

    def walk(x):
        found, y = {}, x
        for layer in model.layers[1:]:
            if layer.name in inner_probes:
                outputs, y = inner_probes[layer.name](y)
                found.update(zip(inner[layer.name], outputs))
            else:
                y = layer(y, training=False)
            if layer.name in names:
                found[layer.name] = y
        return [found[n] for n in names], y

    def run_chain(x):
        """Each layer on the previous one's output (our nested classifiers are chains); the first batch checks
        that this reproduces the model's own output, so a model of another shape is refused, not misread."""
        if checked:
            return walk(x)
        refusal = (f"{model.name} nests a model but is not a simple chain of layers; explain supports nesting "
                   "only in chains (as our classifiers are).")
        try:
            found, y = walk(x)
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(refusal) from error
        if not np.allclose(keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(model(x, training=False)),
                           atol=1e-4, rtol=1e-3):
            raise ValueError(refusal)
        checked.append(True)
        return found, y
    return run_chain


def _run_flat(probe: keras.Model):
    def run(x):
        outputs = probe(x, training=False)
        return list(outputs[:-1]), outputs[-1]
    return run


def class_score_layer(model: keras.Model) -> str | None:
    """The layer holding the class scores before the softmax (``logits`` in every model of the series), or
    None for a model that has none, whose probabilities Grad-CAM then differentiates instead."""
    return "logits" if _contains(model, "logits") else None


def gradcam(model: keras.Model, images, class_index=None, layer: str | None = None, batch_size: int = 16):
    """Grad-CAM maps of ``images`` (n, H, W, 3 in the model's input range) for ``class_index`` (one class id
    or one per image; default: the predicted class). Returns ``(maps, predictions)``: maps of shape (n, h, w)
    at the layer's resolution, each divided by its maximum (so in [0, 1]; all zero where no channel argues
    for the class), and the (n, classes) probabilities.

    The gradient is that of the class score before the softmax (the ``logits`` layer), as in Selvaraju et al.
    and the keras.io example: a probability near 1 has almost no gradient left, and its gradient also mixes in
    the other classes' scores. Models without a ``logits`` layer fall back to the probability.
    """
    import tensorflow as tf

    images = np.asarray(images, dtype=np.float32)
    scores = class_score_layer(model)
    probe = layer_probe(model, [layer or last_conv_layer(model)] + ([scores] if scores else []))
    probe(tf.convert_to_tensor(images[:1]))  # eagerly once: a nested model's probe checks itself on its first call

    @tf.function(reduce_retracing=True)  # one graph for the forward and backward pass: several times faster
    def forward_and_back(batch, chosen):
        with tf.GradientTape() as tape:
            outputs, proba = probe(batch)
            feature_map, target = outputs[0], (outputs[1] if scores else proba)
            chosen = tf.where(chosen < 0, tf.argmax(proba, axis=1), chosen)  # -1: the predicted class
            score = tf.reduce_sum(tf.gather(target, chosen, axis=1, batch_dims=1))
        return feature_map, tape.gradient(score, feature_map), proba

    wanted = np.broadcast_to(np.asarray(-1 if class_index is None else class_index, dtype=np.int64), (len(images),))
    maps, predictions = [], []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size])
        feature_map, gradients, proba = forward_and_back(batch, tf.constant(wanted[start:start + len(batch)]))
        gradients = tf.cast(gradients, tf.float32)  # a mixed-precision model's are bfloat16
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(feature_map, tf.float32), axis=-1)).numpy()
        peak = cam.max(axis=(1, 2), keepdims=True)
        maps.append(np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0))
        predictions.append(proba.numpy().astype(np.float32))
    return np.concatenate(maps), np.concatenate(predictions)


def resize_maps(maps, size: int) -> np.ndarray:
    """Heatmaps (n, h, w) resized bilinearly to (n, size, size), still in [0, 1]."""
    resized = keras.ops.image.resize(np.asarray(maps, np.float32)[..., None], (size, size),
                                     interpolation="bilinear")
    return np.clip(keras.ops.convert_to_numpy(resized)[..., 0], 0.0, 1.0)


def activations(model: keras.Model, image, names: list[str]) -> dict[str, np.ndarray]:
    """The raw outputs (h, w, channels) of the named layers for one image (H, W, 3), as float32 (also for a
    mixed-precision model, whose layers compute in bfloat16)."""
    outputs, _ = layer_probe(model, names)(np.asarray(image, np.float32)[None])
    return {name: keras.ops.convert_to_numpy(out)[0].astype(np.float32) for name, out in zip(names, outputs)}


def centre_share(maps, fraction: float = 0.6) -> np.ndarray:
    """Per map, the share of its total heatmap mass that falls in the central square (NaN for an empty map).

    The central square covers ``fraction ** 2`` of the area (36 % at 0.6): a map spread evenly scores that."""
    maps = np.asarray(maps, dtype=float)
    inside = maps[:, central_mask(maps.shape[-1], fraction)].sum(axis=1)
    total = maps.reshape(len(maps), -1).sum(axis=1)
    return np.divide(inside, total, out=np.full(len(maps), np.nan), where=total > 0)


def centre_shares(model: keras.Model, frame, image_size: int, batch_size: int = 32, fraction: float = 0.6,
                  chunk: int = 256):
    """Grad-CAM (predicted class) over every row of ``frame`` (a split or index slice): a table with the true
    and predicted class ids and the share of each map's mass in the central square (``centre_share``). Images are
    read ``chunk`` at a time (each ``gradcam`` call compiles its graph once, so few large calls are fastest)."""
    import pandas as pd

    from . import pipeline

    shares, predicted = [], []
    for images, _ in pipeline.make_dataset(frame, image_size, chunk):
        maps, proba = gradcam(model, images.numpy(), batch_size=batch_size)
        shares.append(centre_share(resize_maps(maps, image_size), fraction))
        predicted.append(proba.argmax(axis=1))
    return pd.DataFrame({"relpath": frame["relpath"].to_numpy(), "true": frame["class_id"].to_numpy(),
                         "predicted": np.concatenate(predicted), "centre_share": np.concatenate(shares)})
