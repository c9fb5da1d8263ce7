"""Training core: metrics, resumable training, run records, get_or_train, and the evaluate command."""
from __future__ import annotations

import dataclasses
import json
import warnings

import keras
import numpy as np
import pandas as pd
import pytest

from helpers import config, data, evaluate, experiments, feature_cache, metrics, models, records, training
from conftest import make_release


# ---- metrics -------------------------------------------------------------------------------------

def test_metrics_on_a_known_confusion():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    proba = np.eye(3)[pred] * 0.8 + 0.2 / 3
    m = metrics.classification_metrics(y, proba)
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 3, 0], [0, 1, 2]]
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["per_class"]["COVID"]["sensitivity"] == pytest.approx(0.75)
    assert m["per_class"]["Normal"]["precision"] == pytest.approx(0.6)
    assert m["per_class"]["Viral Pneumonia"]["sensitivity"] == pytest.approx(2 / 3)
    assert m["accuracy_ci_low"] < 0.8 < m["accuracy_ci_high"]
    assert 0 <= m["accuracy_ci_low"] and m["accuracy_ci_high"] <= 1
    json.dumps(m, allow_nan=False)  # standard JSON


def test_undefined_metrics_are_none_not_zero():
    y = np.array([0, 1, 1, 0])
    proba = np.tile([0.1, 0.8, 0.1], (4, 1))  # always predicts Normal; no Viral Pneumonia in the data
    m = metrics.classification_metrics(y, proba)
    assert m["per_class"]["COVID"]["precision"] is None
    assert m["per_class"]["Viral Pneumonia"]["auc"] is None
    assert m["per_class"]["COVID"]["sensitivity"] == 0.0


def test_perfect_predictions_have_a_degenerate_interval():
    y = np.array([0, 1, 2, 1])
    m = metrics.classification_metrics(y, np.eye(3)[y])
    assert (m["accuracy"], m["accuracy_ci_low"], m["accuracy_ci_high"]) == (1.0, 1.0, 1.0)
    assert m["auc_ovr_macro"] == 1.0


# ---- training on a tiny synthetic dataset ------------------------------------------------------

TINY_PROFILE = dataclasses.replace(config.PROFILES["quick"], max_per_class=12, max_epochs=3, batch_size=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A synthetic release, its index, and a quick profile capped at 12 images per class and 3 epochs."""
    base = make_release(tmp_path_factory.mktemp("dataset"), counts={"COVID": 12, "Normal": 12, "Viral Pneumonia": 12})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = data.index_dataset(base, progress=False, cache=False)
    return base, index, TINY_PROFILE


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """One polazaro_baseline run on ``tiny``, trained once for every test here that only reads it; its data
    folder is returned so a test can point ``config.DATA_DIR`` at it."""
    _, index, profile = tiny
    folder = tmp_path_factory.mktemp("trained-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "DATA_DIR", folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            record = training.get_or_train("polazaro_baseline", profile, index, verbose=0)
    return record, folder


class Interrupt(Exception):
    pass


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise Interrupt


class EpochsBegun(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.begun = []

    def on_epoch_begin(self, epoch, logs=None):
        self.begun.append(epoch)


def _split(index, profile, protocol="polazaro"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return data.load_split(index, protocol, profile)


def test_interrupted_run_resumes_at_the_next_epoch_and_leaves_no_record(tiny):
    _, index, profile = tiny
    exp = experiments.experiment("polazaro_baseline", profile)
    split = _split(index, profile)
    with pytest.raises(Interrupt):
        training.train(exp, profile, split, callbacks=[StopAfterFirstEpoch()], verbose=0)
    assert not (profile.runs_dir / exp.name).exists()  # no half-written record
    assert (profile.runs_dir / f"{exp.name}.partial" / "backup").exists()

    begun = EpochsBegun()
    record = training.train(exp, profile, split, callbacks=[begun], verbose=0)
    assert begun.begun == [1, 2]  # restarts at epoch 2 (index 1), not at 1
    assert record.history["epoch"].tolist() == [0, 1, 2]
    assert not (profile.runs_dir / f"{exp.name}.partial").exists()
    assert record.metrics["epochs_run"] == 3


def test_record_round_trips_and_the_model_reloads(tiny, trained, monkeypatch):
    _, index, profile = tiny
    record, folder = trained
    monkeypatch.setattr(config, "DATA_DIR", folder)
    split = _split(index, profile)
    again = records.read_record(record.path)
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


def test_the_weights_of_the_lowest_validation_loss_are_the_ones_evaluated(tiny):
    _, index, profile = tiny
    exp = dataclasses.replace(experiments.experiment("polazaro_baseline", profile), epochs=4)
    split = _split(index, profile)
    class SpoilLastEpoch(keras.callbacks.Callback):  # a huge learning rate ruins the last epoch
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                self.model.optimizer.learning_rate.assign(50.0)

    record = training.train(exp, profile, split, callbacks=[SpoilLastEpoch()], verbose=0)
    best = int(record.history["val_loss"].idxmin())
    assert best < 3
    assert record.history["selected"].tolist() == [i == best for i in range(4)]
    assert record.metrics["selected_epoch"] == best
    # the validation loss recomputed from the saved predictions is the one Keras logged for that epoch
    assert record.metrics["val"]["loss"] == pytest.approx(record.history.loc[best, "val_loss"], rel=1e-3)


def test_a_diverged_run_is_recorded_as_diverged(tiny, capsys):
    _, index, profile = tiny
    exp = dataclasses.replace(experiments.experiment("polazaro_baseline", profile), name="diverging", epochs=2)

    class Explode(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.model.optimizer.learning_rate.assign(1e30)

    record = training.train(exp, profile, _split(index, profile), callbacks=[Explode()], verbose=0)
    assert "diverging diverged" in capsys.readouterr().out
    assert record.metrics["diverged"] is True and record.metrics["test"]["loss"] is None
    assert (record.test_predictions()["predicted"] == 0).all()  # NaN outputs: argmax's first class
    assert record.metrics["test"]["accuracy"] == pytest.approx((record.test_predictions()["true"] == 0).mean())


def test_incomplete_record_is_refused_with_the_missing_file_named(tiny, tmp_path):
    folder = tmp_path / "broken-run"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.keras"):
        records.read_record(folder)


def test_get_or_train_reuses_a_matching_record(tiny, trained, monkeypatch):
    _, index, profile = tiny
    first, folder = trained
    monkeypatch.setattr(config, "DATA_DIR", folder)
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("should reuse the record"))
    reused = training.get_or_train("polazaro_baseline", profile, index, verbose=0)
    assert reused.path == first.path and reused.metrics == first.metrics


def test_training_prints_one_compact_line_per_epoch(tiny, capsys):
    """verbose=2 (the notebooks' default) shows one line per epoch, not Keras's header plus progress line."""
    _, index, profile = tiny
    exp = experiments.experiment("polazaro_baseline", profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        training.train(exp, profile, _split(index, profile))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("epoch", "Epoch"))]
    assert len(lines) == exp.epochs
    assert all(line.startswith(f"epoch {k + 1}/{exp.epochs}: loss ") for k, line in enumerate(lines))


def test_records_or_train_reads_what_exists_and_trains_only_what_is_missing(tiny, trained, monkeypatch, capsys):
    """Notebooks 05-07 open on a fresh clone: a missing record is trained (after a line saying so), a present one
    is read, never retrained."""
    _, index, profile = tiny
    first, folder = trained
    monkeypatch.setattr(config, "DATA_DIR", folder)
    trained_now = []

    def fake_train(name, *args, **kwargs):
        trained_now.append(name)
        return f"record of {name}"

    monkeypatch.setattr(training, "get_or_train", fake_train)
    found = training.records_or_train(profile, ["polazaro_baseline", "red_david"], index)
    assert trained_now == ["red_david"]
    assert found["polazaro_baseline"].metrics == first.metrics and found["red_david"] == "record of red_david"
    assert list(found) == ["polazaro_baseline", "red_david"]
    said = capsys.readouterr().out
    assert "missing: red_david" in said and "Training them now" in said


def _changed_baseline(image_size, num_classes=3):
    """The baseline with Dropout 0.5 instead of 0.3: the same run name and parameters, another architecture."""
    model = models.polazaro_baseline(image_size, num_classes)
    settings = model.get_config()
    for layer in settings["layers"]:
        if layer["class_name"] == "Dropout":
            layer["config"]["rate"] = 0.5
    return keras.Sequential.from_config(settings)


@pytest.mark.parametrize("ingredient", ["epochs", "seed", "architecture", "augmentation", "split shares"])
def test_get_or_train_retrains_when_anything_that_produced_the_record_changes(tiny, trained, monkeypatch,
                                                                              ingredient):
    _, index, profile = tiny
    first, folder = trained
    monkeypatch.setattr(config, "DATA_DIR", folder)
    if ingredient == "epochs":
        profile = dataclasses.replace(profile, max_epochs=1)
    elif ingredient == "seed":
        profile = dataclasses.replace(profile, seed=7)
    elif ingredient == "architecture":
        monkeypatch.setitem(models.SCRATCH, "polazaro_baseline", _changed_baseline)
    elif ingredient == "augmentation":
        monkeypatch.setitem(experiments.PUBLISHED, "polazaro_baseline",
                            dataclasses.replace(experiments.PUBLISHED["polazaro_baseline"], augment="polazaro"))
    else:
        monkeypatch.setitem(data.PROTOCOLS, "polazaro", {**data.PROTOCOLS["polazaro"], "test": 0.3})
    calls = []
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(a[0]) or first)
    training.get_or_train("polazaro_baseline", profile, index, verbose=0)
    assert len(calls) == 1, f"a changed {ingredient} must not reuse the old record"


# ---- the evaluate command -----------------------------------------------------------------------

def test_evaluate_command_prints_the_metrics_it_computed(trained, tmp_path, capsys):
    record, _ = trained
    external = make_release(tmp_path / "external", counts={"COVID": 4, "Normal": 3, "Viral Pneumonia": 2}, seed=500)
    status = evaluate.main(["--run", str(record.path), "--data", str(external)])
    out = capsys.readouterr().out
    assert status == 0
    metrics = evaluate.evaluate_folder(str(record.path), str(external))
    assert metrics["n"] == 9
    assert f"accuracy: {metrics['accuracy']:.4f}" in out
    assert "images: 9" in out and "pred Viral Pneumonia" in out


def test_evaluate_command_refuses_a_folder_without_images(trained, tmp_path, capsys):
    record, _ = trained
    empty = tmp_path / "empty"
    for label in data.CLASSES:
        (empty / label).mkdir(parents=True)
    status = evaluate.main(["--run", str(record.path), "--data", str(empty)])
    err = capsys.readouterr().err
    assert status == 2 and "No readable image" in err and str(empty) in err
    status = evaluate.main(["--run", str(tmp_path / "no-such-run"), "--data", str(empty)])
    assert status == 2 and "not a complete run record" in capsys.readouterr().err


# ---- transfer learning: feature cache, EC and fine-tuning records -------------------------------------

@pytest.fixture
def offline_weights(monkeypatch):
    """No ImageNet weights anywhere: backbones fall back to random init where allowed (quick profile)."""
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))


def test_feature_cache_is_reused_and_augmented_views_differ(tiny, offline_weights, monkeypatch):
    from helpers import backbones

    _, index, _ = tiny
    frame = index.head(10)
    extractor, pretrained = backbones.feature_extractor("squeezenet", 32, allow_random=True)
    first = feature_cache.cached_features(extractor, "squeezenet", 32, pretrained, frame)
    view1 = feature_cache.cached_features(extractor, "squeezenet", 32, pretrained, frame, view=1, augment="thesis")
    assert first.shape == (10, 512) and first.dtype == np.float32
    assert not np.allclose(first, view1)
    path = feature_cache.cache_path("squeezenet", 32, pretrained, frame, 0)
    assert path.exists() and "random" in path.name
    view_path = feature_cache.cache_path("squeezenet", 32, pretrained, frame, 1, "thesis")
    assert view_path.exists()
    # an augmented view is keyed on its augmentation and seed; the plain view 0 on neither
    assert feature_cache.cache_path("squeezenet", 32, pretrained, frame, 1, "polazaro") != view_path
    assert feature_cache.cache_path("squeezenet", 32, pretrained, frame, 1, "thesis", seed=7) != view_path
    assert feature_cache.cache_path("squeezenet", 32, pretrained, frame, 0, "thesis", seed=7) == path
    seeded = feature_cache.cached_features(extractor, "squeezenet", 32, pretrained, frame, view=1, augment="thesis",
                                           seed=7)
    assert not np.allclose(seeded, view1)
    with np.load(path, allow_pickle=False) as stored:
        assert stored["relpath"].tolist() == frame["relpath"].tolist()
    monkeypatch.setattr(feature_cache, "extract", lambda *a, **k: pytest.fail("should read the cache"))
    np.testing.assert_array_equal(feature_cache.cached_features(extractor, "squeezenet", 32, pretrained, frame), first)
    assert feature_cache.cache_path("squeezenet", 32, pretrained, index.head(9), 0) != path
    with pytest.raises(ValueError, match="augment"):
        feature_cache.cached_features(extractor, "squeezenet", 32, pretrained, frame, view=2)


def test_frozen_and_fine_tuned_runs_make_complete_records(tiny, offline_weights):
    _, index, profile = tiny
    v0 = training.get_or_train("squeezenet_v0", profile, index, verbose=0)
    assert v0.metrics["epochs_run"] == 0 and v0.metrics["pretrained"] is False
    ec = training.get_or_train("squeezenet_ec", profile, index, verbose=0)
    n_train = (data.load_split(index, "thesis", profile)["split"] == "train").sum()
    assert ec.config["scheme"] == "ec" and ec.metrics["epochs_run"] == profile.max_epochs
    assert ec.metrics["train_images"] == 2 * n_train  # view 0 and one augmented view (quick profile)
    ft2 = training.get_or_train("squeezenet_ft2", profile, index, verbose=0)
    assert ft2.history["stage"].tolist() == ["head"] * profile.max_epochs + ["fine-tune"] * profile.max_epochs
    assert ft2.history["epoch"].tolist() == list(range(2 * profile.max_epochs))
    model = ft2.load_model()  # safe mode: the preprocessing layer is a registered class, not a lambda
    test = data.load_split(index, "thesis", profile).query("split == 'test'")
    again = metrics.predict(model, test, ft2.config["image_size"])
    np.testing.assert_allclose(metrics.probabilities(again), metrics.probabilities(ft2.test_predictions()),
                               atol=1e-5)


# ---- levers of the improved recipe -------------------------------------------------------------------

def test_warm_up_then_cosine_decay():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    training.compile_model(model, "adam", 1e-3, decay_steps=90, warmup_steps=10, weight_decay=0.05)
    rates = []
    for step in (0, 5, 10, 55, 100):
        model.optimizer.iterations.assign(step)
        rates.append(float(model.optimizer.learning_rate))
    assert rates[0] == 0.0 and rates[1] == pytest.approx(5e-4) and rates[2] == pytest.approx(1e-3)
    assert rates[3] == pytest.approx(5e-4, rel=1e-3) and rates[4] == pytest.approx(0.0, abs=1e-9)
    assert isinstance(model.optimizer, keras.optimizers.AdamW)


def test_a_run_with_every_lever_trains_and_its_record_says_so(tiny):
    _, index, profile = tiny
    exp = dataclasses.replace(experiments.experiment("polazaro_baseline", profile), name="levers", epochs=2,
                              warmup_epochs=1, cosine=True, weight_decay=0.05, label_smoothing=0.1, ema=True,
                              mixup=0.2, augment="strong", tta_flip=True)
    record = training.train(exp, profile, _split(index, profile), verbose=0)
    assert record.metrics["epochs_run"] == 2 and not record.metrics["diverged"]
    assert record.config["label_smoothing"] == 0.1 and record.config["ema"] is True
    assert np.allclose(metrics.probabilities(record.predictions).sum(axis=1), 1.0, atol=1e-4)


def test_flip_at_test_time_averages_the_image_and_its_mirror(tiny):
    _, index, _ = tiny
    frame = index.head(6)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, models.class_scores(x))
    plain = metrics.probabilities(metrics.predict(model, frame, 16))
    mirrored = metrics.probabilities(metrics.predict(model, frame, 16, preprocess=lambda x: x[:, :, ::-1, :]))
    both = metrics.probabilities(metrics.predict(model, frame, 16, tta_flip=True))
    np.testing.assert_allclose(both, (plain + mirrored) / 2, atol=1e-6)
    assert not np.allclose(plain, mirrored)


def test_mixed_precision_changes_the_layers_and_the_fingerprint_not_the_outputs_dtype():
    profile = config.PROFILES["quick"]
    exp = experiments.experiment("polazaro_baseline", profile)
    full, _ = training.build_model(exp, profile)
    half, _ = training.build_model(dataclasses.replace(exp, precision="mixed_bfloat16"), profile)
    out = half(np.zeros((1, exp.image_size, exp.image_size, 3), "float32"))
    assert half.get_layer("logits").compute_dtype == "bfloat16" and out.dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    assert records.architecture(full) != records.architecture(half)
