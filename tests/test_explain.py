"""Grad-CAM must light up what a model was trained to see: a bright square, on flat and nested models."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from helpers import backbones, explain, models

from conftest import needs_bfloat16_convolutions

SIZE, SQUARE = 32, 8


def square_images(n: int, seed: int):
    """Noise images; class 1 has a bright SQUARE x SQUARE patch at a random place, class 0 has none.
    Returns images (n, SIZE, SIZE, 3) in [0, 255], labels, and the top-left corner of each square."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 90, (n, SIZE, SIZE, 1)).astype("float32")
    labels = np.arange(n) % 2
    corners = rng.integers(0, SIZE - SQUARE + 1, (n, 2))
    for image, label, (r, c) in zip(images, labels, corners):
        if label:
            image[r:r + SQUARE, c:c + SQUARE] = 255.0
    return np.repeat(images, 3, axis=-1), labels, corners


def _conv_base():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    return inputs, x


def flat_model():
    inputs, x = _conv_base()
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, models.class_scores(x, 2), name="flat")


def flat_model_without_logits():
    """A model from elsewhere: softmax inside the last Dense, so Grad-CAM falls back to the probability."""
    inputs, x = _conv_base()
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(2, activation="softmax")(x), name="flat_probabilities")


def sequential_model():
    """Like the polazaro baseline: a Sequential model (saved and reloaded, it has no symbolic input)."""
    return keras.Sequential([keras.Input((SIZE, SIZE, 3)), layers.Rescaling(1 / 255),
                             layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
                             layers.MaxPooling2D(2, name="pool1"),
                             layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
                             layers.GlobalAveragePooling2D(), layers.Dense(2, name="logits"),
                             layers.Activation("softmax", name="predictions")])


def nested_model():
    """The shape of our transfer models: image -> extractor(base -> pool) -> head."""
    base = keras.Model(*_conv_base(), name="base")
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.GlobalAveragePooling2D(name="pool")(base(inputs, training=False))
    extractor = keras.Model(inputs, x, name="toy_features")
    return backbones.classifier(extractor, backbones.head(16, "v1", num_classes=2))


def nested_bfloat16_model():
    """The nested shape in mixed bfloat16, as the cpu profile fine-tunes where the CPU supports it."""
    from helpers import training

    with training.dtype_policy("mixed_bfloat16"):
        return nested_model()


BUILDERS = {"flat": flat_model, "nested": nested_model, "sequential": sequential_model,
            "flat, no logits": flat_model_without_logits, "nested, mixed bfloat16": nested_bfloat16_model}
PARAMS = [pytest.param(name, marks=needs_bfloat16_convolutions) if "bfloat16" in name else name for name in BUILDERS]


def _train(builder, folder):
    """``builder``'s model trained to find the square, saved and reloaded (explain works on models as saved).
    A model that did not learn the task would make every test below meaningless: that is an error here."""
    keras.utils.set_random_seed(0)
    model = builder()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x, y, _ = square_images(400, seed=1)
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    model.save(folder / "model.keras")
    reloaded = keras.saving.load_model(folder / "model.keras", safe_mode=True)
    x, y, _ = square_images(40, seed=2)
    accuracy = reloaded.evaluate(x, y, verbose=0)[1]
    assert accuracy >= 0.95, f"the toy model {reloaded.name} did not learn the task ({accuracy:.2f})"
    return reloaded


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    """The trained model of a ``BUILDERS`` name, each trained once for this module (about 6 s each on 2 cores)."""
    models_by_name = {}

    def get(name):
        if name not in models_by_name:
            models_by_name[name] = _train(BUILDERS[name], tmp_path_factory.mktemp("model"))
        return models_by_name[name]
    return get


@pytest.fixture(scope="module", params=PARAMS)
def trained(request, toy_model):
    return toy_model(request.param)


@pytest.fixture(scope="module")
def flat(toy_model):
    return toy_model("flat")


def keras_io_gradcam(model, images, class_index, layer="conv2", scores="logits"):
    """Grad-CAM written independently, the way the keras.io example does it on a flat functional model: one
    model giving the feature map and the class scores, the gradient of the chosen score, channel weights as its
    spatial mean, their ReLU-ed weighted sum, divided by its maximum."""
    import tensorflow as tf

    grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.get_layer(scores).output])
    maps = []
    for image, k in zip(images, class_index):
        with tf.GradientTape() as tape:
            feature_map, score = grad_model(image[None], training=False)
            chosen = score[:, int(k)]
        grads = tape.gradient(chosen, feature_map)
        weights = tf.reduce_mean(grads, axis=(0, 1, 2))
        heatmap = tf.nn.relu(feature_map[0] @ weights[..., None])[..., 0]
        maps.append((heatmap / tf.reduce_max(heatmap)).numpy() if tf.reduce_max(heatmap) > 0 else heatmap.numpy())
    return np.stack(maps)


def test_default_layer_is_the_last_convolution_at_any_depth(trained):
    assert explain.last_conv_layer(trained) == "conv2"


def test_gradcam_maximum_falls_inside_the_square(trained):
    x, y, corners = square_images(40, seed=3)
    maps, proba = explain.gradcam(trained, x[y == 1], class_index=1)
    assert maps.shape == (int((y == 1).sum()), SIZE // 2, SIZE // 2)
    assert proba.shape == (len(maps), 2)
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    full = explain.resize_maps(maps, SIZE)
    assert full.shape == (len(maps), SIZE, SIZE) and 0.0 <= full.min() and full.max() <= 1.0
    for heat, (r, c) in zip(full, corners[y == 1]):
        peak_r, peak_c = np.unravel_index(heat.argmax(), heat.shape)
        assert r <= peak_r < r + SQUARE and c <= peak_c < c + SQUARE


@pytest.mark.parametrize("which", ["predicted", "other"])
def test_gradcam_equals_an_independent_keras_io_implementation(flat, which):
    """On a flat model, explain.gradcam gives the keras.io maps (to 1e-5), for the predicted class and for the
    other one; both differentiate the logits, and maps from the probability would differ (so this can fail)."""
    x, _, _ = square_images(12, seed=6)
    predicted = flat.predict(x, verbose=0).argmax(axis=1)
    classes = predicted if which == "predicted" else 1 - predicted
    maps, _ = explain.gradcam(flat, x, class_index=classes)
    expected = keras_io_gradcam(flat, x, classes)
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    from_probabilities = keras_io_gradcam(flat, x, classes, scores="predictions")
    assert np.abs(from_probabilities - expected).max() > 1e-3


def test_gradcam_for_the_other_class_points_away_from_the_square(flat):
    """Asked why a square image is *not* "no square", Grad-CAM must not point at the square."""
    x, y, corners = square_images(40, seed=7)
    with_square = x[y == 1]
    towards, _ = explain.gradcam(flat, with_square, class_index=1)
    away, _ = explain.gradcam(flat, with_square, class_index=0)
    inside = np.zeros((len(with_square), SIZE // 2, SIZE // 2), bool)
    for mask, (r, c) in zip(inside, corners[y == 1]):
        mask[r // 2:(r + SQUARE) // 2, c // 2:(c + SQUARE) // 2] = True
    share = [float(m[i].sum() / m.sum()) if m.sum() else 0.0 for m, i in zip(away, inside)]
    share_towards = [float(m[i].sum() / m.sum()) for m, i in zip(towards, inside)]
    assert np.mean(share_towards) > 0.5 and np.mean(share) < np.mean(share_towards) / 2


def test_a_model_without_logits_falls_back_to_its_probabilities(toy_model):
    model = toy_model("flat, no logits")
    x, _, _ = square_images(6, seed=8)
    classes = model.predict(x, verbose=0).argmax(axis=1)
    maps, _ = explain.gradcam(model, x)
    np.testing.assert_allclose(maps, keras_io_gradcam(model, x, classes, scores=model.layers[-1].name), atol=1e-5)


def test_a_nested_model_that_is_not_a_chain_is_refused():
    base = keras.Model(*_conv_base(), name="base")
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    pooled = layers.GlobalAveragePooling2D(name="pool")(base(inputs))
    side = layers.GlobalAveragePooling2D(name="side")(inputs)  # a branch around the nested base
    joined = layers.Concatenate(name="join")([pooled, side])
    model = keras.Model(inputs, models.class_scores(joined, 2), name="branched")
    x, _, _ = square_images(2, seed=6)
    with pytest.raises(ValueError, match="not a simple chain"):
        explain.gradcam(model, x)


def test_gradcam_defaults_to_the_predicted_class(trained):
    x, _, _ = square_images(8, seed=4)
    default, proba = explain.gradcam(trained, x)
    explicit, _ = explain.gradcam(trained, x, class_index=proba.argmax(axis=1))
    np.testing.assert_allclose(default, explicit, atol=1e-6)


def test_activations_of_named_layers_at_any_depth(trained):
    x, _, _ = square_images(2, seed=5)
    maps = explain.activations(trained, x[1], ["conv1", "conv2"])
    assert maps["conv1"].shape == (SIZE, SIZE, 8) and maps["conv2"].shape == (SIZE // 2, SIZE // 2, 16)
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        explain.activations(trained, x[1], ["conv9"])


def test_centre_share_and_masks():
    mask = explain.central_mask(10, 0.6)
    assert mask.sum() == 36 and mask[2:8, 2:8].all()
    uniform, centred = np.ones((1, 10, 10)), mask[None].astype(float)
    np.testing.assert_allclose(explain.centre_share(np.concatenate([uniform, centred])), [0.36, 1.0])
    assert np.isnan(explain.centre_share(np.zeros((1, 10, 10))))[0]
    images = np.full((1, 10, 10, 3), 200.0, dtype=np.float32)
    border_only = explain.masking(10, "border")(images)[0, ..., 0]
    centre_only = explain.masking(10, "centre")(images)[0, ..., 0]
    assert (border_only[mask] == 0).all() and (border_only[~mask] == 200).all()
    assert (centre_only[~mask] == 0).all() and (centre_only[mask] == 200).all()
    with pytest.raises(ValueError, match="keep must be"):
        explain.masking(10, "lungs")


def test_maps_and_activations_are_float32_for_every_precision(trained):
    x, _, _ = square_images(4, seed=5)
    maps, proba = explain.gradcam(trained, x)
    assert maps.dtype == np.float32 and proba.dtype == np.float32  # plots cannot scale bfloat16 arrays
    layer = explain.last_conv_layer(trained)
    assert all(a.dtype == np.float32 for a in explain.activations(trained, x[0], [layer]).values())
