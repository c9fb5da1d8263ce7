"""Architectures: the parameter counts their sources state, and that each one can learn."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from helpers import explain, models


def test_polazaro_baseline_has_the_projects_parameter_count():
    assert models.build("polazaro_baseline", 224).count_params() == 6_516_035


def test_polazaro_inception_matches_the_readme_figure():
    model = models.build("polazaro_inception", 224)
    assert model.count_params() == 25_821_891
    assert model.get_layer("last_conv").output.shape[1:] == (112, 112, 128)
    flatten = next(layer for layer in model.layers if isinstance(layer, keras.layers.Flatten))
    assert flatten.output.shape[-1] == 56 * 56 * 128


def test_red_david_follows_the_diagram():
    model = models.build("red_david", 224)
    widths = [model.get_layer(f"stage{k}_concat").output.shape[1:] for k in range(1, 5)]
    assert widths == [(112, 112, 21), (56, 56, 36), (28, 28, 54), (14, 14, 75)]
    assert _dense_after_flatten(model).count_params() == 3675 * 30 + 30
    with pytest.raises(ValueError, match="multiple of 32"):
        models.build("red_david", 100)


def _dense_after_flatten(model):
    return next(layer for layer in model.layers if layer.name.startswith("dense"))


def test_red_alberto_dense_layer_grows_with_the_input_as_the_report_computes():
    # Flatten = ((s / 2 - 4) / 2)^2 x 120 (two same convs, pool, two valid convs, pool); 224 px gives
    # 54 x 54 x 120 = 349,920 inputs and 209,952,600 parameters in Dense 600 alone. Built here at 64 px,
    # because orthogonal initialisation of the 224-px layer takes most of a minute.
    model = models.build("red_alberto", 64)
    assert _dense_after_flatten(model).input.shape[-1] == 14 * 14 * 120
    assert _dense_after_flatten(model).count_params() == 14 * 14 * 120 * 600 + 600


@pytest.mark.parametrize("name, expected", [
    ("polazaro_baseline", 93_248 + 8 * 8 * 128 * 64 + 64 + 195),
    ("polazaro_inception", 131_520 + 16 * 16 * 128 * 64 + 64 + 195),
])
def test_parameter_counts_at_a_small_input(name, expected):
    assert models.build(name, 64).count_params() == expected


def test_red_david_head_at_a_small_input():
    assert _dense_after_flatten(models.build("red_david", 64)).count_params() == 2 * 2 * 75 * 30 + 30


@pytest.mark.parametrize("name", sorted(models.SCRATCH))
def test_every_net_ends_in_class_scores_and_their_softmax(name):
    model = models.build(name, 64)
    assert model.layers[-1].name == "predictions" and model.get_layer("logits").units == 3
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    (logits,), proba = explain.layer_probe(model, ["logits"])(x)  # what Grad-CAM differentiates
    logits, proba = keras.ops.convert_to_numpy(logits), keras.ops.convert_to_numpy(proba)
    np.testing.assert_allclose(proba, keras.ops.convert_to_numpy(keras.ops.softmax(logits)), rtol=1e-5)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown model 'resnet9'"):
        models.build("resnet9", 64)


def _bright_square_batch(n=24, size=32, seed=0):
    """Images whose class is where a bright square sits (left, middle or right): learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.uniform(0, 60, size=(n, size, size, 3)).astype("float32")
    for i, label in enumerate(y):
        left = 2 + label * (size // 3)
        x[i, size // 3: size // 3 + 8, left:left + 8, :] = 255
    return x, y


@pytest.mark.parametrize("name", sorted(models.SCRATCH))
def test_every_net_trains_and_its_loss_goes_down(name):
    x, y = _bright_square_batch()
    keras.utils.set_random_seed(0)
    model = models.build(name, 32)
    # eagerly: tracing Red David's 200-layer graph took 25 of this test's 35 s, and checks nothing; three steps, as
    # each eager step is seconds there (the loss fell by 0.1-0.7 for every net at seeds 0-3; eight steps took 33 s)
    model.compile("adam", "sparse_categorical_crossentropy", run_eagerly=True)
    before = model.evaluate(x, y, verbose=0)
    for _ in range(3):
        model.train_on_batch(x, y)
    after = model.evaluate(x, y, verbose=0)
    assert np.isfinite(after) and after < before
