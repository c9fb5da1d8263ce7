"""The results table of notebook 05: built from run records alone, with a clear message when one is missing."""
from __future__ import annotations

from dataclasses import asdict

import keras
import numpy as np
import pandas as pd
import pytest

from helpers import config, experiments, metrics, results, run_records


def fabricate_record(profile, name, correct_per_class=(10, 9, 8), n_per_class=10, pretrained=None):
    """A complete run record written by ``run_records.write_record`` with made-up predictions: the first
    ``correct_per_class[k]`` test images of class k are right, the rest are called the next class."""
    exp = experiments.experiment(name, profile)
    rows = []
    for split in ("val", "test"):
        for k in range(3):
            for i in range(n_per_class):
                predicted = k if i < correct_per_class[k] else (k + 1) % 3
                proba = np.full(3, 0.1)
                proba[predicted] = 0.8
                rows.append({"relpath": f"{split}/{k}/{i}.png", "split": split, "true": k, "predicted": predicted,
                             **{f"p_{c}": p for c, p in zip(config.CLASSES, proba)}})
    predictions = pd.DataFrame(rows)
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [1.0, 0.5, 0.4], "accuracy": [0.5, 0.8, 0.9],
                            "val_loss": [0.9, 0.6, 0.7], "val_accuracy": [0.6, 0.8, 0.75],
                            "epoch_seconds": [2.0, 2.0, 2.0], "selected": [False, True, False]})
    scores = {split: metrics.classification_metrics(*metrics.true_and_proba(predictions, split))
              for split in ("val", "test")}
    scores.update(last_epoch={}, selected_epoch=1, epochs_run=3, train_images=90, train_seconds=6.0,
                   images_per_second=45.0, parameters=123, pretrained=pretrained)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    cfg = {**asdict(exp), "profile": profile.name}
    return run_records.write_record(profile.runs_dir / name, cfg, history, scores, predictions, model)


def test_table_has_one_row_per_record_with_the_required_columns():
    profile = config.current("quick")
    runs = {"red_david": fabricate_record(profile, "red_david"),
               "squeezenet_ft2": fabricate_record(profile, "squeezenet_ft2", (10, 10, 7), pretrained=True)}
    table = results.results_table(runs)
    required = ["model", "family", "backbone", "pretrained", "protocol", "epochs", "loss", "accuracy", "val_loss",
                "val_accuracy", "test_accuracy", "test_accuracy_ci_low", "test_accuracy_ci_high", "macro_f1",
                "sensitivity_covid", "sensitivity_normal", "sensitivity_viral_pneumonia", "train_seconds"]
    assert set(required) <= set(table.columns)
    david, squeeze = table.set_index("model").loc["red_david"], table.set_index("model").loc["squeezenet_ft2"]
    assert (david["family"], david["backbone"], bool(david["pretrained"])) == ("scratch", "red_david", False)
    assert (squeeze["family"], squeeze["backbone"], bool(squeeze["pretrained"])) == ("FT", "squeezenet", True)
    assert david["test_accuracy"] == pytest.approx(27 / 30)
    assert david["test_accuracy_ci_low"] <= david["test_accuracy"] <= david["test_accuracy_ci_high"]
    assert (david["sensitivity_covid"], david["sensitivity_normal"], david["sensitivity_viral_pneumonia"]) == \
        pytest.approx((1.0, 0.9, 0.8))
    assert squeeze["sensitivity_viral_pneumonia"] == pytest.approx(0.7)
    # training metrics of the kept epoch (the second), not of the last one
    assert (david["loss"], david["accuracy"], david["selected_epoch"]) == (0.5, 0.8, 2)
    assert david["published"] == "thesis: Red David" and david["published_test_accuracy"] == pytest.approx(0.9139)
    assert squeeze["published"] == "thesis: Xception-FT"


def test_written_table_round_trips_and_markdown_shows_intervals():
    profile = config.current("quick")
    table = results.results_table([fabricate_record(profile, "red_alberto")])
    csv, md = results.write_table(table, profile)
    assert csv.parent == profile.figures_dir
    again = pd.read_csv(csv)
    assert again.loc[0, "model"] == "red_alberto" and again.loc[0, "test_accuracy"] == pytest.approx(0.9)
    text = md.read_text()
    assert "| red_alberto" in text and "0.900 [" in text and "thesis: Red Alberto" in text


def test_series_lists_every_run_of_the_profile():
    cpu = results.series_runs(config.current("cpu"))
    assert cpu[:5] == list(experiments.FULL)
    assert {"efficientnet_lite0_v0", "efficientnet_lite0_ft", "efficientnet_lite0_ft2", "squeezenet_ec",
            "efficientnet_lite0_ft2_all"} <= set(cpu) and "squeezenet_ft2" not in cpu
    quick = results.series_runs(config.current("quick"))
    assert {"efficientnet_lite0_ft", "squeezenet_ec"} <= set(quick) and "densenet121_ft" not in quick
    assert "xception_ft" in results.series_runs(config.current("full"))  # the full profile: every backbone


def test_paired_comparison_counts_the_images_only_one_run_gets_right():
    profile = config.current("quick")
    better = fabricate_record(profile, "red_david", (10, 10, 10))
    worse = fabricate_record(profile, "red_alberto", (10, 10, 2))
    result = results.paired_comparison(better, worse)
    assert (result["only_run_right"], result["only_other_right"]) == (8, 0)
    assert result["p_value"] == pytest.approx(2 / 2 ** 8)  # exact two-sided binomial test of 8 against 0
    other_images = fabricate_record(profile, "polazaro_baseline", n_per_class=5)
    with pytest.raises(ValueError, match="same images"):
        results.paired_comparison(better, other_images)


def test_best_on_validation_breaks_ties_by_validation_loss_and_never_reads_test():
    table = pd.DataFrame({"model": ["a", "b", "c", "d"], "family": ["FT", "FT", "FT", "EC"],
                          "protocol": ["thesis", "thesis", "all", "thesis"],
                          "val_accuracy": [0.96, 0.96, 0.99, 0.97], "val_loss": [0.14, 0.11, 0.05, 0.2],
                          "test_accuracy": [0.99, 0.90, 0.5, 0.5]})
    assert results.best_on_validation(table, "FT", protocols="thesis") == "b"  # tie: the lower loss
    assert results.best_on_validation(table, "FT") == "c"
    assert results.best_on_validation(table, protocols=("thesis",)) == "d"
    assert results.best_on_validation(table.set_index("model"), "FT", protocols="thesis") == "b"
    with pytest.raises(ValueError, match="No run"):
        results.best_on_validation(table, "scratch")
    # notebooks 06 and 07 share one definition: per family, within one protocol, a family without runs left out
    assert results.best_per_family(table, "thesis") == {"EC": "d", "FT": "b"}
    assert results.best_per_family(table, "all") == {"FT": "c"}


def test_most_frequent_error_ignores_the_diagonal():
    """The largest count of a confusion matrix is usually a right answer; the most frequent error is off it."""
    confusion = [[50, 2, 9],
                 [4, 60, 1],
                 [0, 3, 40]]
    assert results.most_frequent_error(confusion) == (0, 2, 9)
    assert results.most_frequent_error(np.eye(3, dtype=int) * 5) == (0, 0, 0)  # no errors: nothing to name


def test_each_row_says_how_it_differs_from_the_published_run():
    """Where a number stands beside the thesis's, the row says what is not like with like: a stand-in backbone,
    another recipe, a smaller input, fewer epochs."""
    cpu = config.PROFILES["cpu"]
    rows = {name: results.differences(fabricate_record(cpu, name))
            for name in ("efficientnet_lite0_ft", "efficientnet_lite0_ft2", "red_david", "efficientnet_lite0_ft2_all")}
    assert rows["efficientnet_lite0_ft"] == ("efficientnet_lite0 stands in for DenseNet121; 128 px (published 224); "
                                             "1 epoch (published 20)")  # the cpu profile's one epoch, singular
    assert rows["efficientnet_lite0_ft2"].startswith("efficientnet_lite0 stands in for Xception; two-stage recipe")
    assert rows["red_david"] == "32 px (published 224); 7 epochs (published 20)"
    assert rows["efficientnet_lite0_ft2_all"] == ""  # no published run to differ from
    full = results.differences(fabricate_record(config.PROFILES["full"], "densenet121_ft"))
    assert full == ""  # the full profile runs the thesis's settings
