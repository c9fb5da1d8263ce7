"""Train with resumable callbacks, evaluate on an unshuffled pass, and keep run records.

A run record is a folder ``data/runs/<profile>/<run>/`` with ``config.json``, ``history.csv``,
``metrics.json``, ``predictions.csv`` and ``model.keras``. It is written under a temporary name and renamed
when complete, so a record that exists is always whole. ``get_or_train`` returns the record whose config
matches, and trains (resuming an interrupted attempt) otherwise.
"""
from __future__ import annotations

import json
import math
import os
import resource
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import (confusion_matrix, f1_score, log_loss, precision_recall_fscore_support,
                             roc_auc_score)

from . import backbones, config, data, models
from . import features as features_cache
from .experiments import Experiment, experiment

RECORD_FILES = ("config.json", "history.csv", "metrics.json", "predictions.csv", "model.keras")


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------

def classification_metrics(y_true, proba, seed: int = config.SEED, n_resamples: int = 2000) -> dict:
    """Loss, accuracy with a 95 % bootstrap interval, per-class sensitivity / precision / F1 / AUC, macro-F1,
    one-vs-rest AUC and the confusion matrix (rows true, columns predicted, class order of ``data.CLASSES``).

    Undefined values (precision of a class never predicted, AUC of a class absent) are None, not 0.
    """
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    labels = list(range(len(data.CLASSES)))
    predicted = proba.argmax(axis=1)
    correct = (predicted == y_true).astype(float)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, predicted, labels=labels, zero_division=np.nan)
    interval = _bootstrap_interval(correct, seed, n_resamples)
    clipped = np.clip(proba, 1e-7, 1.0)  # float32 softmax outputs: keep log loss finite and rows summing to 1
    per_class = {}
    for k, name in enumerate(data.CLASSES):
        present = 0 < (y_true == k).sum() < len(y_true)
        auc = roc_auc_score(y_true == k, proba[:, k]) if present else np.nan
        per_class[name] = {"sensitivity": recall[k], "precision": precision[k], "f1": f1[k], "auc": auc,
                           "support": int(support[k])}
    aucs = [c["auc"] for c in per_class.values() if not np.isnan(c["auc"])]
    return _json_ready({
        "n": len(y_true),
        "loss": log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=labels),
        "accuracy": correct.mean(),
        "accuracy_ci_low": interval[0], "accuracy_ci_high": interval[1],
        "macro_f1": f1_score(y_true, predicted, labels=labels, average="macro", zero_division=0),
        "auc_ovr_macro": float(np.mean(aucs)) if aucs else np.nan,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, predicted, labels=labels).tolist(),
    })


def _bootstrap_interval(correct: np.ndarray, seed: int, n_resamples: int) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of 0/1 outcomes (scipy.stats.bootstrap)."""
    if correct.min() == correct.max():  # all right or all wrong: every resample gives the same accuracy
        return float(correct[0]), float(correct[0])
    result = stats.bootstrap((correct,), np.mean, n_resamples=n_resamples, confidence_level=0.95,
                             method="percentile", random_state=seed)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _json_ready(value):
    """NumPy scalars to Python, NaN to None, recursively: metrics.json stays standard JSON."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def predict(model: keras.Model, frame: pd.DataFrame, image_size: int, batch_size: int = 32,
            preprocess=None) -> pd.DataFrame:
    """Class probabilities for the rows of ``frame`` in their order (an unshuffled, unaugmented pass);
    ``preprocess`` transforms each batch of [0, 255] images first (e.g. ``explain.masking``)."""
    proba = model.predict(data.make_dataset(frame, image_size, batch_size, preprocess=preprocess), verbose=0)
    out = pd.DataFrame({"relpath": frame["relpath"].to_numpy(), "true": frame["class_id"].to_numpy(),
                        "predicted": proba.argmax(axis=1)})
    if "split" in frame:
        out.insert(1, "split", frame["split"].to_numpy())
    for k, name in enumerate(data.CLASSES):
        out[f"p_{name}"] = proba[:, k]
    return out


def probabilities(predictions: pd.DataFrame) -> np.ndarray:
    """The probability columns of a predictions table as an (n, 3) array."""
    return predictions[[f"p_{name}" for name in data.CLASSES]].to_numpy()


# --------------------------------------------------------------------------------------------------
# Run records
# --------------------------------------------------------------------------------------------------

@dataclass
class Record:
    """A finished run: its config, per-epoch history, metrics and predictions; the model loads on demand."""

    path: Path
    config: dict
    history: pd.DataFrame
    metrics: dict
    predictions: pd.DataFrame

    @property
    def name(self) -> str:
        return self.config["name"]

    def load_model(self) -> keras.Model:
        """The trained model, loaded with Keras's safe mode (no arbitrary code from the file)."""
        return keras.saving.load_model(self.path / "model.keras", safe_mode=True)

    def test_predictions(self) -> pd.DataFrame:
        return self.predictions[self.predictions["split"] == "test"].reset_index(drop=True)


def read_record(path: str | os.PathLike) -> Record:
    """Read a complete run record; a missing file is an error that names it."""
    path = Path(path)
    missing = [name for name in RECORD_FILES if not (path / name).exists()]
    if missing:
        raise FileNotFoundError(f"{path} is not a complete run record (missing: {', '.join(missing)}).")
    return Record(path=path,
                  config=json.loads((path / "config.json").read_text()),
                  history=pd.read_csv(path / "history.csv"),
                  metrics=json.loads((path / "metrics.json").read_text()),
                  predictions=pd.read_csv(path / "predictions.csv"))


def write_record(path: Path, run_config: dict, history: pd.DataFrame, metrics: dict,
                 predictions: pd.DataFrame, model: keras.Model) -> Record:
    """Write all five files into a temporary folder, then rename it to ``path`` (replacing an old record)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(run_config, indent=2))
    history.to_csv(tmp / "history.csv", index=False)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    predictions.to_csv(tmp / "predictions.csv", index=False)
    model.save(tmp / "model.keras")
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return read_record(path)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------

class _EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` to each epoch's logs, so the CSV history holds the time spent per epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


def run_config(exp: Experiment, profile: config.Profile, split_file: str) -> dict:
    """What identifies a run: the experiment, the profile's data cap and seed, and the split file used."""
    return {**asdict(exp), "profile": profile.name, "max_per_class": profile.max_per_class,
            "seed": profile.seed, "split_file": split_file}


def _same_run(saved: dict, current: dict) -> bool:
    """Whether a saved run config describes the current one. An Experiment field that did not exist when the
    record was written counts as having its default value; the free-text ``source`` is not compared."""
    defaults = {f.name: f.default for f in fields(Experiment)}
    saved = {**defaults, **saved}
    return all(saved.get(k) == current.get(k) for k in (set(saved) | set(current)) - {"source"})


def train(exp: Experiment, profile: config.Profile, split: pd.DataFrame, callbacks=(), verbose: int = 2) -> Record:
    """Train ``exp`` on ``split`` (as ``data.load_split`` returns it, naming its file), resuming from
    ``<run>.partial/`` if an earlier attempt was interrupted, evaluate on validation and test, write the record."""
    keras.utils.set_random_seed(profile.seed)
    cfg = run_config(exp, profile, split.attrs["file"])
    final = profile.runs_dir / exp.name
    work = final.with_name(f"{exp.name}.partial")
    if work.exists() and not _same_run(_read_json(work / "config.json"), cfg):
        shutil.rmtree(work)  # an interrupted attempt at different settings cannot be resumed
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(cfg, indent=2))

    fit = {"scratch": _fit_scratch, "v0": _fit_frozen, "ec": _fit_frozen, "ft": _fit_fine_tune,
           "ft2": _fit_fine_tune}[exp.scheme]
    model, history, train_images, pretrained = fit(exp, profile, split, work, list(callbacks), verbose)

    evaluated = split[split["split"].isin(["val", "test"])]
    predictions = predict(model, evaluated, exp.image_size, exp.batch_size)
    seconds = float(history["epoch_seconds"].sum()) if len(history) else 0.0
    last = history.iloc[-1] if len(history) else {}
    image_stage = history[history["stage"] == "fine-tune"] if "stage" in history else history
    image_seconds = float(image_stage["epoch_seconds"].sum()) if len(image_stage) else 0.0
    metrics = {
        "test": classification_metrics(*_true_and_proba(predictions, "test"), seed=profile.seed),
        "val": classification_metrics(*_true_and_proba(predictions, "val"), seed=profile.seed),
        "last_epoch": {k: float(last[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in last},
        "selected_epoch": _selected_epoch(history),
        "epochs_run": int(len(history)),
        "train_images": int(train_images),
        "train_seconds": seconds,
        "images_per_second": train_images * len(image_stage) / image_seconds if image_seconds else None,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": int(model.count_params()),
        "pretrained": pretrained,
    }
    record = write_record(final, cfg, history, metrics, predictions, model)
    shutil.rmtree(work, ignore_errors=True)
    return record


HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds", "selected"]


def _selected_epoch(history: pd.DataFrame) -> int | None:
    """The (0-based) epoch whose weights were evaluated: the last stage's selected epoch."""
    chosen = history.index[history["selected"].astype(bool)] if "selected" in history else []
    return int(history.loc[chosen[-1], "epoch"]) if len(chosen) else None


def compile_model(model: keras.Model, optimizer: str, learning_rate: float, decay_steps: int | None = None) -> None:
    """Sparse categorical cross-entropy with Adam or the thesis's SGD (momentum 0.9, Nesterov);
    with ``decay_steps``, the learning rate follows a cosine decay to zero over that many steps."""
    rate = (keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps) if decay_steps else learning_rate)
    if optimizer == "adam":
        opt = keras.optimizers.Adam(rate)
    elif optimizer == "sgd":
        opt = keras.optimizers.SGD(rate, momentum=0.9, nesterov=True)
    else:
        raise ValueError(f"Unknown optimizer {optimizer!r}; use 'adam' or 'sgd'.")
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def _fit(model, x, epochs, work: Path, exp: Experiment, callbacks, verbose, *, y=None, validation=None,
         stage: str = "") -> pd.DataFrame:
    """``model.fit`` with the callbacks of one stage: epoch timer, CSV history, backup/restore (resume), the
    best-validation-loss checkpoint and, where asked, early stopping. Returns the stage's history, with a
    ``selected`` column marking the epoch whose weights the model holds afterwards."""
    history_file, backup, best = work / f"history{stage}.csv", work / f"backup{stage}", work / f"best{stage}.weights.h5"
    checkpoint = keras.callbacks.ModelCheckpoint(str(best), monitor="val_loss", save_best_only=True,
                                                 save_weights_only=True)
    resumed_at = _read_json(backup / "training_metadata.json").get("epoch", 0)
    if resumed_at and history_file.exists() and best.exists():
        # Resuming: the best loss among the epochs the backup holds. A later row in the CSV comes from an epoch
        # cut short before its backup was saved; that epoch runs again, and so may its checkpoint.
        earlier = pd.read_csv(history_file).query("epoch < @resumed_at")["val_loss"]
        if len(earlier):
            checkpoint.best = float(earlier.min())
    # double_checkpoint: a backup cut short by a kill falls back to the one before it
    steps = [_EpochTimer(), keras.callbacks.CSVLogger(str(history_file), append=True), checkpoint,
             keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True)]
    if exp.early_stopping:
        steps.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=exp.early_stopping))
    model.fit(x, y, validation_data=validation, epochs=epochs, callbacks=[*steps, *callbacks],
              batch_size=exp.batch_size if y is not None else None,
              shuffle=y is not None, verbose=verbose)  # a tf.data pipeline shuffles itself
    if exp.selection == "best_val_loss":
        model.load_weights(best)
    return _with_selection(pd.read_csv(history_file), exp)


def _with_selection(history: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """The stage history, one row per epoch, with ``selected`` marking the epoch whose weights are kept."""
    history = history.drop_duplicates("epoch", keep="last").reset_index(drop=True)
    if exp.selection == "best_val_loss":
        selected = int(history["val_loss"].idxmin())
    elif exp.selection == "last_epoch":
        selected = len(history) - 1
    else:
        raise ValueError(f"Unknown selection {exp.selection!r}; use 'best_val_loss' or 'last_epoch'.")
    return history.assign(selected=history.index == selected)


def _image_datasets(exp: Experiment, profile: config.Profile, split: pd.DataFrame):
    train_rows = split[split["split"] == "train"]
    if exp.oversample_covid:
        train_rows = data.oversample(train_rows, "COVID", exp.oversample_covid)
    train_ds = data.make_dataset(train_rows, exp.image_size, exp.batch_size, training=True,
                                 augment=data.project_augmentation(exp.augment, profile.seed), seed=profile.seed)
    val_ds = data.make_dataset(split[split["split"] == "val"], exp.image_size, exp.batch_size)
    return train_ds, val_ds, len(train_rows)


def _fit_scratch(exp, profile, split, work, callbacks, verbose):
    """A from-scratch net on images, augmented on the fly where the experiment says so."""
    train_ds, val_ds, n_train = _image_datasets(exp, profile, split)
    model = models.build(exp.model, exp.image_size)
    compile_model(model, exp.optimizer, exp.learning_rate)
    history = _fit(model, train_ds, exp.epochs, work, exp, callbacks, verbose, validation=val_ds)
    return model, history, n_train, None


def _train_head(exp, profile, split, work, callbacks, verbose, *, epochs, optimizer, learning_rate, stage=""):
    """Build the extractor and head, and train the head on cached features (views 0..``exp.views``)."""
    extractor, pretrained = backbones.feature_extractor(exp.model, exp.image_size,
                                                        allow_random=profile.name == "quick")
    top = backbones.head(extractor.output_shape[-1], exp.head, seed=profile.seed)
    train_rows, val_rows = split[split["split"] == "train"], split[split["split"] == "val"]

    def features(rows, view):
        return features_cache.cached_features(extractor, exp.model, exp.image_size, pretrained, rows, view=view,
                                              augment=exp.augment, seed=profile.seed)

    compile_model(top, optimizer, learning_rate)
    history = pd.DataFrame(columns=HISTORY_COLUMNS)
    done = work / f"head{stage}.weights.h5"
    if done.exists():  # stage finished in an interrupted earlier attempt
        top.load_weights(done)
        history = _with_selection(pd.read_csv(work / f"history{stage}.csv"), exp)
    elif epochs:  # only a head that trains needs features (v0 and one-stage ft do not)
        x = np.concatenate([features(train_rows, v) for v in range(exp.views + 1)])
        y = np.tile(train_rows["class_id"].to_numpy(), exp.views + 1)
        validation = (features(val_rows, 0), val_rows["class_id"].to_numpy())
        history = _fit(top, x, epochs, work, exp, callbacks, verbose, y=y, validation=validation, stage=stage)
        top.save_weights(done)
    return extractor, top, history, len(train_rows) * (exp.views + 1), pretrained


def _fit_frozen(exp, profile, split, work, callbacks, verbose):
    """v0 (head never trained) and ec (head trained on the frozen base's cached features)."""
    epochs = 0 if exp.scheme == "v0" else exp.epochs
    extractor, top, history, n_train, pretrained = _train_head(
        exp, profile, split, work, callbacks, verbose, epochs=epochs, optimizer=exp.optimizer,
        learning_rate=exp.learning_rate)
    extractor.trainable = False
    return backbones.classifier(extractor, top), history, n_train, pretrained


def _fit_fine_tune(exp, profile, split, work, callbacks, verbose):
    """ft: everything trainable from a random head; ft2: head first on cached features, then everything."""
    head_epochs = exp.head_epochs if exp.scheme == "ft2" else 0
    extractor, top, head_history, _, pretrained = _train_head(
        exp, profile, split, work, callbacks if head_epochs else [], verbose, epochs=head_epochs,
        optimizer="adam", learning_rate=exp.head_learning_rate, stage="_head")
    model = backbones.classifier(extractor, top)
    backbones.unfreeze_for_fine_tuning(extractor)  # everything but batch norm, which keeps ImageNet statistics
    train_ds, val_ds, n_train = _image_datasets(exp, profile, split)
    decay = exp.epochs * len(train_ds) if exp.cosine else None
    compile_model(model, exp.optimizer, exp.learning_rate, decay)
    history = _fit(model, train_ds, exp.epochs, work, exp, callbacks, verbose, validation=val_ds)
    if len(head_history):
        history = pd.concat([head_history.assign(stage="head"),
                             history.assign(stage="fine-tune", epoch=history["epoch"] + len(head_history))],
                            ignore_index=True)
    return model, history, n_train, pretrained


def _true_and_proba(predictions: pd.DataFrame, split: str):
    part = predictions[predictions["split"] == split]
    return part["true"].to_numpy(), probabilities(part)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def get_or_train(name: str, profile: config.Profile, index: pd.DataFrame | None = None, *,
                 retrain: bool = False, verbose: int = 2) -> Record:
    """The record of run ``name`` in ``profile``: reused when its config matches, trained otherwise.

    ``index`` is the dataset index (``data.index_dataset``); it is built when not given.
    """
    exp = experiment(name, profile)
    if index is None:
        index = data.index_dataset(data.find_dataset(), progress=False)
    split = data.load_split(index, exp.protocol, profile)
    cfg = run_config(exp, profile, split.attrs["file"])
    final = profile.runs_dir / exp.name
    if not retrain and (final / "config.json").exists():
        try:
            record = read_record(final)
        except FileNotFoundError:
            record = None
        weights_now = exp.scheme != "scratch" and backbones.local_weights(backbones.BACKBONES[exp.model][2])
        if record is not None and _same_run(record.config, cfg) and not (
                record.metrics.get("pretrained") is False and weights_now):  # weights have appeared since
            print(f"Reusing the run record {config.short_path(final)} ({record.metrics['epochs_run']} epochs, "
                  f"{record.metrics['train_seconds']:.0f} s of training); delete it to train again.")
            return record
    return train(exp, profile, split, verbose=verbose)


def training_speed(model_name: str, image_size: int, batch_size: int = 32, steps: int = 3) -> float:
    """Training images per second of an architecture on random data (after one warm-up step)."""
    model = models.build(model_name, image_size)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, len(data.CLASSES), batch_size)
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return batch_size * steps / (time.perf_counter() - start)
