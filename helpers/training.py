"""Build a run's model, train it with resumable callbacks, evaluate it and keep its record.

``train`` resumes from ``<run>.partial/`` when an earlier attempt was interrupted (the backup, the best weights so
far, the CSV history and early stopping's patience all persist); ``runs.get_or_train`` decides whether to call it.
"""
from __future__ import annotations

import contextlib
import resource
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from . import backbones, config, dataset, feature_cache, metrics, models, pipeline, protocols, run_records
from .experiments import Experiment
from .files import CorruptFileError, read_json, write_json

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds", "selected"]


# --------------------------------------------------------------------------------------------------
# The model of a run
# --------------------------------------------------------------------------------------------------

def build_model(exp: Experiment, profile: config.Profile, *, weights: bool = True) -> tuple[keras.Model, bool | None]:
    """The untrained model of ``exp`` and whether its base is ImageNet-trained (None for scratch nets).

    Scratch nets come from ``models``; transfer runs are ``backbones.classifier(extractor, head)``, whose two
    parts are ``model.get_layer(f"{exp.model}_features")`` and ``model.get_layer(f"head_{exp.head}")``.
    ``weights=False`` skips loading ImageNet weights (enough to fingerprint the architecture). Layers take the
    experiment's ``precision`` as their dtype policy (input scaling and the softmax stay float32).
    """
    with dtype_policy(exp.precision):
        if exp.family == "scratch":
            return models.build(exp.model, exp.image_size), None
        extractor, pretrained = backbones.feature_extractor(exp.model, exp.image_size, weights=weights,
                                                            allow_random=profile.allow_random_weights)
        top = backbones.head(extractor.output_shape[-1], exp.head, seed=profile.seed)
        return backbones.classifier(extractor, top), pretrained


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras's global dtype policy set to ``name`` (e.g. ``mixed_bfloat16``) for the layers built inside."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def compile_model(model: keras.Model, optimizer: str, learning_rate: float, decay_steps: int | None = None, *,
                  warmup_steps: int = 0, weight_decay: float = 0.0, ema: bool = False,
                  label_smoothing: float | None = None, steps_per_execution: int = 1) -> None:
    """Cross-entropy with Adam (AdamW when ``weight_decay`` > 0) or the thesis's SGD (momentum 0.9, Nesterov).

    With ``decay_steps`` the learning rate follows a cosine decay to zero over that many steps, after a linear
    warm-up from zero over ``warmup_steps``; ``ema`` keeps a moving average of the weights (the optimizer's
    ``use_ema``); ``label_smoothing`` (not None) means one-hot labels, smoothed by that much;
    ``steps_per_execution``: training steps per call into TensorFlow (the same updates, less overhead per step).
    """
    if decay_steps:
        rate = keras.optimizers.schedules.CosineDecay(0.0 if warmup_steps else learning_rate, decay_steps,
                                                      warmup_target=learning_rate if warmup_steps else None,
                                                      warmup_steps=warmup_steps)
    else:
        rate = learning_rate
    if optimizer == "adam" and weight_decay:
        opt = keras.optimizers.AdamW(rate, weight_decay=weight_decay, use_ema=ema)
    elif optimizer == "adam":
        opt = keras.optimizers.Adam(rate, use_ema=ema)
    elif optimizer == "sgd":
        opt = keras.optimizers.SGD(rate, momentum=0.9, nesterov=True, use_ema=ema)
    else:
        raise ValueError(f"Unknown optimizer {optimizer!r}; use 'adam' or 'sgd'.")
    if label_smoothing is None:
        loss, accuracy = "sparse_categorical_crossentropy", keras.metrics.SparseCategoricalAccuracy("accuracy")
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy("accuracy")
    model.compile(optimizer=opt, loss=loss, metrics=[accuracy], steps_per_execution=steps_per_execution)
    # Every variable of a training step exists before fit traces it: a step that creates the optimizer's slots (or
    # a metric's totals) while traced is traced a second time, which doubled each run's graph building.
    model.optimizer.build(model.trainable_variables)


# --------------------------------------------------------------------------------------------------
# Callbacks that survive an interruption
# --------------------------------------------------------------------------------------------------

class EpochTimes(keras.callbacks.Callback):
    """Appends each epoch's wall time to its own CSV (``epoch,epoch_seconds``): it needs no other callback."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        new = not self.path.exists()
        with self.path.open("a") as handle:
            handle.write(("epoch,epoch_seconds\n" if new else "") + f"{epoch},{time.perf_counter() - self._start}\n")


class EpochLine(keras.callbacks.Callback):
    """One compact line per epoch (loss, accuracy, validation loss and accuracy, seconds), instead of Keras's
    ``Epoch n/m`` header plus progress line: what a notebook shows while a run trains."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"{name.replace('val_', 'validation ')} {logs[name]:.3f}"
                 for name in ("loss", "accuracy", "val_loss", "val_accuracy") if name in logs]
        print(f"epoch {epoch + 1}/{self.params['epochs']}: " + ", ".join(parts) +
              f" ({time.perf_counter() - self._start:.0f} s)")


def stage_line(what: str, history: pd.DataFrame) -> str:
    """One line for a finished stage: its epochs and seconds, and the kept epoch's validation loss and accuracy."""
    kept = history[history["selected"]].iloc[-1] if history["selected"].any() else history.iloc[-1]
    return (f"{what}: {len(history)} epochs in {history['epoch_seconds'].sum():.0f} s; kept epoch "
            f"{int(kept['epoch']) + 1}: validation loss {kept['val_loss']:.3f}, accuracy {kept['val_accuracy']:.3f}")


class ResumingCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keeps the weights of the lowest validation loss; when training resumes at epoch k (as
    ``BackupAndRestore`` decides), it starts from the best loss of epochs 0..k-1 in the CSV history, so a
    worse epoch after the restart cannot overwrite the best weights of before it."""

    def __init__(self, path: Path, history_file: Path):
        super().__init__(str(path), monitor="val_loss", save_best_only=True, save_weights_only=True)
        self.history_file = Path(history_file)
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch and epoch > 0 and self.history_file.exists() and Path(self.filepath).exists():
            earlier = pd.read_csv(self.history_file).query("epoch < @epoch")["val_loss"]
            if len(earlier):
                self.best = float(earlier.min())
        self._first_epoch = False
        super().on_epoch_begin(epoch, logs)


class ResumingEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping on validation loss whose patience survives an interruption: after every epoch its
    counter and best value are saved; when training resumes at epoch k, the state after epoch k-1 returns."""

    def __init__(self, state_file: Path, patience: int):
        super().__init__(monitor="val_loss", patience=patience)
        self.state_file = Path(state_file)
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch and epoch > 0:
            state = self._states().get(str(epoch - 1))
            if state is None:  # epochs ran but their state is gone: resuming would forget the patience used
                raise CorruptFileError(
                    f"{self.state_file} has no early-stopping state for epoch {epoch} (index {epoch - 1}), which "
                    f"the run is resuming after. Delete {self.state_file.parent} to train the run from the start.")
            self.wait, self.best, self.best_epoch = state["wait"], state["best"], state["best_epoch"]
        self._first_epoch = False

    def _states(self) -> dict:
        try:
            return read_json(self.state_file)
        except CorruptFileError as error:
            raise CorruptFileError(f"{error} It holds early stopping's patience of an interrupted run; delete "
                                   f"{self.state_file.parent} to train the run from the start.") from error

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        states = self._states()
        best = None if self.best is None else float(self.best)
        states[str(epoch)] = {"wait": self.wait, "best": best, "best_epoch": self.best_epoch}
        write_json(self.state_file, states)


def _fit(model, x, epochs, work: Path, exp: Experiment, callbacks, verbose, *, y=None, validation=None,
         stage: str = "") -> pd.DataFrame:
    """``model.fit`` with the callbacks of one stage: epoch times, CSV history, backup/restore (resume), the
    best-validation-loss checkpoint and, where asked, early stopping. Returns the stage's history, with a
    ``selected`` column marking the epoch whose weights the model holds afterwards."""
    history_file, times_file = work / f"history{stage}.csv", work / f"times{stage}.csv"
    best = work / f"best{stage}.weights.h5"
    # with EMA, the averaged weights are swapped in for validation and the checkpoint (so it must come first)
    swap = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if model.optimizer.use_ema else []
    # Everything an epoch leaves behind is written before the backup that lets a resumed run skip that epoch.
    steps = [*swap, EpochTimes(times_file), keras.callbacks.CSVLogger(str(history_file), append=True),
             ResumingCheckpoint(best, history_file)]
    if exp.early_stopping:
        steps.append(ResumingEarlyStopping(work / f"early_stopping{stage}.json", exp.early_stopping))
    # double_checkpoint: a backup cut short by a kill falls back to the one before it
    steps += [keras.callbacks.BackupAndRestore(str(work / f"backup{stage}"), double_checkpoint=True),
              keras.callbacks.TerminateOnNaN()]
    if verbose == 2:  # one compact line per epoch, printed by EpochLine instead of Keras
        steps.append(EpochLine())
        verbose = 0
    model.fit(x, y, validation_data=validation, epochs=epochs, callbacks=[*steps, *callbacks],
              batch_size=exp.batch_size if y is not None else None,
              shuffle=y is not None, verbose=verbose)  # a tf.data pipeline shuffles itself
    history = _stage_history(history_file, times_file, exp)
    if exp.selection == "best_val_loss" and best.exists():  # no file: no epoch ended with a finite loss
        model.load_weights(best)
    return history


def _stage_history(history_file: Path, times_file: Path, exp: Experiment) -> pd.DataFrame:
    """The stage's history, one row per epoch (a re-run epoch counts once, its last run), with its wall time
    and ``selected`` marking the epoch whose weights are kept."""
    history = pd.read_csv(history_file).drop_duplicates("epoch", keep="last")
    times = pd.read_csv(times_file).drop_duplicates("epoch", keep="last")
    history = history.merge(times, on="epoch", how="left").reset_index(drop=True)
    if exp.selection == "best_val_loss" and np.isfinite(history["val_loss"]).any():
        selected = int(history["val_loss"].idxmin())
    elif exp.selection in ("last_epoch", "best_val_loss"):  # the latter: every epoch diverged
        selected = len(history) - 1
    else:
        raise ValueError(f"Unknown selection {exp.selection!r}; use 'best_val_loss' or 'last_epoch'.")
    return history.assign(selected=history.index == selected)


# --------------------------------------------------------------------------------------------------
# Training one run
# --------------------------------------------------------------------------------------------------

def image_datasets(exp: Experiment, profile: config.Profile, split: pd.DataFrame):
    """The training and validation pipelines of ``exp`` on ``split`` (oversampling, augmentation, one-hot labels
    where the run has them) and the number of training rows: what a run trains on, for ``train`` and benchmarks."""
    train_rows = split[split["split"] == "train"]
    if exp.oversample_covid:
        train_rows = protocols.oversample(train_rows, "COVID", exp.oversample_covid)
    one_hot = _one_hot(exp)
    train_ds = pipeline.make_dataset(train_rows, exp.image_size, exp.batch_size, training=True,
                                 augment=pipeline.project_augmentation(exp.augment, profile.seed), seed=profile.seed,
                                 one_hot=one_hot, mixup=exp.mixup)
    val_ds = pipeline.make_dataset(split[split["split"] == "val"], exp.image_size, exp.batch_size, one_hot=one_hot)
    return train_ds, val_ds, len(train_rows)


def _one_hot(exp: Experiment) -> bool:
    """Label smoothing and MixUp need one-hot labels; everything else uses class ids."""
    return bool(exp.label_smoothing or exp.mixup)


def _compile_image_stage(model, exp: Experiment, steps_per_epoch: int) -> None:
    """Compile for the stage that trains on images, with the experiment's schedule, optimizer and loss."""
    decay = (exp.epochs - exp.warmup_epochs) * steps_per_epoch if exp.cosine else None
    compile_model(model, exp.optimizer, exp.learning_rate, decay, warmup_steps=exp.warmup_epochs * steps_per_epoch,
                  weight_decay=exp.weight_decay, ema=exp.ema,
                  label_smoothing=exp.label_smoothing if _one_hot(exp) else None)


def _fit_scratch(built, exp, profile, split, work, callbacks, verbose):
    """A from-scratch net (``built``: ``build_model``'s pair) on images, augmented on the fly where the experiment
    says so."""
    model, _ = built
    train_ds, val_ds, n_train = image_datasets(exp, profile, split)
    _compile_image_stage(model, exp, len(train_ds))
    history = _fit(model, train_ds, exp.epochs, work, exp, callbacks, verbose, validation=val_ds)
    return model, history, n_train, None


# A head on cached features is a few small matrix products per step, so the per-step overhead of a call into
# TensorFlow dominates; 32 steps per call train it faster with the same updates (benchmarks/results.md, "Steps per
# execution"). The image stages keep one step per call: there the network's own work dominates.
HEAD_STEPS_PER_EXECUTION = 32


def _train_head(built, exp, profile, split, work, callbacks, verbose, *, epochs, optimizer, learning_rate, stage=""):
    """Train the head of the classifier (``built``: ``build_model``'s pair) on cached features of the frozen base
    (views 0..``exp.views``)."""
    model, pretrained = built
    extractor, top = model.get_layer(f"{exp.model}_features"), model.get_layer(f"head_{exp.head}")
    train_rows, val_rows = split[split["split"] == "train"], split[split["split"] == "val"]

    def features(rows, view):
        return feature_cache.cached_features(extractor, rows, view=view, augment=exp.augment, seed=profile.seed,
                                             progress=verbose == 1)  # a bar only where fit shows bars too

    compile_model(top, optimizer, learning_rate, steps_per_execution=HEAD_STEPS_PER_EXECUTION)
    history = pd.DataFrame(columns=HISTORY_COLUMNS)
    done = work / f"head{stage}.weights.h5"
    if done.exists():  # stage finished in an interrupted earlier attempt
        top.load_weights(done)
        history = _stage_history(work / f"history{stage}.csv", work / f"times{stage}.csv", exp)
    elif epochs:  # only a head that trains needs features (v0 and one-stage ft do not)
        x = np.concatenate([features(train_rows, v) for v in range(exp.views + 1)])
        y = np.tile(train_rows["class_id"].to_numpy(), exp.views + 1)
        validation = (features(val_rows, 0), val_rows["class_id"].to_numpy())
        # a head on cached features trains in seconds: one line for the stage instead of one per epoch
        history = _fit(top, x, epochs, work, exp, callbacks, 0 if verbose == 2 else verbose, y=y,
                       validation=validation, stage=stage)
        if verbose == 2:
            print(stage_line("head on cached features", history))
        top.save_weights(done)
    return model, history, len(train_rows) * (exp.views + 1), pretrained


def _fit_frozen(built, exp, profile, split, work, callbacks, verbose):
    """v0 (head never trained) and ec (head trained on the frozen base's cached features)."""
    epochs = 0 if exp.scheme == "v0" else exp.epochs
    model, history, n_train, pretrained = _train_head(
        built, exp, profile, split, work, callbacks, verbose, epochs=epochs, optimizer=exp.optimizer,
        learning_rate=exp.learning_rate)
    model.get_layer(f"{exp.model}_features").trainable = False
    return model, history, n_train, pretrained


def _fit_fine_tune(built, exp, profile, split, work, callbacks, verbose):
    """ft: everything trainable from a random head; ft2: head first on cached features, then everything."""
    head_epochs = exp.head_epochs if exp.scheme == "ft2" else 0
    model, head_history, _, pretrained = _train_head(
        built, exp, profile, split, work, callbacks if head_epochs else [], verbose, epochs=head_epochs,
        optimizer="adam", learning_rate=exp.head_learning_rate, stage="_head")
    # everything (or everything from exp.fine_tune_from on) but batch norm, which keeps its ImageNet statistics
    backbones.unfreeze_for_fine_tuning(model.get_layer(f"{exp.model}_features"), pretrained=bool(pretrained),
                                       first_trainable=exp.fine_tune_from)
    train_ds, val_ds, n_train = image_datasets(exp, profile, split)
    _compile_image_stage(model, exp, len(train_ds))
    history = _fit(model, train_ds, exp.epochs, work, exp, callbacks, verbose, validation=val_ds)
    if len(head_history):
        history = pd.concat([head_history.assign(stage="head"),
                             history.assign(stage="fine-tune", epoch=history["epoch"] + len(head_history))],
                            ignore_index=True)
    return model, history, n_train, pretrained


def _diverged(history: pd.DataFrame) -> bool:
    """Whether no epoch of the last training stage ended with a finite validation loss (so the model's weights
    are those of a diverged run: TerminateOnNaN stopped it and no best checkpoint exists)."""
    last = history[history["stage"] == history["stage"].iloc[-1]] if "stage" in history and len(history) else history
    return bool(len(last)) and not np.isfinite(last["val_loss"].astype(float)).any()


def _selected_epoch(history: pd.DataFrame) -> int | None:
    """The (0-based) epoch whose weights were evaluated: the last stage's selected epoch."""
    chosen = history.index[history["selected"].astype(bool)] if "selected" in history else []
    return int(history.loc[chosen[-1], "epoch"]) if len(chosen) else None


def identity(exp: Experiment, profile: config.Profile, split: pd.DataFrame, model: keras.Model | None = None) -> dict:
    """The run config of ``exp`` on ``split`` (``run_records.run_config``), with the fingerprint of its architecture
    (of ``model`` where the caller has built it, else of one built here without ImageNet weights)."""
    if model is None:
        model, _ = build_model(exp, profile, weights=False)
    return run_records.run_config(exp, profile, split.attrs["file"], run_records.architecture(model))


def _wipe_unless_resumable(work: Path, cfg: dict) -> None:
    """Remove an interrupted attempt's folder unless it was made with the same settings (then it resumes)."""
    try:
        saved = read_json(work / "config.json")
    except CorruptFileError as error:
        print(f"Starting {cfg['name']} afresh: the interrupted attempt's settings cannot be read ({error})")
        saved = None
    if saved is None or not run_records.same_run(saved, cfg):
        shutil.rmtree(work)  # an interrupted attempt at different settings cannot be resumed


def peak_memory_mb() -> float:
    """This process's peak resident memory in MB (``ru_maxrss`` counts kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def train(exp: Experiment, profile: config.Profile, split: pd.DataFrame, callbacks=(), verbose: int = 2
          ) -> run_records.Record:
    """Train ``exp`` on ``split`` (as ``protocols.run_split`` returns it, naming its file), resuming from
    ``<run>.partial/`` if an earlier attempt was interrupted, evaluate on validation and test, write the record."""
    keras.utils.set_random_seed(profile.seed)
    built = build_model(exp, profile)  # once: its fingerprint names the run's settings, then it trains
    cfg = identity(exp, profile, split, built[0])
    final = profile.runs_dir / exp.name
    work = final.with_name(f"{exp.name}.partial")
    if work.exists():
        _wipe_unless_resumable(work, cfg)
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "config.json", cfg)

    fit = {"scratch": _fit_scratch, "v0": _fit_frozen, "ec": _fit_frozen, "ft": _fit_fine_tune,
           "ft2": _fit_fine_tune}[exp.scheme]
    with dataset.naming_undecodable(split):  # a decode error names the file, not a tensor
        model, history, train_images, pretrained = fit(built, exp, profile, split, work, list(callbacks), verbose)
        evaluated = split[split["split"].isin(["val", "test"])]
        predictions = metrics.predict(model, evaluated, exp.image_size, exp.batch_size, tta_flip=exp.tta_flip)
    seconds = float(history["epoch_seconds"].sum()) if len(history) else 0.0
    last = history.iloc[-1] if len(history) else {}
    image_stage = history[history["stage"] == "fine-tune"] if "stage" in history else history
    image_seconds = float(image_stage["epoch_seconds"].sum()) if len(image_stage) else 0.0
    scores = {
        "test": metrics.classification_metrics(*metrics.true_and_proba(predictions, "test"), seed=profile.seed),
        "val": metrics.classification_metrics(*metrics.true_and_proba(predictions, "val"), seed=profile.seed),
        "last_epoch": {k: float(last[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in last},
        "selected_epoch": _selected_epoch(history),
        "epochs_run": len(history),
        "train_images": int(train_images),
        "train_seconds": seconds,
        "images_per_second": train_images * len(image_stage) / image_seconds if image_seconds else None,
        "peak_memory_mb": peak_memory_mb(),
        "parameters": int(model.count_params()),
        "pretrained": pretrained,
        "diverged": _diverged(history),
    }
    if scores["diverged"]:
        print(f"{exp.name} diverged: no epoch of its last stage ended with a finite validation loss (training "
              f"losses {history['loss'].round(3).tolist()}), so its outputs are NaN and every image is predicted "
              "as the first class. The record says so ('diverged' in metrics.json).")
    record = run_records.write_record(final, cfg, history, scores, predictions, model)
    shutil.rmtree(work, ignore_errors=True)
    return record
