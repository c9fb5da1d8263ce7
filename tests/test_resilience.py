"""The series as a whole under bad conditions: a run killed mid-epoch, a rerun, a dataset full of problems.

Training sees what a notebook kernel sees: ``CXR_DATA_DIR``, ``CXR_WORK_DIR`` and ``CXR_PROFILE`` set, so the helpers
read the same configuration a user's run does. It happens in child processes where a fresh process is the point (a
kill, a resume, a second identical run) and in this process otherwise.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from helpers import config, run_records, runs

from conftest import make_first_release, make_release, write_png

REPO = config.ROOT
TIMING = {"train_seconds", "images_per_second", "peak_memory_mb"}  # honest to differ between two runs

# A training run as a notebook kernel makes it; optionally it stops for good after the first batch of epoch 2.
# With "early-stopping", validation loss gets worse after epoch 1 (a huge learning rate), and patience 2 ends the
# run after epoch 3 (index 2), however often it is interrupted.
TRAIN_SCRIPT = """
import sys, time
from dataclasses import replace
from pathlib import Path
import keras
from helpers import config, dataset, experiments, protocols, run_records, runs, training

log, hang, early = Path(sys.argv[1]), sys.argv[2] == "hang", sys.argv[3] == "early-stopping"
profile = config.current()
exp = replace(experiments.experiment("polazaro_baseline", profile), epochs=6 if early else 3, batch_size=8,
              early_stopping=2 if early else None)
split = protocols.load_split(dataset.index_dataset(dataset.find_dataset(), progress=False), exp.protocol, profile)

class Probe(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        with log.open("a") as handle:
            handle.write(f"{epoch}\\n")
        if early and epoch >= 1:
            self.model.optimizer.learning_rate.assign(50.0)

    def on_train_batch_end(self, batch, logs=None):
        if hang and self.epoch == 1 and batch == 0:
            log.with_suffix(".mid-epoch").touch()
            time.sleep(600)  # the test kills the process here, in the middle of an epoch

training.train(exp, profile, split, callbacks=[Probe()], verbose=0)
"""

RUNS_SCRIPT = """
import sys
from helpers import config, run_records, runs, training
profile = config.current()
for name in sys.argv[1:]:
    runs.get_or_train(name, profile, verbose=0)
"""


def child_env(dataset: Path, work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    return {**env, "CXR_DATA_DIR": str(dataset), "CXR_WORK_DIR": str(work), "CXR_PROFILE": "quick",
            "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}


def train_here(name: str, dataset: Path, work: Path, monkeypatch) -> run_records.Record:
    """``name`` trained in this process with the variables a kernel gets (``child_env``'s), as a notebook cell does:
    where nothing depends on a fresh process, this spares one start of TensorFlow (about 10 s on 2 cores)."""
    for key, value in child_env(dataset, work).items():
        if key.startswith("CXR_"):
            monkeypatch.setenv(key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tiny dataset has fewer images than the protocol asks for
        return runs.get_or_train(name, config.current(), verbose=0)


def run_child(script: str, args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("mode", ["plain", "early-stopping"])
def test_a_run_killed_mid_epoch_resumes_and_ends_with_a_complete_record(tmp_path, mode):
    dataset = make_release(tmp_path / "dataset", counts={"COVID": 14, "Normal": 14, "Viral Pneumonia": 14})
    env, log = child_env(dataset, tmp_path / "work"), tmp_path / "epochs.log"
    runs = tmp_path / "work" / "runs" / "quick"

    child = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(log), "hang", mode], env=env, cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not log.with_suffix(".mid-epoch").exists():
        assert child.poll() is None, child.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the child never reached the middle of epoch 2"
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)  # no clean-up code runs: as when a laptop loses power
    child.wait()
    assert not (runs / "polazaro_baseline").exists(), "a killed run must leave no record"
    assert (runs / "polazaro_baseline.partial" / "backup").is_dir()

    run_child(TRAIN_SCRIPT, [str(log), "go", mode], env)
    # the killed epoch 2 (index 1) runs again, not epoch 1; with early stopping, the patience used up before the
    # kill still counts (forgotten, the run would go on to epoch 5)
    assert log.read_text().split() == ["0", "1", "1", "2"]
    record = run_records.read_record(runs / "polazaro_baseline")
    assert record.history["epoch"].tolist() == [0, 1, 2]
    assert record.metrics["epochs_run"] == 3 and record.metrics["test"]["n"] == len(record.test_predictions())
    if mode == "early-stopping":
        assert record.history["val_loss"].idxmin() == 0 and record.metrics["selected_epoch"] == 0
    # the weights evaluated are those of the best epoch, also when it came before the kill: the validation loss
    # recomputed from the record's predictions is the one logged for that epoch
    best = int(record.history["val_loss"].idxmin())
    assert record.metrics["val"]["loss"] == pytest.approx(record.history.loc[best, "val_loss"], rel=1e-3)
    assert sorted(p.name for p in runs.iterdir()) == ["polazaro_baseline"]  # no .partial, .tmp or .old left


def test_the_quick_profile_twice_gives_identical_splits_and_metrics(tmp_path):
    dataset = make_release(tmp_path / "dataset", counts={"COVID": 14, "Normal": 14, "Viral Pneumonia": 14},
                           duplicates=2)
    runs = ["polazaro_baseline_aug", "squeezenet_ft2"]  # augmentation, oversampling, cached views, fine-tuning
    for attempt in ("first", "second"):
        run_child(RUNS_SCRIPT, runs, child_env(dataset, tmp_path / attempt))

    def splits(attempt):
        return {p.name: p.read_bytes() for p in (tmp_path / attempt / "splits").iterdir()}

    assert splits("first") == splits("second") and len(splits("first")) == 2
    for name in runs:
        first, second = (run_records.read_record(tmp_path / a / "runs" / "quick" / name) for a in ("first", "second"))
        drop = lambda metrics: {k: v for k, v in metrics.items() if k not in TIMING}
        assert drop(first.metrics) == drop(second.metrics), name
        pd.testing.assert_frame_equal(first.predictions, second.predictions)
        pd.testing.assert_frame_equal(first.history.drop(columns="epoch_seconds"),
                                      second.history.drop(columns="epoch_seconds"))


def make_problem_release(root: Path) -> Path:
    """A release-layout copy with every problem a user's download can have, and what a reader should count."""
    base = make_release(root, counts={"COVID": 14, "Normal": 14, "Viral Pneumonia": 14})
    covid, normal, viral = (base / c / "images" for c in ("COVID", "Normal", "Viral Pneumonia"))
    write_png(covid / "COVID-15.png", seed=1, mode="I;16")             # 16-bit
    write_png(normal / "Normal (15).png", seed=2, mode="RGBA")         # RGBA, spaces and parentheses
    write_png(viral / "Viral Pneumonia (copy) 15.png", seed=3, size=(57, 31), mode="P")  # odd size, palette
    (covid / "COVID-16.png").write_bytes((covid / "COVID-1.png").read_bytes()[:60])  # corrupt (truncated)
    (normal / "notes.txt").write_text("not an image")                  # non-image file
    for folder in base.glob("Lung_Opacity/images/*.png"):              # an empty class folder
        folder.unlink()
    return base


def test_a_dataset_with_problems_runs_through_notebook_01_and_training(tmp_path, monkeypatch):
    base = make_problem_release(tmp_path / "dataset")
    env = child_env(base, tmp_path / "work")
    executed = tmp_path / "01.ipynb"
    result = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                             "--ExecutePreprocessor.timeout=600", "--output", str(executed),
                             str(REPO / "notebooks" / "01_data_exploration.ipynb")],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    cells = json.loads(executed.read_text())["cells"]
    printed = "\n".join(out.get("text", "") if isinstance(out.get("text", ""), str) else "".join(out["text"])
                        for cell in cells if cell["cell_type"] == "code" for out in cell["outputs"])
    assert "45 readable images; 2 file(s) left out" in printed  # 15 per class; the corrupt PNG and the .txt
    assert "COVID-16.png: cannot be read as an image" in printed and "notes.txt: not an image file" in printed
    assert "COVID 15 of 3616" in printed and "Viral Pneumonia 15 of 1345" in printed

    record = train_here("polazaro_baseline", base, tmp_path / "work", monkeypatch)
    assert len(record.predictions) + record.metrics["train_images"] == 45
    trained_on = pd.read_csv(next((tmp_path / "work" / "splits").glob("polazaro-*.csv")))
    assert {"COVID/images/COVID-15.png", "Normal/images/Normal (15).png",
            "Viral Pneumonia/images/Viral Pneumonia (copy) 15.png"} <= set(trained_on["relpath"])


def test_the_first_release_layout_runs_through_training(tmp_path, monkeypatch):
    base = make_first_release(tmp_path / "dataset", n=14)
    record = train_here("polazaro_baseline", base, tmp_path / "work", monkeypatch)
    assert len(record.predictions) + record.metrics["train_images"] == 42
    assert record.predictions["relpath"].str.contains(r"\(\d+\)\.png$").all()  # "COVID-19 (k).png" names
