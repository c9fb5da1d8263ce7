"""helpers.shortcuts and the `all` protocol (notebook 07): groups, the protocol's splits, masked features, probes."""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from helpers import config, dataset, protocols, results, shortcuts

from conftest import make_release


def quiet_index(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dataset.index_dataset(root, progress=False, cache=False)


@pytest.fixture
def release_index(tmp_path, monkeypatch):
    """Normal ids 1..12 of the paediatric collection and 1342..1353 of the adult ones, plus COVID copies."""
    monkeypatch.setattr(shortcuts, "PAEDIATRIC_NORMAL_IDS", 12)  # the synthetic release's "first collection"
    monkeypatch.setattr(shortcuts, "PAEDIATRIC", "Normal, ids <= 12")
    monkeypatch.setattr(shortcuts, "ADULT", "Normal, ids > 12")
    monkeypatch.setattr(shortcuts, "GROUPS", ("COVID", "Normal, ids <= 12", "Normal, ids > 12", "Viral Pneumonia"))
    base = make_release(tmp_path, counts={"COVID": 30, "Normal": 24, "Viral Pneumonia": 20}, duplicates=4)
    return quiet_index(base)


def test_groups_are_disjoint_and_cover_every_image_by_class_and_id(release_index):
    grouped = shortcuts.with_groups(release_index)
    assert len(grouped) == len(release_index) and grouped["group"].notna().all()
    normal = grouped[grouped["label"] == "Normal"]
    assert (normal.loc[normal["image_id"] <= 12, "group"] == "Normal, ids <= 12").all()
    assert (normal.loc[normal["image_id"] > 12, "group"] == "Normal, ids > 12").all()
    assert normal["group"].value_counts().to_dict() == {"Normal, ids <= 12": 12, "Normal, ids > 12": 12}
    others = grouped[grouped["label"] != "Normal"]
    assert (others["group"] == others["label"]).all()  # every COVID / Viral Pneumonia image in its class's group


def test_groups_refuse_images_without_an_id(release_index):
    with pytest.raises(ValueError, match="image id"):
        shortcuts.with_groups(release_index.assign(image_id=np.nan))


def test_all_protocol_test_split_never_holds_a_copy_of_a_training_image(release_index):
    split = protocols.load_split(release_index, "all", config.PROFILES["cpu"])
    assert len(split) == len(release_index)  # every image of every class
    train = split[split["split"] == "train"]
    test = split[split["split"] == "test"]
    assert not set(test["sha256"]) & set(train["sha256"])
    copies = split[split.duplicated("sha256", keep=False)]
    assert len(copies) == 8 and (copies.groupby("sha256")["split"].nunique() == 1).all()


def test_a_capped_all_protocol_keeps_both_normal_collections(release_index):
    capped = dataclasses.replace(config.PROFILES["cpu"], max_per_class=10)
    images = protocols.select_protocol(release_index, "all", capped.max_per_class)
    assert images.groupby("label").size().to_dict() == {c: 10 for c in config.CLASSES}
    groups = shortcuts.with_groups(images)["group"].value_counts()
    assert groups["Normal, ids <= 12"] >= 2 and groups["Normal, ids > 12"] >= 2  # not only the first ids
    assert images.equals(protocols.select_protocol(release_index, "all", 10))  # seeded
    thesis = protocols.select_protocol(release_index, "thesis", 10)  # the thesis keeps its first ids
    assert thesis[thesis["label"] == "Normal"]["image_id"].tolist() == list(range(1, 11))


def test_group_table_counts_accuracy_and_calls_per_group():
    groups = ["COVID"] * 4 + ["Normal, ids > 1341"] * 4
    true = [0, 0, 0, 0, 1, 1, 1, 1]
    predicted = [0, 0, 0, 1, 0, 0, 0, 1]
    table = shortcuts.group_table(groups, true, predicted)
    assert table.index.tolist() == ["COVID", "Normal, ids > 1341"]  # in GROUPS order
    assert table.loc["COVID", "accuracy"] == 0.75 and table.loc["COVID", "images"] == 4
    assert table.loc["Normal, ids > 1341", "called COVID"] == 0.75
    assert table.loc["Normal, ids > 1341", "accuracy"] == 0.25
    assert table.loc["COVID", "ci_low"] <= 0.75 <= table.loc["COVID", "ci_high"]


def test_a_probe_learns_a_readable_label_and_not_a_random_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    readable = np.where(x[:, 3] > 0, "adult", "child")
    probe = shortcuts.fit_probe(x[:300], readable[:300])
    scores = shortcuts.probe_scores(probe, x[300:], readable[300:])
    assert scores["accuracy"] > 0.9 and scores["auc"] > 0.95
    noise = rng.permutation(readable)
    scores = shortcuts.probe_scores(shortcuts.fit_probe(x[:300], noise[:300]), x[300:], noise[300:])
    assert scores["accuracy"] < 0.7 and 0.3 < scores["auc"] < 0.7


def test_mcnemar_counts_discordant_images():
    a = [True, True, True, False, True]
    b = [True, False, False, False, True]
    result = results.mcnemar(a, b)
    assert (result["only_run_right"], result["only_other_right"]) == (2, 0)
    assert result["p_value"] == pytest.approx(0.5)


def test_the_probes_sample_takes_the_same_share_of_every_group_and_is_seeded():
    import pandas as pd

    groups = ["COVID"] * 300 + ["Normal, ids <= 1341"] * 100 + ["Normal, ids > 1341"] * 200 + ["Viral Pneumonia"] * 100
    frame = pd.DataFrame({"relpath": [f"{k}.png" for k in range(len(groups))], "group": groups})
    sample = shortcuts.probe_sample(frame, 350, seed=1)
    assert len(sample) == 350 and sample.index.is_monotonic_increasing  # half of every group, in frame order
    assert sample["group"].value_counts().to_dict() == {"COVID": 150, "Normal, ids > 1341": 100,
                                                        "Normal, ids <= 1341": 50, "Viral Pneumonia": 50}
    assert sample.equals(shortcuts.probe_sample(frame, 350, seed=1))
    assert not sample.equals(shortcuts.probe_sample(frame, 350, seed=2))
    assert shortcuts.probe_sample(frame, None).equals(frame) and shortcuts.probe_sample(frame, 10_000).equals(frame)
