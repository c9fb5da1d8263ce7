"""Small synthetic datasets in both layouts, made fresh for each test; nothing here reads the shared data."""
from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from helpers import config, dataset, protocols, runs, shortcuts

# Read before any test clears the CXR_* variables: the SqueezeNet weight file, where this machine has it.
SHARED_WEIGHTS_DIR = os.environ.get("CXR_WEIGHTS_DIR")

# oneDNN held below this CPU's own bfloat16 (ONEDNN_MAX_CPU_ISA=AVX2 on an AVX512-BF16 CPU, how benchmarks/budgets.py
# end-to-end --isa AVX2 imitates the reference machine) cannot create bfloat16 convolutions at all; a real AVX2
# CPU emulates them. Tests that train in bfloat16 skip only there.
BFLOAT16_CONVOLUTIONS = config.bfloat16_supported() or not os.environ.get("ONEDNN_MAX_CPU_ISA")
needs_bfloat16_convolutions = pytest.mark.skipif(
    not BFLOAT16_CONVOLUTIONS, reason="oneDNN is held below this CPU's bfloat16 (ONEDNN_MAX_CPU_ISA)")


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    """Caches, splits and runs go to a temporary data/ folder; CXR_* variables never leak into a test."""
    data_dir = tmp_path / "project-data"
    monkeypatch.setattr(config, "FIGURES_DIR", tmp_path / "project-figures")
    for name in ("CXR_DATA_DIR", "CXR_WEIGHTS_DIR", "CXR_PROFILE", "CXR_WORK_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CXR_WORK_DIR", str(data_dir))
    shortcuts.probe_extractor.cache_clear()  # its weights depend on the folders set here
    return data_dir


def write_png(path, seed: int, size=(40, 40), mode="L"):
    """A random grey image, different for every seed, saved in ``mode`` (L, RGB, RGBA, P or I;16)."""
    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":  # high byte = the grey value, low byte different from it: a low-byte reader shows
        low = rng.integers(0, 256, size=gray.shape).astype(np.uint16)
        low[low == gray] ^= 0x80
        Image.fromarray(gray.astype(np.uint16) << 8 | low).save(path)
    elif mode in ("RGB", "RGBA"):
        channels = [gray] * 3 + ([np.full_like(gray, 200)] if mode == "RGBA" else [])
        Image.fromarray(np.dstack(channels), mode).save(path)
    else:
        Image.fromarray(gray).convert(mode).save(path)
    return gray


def make_release(root, counts=None, duplicates=0, seed=0):
    """``root/COVID-19_Radiography_Dataset/<Class>/images/<Class>-<k>.png`` plus masks and Lung_Opacity.

    ``duplicates`` COVID images are byte-identical copies of earlier COVID images (as in the real release).
    """
    counts = counts or {"COVID": 12, "Normal": 12, "Viral Pneumonia": 12}
    base = root / "COVID-19_Radiography_Dataset"
    for c, (label, n) in enumerate(counts.items()):
        for k in range(1, n + 1):
            write_png(base / label / "images" / f"{label}-{k}.png", seed=seed + 1000 * c + k)
            write_png(base / label / "masks" / f"{label}-{k}.png", seed=seed + 99_000 + k)
    for k in range(1, 4):
        write_png(base / "Lung_Opacity" / "images" / f"Lung_Opacity-{k}.png", seed=seed + 50_000 + k)
    n_covid = counts.get("COVID", 0)
    for d in range(duplicates):
        source = base / "COVID" / "images" / f"COVID-{d + 1}.png"
        (base / "COVID" / "images" / f"COVID-{n_covid + d + 1}.png").write_bytes(source.read_bytes())
    (base / "README.md.txt").write_text("synthetic copy")
    return base


def make_first_release(root, n=6):
    """The 2020 layout: ``COVID-19 Radiography Database/<CLASS>/<CLASS> (k).png`` with COVID-19 and NORMAL."""
    base = root / "COVID-19 Radiography Database"
    for c, folder in enumerate(("COVID-19", "NORMAL", "Viral Pneumonia")):
        for k in range(1, n + 1):
            write_png(base / folder / f"{folder} ({k}).png", seed=7000 + 100 * c + k)
    return base


# ---- a tiny synthetic dataset and one run trained on it, shared by the modules that only read them -----------

TINY_PROFILE = dataclasses.replace(config.PROFILES["quick"], max_per_class=12, max_epochs=3, batch_size=8)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A synthetic release, its index, and a quick profile capped at 12 images per class and 3 epochs."""
    base = make_release(tmp_path_factory.mktemp("dataset"), counts={"COVID": 12, "Normal": 12, "Viral Pneumonia": 12})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = dataset.index_dataset(base, progress=False, cache=False)
    return base, index, TINY_PROFILE


@pytest.fixture(scope="session")
def trained(tiny, tmp_path_factory):
    """One polazaro_baseline run on ``tiny``, trained once for every test that only reads it; its data folder is
    returned so a test can point ``CXR_WORK_DIR`` at it."""
    _, index, profile = tiny
    folder = tmp_path_factory.mktemp("trained-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CXR_WORK_DIR", str(folder))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            record = runs.get_or_train("polazaro_baseline", profile, index, verbose=0)
    return record, folder


def quiet_split(index, profile, protocol="polazaro"):
    """``protocols.load_split`` without the warnings a tiny dataset gives (fewer images than a protocol asks for)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return protocols.load_split(index, protocol, profile)


def refuse_downloads(patch: pytest.MonkeyPatch) -> None:
    """Every download fails as it does offline (``keras.utils.get_file`` raises), for as long as ``patch`` lasts."""
    import keras  # here, not at the top: helpers must be imported before Keras to keep TensorFlow quiet

    patch.setattr(keras.utils, "get_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))


@pytest.fixture
def offline_weights(monkeypatch):
    """No ImageNet weights anywhere: backbones fall back to random init where allowed (quick profile)."""
    refuse_downloads(monkeypatch)


def small_densenet(include_top, weights, input_shape):
    """A stand-in for DenseNet121 with the parts that matter here (a conv, batch norm, a nested name):
    DenseNet121 itself took 15 s to build and train one step."""
    import keras  # here, not at the top: helpers must be imported before Keras to keep TensorFlow quiet

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, name="conv1_conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    return keras.Model(inputs, keras.layers.ReLU()(x), name="densenet121")
