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
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import (confusion_matrix, f1_score, log_loss, precision_recall_fscore_support,
                             roc_auc_score)

from . import config, data, models
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


def predict(model: keras.Model, frame: pd.DataFrame, image_size: int, batch_size: int = 32) -> pd.DataFrame:
    """Class probabilities for the rows of ``frame`` in their order (an unshuffled, unaugmented pass)."""
    proba = model.predict(data.make_dataset(frame, image_size, batch_size), verbose=0)
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


def augmentation_for(kind: str | None, seed: int = config.SEED):
    """The augmentation each project used, as Keras preprocessing layers (None: no augmentation)."""
    if kind is None:
        return None
    if kind == "thesis":  # horizontal flip, zoom out to 20 %, brightness +-20 % of the range
        return data.augmentation(flip=True, zoom=(0.0, 0.2), brightness=0.2, seed=seed)
    if kind == "polazaro":  # left-right flip and rotation within +-15 degrees
        return data.augmentation(flip=True, rotation=15 / 360, seed=seed)
    raise ValueError(f"Unknown augmentation {kind!r}; use 'thesis', 'polazaro' or None.")


def run_config(exp: Experiment, profile: config.Profile, split_file: str) -> dict:
    """What identifies a run: the experiment, the profile's data cap and seed, and the split file used."""
    return {**asdict(exp), "profile": profile.name, "max_per_class": profile.max_per_class,
            "seed": profile.seed, "split_file": split_file}


def _same_run(a: dict, b: dict) -> bool:
    keys = set(a) | set(b)
    ignore = {"source"}
    return all(a.get(k) == b.get(k) for k in keys - ignore)


def train(exp: Experiment, profile: config.Profile, split: pd.DataFrame, split_file: str,
          callbacks=(), verbose: int = 2) -> Record:
    """Train ``exp`` on ``split``, resuming from ``<run>.partial/`` if an earlier attempt was interrupted,
    evaluate on validation and test, and write the run record."""
    keras.utils.set_random_seed(profile.seed)
    cfg = run_config(exp, profile, split_file)
    final = profile.runs_dir / exp.name
    work = final.with_name(f"{exp.name}.partial")
    if work.exists() and not _same_run(_read_json(work / "config.json"), cfg):
        shutil.rmtree(work)  # an interrupted attempt at different settings cannot be resumed
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(cfg, indent=2))

    train_rows = split[split["split"] == "train"]
    if exp.oversample_covid:
        train_rows = data.oversample(train_rows, "COVID", exp.oversample_covid)
    train_ds = data.make_dataset(train_rows, exp.image_size, exp.batch_size, training=True,
                                 augment=augmentation_for(exp.augment, profile.seed), seed=profile.seed)
    val_rows = split[split["split"] == "val"]
    val_ds = data.make_dataset(val_rows, exp.image_size, exp.batch_size)

    model = models.build(exp.model, exp.image_size)
    optimizer = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}[exp.optimizer]
    model.compile(optimizer=optimizer(learning_rate=exp.learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    steps = [_EpochTimer(), keras.callbacks.CSVLogger(str(work / "history.csv"), append=True),
             keras.callbacks.BackupAndRestore(str(work / "backup"))]
    if exp.early_stopping:
        steps.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=exp.early_stopping,
                                                   restore_best_weights=True))
    model.fit(train_ds, validation_data=val_ds, epochs=exp.epochs, callbacks=[*steps, *callbacks],
              shuffle=False, verbose=verbose)  # the tf.data pipeline shuffles the training set itself

    history = pd.read_csv(work / "history.csv").drop_duplicates("epoch", keep="last").reset_index(drop=True)
    evaluated = split[split["split"].isin(["val", "test"])]
    predictions = predict(model, evaluated, exp.image_size, exp.batch_size)
    seconds = float(history["epoch_seconds"].sum())
    metrics = {
        "test": classification_metrics(*_true_and_proba(predictions, "test"), seed=profile.seed),
        "val": classification_metrics(*_true_and_proba(predictions, "val"), seed=profile.seed),
        "last_epoch": {k: float(history.iloc[-1][k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
        "epochs_run": int(len(history)),
        "train_images": int(len(train_rows)),
        "train_seconds": seconds,
        "images_per_second": len(train_rows) * len(history) / seconds if seconds else None,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": int(model.count_params()),
    }
    record = write_record(final, cfg, history, metrics, predictions, model)
    shutil.rmtree(work, ignore_errors=True)
    return record


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
    split_file = split.attrs["file"]
    cfg = run_config(exp, profile, split_file)
    final = profile.runs_dir / exp.name
    if not retrain and (final / "config.json").exists():
        try:
            record = read_record(final)
        except FileNotFoundError:
            record = None
        if record is not None and _same_run(record.config, cfg):
            print(f"Reusing the run record {config.short_path(final)} ({record.metrics['epochs_run']} epochs, "
                  f"{record.metrics['train_seconds']:.0f} s of training); delete it to train again.")
            return record
    return train(exp, profile, split, split_file, verbose=verbose)


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
