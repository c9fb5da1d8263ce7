"""helpers.dataset, protocols and pipeline on synthetic datasets: discovery, bad input, splits without leakage, tf.data pipelines."""
from __future__ import annotations

import dataclasses
import struct
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import config, dataset, pipeline, protocols

from conftest import make_first_release, make_release, quiet_split, write_png


def quiet_index(root, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dataset.index_dataset(root, progress=False, **kwargs)


# ---- finding the dataset ------------------------------------------------------------------------

def test_find_dataset_accepts_the_folder_or_a_parent(tmp_path):
    base = make_release(tmp_path / "download")
    assert dataset.find_dataset(base) == base
    assert dataset.find_dataset(tmp_path / "download") == base


def test_find_dataset_reads_cxr_data_dir(tmp_path, monkeypatch):
    base = make_release(tmp_path / "elsewhere")
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "elsewhere"))
    assert dataset.find_dataset() == base


def test_find_dataset_finds_data_folder_before_downloading(isolated_data_dir, monkeypatch):
    base = make_release(isolated_data_dir)
    monkeypatch.setattr(dataset, "download_dataset", lambda *a, **k: pytest.fail("must not download"))
    assert dataset.find_dataset() == base


@pytest.mark.parametrize("kind", ["missing", "file", "not-a-dataset"])
def test_find_dataset_explains_a_wrong_cxr_data_dir(tmp_path, monkeypatch, kind):
    target = tmp_path / "target"
    if kind == "file":
        target.write_text("x")
    elif kind == "not-a-dataset":
        write_png(target / "holiday" / "beach.png", seed=1)
    monkeypatch.setenv("CXR_DATA_DIR", str(target))
    with pytest.raises(dataset.DatasetNotFoundError, match="CXR_DATA_DIR") as error:
        dataset.find_dataset()
    assert str(target) in str(error.value)


def test_an_empty_cxr_data_dir_is_an_error_not_a_download(monkeypatch):
    monkeypatch.setenv("CXR_DATA_DIR", "")
    monkeypatch.setattr(dataset, "download_dataset", lambda *a, **k: pytest.fail("must not download"))
    with pytest.raises(dataset.DatasetNotFoundError, match="CXR_DATA_DIR is set but empty"):
        dataset.find_dataset()


def test_unrecognised_class_folders_are_named(tmp_path):
    target = tmp_path / "mine"
    for folder in ("COVID19", "Pneumonia", "Healthy"):
        write_png(target / folder / "a.png", seed=1)
    with pytest.raises(dataset.DatasetNotFoundError, match="Its folders: COVID19, Healthy, Pneumonia") as error:
        dataset.find_dataset(target)
    assert "covid-19" in str(error.value)  # the names it knows
    base = make_release(tmp_path / "release", counts={"COVID": 2, "Normal": 2})
    write_png(base / "Pneumonia" / "images" / "Pneumonia-1.png", seed=2)
    with pytest.warns(UserWarning, match=r"No folder for class 'Viral Pneumonia'.*not recognised as a class: "
                                         r"Pneumonia"):
        dataset.index_dataset(base, progress=False, cache=False)


def test_a_folder_that_cannot_be_read_is_named(tmp_path, monkeypatch):
    """As root every folder is readable, so the refusal is simulated where the walk lists a folder."""
    (tmp_path / "home" / "locked").mkdir(parents=True)
    (tmp_path / "home" / "open").mkdir()
    real = type(tmp_path).iterdir

    def iterdir(self):
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(type(tmp_path), "iterdir", iterdir)
    with pytest.raises(dataset.DatasetNotFoundError, match=r"Could not look inside.*locked"):
        dataset.find_dataset(tmp_path / "home")
    base = make_release(tmp_path / "release", counts={"COVID": 2, "Normal": 2, "Viral Pneumonia": 2})
    (base / "Normal" / "images").rename(base / "Normal" / "locked")
    (base / "Normal" / "locked").rename(base / "Normal" / "images")
    monkeypatch.setattr(type(tmp_path), "iterdir",
                        lambda self: iterdir(self.with_name("locked")) if self.parent.name == "Normal" else real(self))
    with pytest.raises(dataset.DatasetNotFoundError, match=r"class folder .*Normal.*cannot be read"):
        dataset.index_dataset(base, progress=False, cache=False)


def test_failed_download_gives_one_clear_message(monkeypatch):
    import kagglehub

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(dataset.DatasetNotFoundError) as error:
        dataset.find_dataset()
    message = str(error.value)
    assert "Kaggle download failed" in message and "no route to host" in message
    assert "CXR_DATA_DIR" in message and dataset.KAGGLE_HANDLE in message


def test_download_asks_kagglehub_for_the_pinned_version(isolated_data_dir, monkeypatch, tmp_path):
    import kagglehub

    calls = {}

    def fake_download(handle, path=None, *, force_download=False, output_dir=None):
        calls.update(handle=handle, output_dir=output_dir)
        return str(make_release(tmp_path / "fetched"))

    monkeypatch.setattr(kagglehub, "dataset_download", fake_download)
    root = dataset.find_dataset()
    assert calls["handle"] == f"{dataset.KAGGLE_HANDLE}/versions/{dataset.KAGGLE_VERSION}"
    assert calls["output_dir"].startswith(str(isolated_data_dir))
    assert root.name == "COVID-19_Radiography_Dataset"


# ---- indexing ---------------------------------------------------------------------------------

def test_index_reads_release_layout_and_ignores_masks_and_lung_opacity(tmp_path):
    base = make_release(tmp_path, counts={"COVID": 5, "Normal": 4, "Viral Pneumonia": 3})
    index = quiet_index(base)
    assert index.groupby("label").size().to_dict() == {"COVID": 5, "Normal": 4, "Viral Pneumonia": 3}
    assert not index["relpath"].str.contains("masks").any()
    assert list(index["label"].unique()) == list(config.CLASSES)  # class order, then id
    assert index.groupby("label")["class_id"].first().to_dict() == {"COVID": 0, "Normal": 1, "Viral Pneumonia": 2}
    assert index[index.label == "COVID"]["image_id"].tolist() == [1, 2, 3, 4, 5]
    with_opacity = quiet_index(base, include=config.CLASSES + ("Lung_Opacity",), cache=False)
    assert (with_opacity["label"] == "Lung_Opacity").sum() == 3


def test_index_reads_first_release_layout(tmp_path):
    base = make_first_release(tmp_path, n=4)
    index = quiet_index(dataset.find_dataset(tmp_path))
    assert index.groupby("label").size().to_dict() == {"COVID": 4, "Normal": 4, "Viral Pneumonia": 4}
    assert sorted(index[index.label == "COVID"]["image_id"]) == [1, 2, 3, 4]
    assert str(base) in index.attrs["root"]


def test_image_id_from_both_naming_schemes():
    assert dataset.image_id("COVID-123.png") == 123
    assert dataset.image_id("Viral Pneumonia-7.png") == 7
    assert dataset.image_id("COVID-19 (45).png") == 45
    assert dataset.image_id("scan.png") is None


def test_bad_files_are_named_left_out_and_counted(tmp_path):
    base = make_release(tmp_path, counts={"COVID": 4, "Normal": 4, "Viral Pneumonia": 4})
    images = base / "Normal" / "images"
    (images / "Normal-90.png").write_bytes(b"this is not a png")
    good = (images / "Normal-1.png").read_bytes()
    (images / "Normal-91.png").write_bytes(good[: len(good) // 2])  # truncated
    (images / "notes.txt").write_text("metadata")
    with pytest.warns(UserWarning, match=r"3 file\(s\) left out") as record:
        index = dataset.index_dataset(base, progress=False)
    message = str(record[0].message)
    for name in ("Normal-90.png", "Normal-91.png", "notes.txt"):
        assert name in message
    assert len(index) == 12 and (index.label == "Normal").sum() == 4
    assert {p.split("/")[-1] for p, _ in index.attrs["skipped"]} == {"Normal-90.png", "Normal-91.png", "notes.txt"}


def rle8_bmp(size: int = 8, value: int = 120) -> bytes:
    """An 8-bit BMP with run-length compression (BI_RLE8), which Pillow reads and TensorFlow does not."""
    rows = b"".join(bytes([size, value, 0, 0]) for _ in range(size)) + bytes([0, 1])  # runs, end of line / bitmap
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, size, size, 1, 8, 1, len(rows), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + info + palette + rows


def test_the_index_accepts_exactly_what_the_training_decoder_reads(tmp_path):
    """One decoder decides: a TIFF named .png and an RLE BMP open in Pillow but not in TensorFlow, so the index
    leaves them out and names them; a WebP named .png is read by both (TF 2.21), so it is kept and decodes."""
    base = make_release(tmp_path, counts={"COVID": 3, "Normal": 3, "Viral Pneumonia": 3})
    images = base / "Normal" / "images"
    grey = np.full((24, 24), 90, np.uint8)
    Image.fromarray(grey).save(images / "Normal-20.png", format="TIFF")
    Image.fromarray(grey).save(images / "Normal-21.png", format="WEBP", lossless=True)
    (images / "Normal-22.bmp").write_bytes(rle8_bmp())
    with Image.open(images / "Normal-22.bmp") as opened:
        assert opened.info.get("compression") == 1 and np.asarray(opened).mean() == 120  # Pillow reads it
    with pytest.warns(UserWarning, match=r"2 file\(s\) left out") as record:
        index = dataset.index_dataset(base, progress=False)
    message = str(record[0].message)
    assert "Normal-20.png: a TIFF image" in message and "Normal-22.bmp: a BMP image" in message
    assert "Normal-21.png" not in message
    webp = index[index["relpath"].str.endswith("Normal-21.png")]
    assert len(webp) == 1
    pixels = next(iter(pipeline.make_dataset(webp, 24, 1)))[0].numpy()[0, ..., 0]
    np.testing.assert_array_equal(pixels, grey)


def test_a_file_that_became_undecodable_after_indexing_is_named_when_the_pass_fails(tmp_path):
    base = make_release(tmp_path, counts={"COVID": 3, "Normal": 3, "Viral Pneumonia": 3})
    index = quiet_index(base, cache=False)
    broken = base / "COVID" / "images" / "COVID-2.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(broken, format="TIFF")  # replaced behind the index's back
    expected = r"1 image\(s\) could not be decoded.*\n.*COVID-2.png"
    with pytest.raises(dataset.UndecodableImageError, match=expected), dataset.naming_undecodable(index):
        for _ in pipeline.make_dataset(index, 16, 4):
            pass
    # any other error passes through unchanged
    with pytest.raises(ZeroDivisionError), dataset.naming_undecodable(index):
        raise ZeroDivisionError


def test_empty_and_missing_class_folders_warn_and_protocols_refuse(tmp_path):
    base = make_release(tmp_path, counts={"COVID": 3, "Normal": 3})
    (base / "Viral Pneumonia" / "images").mkdir(parents=True)
    with pytest.warns(UserWarning, match="hold no images"):
        index = dataset.index_dataset(base, progress=False)
    with pytest.raises(ValueError, match="Viral Pneumonia"):
        protocols.select_protocol(index, "thesis")
    (base / "Viral Pneumonia" / "images").rmdir()
    (base / "Viral Pneumonia").rmdir()
    with pytest.warns(UserWarning, match="No folder for class 'Viral Pneumonia'"):
        dataset.index_dataset(base, progress=False, cache=False)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16"])
def test_odd_modes_and_sizes_read_the_same_in_pil_and_tf(tmp_path, mode):
    base = tmp_path / "COVID-19_Radiography_Dataset"
    gray = write_png(base / "COVID" / "images" / "COVID-1.png", seed=3, size=(50, 30), mode=mode)
    write_png(base / "Normal" / "images" / "Normal-1.png", seed=4)
    index = quiet_index(base)
    row = index.iloc[0]
    assert (row.width, row.height) == (50, 30)
    assert np.array_equal(pipeline.read_gray(row.path), gray)
    batch, labels = next(iter(pipeline.make_dataset(index.iloc[:1], 32, 1)))
    pil = pipeline.read_gray(row.path, size=32).astype(float)
    tf_pixels = batch.numpy()[0]
    assert tf_pixels.shape == (32, 32, 3) and np.allclose(tf_pixels[..., 0], tf_pixels[..., 2])
    assert np.abs(tf_pixels[..., 0] - pil).mean() < 3  # same image; the two resizers differ slightly
    assert labels.numpy().tolist() == [0]


def test_16_bit_images_keep_their_high_byte_in_pil_and_tf(tmp_path):
    path = tmp_path / "COVID" / "COVID-1.png"
    gray = write_png(path, seed=5, size=(32, 32), mode="I;16")
    with Image.open(path) as image:
        raw = np.asarray(image, dtype=np.uint16)
    assert (raw >> 8 == gray).all() and ((raw & 0xFF) != gray).all()  # the bytes differ everywhere
    assert np.array_equal(pipeline.read_gray(path), gray)
    frame = pd.DataFrame({"path": [str(path)], "class_id": [0]})
    tf_pixels = next(iter(pipeline.make_dataset(frame, 32, 1)))[0].numpy()[0, ..., 0]
    assert np.abs(tf_pixels - gray).max() <= 1.0  # same size: no resampling beyond rounding


def test_index_cache_rereads_only_changed_files(tmp_path, monkeypatch):
    base = make_release(tmp_path, counts={"COVID": 3, "Normal": 3, "Viral Pneumonia": 3})
    first = quiet_index(base)
    changed = base / "Normal" / "images" / "Normal-2.png"
    write_png(changed, seed=12345, size=(20, 20))
    seen = []
    real = dataset.describe_image
    monkeypatch.setattr(dataset, "describe_image", lambda path: seen.append(path.name) or real(path))
    second = quiet_index(base)
    assert seen == ["Normal-2.png"]
    assert second.loc[second.relpath.str.endswith("Normal-2.png"), "width"].item() == 20
    assert (first["sha256"] != second["sha256"]).sum() == 1
    cache_file, = (config.data_dir() / "cache").glob("index-v3-*.csv")
    written = cache_file.stat().st_mtime_ns
    seen.clear()
    quiet_index(base)  # nothing changed: nothing read, the cache not written again
    assert seen == [] and cache_file.stat().st_mtime_ns == written
    (base / "COVID" / "images" / "COVID-1.png").unlink()  # a file gone: the cache forgets it
    quiet_index(base)
    assert "COVID-1.png" not in cache_file.read_text()


# ---- protocols and splits -----------------------------------------------------------------------

@pytest.fixture
def index_with_duplicates(tmp_path):
    base = make_release(tmp_path, counts={"COVID": 40, "Normal": 60, "Viral Pneumonia": 50}, duplicates=6)
    return quiet_index(base)


def cpu_with(**changes):
    """The cpu profile with some fields changed (a cap, a seed)."""
    return dataclasses.replace(config.PROFILES["cpu"], **changes)


@pytest.mark.parametrize("protocol", list(protocols.PROTOCOLS))
def test_split_never_puts_one_image_on_two_sides(index_with_duplicates, protocol):
    split = protocols.load_split(index_with_duplicates, protocol, cpu_with())
    sides = split.groupby("sha256")["split"].nunique()
    assert (sides == 1).all()
    duplicated = split[split.duplicated("sha256", keep=False)]
    assert len(duplicated) >= 12  # the six copies and their originals are in the data, and kept together
    assert set(split["split"]) == {"train", "val", "test"}


def test_protocol_counts_follow_the_first_ids(index_with_duplicates):
    thesis = protocols.select_protocol(index_with_duplicates, "thesis", max_per_class=30)
    assert thesis.groupby("label").size().to_dict() == {"COVID": 30, "Normal": 30, "Viral Pneumonia": 30}
    assert thesis[thesis.label == "Normal"]["image_id"].tolist() == list(range(1, 31))
    with pytest.warns(UserWarning, match="asks for 219 COVID"):
        polazaro = protocols.select_protocol(index_with_duplicates, "polazaro")
    assert polazaro.groupby("label").size().to_dict() == {"COVID": 46, "Normal": 60, "Viral Pneumonia": 50}


def test_stratified_protocols_keep_class_shares(tmp_path):
    base = make_release(tmp_path, counts={"COVID": 40, "Normal": 200, "Viral Pneumonia": 100})
    split = protocols.load_split(quiet_index(base), "all", cpu_with())
    table = protocols.split_counts(split)
    shares = table.loc[list(config.CLASSES), ["train", "val", "test"]].div(table.loc[list(config.CLASSES), "total"], axis=0)
    assert np.allclose(shares["train"], 0.70, atol=0.03)
    assert np.allclose(shares["test"], 0.15, atol=0.03)
    assert table.loc["total", "total"] == 340


def test_split_is_deterministic_and_reused(index_with_duplicates, tmp_path):
    profile = cpu_with()
    first = protocols.load_split(index_with_duplicates, "thesis", profile, directory=tmp_path / "a")
    second = protocols.load_split(index_with_duplicates, "thesis", profile, directory=tmp_path / "b")
    (file_a,), (file_b,) = (tmp_path / "a").glob("*.csv"), (tmp_path / "b").glob("*.csv")
    assert file_a.read_bytes() == file_b.read_bytes()
    pd.testing.assert_frame_equal(first, second)
    again = protocols.load_split(index_with_duplicates, "thesis", profile, directory=tmp_path / "a")
    pd.testing.assert_frame_equal(first, again)
    other_seed = protocols.load_split(index_with_duplicates, "thesis", cpu_with(seed=7), directory=tmp_path / "a")
    assert not first["split"].equals(other_seed["split"])
    assert len(list((tmp_path / "a").glob("*.csv"))) == 2


@pytest.mark.parametrize("ingredient, change", [("test", 0.3), ("val", 0.2), ("stratify", True),
                                                ("per_class", {c: 25 for c in config.CLASSES})])
def test_a_changed_protocol_definition_makes_a_new_split_file(index_with_duplicates, tmp_path, monkeypatch,
                                                              ingredient, change):
    before = protocols.load_split(index_with_duplicates, "thesis", cpu_with(), directory=tmp_path)
    monkeypatch.setitem(protocols.PROTOCOLS, "thesis", {**protocols.PROTOCOLS["thesis"], ingredient: change})
    after = protocols.load_split(index_with_duplicates, "thesis", cpu_with(), directory=tmp_path)
    assert after.attrs["file"] != before.attrs["file"]
    assert len(list(tmp_path.glob("*.csv"))) == 2  # the old split is not reused for the new definition


def test_a_class_too_small_to_stratify_gets_a_clear_message(tmp_path):
    base = make_release(tmp_path, counts={"COVID": 2, "Normal": 12, "Viral Pneumonia": 12})
    index = quiet_index(base)
    with pytest.raises(ValueError, match=r"'polazaro' cannot split.*'COVID': 2.*add images"):
        protocols.split_images(protocols.select_protocol(index, "polazaro"), "polazaro")


def test_the_capped_all_protocol_draws_with_the_profile_s_seed(tmp_path):
    base = make_release(tmp_path, counts={"COVID": 30, "Normal": 30, "Viral Pneumonia": 30})
    index = quiet_index(base)
    by_seed = {seed: protocols.load_split(index, "all", cpu_with(max_per_class=10, seed=seed), directory=tmp_path / "s")
               for seed in (42, 7)}
    assert set(by_seed[42]["relpath"]) != set(by_seed[7]["relpath"])
    again = protocols.load_split(index, "all", cpu_with(max_per_class=10, seed=7), directory=tmp_path / "t")
    assert set(again["relpath"]) == set(by_seed[7]["relpath"])
    # the same sampling as the left-out images: one function, one seed
    drawn = protocols.sample_per_class(index, 10, 7)
    assert set(drawn["relpath"]) == set(by_seed[7]["relpath"])


def test_thesis_split_shares(tmp_path):
    base = make_release(tmp_path, counts={"COVID": 100, "Normal": 100, "Viral Pneumonia": 100})
    table = protocols.split_counts(protocols.load_split(quiet_index(base), "thesis", cpu_with()))
    assert table.loc["total", "test"] == 60 and table.loc["total", "val"] == 24 and table.loc["total", "train"] == 216


def test_oversample_marks_only_the_copies():
    frame = pd.DataFrame({"label": ["COVID", "Normal", "COVID"], "class_id": [0, 1, 0]})
    out = protocols.oversample(frame, copies=5)
    assert len(out) == 3 + 10
    assert not out.iloc[:3]["augment"].any() and out.iloc[3:]["augment"].all()
    assert (out.iloc[3:]["label"] == "COVID").all()


# ---- pipelines -------------------------------------------------------------------------------

def test_evaluation_pipeline_keeps_order_shapes_and_range(index_with_duplicates):
    frame = index_with_duplicates.iloc[::7]
    ds = pipeline.make_dataset(frame, 24, 8)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (len(frame), 24, 24, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32 and labels.tolist() == frame["class_id"].tolist()
    assert 0.0 <= images.min() and images.max() <= 255.0 and images.max() > 100
    again = np.concatenate([x.numpy() for x, _ in ds])
    assert np.array_equal(images, again)


def test_training_pipeline_shuffles_and_preprocess_runs_last(index_with_duplicates):
    frame = index_with_duplicates
    # Shifted below zero: had preprocess run before the augmentation, its clip to [0, 255] would leave zeros.
    ds = pipeline.make_dataset(frame, 16, 200, training=True, augment=pipeline.augmentation(flip=True),
                           preprocess=lambda x: x - 300.0)
    epoch1 = next(iter(ds))
    epoch2 = next(iter(ds))
    assert epoch1[1].numpy().tolist() != frame["class_id"].tolist()
    assert epoch1[1].numpy().tolist() != epoch2[1].numpy().tolist()
    assert -300.0 <= epoch1[0].numpy().min() and epoch1[0].numpy().max() <= -45.0


def test_augmentation_touches_only_flagged_rows(index_with_duplicates):
    frame = index_with_duplicates.head(16).assign(augment=[True] * 8 + [False] * 8)
    plain = {row.path: pipeline.read_gray(row.path) for row in frame.itertuples()}  # 40 x 40, no resizing below
    kept = [plain[p] for p in frame.loc[~frame["augment"], "path"]]
    ds = pipeline.make_dataset(frame, 40, 16, training=True, augment=pipeline.augmentation(flip=True))
    changed = 0
    for _ in range(3):  # a random flip leaves some flagged images as they were; three epochs make a change certain
        outputs = [image[..., 0] for images, _ in ds for image in images.numpy()]
        same = [[np.abs(out - ref).max() < 0.5 for ref in plain.values()] for out in outputs]
        for ref in kept:
            assert any(np.abs(out - ref).max() < 0.5 for out in outputs), "an unflagged image was augmented"
        changed += sum(not any(row) for row in same)
    assert changed > 0


def test_augmented_batches_repeat_exactly_for_the_same_seed(index_with_duplicates):
    # Keras's random layers keep their state in a variable; in a parallel map, which batch gets which draw
    # depended on thread timing (a cpu run of an augmented net came out 1.3 points different the second time).
    def two_epochs():
        ds = pipeline.make_dataset(index_with_duplicates, 32, 4, training=True, augment=pipeline.project_augmentation("thesis"))
        return np.concatenate([images.numpy() for _ in range(2) for images, _ in ds])

    first, second = two_epochs(), two_epochs()
    assert len(first) == 2 * len(index_with_duplicates)
    np.testing.assert_array_equal(first, second)


def test_left_out_images_exclude_the_protocol_and_copies_of_its_images(tmp_path, monkeypatch):
    root = make_release(tmp_path, duplicates=2)  # COVID-13 and COVID-14 are copies of COVID-1 and COVID-2
    monkeypatch.setitem(protocols.PROTOCOLS["thesis"], "per_class", {c: 5 for c in config.CLASSES})
    index = dataset.index_dataset(root, cache=False)
    used = protocols.select_protocol(index, "thesis")
    outside = protocols.left_out(index, "thesis")
    assert not set(outside["relpath"]) & set(used["relpath"])
    assert not set(outside["sha256"]) & set(used["sha256"])
    assert outside.groupby("label").size().to_dict() == {c: 7 for c in config.CLASSES}  # ids 6..12, no copies
    sample = protocols.left_out(index, "thesis", max_per_class=3)
    assert sample.groupby("label").size().to_dict() == {c: 3 for c in config.CLASSES}
    assert sample.equals(protocols.left_out(index, "thesis", max_per_class=3))  # seeded


def _augmentation_draws(tmp_path, kind: str, n: int = 2048, size: int = 64) -> pd.DataFrame:
    """Push ``n`` copies of one grey image with a bright blob off centre through the training pipeline with a
    project's augmentation, and read back what each layer drew: flip (blob left or right of centre), rotation
    (blob's angle), zoom (blob's distance from the centre) and brightness (level of the flat centre)."""
    image = np.full((size, size), 100, np.uint8)
    image[19:22, 43:46] = 255  # above and right of centre
    path = tmp_path / "probe.png"
    Image.fromarray(image).save(path)
    frame = pd.DataFrame({"path": [str(path)] * n, "class_id": 0})
    ds = pipeline.make_dataset(frame, size, 256, training=True, shuffle=False, augment=pipeline.project_augmentation(kind))
    out = np.concatenate([images.numpy()[..., 0] for images, _ in ds])
    level = out[:, 28:36, 28:36].mean(axis=(1, 2))
    weight = np.clip(out - level[:, None, None] - 40, 0, None)
    rows, cols = np.mgrid[0:size, 0:size] - (size - 1) / 2
    dr = (weight * rows).sum(axis=(1, 2)) / weight.sum(axis=(1, 2))
    dc = (weight * cols).sum(axis=(1, 2)) / weight.sum(axis=(1, 2))
    return pd.DataFrame({"flip": (dc < 0).astype(float), "rotation": np.arctan2(dr, np.abs(dc)),
                         "zoom": np.hypot(dr, dc), "brightness": level - 100})


@pytest.mark.parametrize("kind, layers", [("thesis", ["flip", "zoom", "brightness"]),
                                          ("polazaro", ["flip", "rotation"])])
def test_each_augmentation_layer_draws_independently(tmp_path, kind, layers):
    # One seed for every layer made the draws move in lockstep (|r| 0.73-0.94 between flip, zoom and brightness).
    draws = _augmentation_draws(tmp_path, kind)[layers]
    assert (draws.std() > 0).all(), "every layer must actually vary"
    correlation = draws.corr().abs().to_numpy()
    off_diagonal = correlation[~np.eye(len(layers), dtype=bool)]
    assert off_diagonal.max() < 0.1, draws.corr().round(3)


def test_one_hot_labels_and_mixup_blend_images_and_labels_alike(index_with_duplicates):
    frame = index_with_duplicates.groupby("label").head(11).head(32)  # all three classes
    plain = next(iter(pipeline.make_dataset(frame, 16, 32, one_hot=True)))
    assert plain[1].shape == (32, 3) and np.array_equal(plain[1].numpy().argmax(1), frame["class_id"].to_numpy())
    images, labels = next(iter(pipeline.make_dataset(frame, 16, 32, training=True, mixup=0.4, seed=1)))
    labels = labels.numpy()
    assert labels.shape == (32, 3) and np.allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert ((labels > 0.01) & (labels < 0.99)).any(), "MixUp blended no pair"
    assert 0.0 <= images.numpy().min() and images.numpy().max() <= 255.0


def test_the_strong_augmentation_gives_every_layer_its_own_seed():
    layers = pipeline.project_augmentation("strong").layers
    assert {type(layer).__name__ for layer in layers} == {
        "RandomRotation", "RandomZoom", "RandomTranslation", "RandomBrightness", "RandomContrast"}
    assert len({layer.get_config()["seed"] for layer in layers}) == len(layers)


def test_a_matched_split_has_the_reference_s_class_counts_and_leaves_test_alone(tiny):
    _, index, profile = tiny
    split = quiet_split(index, profile, "all")
    reference = split[split["split"] != "test"].groupby(["split", "label"]).head(2)  # 2 per class and side
    reference.attrs = {"file": "reference.csv"}
    matched = protocols.match_class_counts(split, reference, seed=42)
    counts = matched[matched["split"] != "test"].groupby(["split", "label"]).size()
    assert (counts == 2).all() and len(counts) == 6
    kept = matched[matched["split"] == "train"]
    assert set(kept["relpath"]) < set(split.loc[split["split"] == "train", "relpath"])
    assert matched.loc[matched["split"] == "test", "relpath"].tolist() == \
        split.loc[split["split"] == "test", "relpath"].tolist()
    assert matched.attrs["file"] == split.attrs["file"] and matched.attrs["matched_to"] == "reference.csv"
    again = protocols.match_class_counts(split, reference, seed=42)
    other = protocols.match_class_counts(split, reference, seed=7)
    assert again["relpath"].tolist() == matched["relpath"].tolist()
    assert other["relpath"].tolist() != matched["relpath"].tolist()
    bigger = pd.concat([reference] * 50)  # asks for more than there is: every image of that class and side
    assert len(protocols.match_class_counts(split, bigger, seed=42)) == len(split)