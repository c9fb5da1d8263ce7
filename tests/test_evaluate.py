"""python -m helpers.evaluate: the part of the project meant for other people's data, so every failure is one
clear line with exit status 2, and the numbers are those of the images given."""
from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import config, dataset, evaluate, metrics, run_records

from conftest import make_release, write_png
from test_duplicates import radiograph, save

SIZE = 32


@pytest.fixture
def constant_run(tmp_path):
    """A run record whose model answers Normal with probability 0.8 for every image, so its scores on any
    folder are known in advance."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, kernel_initializer="zeros",
                                                 bias_initializer=keras.initializers.Constant(np.log([0.1, 0.8, 0.1]))),
                              keras.layers.Softmax()])
    run_config = {"name": "constant", "image_size": SIZE, "tta_flip": False}
    history = pd.DataFrame({"epoch": [0], "loss": [1.0]})
    predictions = pd.DataFrame({"relpath": ["x.png"], "split": ["test"], "true": [1], "predicted": [1]})
    return run_records.write_record(tmp_path / "runs" / "constant", run_config, history, {}, predictions, model).path


def run(args, capsys):
    status = evaluate.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_printed_scores_are_those_of_the_folder(constant_run, tmp_path, capsys):
    external = make_release(tmp_path / "external", counts={"COVID": 4, "Normal": 3, "Viral Pneumonia": 2}, seed=5)
    status, out, err = run(["--run", constant_run, "--data", external], capsys)
    assert status == 0, err
    assert "images: 9 (left out as unreadable: 0)" in out
    assert "accuracy: 0.3333" in out  # the three Normal images, and only they, are right
    matrix = {line[:25].strip(): [int(n) for n in line[25:].split()] for line in out.splitlines()
              if line.startswith("true ")}
    assert matrix == {"true COVID": [0, 4, 0], "true Normal": [0, 3, 0], "true Viral Pneumonia": [0, 2, 0]}


def test_the_run_s_test_time_flip_is_applied(constant_run, tmp_path, monkeypatch):
    external = make_release(tmp_path / "external", counts={"COVID": 2, "Normal": 2, "Viral Pneumonia": 2})
    asked = []
    real = metrics.predict
    monkeypatch.setattr(metrics, "predict", lambda *a, **k: asked.append(k.get("tta_flip")) or real(*a, **k))
    evaluate.evaluate_folder(str(constant_run), str(external))
    record_config = constant_run / "config.json"
    record_config.write_text(record_config.read_text().replace('"tta_flip": false', '"tta_flip": true'))
    evaluate.evaluate_folder(str(constant_run), str(external))
    assert asked == [False, True]


def test_files_left_out_are_listed_also_when_the_evaluation_fails(constant_run, tmp_path, capsys):
    folder = tmp_path / "broken"
    for label in config.CLASSES:
        (folder / label).mkdir(parents=True)
        (folder / label / f"{label}-1.png").write_bytes(b"not a png at all")
    status, out, err = run(["--run", constant_run, "--data", folder], capsys)
    assert status == 2 and out == ""
    assert "warning: 3 file(s) left out" in err and "COVID-1.png" in err
    assert err.strip().splitlines()[-1].startswith("error: No readable image")


def test_an_image_training_could_not_decode_is_left_out_and_named(constant_run, tmp_path, capsys):
    external = make_release(tmp_path / "external", counts={"COVID": 2, "Normal": 2, "Viral Pneumonia": 2})
    odd = external / "Normal" / "images" / "Normal-3.png"
    Image.fromarray(np.full((SIZE, SIZE), 90, np.uint8)).save(odd, format="TIFF")  # a TIFF named .png
    status, out, err = run(["--run", constant_run, "--data", external], capsys)
    assert status == 0 and "images: 6 (left out as unreadable: 1)" in out
    assert "Normal-3.png" in err and "TIFF" in err


@pytest.mark.parametrize("problem, expected", [
    ("layout", "--data points to"),
    ("no images", "No readable image"),
    ("corrupt model", "model.keras cannot be loaded"),
    ("batch size", "--batch-size must be a positive number"),
    ("no run", "not a complete run record"),
])
def test_each_failure_is_one_line_and_status_2(constant_run, tmp_path, capsys, problem, expected):
    external = make_release(tmp_path / "external", counts={"COVID": 2, "Normal": 2, "Viral Pneumonia": 2})
    args = {"--run": constant_run, "--data": external, "--batch-size": 8}
    if problem == "layout":
        args["--data"] = tmp_path / "photos"
        write_png(tmp_path / "photos" / "holiday" / "beach.png", seed=1)
    elif problem == "no images":
        args["--data"] = tmp_path / "texts"
        for label in config.CLASSES:
            (tmp_path / "texts" / label).mkdir(parents=True)
            (tmp_path / "texts" / label / "notes.txt").write_text("no image here")
    elif problem == "corrupt model":
        (constant_run / "model.keras").write_bytes(b"PK\x03\x04 cut short")
    elif problem == "batch size":
        args["--batch-size"] = 0
    else:
        args["--run"] = tmp_path / "no-such-run"
    status, out, err = run([x for pair in args.items() for x in pair], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and out == "" and len(errors) == 1 and expected in errors[0], err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if not line.startswith(("warning:", "  "))]) == 1


def test_help_answers_without_importing_tensorflow(tmp_path):
    script = ("import runpy, sys\n"
              "sys.argv = ['evaluate', '--help']\n"
              "try:\n"
              "    runpy.run_module('helpers.evaluate', run_name='__main__')\n"
              "except SystemExit as done:\n"
              "    assert done.code == 0\n"
              "print('tensorflow imported:', 'tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(config.ROOT)}, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "--batch-size" in result.stdout and "tensorflow imported: False" in result.stdout


def test_a_transfer_model_loads_in_a_process_that_never_built_one(tmp_path):
    """Every transfer model holds the project's BackbonePreprocess layer; ``python -m helpers.evaluate`` starts a
    process that has not imported ``backbones``, and loading must still find that layer (it once could not)."""
    from helpers import backbones, run_records

    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), backbones.BackbonePreprocess("caffe"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    history = pd.DataFrame({"epoch": [0], "loss": [1.0]})
    predictions = pd.DataFrame({"relpath": ["x.png"], "split": ["test"], "true": [1], "predicted": [1]})
    path = run_records.write_record(tmp_path / "runs" / "transfer", {"name": "transfer", "image_size": SIZE}, history, {},
                                predictions, model).path
    script = ("import sys\nfrom helpers import run_records\n"
              "print(type(run_records.read_record(sys.argv[1]).load_model().layers[0]).__name__)")
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300,
                          cwd=config.ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "BackbonePreprocess"


def test_a_folder_holding_twins_of_training_images_is_named_in_a_warning(tmp_path, monkeypatch, capsys):
    """Evaluating on training images by mistake is told: a byte-identical copy and a JPEG re-save of the run's
    training images are named, and an image the run never saw is not."""
    original = tmp_path / "original" / "COVID-19_Radiography_Dataset"
    for c, label in enumerate(("COVID", "Normal", "Viral Pneumonia")):
        for k in range(1, 4):
            save(radiograph(100 * c + k), original / label / "images" / f"{label}-{k}.png")
    monkeypatch.setenv("CXR_DATA_DIR", str(original))
    index = dataset.index_dataset(original, progress=False, cache=False)
    split = index.assign(split="train")
    (config.data_dir() / "splits").mkdir(parents=True)
    split.to_csv(config.data_dir() / "splits" / "trained-on.csv", index=False)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    saved = run_records.write_record(tmp_path / "runs" / "mine", {"name": "mine", "image_size": SIZE,
                                                                 "split_file": "trained-on.csv"},
                                   pd.DataFrame({"epoch": [0], "loss": [1.0]}), {},
                                   pd.DataFrame({"relpath": ["x.png"], "split": ["test"], "true": [1], "predicted": [1]}),
                                   model).path
    external = tmp_path / "external"
    (external / "COVID" / "images").mkdir(parents=True)
    (external / "COVID" / "images" / "copy.png").write_bytes((original / "COVID" / "images" / "COVID-1.png").read_bytes())
    save(radiograph(201), external / "Viral Pneumonia" / "images" / "resaved.jpg", quality=85)  # Viral Pneumonia-1
    save(radiograph(999), external / "Normal" / "images" / "new.png")
    status, _, err = run(["--run", saved, "--data", external], capsys)
    assert status == 0, err
    assert "2 image(s)" in err and "copy.png" in err and "resaved.jpg" in err and "new.png" not in err
