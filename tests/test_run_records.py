"""records: what a finished run leaves, what identifies it, and reading many at once."""
from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest

from helpers import config, experiments, metrics, run_records

from conftest import quiet_split


def test_record_round_trips_and_the_model_reloads(tiny, trained, monkeypatch):
    _, index, profile = tiny
    record, folder = trained
    monkeypatch.setenv("CXR_WORK_DIR", str(folder))
    split = quiet_split(index, profile)
    again = run_records.read_record(record.path)
    assert again.config == record.config and again.metrics == record.metrics
    pd.testing.assert_frame_equal(again.history, record.history)
    pd.testing.assert_frame_equal(again.predictions, record.predictions)
    test = split[split["split"] == "test"]
    pd.testing.assert_frame_equal(record.test_images(index)[["relpath", "split"]],
                                  test[["relpath", "split"]].reset_index(drop=True))
    reloaded = metrics.predict(again.load_model(), record.test_images(index), record.config["image_size"])
    assert np.allclose(metrics.probabilities(reloaded), metrics.probabilities(record.test_predictions()),
                       atol=1e-5)
    assert set(record.predictions["split"]) == {"val", "test"}
    assert record.metrics["test"]["n"] == len(test)
    assert record.config["split_file"] == split.attrs["file"]
    for key in ("train_seconds", "images_per_second", "peak_memory_mb", "parameters"):
        assert record.metrics[key] > 0
    assert record.metrics["diverged"] is False


def test_incomplete_record_is_refused_with_the_missing_file_named(tiny, tmp_path):
    folder = tmp_path / "broken-run"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.keras"):
        run_records.read_record(folder)


def _config(**changes):
    exp = experiments.experiment("polazaro_baseline", config.PROFILES["quick"])
    return {**run_records.run_config(exp, config.PROFILES["quick"], "polazaro-n40-seed42-abc.csv", "f00d"), **changes}


def test_same_run_compares_everything_that_produced_a_record_and_nothing_else():
    current = _config()
    assert run_records.same_run(dict(current), current)
    for field, other in [("epochs", 99), ("learning_rate", 0.5), ("seed", 7), ("split_file", "other.csv"),
                         ("architecture", "beef"), ("augment", "polazaro"), ("max_per_class", None)]:
        assert not run_records.same_run({**current, field: other}, current), field
    # descriptive fields do not count, and JSON's lists equal the dataclass's tuples
    assert run_records.same_run({**current, "source": "reworded", "published": ["x", "y"]}, current)
    assert run_records.same_run(json.loads(json.dumps(current)), current)


def test_a_field_added_since_the_record_was_written_counts_as_its_default():
    current = _config()
    older = {k: v for k, v in current.items() if k != "mixup"}  # written before MixUp existed
    assert run_records.same_run(older, current)
    assert not run_records.same_run(older, {**current, "mixup": 0.2})


def test_the_weights_digest_changes_with_any_weight_and_not_with_a_rebuild():
    def build():
        keras.utils.set_random_seed(3)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])

    first, again = build(), build()
    assert run_records.weights_digest(first) == run_records.weights_digest(again)
    kernel, bias = again.layers[0].get_weights()
    kernel[0, 0] += 1e-3
    again.layers[0].set_weights([kernel, bias])
    assert run_records.weights_digest(first) != run_records.weights_digest(again)


def test_read_records_returns_what_exists_and_names_what_does_not(tiny, trained, monkeypatch):
    _, _, profile = tiny
    record, folder = trained
    monkeypatch.setenv("CXR_WORK_DIR", str(folder))
    (profile.runs_dir / "red_david").mkdir()  # an incomplete record counts as missing
    found, missing = run_records.read_records(profile, ["polazaro_baseline", "red_david", "squeezenet_v1"])
    assert list(found) == ["polazaro_baseline"] and found["polazaro_baseline"].metrics == record.metrics
    assert missing == ["red_david", "squeezenet_v1"]
    (profile.runs_dir / "red_david").rmdir()
