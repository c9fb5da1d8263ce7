"""Run records: what a finished run leaves behind, and what identifies it.

A record is a folder ``data/runs/<profile>/<run>/`` with ``config.json``, ``history.csv``, ``metrics.json``,
``predictions.csv`` and ``model.keras``, written atomically (a record that exists is whole). Its config holds
everything that produced it (the experiment, the profile's data cap and seed, the split file and a fingerprint
of the model's architecture), so a record is reused only when all of that is unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from . import config, models
from .experiments import DESCRIPTIVE_FIELDS, Experiment
from .files import atomic_write

RECORD_FILES = ("config.json", "history.csv", "metrics.json", "predictions.csv", "model.keras")


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
        """The trained model, loaded with Keras's safe mode (no arbitrary code from the file). Importing
        ``backbones`` registers its layer (``BackbonePreprocess``), which every transfer model holds: a process that
        never built one (``python -m helpers.evaluate``) could not load those models without it."""
        from . import backbones  # noqa: F401  (registers the project's serializable layers)

        return keras.saving.load_model(self.path / "model.keras", safe_mode=True)

    def test_predictions(self) -> pd.DataFrame:
        return self.predictions[self.predictions["split"] == "test"].reset_index(drop=True)

    def test_images(self, index: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``index`` (``dataset.index_dataset``) this run was tested on, in its predictions' order,
        with the run's own ``split`` column: ready for ``pipeline.make_dataset`` or ``metrics.predict``."""
        tested = self.test_predictions()[["relpath", "split"]]
        rows = tested.merge(index, on="relpath", how="left", validate="one_to_one")
        if rows["path"].isna().any():
            missing = rows.loc[rows["path"].isna(), "relpath"].head(3).tolist()
            raise FileNotFoundError(f"{self.name} was tested on images this dataset copy lacks, e.g. {missing}.")
        return rows


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


def read_records(profile, names) -> tuple[dict, list[str]]:
    """The run records ``names`` of ``profile`` that exist and are complete (name -> record), and the names of
    those that do not."""
    found, missing = {}, []
    for name in names:
        try:
            found[name] = read_record(profile.runs_dir / name)
        except FileNotFoundError:
            missing.append(name)
    return found, missing


def write_record(path: Path, run_config: dict, history: pd.DataFrame, metrics: dict,
                 predictions: pd.DataFrame, model: keras.Model) -> Record:
    """Write all five files into a temporary folder, then rename it to ``path`` (replacing an old record)."""
    def fill(folder: Path) -> None:
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(run_config, indent=2))
        history.to_csv(folder / "history.csv", index=False)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
        predictions.to_csv(folder / "predictions.csv", index=False)
        model.save(folder / "model.keras")

    return read_record(atomic_write(path, fill))


def architecture(model: keras.Model) -> str:
    """A fingerprint of a model's architecture: every layer's class, configuration (without its name, which
    Keras numbers per session) and weight shapes, nested models included. Changing a layer changes it;
    training does not."""
    described = []
    for layer in models.all_layers(model):
        settings = {} if isinstance(layer, keras.Model) else {
            k: v for k, v in layer.get_config().items() if k != "name"}
        described.append([type(layer).__name__, settings, [list(w.shape) for w in layer.weights]])
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_digest(model: keras.Model) -> str:
    """SHA-256 over every weight array of ``model`` in layer order (values, shapes and dtypes): other weights,
    trained or loaded, give another digest."""
    digest = hashlib.sha256()
    for weight in model.weights:
        array = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def run_config(exp: Experiment, profile: config.Profile, split_file: str, model_architecture: str) -> dict:
    """What identifies a run: the experiment, the profile's data cap and seed, the split file (whose name
    fingerprints the protocol, its shares and its images) and the architecture's fingerprint."""
    return {**asdict(exp), "profile": profile.name, "max_per_class": profile.max_per_class,
            "seed": profile.seed, "split_file": split_file, "architecture": model_architecture,
            "classes": list(config.CLASSES)}


def same_run(saved: dict, current: dict) -> bool:
    """Whether a saved run config describes the current one. An Experiment field that did not exist when the
    record was written counts as having its default value; descriptive fields (``source``, ``published``) are
    not compared."""
    defaults = {f.name: f.default for f in fields(Experiment)}
    saved = json.loads(json.dumps({**defaults, **saved}))  # tuples and lists compare alike, as JSON stores them
    current = json.loads(json.dumps(current))
    return all(saved.get(k) == current.get(k) for k in (set(saved) | set(current)) - set(DESCRIPTIVE_FIELDS))
