"""The from-scratch architectures of both projects, built by name at any input size.

Every net ends in a ``logits`` layer (the class scores) and a separate softmax layer ``predictions``: the
same network as a Dense layer with a softmax activation, but Grad-CAM can take gradients of the scores.

Models take images in [0, 255] (what ``pipeline.make_dataset`` yields without ``preprocess``) and carry their own
input scaling as a layer, so a saved ``model.keras`` needs nothing else to be evaluated on new images.
"""
from __future__ import annotations

import keras
from keras import layers

NUM_CLASSES = 3


def polazaro_baseline(image_size: int = 224, num_classes: int = NUM_CLASSES) -> keras.Model:
    """The smaller project's baseline CNN (Lázaro & Barco 2020).

    Conv 32/64/128 (3x3, same, ReLU), each followed by 2x2 max-pooling, Flatten, Dense 64 ReLU, Dropout 0.3,
    Dense 3 softmax; inputs divided by 255 as in the project. 6,516,035 parameters at 224 x 224 x 3.
    """
    model = keras.Sequential(name="polazaro_baseline")
    model.add(keras.Input((image_size, image_size, 3)))
    model.add(layers.Rescaling(1 / 255))
    for filters in (32, 64, 128):
        model.add(layers.Conv2D(filters, 3, padding="same", activation="relu"))
        model.add(layers.MaxPooling2D(2))
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation="relu"))
    model.add(layers.Dropout(0.3))
    model.add(layers.Dense(num_classes, name="logits"))
    model.add(layers.Activation("softmax", dtype="float32", name="predictions"))
    return model


def polazaro_inception(image_size: int = 224, num_classes: int = NUM_CLASSES) -> keras.Model:
    """The smaller project's inception-style CNN, as its README figure draws it.

    Parallel 1x1 / 3x3 / 5x5 convolutions with 64 / 32 / 16 filters on the input, concatenated (112 channels),
    2x2 max-pool, 3x3 conv 128, 2x2 max-pool, Dense 64 ReLU, Dense 3 softmax: 25,821,891 parameters at 224.
    Choices: the project's notebook code differs (all three branches 1x1, a 7x7 conv, Dense 128:
    52,083,779 parameters); we build the figure's version, and keep the code's Dropout(0.3) before the output,
    which has no parameters and which the figures omit for the baseline too.
    """
    inputs = keras.Input((image_size, image_size, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    branches = [layers.Conv2D(f, k, padding="same", activation="relu", name=f"branch_{k}x{k}")(x)
                for f, k in ((64, 1), (32, 3), (16, 5))]
    x = layers.Concatenate()(branches)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    outputs = class_scores(x, num_classes)
    return keras.Model(inputs, outputs, name="polazaro_inception")


def class_scores(x, num_classes: int = NUM_CLASSES):
    """The last two layers of every net: Dense ``logits``, then a softmax ``predictions`` layer (float32 even
    under mixed precision, so probabilities and the loss keep their precision)."""
    logits = layers.Dense(num_classes, name="logits")(x)
    return layers.Activation("softmax", dtype="float32", name="predictions")(logits)


def _conv_bn(x, filters, relu=False, name=None):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x) if relu else x


def _multiscale_residual(x, name):
    """Red David's residual block: BN, a 1/3-width conv, three branches of 1, 2 and 3 convs, concat, add."""
    depth = x.shape[-1]
    shortcut = layers.BatchNormalization(name=f"{name}_bn")(x)
    narrow = _conv_bn(shortcut, depth // 3)
    branch_a = _conv_bn(narrow, depth // 3, relu=True)
    branch_b = _conv_bn(_conv_bn(narrow, depth // 3), depth // 3, relu=True)
    branch_c = _conv_bn(_conv_bn(_conv_bn(narrow, depth // 3), depth // 3), depth // 3, relu=True)
    merged = layers.Concatenate(name=f"{name}_concat")([branch_a, branch_b, branch_c])
    return layers.Add(name=f"{name}_add")([merged, shortcut])


def red_david(image_size: int = 224, num_classes: int = NUM_CLASSES) -> keras.Model:
    """The thesis's "Red David": residual blocks on the main path and dense 3-channel side branches.

    Main path (channels at 224 px): conv 9 -> 2 residual blocks -> pool -> conv 18 -> concat 21 -> 2 residual
    -> pool -> conv 30 -> concat 36 -> 2 residual -> pool -> conv 45 -> concat 54 -> 2 residual -> pool ->
    conv 63 -> concat 75 -> pool -> Flatten (3675) -> Dense 30 ReLU -> Dense 3 softmax. Every main-path
    stage also starts a side branch of [conv+BN to 3 channels, 2x2 max-pool] repeated down to every lower
    resolution, and each concat takes all branches that reach it (so 3, 6, 9, 12 extra channels).
    Choices (the diagram gives neither): 3x3 kernels with same padding everywhere; ReLU after the main-path
    convolutions. Input size must be a multiple of 32.
    """
    if image_size % 32:
        raise ValueError(f"red_david needs an input size that is a multiple of 32, got {image_size}.")
    inputs = keras.Input((image_size, image_size, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(9, 3, padding="same", activation="relu", name="entry_conv")(x)
    sides = []  # the live side branches, each 3 channels at the current resolution
    for stage, width in enumerate((18, 30, 45, 63)):
        sides.append(_conv_bn(x, 3))  # a new side branch leaves from this stage's entry
        x = _multiscale_residual(_multiscale_residual(x, f"res{stage}a"), f"res{stage}b")
        x = layers.MaxPooling2D(2)(x)
        sides = [layers.MaxPooling2D(2)(branch) for branch in sides]
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"stage{stage + 1}_conv")(x)
        x = layers.Concatenate(name=f"stage{stage + 1}_concat")([x, *sides])
        if stage < 3:
            sides = [_conv_bn(branch, 3) for branch in sides]
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(30, activation="relu")(x)
    outputs = class_scores(x, num_classes)
    return keras.Model(inputs, outputs, name="red_david")


def red_alberto(image_size: int = 224, num_classes: int = NUM_CLASSES) -> keras.Model:
    """The thesis's "Red Alberto", layer by layer as the report lists it.

    Conv 60 (same) -> Conv 60 (same) -> pool -> Dropout 0.25 -> Conv 120 (valid) -> Conv 120 (valid) -> pool ->
    Dropout 0.25 -> Flatten -> Dense 600 -> Dropout 0.5 -> Dense 3 softmax; every conv and the Dense 600 with
    orthogonal initialisation, LeakyReLU(0.1) and batch renormalisation. At 224 px the Flatten has
    349,920 values and the Dense 600 alone 209,952,600 parameters. Choice: inputs scaled to [0, 1].
    """
    def block(x, filters, padding):
        x = layers.Conv2D(filters, 3, padding=padding, kernel_initializer="orthogonal")(x)
        x = layers.LeakyReLU(negative_slope=0.1)(x)
        return layers.BatchNormalization(renorm=True)(x)

    inputs = keras.Input((image_size, image_size, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = block(x, 60, "same")
    x = block(x, 60, "same")
    x = layers.Dropout(0.25)(layers.MaxPooling2D(2)(x))
    x = block(x, 120, "valid")
    x = block(x, 120, "valid")
    x = layers.Dropout(0.25)(layers.MaxPooling2D(2)(x))
    x = layers.Flatten()(x)
    x = layers.Dense(600, kernel_initializer="orthogonal")(x)
    x = layers.BatchNormalization(renorm=True)(layers.LeakyReLU(negative_slope=0.1)(x))
    x = layers.Dropout(0.5)(x)
    outputs = class_scores(x, num_classes)
    return keras.Model(inputs, outputs, name="red_alberto")


SCRATCH = {"polazaro_baseline": polazaro_baseline, "polazaro_inception": polazaro_inception,
           "red_david": red_david, "red_alberto": red_alberto}


def build(name: str, image_size: int, num_classes: int = NUM_CLASSES) -> keras.Model:
    """The architecture called ``name``, for ``image_size`` x ``image_size`` RGB inputs in [0, 255]."""
    if name not in SCRATCH:
        raise ValueError(f"Unknown model {name!r}; known: {', '.join(SCRATCH)}.")
    return SCRATCH[name](image_size, num_classes)


def all_layers(model):
    """Every layer of ``model`` depth first, nested models included (each followed by its own layers)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
