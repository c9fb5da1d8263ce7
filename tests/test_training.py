"""training: resumable training, what a run record holds, get_or_train and records_or_train."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import warnings

import keras
import numpy as np
import pytest

from helpers import config, dataset, experiments, metrics, models, protocols, run_records, runs, training
from helpers.files import CorruptFileError

from conftest import make_release, needs_bfloat16_convolutions, quiet_split, refuse_downloads, small_densenet

# ---- training on a tiny synthetic dataset ------------------------------------------------------

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
        self.begun.append((self.model.name, epoch))

    def epochs(self):
        return [epoch for _, epoch in self.begun]


class StopInFineTuning(keras.callbacks.Callback):
    """Interrupts a two-stage run after the first epoch of its second stage (the whole model, not the head)."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0 and not self.model.name.startswith("head_"):
            raise Interrupt


def test_interrupted_run_resumes_at_the_next_epoch_and_leaves_no_record(tiny):
    _, index, profile = tiny
    exp = experiments.experiment("polazaro_baseline", profile)
    split = quiet_split(index, profile)
    with pytest.raises(Interrupt):
        training.train(exp, profile, split, callbacks=[StopAfterFirstEpoch()], verbose=0)
    assert not (profile.runs_dir / exp.name).exists()  # no half-written record
    assert (profile.runs_dir / f"{exp.name}.partial" / "backup").exists()

    begun = EpochsBegun()
    record = training.train(exp, profile, split, callbacks=[begun], verbose=0)
    assert begun.epochs() == [1, 2]  # restarts at epoch 2 (index 1), not at 1
    assert record.history["epoch"].tolist() == [0, 1, 2]
    assert not (profile.runs_dir / f"{exp.name}.partial").exists()
    assert record.metrics["epochs_run"] == 3


def test_a_run_builds_its_model_once_and_its_record_matches_a_fingerprint_made_without_training(tiny, monkeypatch):
    """The model that names the run's settings is the one that trains (a second build cost a second or two per run),
    and a record still matches the fingerprint ``runs.recorded`` makes to decide whether to reuse it."""
    _, index, profile = tiny
    exp = dataclasses.replace(experiments.experiment("polazaro_baseline", profile), name="built_once")
    split = quiet_split(index, profile)
    builds, build = [], training.build_model
    monkeypatch.setattr(training, "build_model", lambda *args, **kwargs: builds.append(args) or build(*args, **kwargs))
    record = training.train(exp, profile, split, verbose=0)
    assert len(builds) == 1
    assert run_records.same_run(record.config, training.identity(exp, profile, split))


def test_a_two_stage_run_resumes_in_its_second_stage_without_training_the_head_again(tiny, offline_weights):
    _, index, profile = tiny
    profile = dataclasses.replace(profile, max_epochs=2)  # two epochs a stage: enough to resume in the second
    exp = experiments.experiment("squeezenet_ft2", profile)
    split = quiet_split(index, profile, exp.protocol)
    with pytest.raises(Interrupt):
        training.train(exp, profile, split, callbacks=[StopInFineTuning()], verbose=0)
    begun = EpochsBegun()
    record = training.train(exp, profile, split, callbacks=[begun], verbose=0)
    assert [name.startswith("head_") for name, _ in begun.begun] == [False]  # no head epoch again
    assert begun.epochs() == [1]
    assert record.history["stage"].tolist() == ["head"] * exp.head_epochs + ["fine-tune"] * exp.epochs
    assert record.history["epoch"].tolist() == list(range(exp.head_epochs + exp.epochs))


def test_a_head_on_cached_features_reports_one_line_and_the_image_stage_one_per_epoch(tiny, fine_tuned):
    _, _, profile = tiny
    exp = experiments.experiment("squeezenet_ft2", profile)
    record, out = fine_tuned
    head = record.history[record.history["stage"] == "head"]
    kept = int(head.loc[head["selected"], "epoch"].iloc[0]) + 1
    assert f"head on cached features: {exp.head_epochs} epochs in" in out and f"kept epoch {kept}:" in out
    assert out.count("epoch 1/") == 1  # the image stage only
    assert f"epoch {exp.epochs}/{exp.epochs}:" in out


def test_an_interrupted_attempt_at_other_settings_is_wiped_not_resumed(tiny, capsys):
    _, index, profile = tiny
    exp = experiments.experiment("polazaro_baseline", profile)
    split = quiet_split(index, profile)
    with pytest.raises(Interrupt):
        training.train(exp, profile, split, callbacks=[StopAfterFirstEpoch()], verbose=0)
    other = dataclasses.replace(exp, learning_rate=exp.learning_rate / 2)
    begun = EpochsBegun()
    record = training.train(other, profile, split, callbacks=[begun], verbose=0)
    assert begun.epochs() == [0, 1, 2] and record.config["learning_rate"] == other.learning_rate

    with pytest.raises(Interrupt):  # an attempt whose settings file is damaged starts afresh, and says so
        training.train(exp, profile, split, callbacks=[StopAfterFirstEpoch()], verbose=0)
    (profile.runs_dir / f"{exp.name}.partial" / "config.json").write_text('{"name": "polazaro_b')
    begun = EpochsBegun()
    training.train(exp, profile, split, callbacks=[begun], verbose=0)
    assert begun.epochs() == [0, 1, 2]
    assert "Starting polazaro_baseline afresh" in capsys.readouterr().out


def test_a_damaged_early_stopping_state_stops_the_resume_with_its_name(tiny):
    """Forgetting the patience used before an interruption would let early stopping run longer than asked:
    a damaged state file is an error that names it, never a silent fresh count."""
    _, index, profile = tiny
    exp = dataclasses.replace(experiments.experiment("polazaro_baseline", profile), early_stopping=2)
    split = quiet_split(index, profile)
    with pytest.raises(Interrupt):
        training.train(exp, profile, split, callbacks=[StopAfterFirstEpoch()], verbose=0)
    state = profile.runs_dir / f"{exp.name}.partial" / "early_stopping.json"
    assert json.loads(state.read_text())["0"]["wait"] == 0
    state.write_text('{"0": {"wait": ')
    with pytest.raises(CorruptFileError, match=r"early_stopping.json.*delete"):
        training.train(exp, profile, split, verbose=0)
    state.write_text("{}")  # readable, but the epoch the run resumes after is missing
    with pytest.raises(CorruptFileError, match="no early-stopping state for epoch 1"):
        training.train(exp, profile, split, verbose=0)


def test_the_weights_of_the_lowest_validation_loss_are_the_ones_evaluated(tiny):
    _, index, profile = tiny
    exp = dataclasses.replace(experiments.experiment("polazaro_baseline", profile), epochs=4)
    split = quiet_split(index, profile)
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

    record = training.train(exp, profile, quiet_split(index, profile), callbacks=[Explode()], verbose=0)
    assert "diverging diverged" in capsys.readouterr().out
    assert record.metrics["diverged"] is True and record.metrics["test"]["loss"] is None
    assert (record.test_predictions()["predicted"] == 0).all()  # NaN outputs: argmax's first class
    assert record.metrics["test"]["accuracy"] == pytest.approx((record.test_predictions()["true"] == 0).mean())


def test_get_or_train_reuses_a_matching_record(tiny, trained, monkeypatch):
    _, index, profile = tiny
    first, folder = trained
    monkeypatch.setenv("CXR_WORK_DIR", str(folder))
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("should reuse the record"))
    reused = runs.get_or_train("polazaro_baseline", profile, index, verbose=0)
    assert reused.path == first.path and reused.metrics == first.metrics


def test_training_prints_one_compact_line_per_epoch(tiny, capsys):
    """verbose=2 (the notebooks' default) shows one line per epoch, not Keras's header plus progress line."""
    _, index, profile = tiny
    exp = experiments.experiment("polazaro_baseline", profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        training.train(exp, profile, quiet_split(index, profile))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("epoch", "Epoch"))]
    assert len(lines) == exp.epochs
    assert all(line.startswith(f"epoch {k + 1}/{exp.epochs}: loss ") for k, line in enumerate(lines))


def test_records_or_train_reads_what_exists_and_trains_only_what_is_missing(tiny, trained, monkeypatch, capsys):
    """Notebooks 05-07 open on a fresh clone: a missing record is trained (after a line saying so), a present one
    is read, never retrained."""
    _, index, profile = tiny
    first, folder = trained
    monkeypatch.setenv("CXR_WORK_DIR", str(folder))
    trained_now = []

    def fake_train(name, *args, **kwargs):
        trained_now.append(name)
        return f"record of {name}"

    monkeypatch.setattr(runs, "get_or_train", fake_train)
    found = runs.records_or_train(profile, ["polazaro_baseline", "red_david"], index)
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
    monkeypatch.setenv("CXR_WORK_DIR", str(folder))
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
        monkeypatch.setitem(protocols.PROTOCOLS, "polazaro", {**protocols.PROTOCOLS["polazaro"], "test": 0.3})
    calls = []
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(a[0]) or first)
    runs.get_or_train("polazaro_baseline", profile, index, verbose=0)
    assert len(calls) == 1, f"a changed {ingredient} must not reuse the old record"


# ---- transfer learning: feature cache, EC and fine-tuning records -------------------------------------

@pytest.fixture(scope="module")
def fine_tuned(tiny, tmp_path_factory):
    """squeezenet_ft2 on ``tiny`` (random weights, as offline), trained once with the notebooks' verbose=2 for the
    tests that read its record or what it printed (its training took about 18 s on 2 cores)."""
    _, index, profile = tiny
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed), warnings.catch_warnings():
        patch.setenv("CXR_WORK_DIR", str(tmp_path_factory.mktemp("fine-tuned-data")))
        refuse_downloads(patch)
        warnings.simplefilter("ignore")
        record = runs.get_or_train("squeezenet_ft2", profile, index, verbose=2)
    return record, printed.getvalue()


def test_frozen_and_fine_tuned_runs_make_complete_records(tiny, offline_weights, fine_tuned):
    _, index, profile = tiny
    v0 = runs.get_or_train("squeezenet_v0", profile, index, verbose=0)
    assert v0.metrics["epochs_run"] == 0 and v0.metrics["pretrained"] is False
    ec = runs.get_or_train("squeezenet_ec", profile, index, verbose=0)
    n_train = (protocols.load_split(index, "thesis", profile)["split"] == "train").sum()
    assert ec.config["scheme"] == "ec" and ec.metrics["epochs_run"] == profile.max_epochs
    assert ec.metrics["train_images"] == 2 * n_train  # view 0 and one augmented view (quick profile)
    ft2, _ = fine_tuned
    assert ft2.history["stage"].tolist() == ["head"] * profile.max_epochs + ["fine-tune"] * profile.max_epochs
    assert ft2.history["epoch"].tolist() == list(range(2 * profile.max_epochs))
    model = ft2.load_model()  # safe mode: the preprocessing layer is a registered class, not a lambda
    test = protocols.load_split(index, "thesis", profile).query("split == 'test'")
    again = metrics.predict(model, test, ft2.config["image_size"])
    np.testing.assert_allclose(metrics.probabilities(again), metrics.probabilities(ft2.test_predictions()),
                               atol=1e-5)


def test_a_keras_application_base_fine_tunes_through_both_stages(tiny, monkeypatch):
    """The path of every Keras application (its own preprocessing, batch norm) through the two-stage recipe, on a
    small stand-in for DenseNet121 (the quick profile itself fine-tunes SqueezeNet only)."""
    monkeypatch.setattr(keras.applications, "DenseNet121", small_densenet)
    _, index, profile = tiny
    ft2 = runs.get_or_train("densenet121_ft2", profile, index, verbose=0)
    assert ft2.history["stage"].tolist() == ["head"] * profile.max_epochs + ["fine-tune"] * profile.max_epochs
    assert ft2.metrics["pretrained"] is True and not ft2.metrics["diverged"]  # the stand-in counts as ImageNet's
    bn = ft2.load_model().get_layer("densenet121_features").get_layer("densenet121").get_layer("conv1_bn")
    np.testing.assert_array_equal(bn.moving_mean.numpy(), 0.0)  # "ImageNet" statistics kept through fine-tuning
    np.testing.assert_array_equal(bn.moving_variance.numpy(), 1.0)
    assert np.allclose(metrics.probabilities(ft2.test_predictions()).sum(axis=1), 1.0, atol=1e-4)


# ---- levers of the improved recipe -------------------------------------------------------------------

@pytest.mark.parametrize("optimizer, label_smoothing, ema", [("adam", None, False), ("sgd", 0.1, True)])
def test_fit_creates_no_variable_after_compile_model(optimizer, label_smoothing, ema):
    """A training step that creates variables while traced (Keras's lazy optimizer slots and metric totals) is
    traced a second time: that doubled every run's graph building (Red David: 50 s of tracing instead of 17)."""
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(3, activation="softmax")])
    training.compile_model(model, optimizer, 1e-3, label_smoothing=label_smoothing, ema=ema)
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = np.arange(16) % 3
    created = []

    def creator(next_creator, **kwargs):
        created.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        model.fit(x, keras.utils.to_categorical(y, 3) if label_smoothing else y, batch_size=8, epochs=1, verbose=0)
    assert created == [], f"fit created {created}: its training step was traced twice"


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
    record = training.train(exp, profile, quiet_split(index, profile), verbose=0)
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


@needs_bfloat16_convolutions
def test_mixed_precision_changes_the_layers_and_the_fingerprint_not_the_outputs_dtype():
    profile = config.PROFILES["quick"]
    exp = experiments.experiment("polazaro_baseline", profile)
    full, _ = training.build_model(exp, profile)
    half, _ = training.build_model(dataclasses.replace(exp, precision="mixed_bfloat16"), profile)
    out = half(np.zeros((1, exp.image_size, exp.image_size, 3), "float32"))
    assert half.get_layer("logits").compute_dtype == "bfloat16" and out.dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    assert run_records.architecture(full) != run_records.architecture(half)


def test_an_image_that_cannot_be_decoded_mid_training_is_named(tiny, tmp_path):
    """A file replaced after indexing (here by a TIFF) stops training with its name, not a tensor error."""
    from PIL import Image

    _, _, profile = tiny
    base = make_release(tmp_path / "dataset", counts={"COVID": 12, "Normal": 12, "Viral Pneumonia": 12})
    index = dataset.index_dataset(base, progress=False, cache=False)
    split = quiet_split(index, profile)
    victim = split[split["split"] == "train"]["path"].iloc[3]
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(victim, format="TIFF")
    exp = experiments.experiment("polazaro_baseline", profile)
    with pytest.raises(dataset.UndecodableImageError, match=victim.split("/")[-1]):
        training.train(exp, profile, split, verbose=0)


def test_peak_memory_is_in_megabytes_on_linux_and_macos(monkeypatch):
    """ru_maxrss counts kilobytes on Linux and bytes on macOS: 2 GB must read as 2048 MB on both."""
    import resource
    import sys
    from types import SimpleNamespace

    for platform, peak in (("linux", 2 * 1024**2), ("darwin", 2 * 1024**3)):
        monkeypatch.setattr(sys, "platform", platform)
        monkeypatch.setattr(resource, "getrusage", lambda who, peak=peak: SimpleNamespace(ru_maxrss=peak))
        assert training.peak_memory_mb() == pytest.approx(2048)


def test_a_variant_is_trained_once_and_its_record_reused_only_while_its_settings_match(tiny, monkeypatch):
    """runs.train_unless_recorded, what the search benchmarks call for experiments that are not named runs."""
    _, index, profile = tiny
    exp = dataclasses.replace(experiments.experiment("polazaro_baseline", profile), name="variant", epochs=1)
    split = quiet_split(index, profile)
    first = runs.train_unless_recorded(exp, profile, split)
    trained = []
    monkeypatch.setattr(training, "train", lambda *args, **kwargs: trained.append(args[0]) or first)
    assert runs.train_unless_recorded(exp, profile, split).path == first.path and not trained  # reused
    other = dataclasses.replace(exp, learning_rate=exp.learning_rate / 10)
    runs.train_unless_recorded(other, profile, split)
    assert trained == [other]  # other settings under the same name: trained again, never the old record
