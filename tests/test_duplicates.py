"""Near-duplicates: the same radiograph saved again under another id is grouped with its original, two different
images with a close hash are not, and no split puts a group on both sides."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import dataset, duplicates, protocols

from conftest import make_release


def radiograph(seed: int, size: int = 128) -> np.ndarray:
    """A synthetic grey picture with large, smooth structures (what a perceptual hash sees) and some texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    picture = 128 + 50 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform())) * np.cos(
        2 * np.pi * (rng.uniform(0.5, 2) * y + rng.uniform()))
    for _ in range(2):  # two dark blobs, placed at random
        cy, cx, r = rng.uniform(0.25, 0.75), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.25)
        picture -= 60 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r ** 2))
    return np.clip(picture + rng.normal(0, 4, picture.shape), 0, 255).astype(np.uint8)


def save(array: np.ndarray, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def quiet_index(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dataset.index_dataset(root, progress=False, cache=False)


@pytest.fixture(scope="module")
def with_copies(tmp_path_factory):
    """A release of radiograph-like images in which COVID-1 has three re-saved copies under ids the thesis
    protocol does not take (above 1200): a JPEG, a resized PNG and one a grey level brighter; COVID-1303 is
    another radiograph."""
    base = tmp_path_factory.mktemp("copies") / "COVID-19_Radiography_Dataset"
    for c, label in enumerate(("COVID", "Normal", "Viral Pneumonia")):
        for k in range(1, 13):
            save(radiograph(1000 * c + k), base / label / "images" / f"{label}-{k}.png")
    original = radiograph(1)
    folder = base / "COVID" / "images"
    save(original, folder / "COVID-1300.jpg", quality=85)
    save(np.asarray(Image.fromarray(original).resize((100, 100), Image.Resampling.BILINEAR)), folder / "COVID-1301.png")
    save(np.clip(original.astype(int) + 1, 0, 255).astype(np.uint8), folder / "COVID-1302.png")
    save(radiograph(1303), folder / "COVID-1303.png")
    return base, quiet_index(base)


def group_of(index, name):
    return index.loc[index["relpath"].str.endswith(name), "duplicate_group"].item()


def test_a_re_saved_resized_or_brightened_copy_is_grouped_with_its_original(with_copies):
    _, index = with_copies
    original = group_of(index, "COVID-1.png")
    for copy in ("COVID-1300.jpg", "COVID-1301.png", "COVID-1302.png"):
        assert group_of(index, copy) == original, copy
    assert (index["duplicate_group"] == original).sum() == 4  # and nothing else joins them
    assert index["duplicate_group"].nunique() == len(index) - 3


def test_correlations_are_read_again_from_the_cache_and_computed_only_for_changed_files(with_copies, monkeypatch):
    _, index = with_copies
    first = duplicates.near_duplicate_pairs(index)
    assert len(first) and duplicates.correlations_file().exists()
    monkeypatch.setattr(duplicates, "correlation", lambda a, b: pytest.fail("pixels read again for a cached pair"))
    pd.testing.assert_frame_equal(duplicates.near_duplicate_pairs(index), first)
    # the original's bytes changed (a new SHA-256): exactly its pairs are computed again
    original = index["relpath"].str.endswith("COVID-1.png")
    computed = []
    monkeypatch.setattr(duplicates, "correlation", lambda a, b: computed.append({a, b}) or 1.0)
    duplicates.near_duplicate_pairs(index.assign(sha256=index["sha256"].mask(original, "0" * 64)))
    path = index.loc[original, "path"].item()
    assert computed and all(path in pair for pair in computed)
    assert len(computed) == (first["path_a"].eq(path) | first["path_b"].eq(path)).sum()


def test_two_different_images_with_a_close_hash_are_not_grouped(tmp_path):
    """One layout with fine stripes across, the same layout with stripes down: stripes finer than the hash's 8 x 8
    coefficients leave the hashes two bits apart, but the pixels differ (different radiographs, similar layout)."""
    layout = radiograph(7).astype(float)
    y, x = np.mgrid[0:128, 0:128] / 128
    a, b = (np.clip(layout + 50 * np.sin(2 * np.pi * 12 * t), 0, 255).astype(np.uint8) for t in (x, y))
    base = tmp_path / "COVID-19_Radiography_Dataset"
    save(a, base / "Normal" / "images" / "Normal-1.png")
    save(b, base / "Normal" / "images" / "Normal-2.png")
    for seed, label in enumerate(("COVID", "Viral Pneumonia")):
        save(radiograph(500 + seed), base / label / "images" / f"{label}-1.png")
    index = quiet_index(base)
    pairs = duplicates.near_duplicate_pairs(index)
    assert len(pairs) == 1 and pairs.loc[0, "distance"] <= duplicates.MAX_HASH_DISTANCE  # the hash proposes them
    assert not pairs.loc[0, "confirmed"]                                                  # the pixels say no
    assert group_of(index, "Normal-1.png") != group_of(index, "Normal-2.png")


def test_a_split_never_puts_a_duplicate_group_on_two_sides(with_copies):
    """Over many seeds and two protocols: every group on one side, and so COVID-1 and its three copies together
    (without the grouping, the copies would scatter over train, validation and test)."""
    _, index = with_copies
    copies = index["relpath"].str.contains(r"COVID-1\.png|COVID-130[0-2]\.")
    for seed in range(20):
        for protocol in ("thesis", "all"):
            split = protocols.split_images(protocols.select_protocol(index, protocol), protocol, seed)
            assert (split.groupby("duplicate_group")["split"].nunique() == 1).all(), (protocol, seed)
            assert split.loc[split["relpath"].isin(index.loc[copies, "relpath"]), "split"].nunique() == 1, (protocol, seed)


def test_left_out_images_exclude_twins_of_used_ones(with_copies, monkeypatch):
    _, index = with_copies
    small = {**protocols.PROTOCOLS["thesis"], "per_class": dict.fromkeys(("COVID", "Normal", "Viral Pneumonia"), 12)}
    monkeypatch.setitem(protocols.PROTOCOLS, "thesis", small)  # the first 12 ids; the copies have higher ones
    rest = protocols.left_out(index, "thesis")
    assert list(rest["relpath"].str.rsplit("/", n=1).str[-1]) == ["COVID-1303.png"]  # the copies are COVID-1 again
    assert rest.attrs["twins_excluded"] == 3


def test_twins_of_training_images_are_named(with_copies):
    _base, index = with_copies
    seen = index[index["relpath"].str.endswith("COVID-1.png")]
    twins = duplicates.twins_of(index.drop(seen.index), seen)
    assert sorted(twins["relpath"].str.rsplit("/", n=1).str[-1]) == ["COVID-1300.jpg", "COVID-1301.png", "COVID-1302.png"]
    assert set(twins["twin_of"]) == set(seen["relpath"])


def test_the_hash_search_finds_what_a_pairwise_loop_finds():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 2 ** 63, 300, dtype=np.uint64)
    values[10], values[20] = values[5], values[5] ^ np.uint64(0b101)  # distance 0 and 2 from row 5
    hashes = pd.Series([f"{v:016x}" for v in values])
    found = duplicates.hash_distances(hashes, 2, chunk=64)
    expected = {(a, b) for a in range(300) for b in range(a + 1, 300)
                if (int(values[a]) ^ int(values[b])).bit_count() <= 2}
    assert set(zip(found["a"], found["b"])) == expected and {(5, 10), (5, 20)} <= expected


def test_make_release_copies_are_byte_identical_groups(tmp_path):
    base = make_release(tmp_path, duplicates=2)
    index = quiet_index(base)
    assert group_of(index, "COVID-13.png") == group_of(index, "COVID-1.png")
