"""experiments: a run's settings in a profile are the published run changed by its scheme's, then its own."""
from __future__ import annotations

import dataclasses

import pytest

from helpers import config, experiments, training


def test_a_run_s_own_settings_merge_with_its_scheme_s_field_by_field():
    profile = dataclasses.replace(
        config.PROFILES["cpu"], scheme_settings={"ft2": {"epochs": 8, "precision": "mixed_bfloat16", "views": 2}},
        run_settings={"squeezenet_ft2_long": {"epochs": 16}})
    long = experiments.experiment("squeezenet_ft2_long", profile)
    assert (long.epochs, long.precision, long.views) == (16, "mixed_bfloat16", 2)  # its own epochs, the rest kept
    base = experiments.experiment("squeezenet_ft2", profile)
    assert (base.epochs, base.precision, base.views) == (8, "mixed_bfloat16", 2)
    untouched = experiments.experiment("squeezenet_ec", profile)
    assert untouched == experiments.PUBLISHED["squeezenet_ec"]


def test_the_full_profile_trains_in_mixed_float16_on_a_gpu(monkeypatch):
    monkeypatch.setattr(config, "gpu_name", lambda: "NVIDIA H200")
    full = config.PROFILES["full"]
    assert experiments.experiment("xception_ft2", full).precision == "mixed_float16"
    assert experiments.experiment("red_david", full).precision == "mixed_float16"
    assert experiments.experiment("xception_ft", full).precision == "float32"  # the thesis's one-stage SGD
    assert experiments.experiment("xception_ec", full).precision == "float32"  # frozen features: no training


def test_the_fast_precision_is_resolved_when_a_run_is_made(monkeypatch):
    monkeypatch.setattr(config, "gpu_name", lambda: None)
    for supported, expected in ((True, "mixed_bfloat16"), (False, "float32")):
        monkeypatch.setattr(config, "bfloat16_supported", lambda supported=supported: supported)
        assert experiments.experiment("squeezenet_ft2", config.PROFILES["cpu"]).precision == expected
        assert experiments.experiment("squeezenet_ft", config.PROFILES["cpu"]).precision == "float32"


def test_a_profile_of_any_name_gets_its_own_time_hint_or_its_committed_times(tmp_path):
    """No code asks for a profile by name: a new profile works like the built-in ones."""
    mine = dataclasses.replace(config.PROFILES["quick"], name="classroom", run_time_hint="a minute or two per run")
    assert training.expected_minutes(["red_david"], mine) == "a minute or two per run"
    mine = dataclasses.replace(mine, figures_subdir=str(tmp_path))
    (tmp_path / "results_table.csv").write_text("model,train_seconds\nred_david,300\nred_alberto,200\n")
    assert training.expected_minutes(["red_david", "red_alberto"], mine) == (
        "about 10 min on a 2-core machine in the classroom profile (the committed run's times)")


def test_an_unknown_run_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown run 'vgg19_ft'"):
        experiments.experiment("vgg19_ft", config.PROFILES["cpu"])
