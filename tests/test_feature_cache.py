"""feature_cache: features are computed once per extractor, weights, images and view, and never read stale."""
from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from helpers import backbones, dataset, feature_cache, masks

from conftest import make_release


@pytest.fixture
def frame(tmp_path):
    base = make_release(tmp_path / "dataset", counts={"COVID": 4, "Normal": 3, "Viral Pneumonia": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dataset.index_dataset(base, progress=False, cache=False)


def pixels(size=20, name="pixels", scale=1.0):
    """A stand-in extractor whose features are the (scaled) pixels themselves: easy to predict."""
    return keras.Sequential([keras.Input((size, size, 3)), keras.layers.Rescaling(scale), keras.layers.Flatten()],
                            name=name)


def test_the_cache_is_reused_and_augmented_views_differ(frame, offline_weights, monkeypatch):
    extractor, _ = backbones.feature_extractor("squeezenet", 32, allow_random=True)
    first = feature_cache.cached_features(extractor, frame)
    view1 = feature_cache.cached_features(extractor, frame, view=1, augment="thesis")
    assert first.shape == (10, 512) and first.dtype == np.float32
    assert not np.allclose(first, view1)
    path = feature_cache.cache_path(extractor, frame, 0)
    view_path = feature_cache.cache_path(extractor, frame, 1, "thesis")
    assert path.exists() and view_path.exists() and path.name.startswith("squeezenet_features-32-")
    # an augmented view is keyed on its augmentation and seed; the plain view 0 on neither
    assert feature_cache.cache_path(extractor, frame, 1, "polazaro") != view_path
    assert feature_cache.cache_path(extractor, frame, 1, "thesis", seed=7) != view_path
    assert feature_cache.cache_path(extractor, frame, 0, "thesis", seed=7) == path
    seeded = feature_cache.cached_features(extractor, frame, view=1, augment="thesis", seed=7)
    assert not np.allclose(seeded, view1)
    with np.load(path, allow_pickle=False) as stored:
        assert stored["relpath"].tolist() == frame["relpath"].tolist()
    monkeypatch.setattr(feature_cache, "extract", lambda *a, **k: pytest.fail("should read the cache"))
    np.testing.assert_array_equal(feature_cache.cached_features(extractor, frame), first)
    assert feature_cache.cache_path(extractor, frame.head(9), 0) != path
    with pytest.raises(ValueError, match="augment"):
        feature_cache.cached_features(extractor, frame, view=2)


def test_an_edited_extractor_or_other_weights_compute_anew(frame):
    """Same name, same input size: a changed layer or changed weights must never be served the old features."""
    original = feature_cache.cached_features(pixels(), frame, progress=False)
    edited = feature_cache.cached_features(pixels(scale=0.5), frame, progress=False)  # another layer setting
    np.testing.assert_allclose(edited, original * 0.5)

    keras.utils.set_random_seed(1)
    dense = keras.Sequential([keras.Input((20, 20, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(4)], name="tiny_features")
    before = feature_cache.cached_features(dense, frame, progress=False)
    kernel, bias = dense.layers[-1].get_weights()
    dense.layers[-1].set_weights([kernel * 2, bias])  # other weights, same architecture
    after = feature_cache.cached_features(dense, frame, progress=False)
    np.testing.assert_allclose(after, before * 2, rtol=1e-5)
    assert len(list(feature_cache.cache_path(dense, frame, 0).parent.glob("*.npz"))) == 4


@pytest.mark.parametrize("damage", ["truncated", "not-a-zip"])
def test_a_damaged_cache_file_is_computed_again_not_read(frame, damage):
    extractor = pixels()
    good = feature_cache.cached_features(extractor, frame, progress=False)
    path = feature_cache.cache_path(extractor, frame, 0)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"half a file")
    with pytest.warns(UserWarning, match="computed again"):
        again = feature_cache.cached_features(extractor, frame, progress=False)
    assert (again == good).all()
    assert path.read_bytes() == raw  # rewritten whole


def test_masked_features_see_only_the_kept_part_and_are_cached_apart(frame):
    size, extractor = 20, pixels()
    whole = feature_cache.cached_features(extractor, frame, progress=False)
    centre = masks.central_mask(size)
    n = len(frame)
    for keep, kept in (("border", ~centre), ("centre", centre)):
        masked = feature_cache.cached_features(extractor, frame, keep=keep, progress=False)
        masked, full = masked.reshape(n, size, size, 3), whole.reshape(n, size, size, 3)
        assert (masked[:, ~kept] == 0).all()                 # the hidden part is black
        np.testing.assert_array_equal(masked[:, kept], full[:, kept])  # the kept part untouched
        assert full[:, ~kept].max() > 0
    paths = {feature_cache.cache_path(extractor, frame, 0, keep=k) for k in (None, "border", "centre")}
    assert len(paths) == 3 and all(p.exists() for p in paths)
