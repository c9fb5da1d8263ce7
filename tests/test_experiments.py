"""experiments: a run's settings in a profile are the published run changed by its scheme's, then its own."""
from __future__ import annotations

import dataclasses

import pytest

from helpers import config, experiments, runs, timing


def test_a_run_s_own_settings_merge_with_its_scheme_s_field_by_field():
    profile = dataclasses.replace(
        config.PROFILES["cpu"], scheme_settings={"ft2": {"epochs": 8, "precision": "mixed_bfloat16", "views": 2}},
        run_settings={"squeezenet_ft2_long": {"epochs": 16}}, image_sizes={})
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


def test_a_cpu_trains_in_float32_unless_bfloat16_is_asked_for(monkeypatch):
    """float32 by default on any CPU, so the committed numbers reproduce everywhere; CXR_PRECISION=bfloat16 opts
    in to mixed bfloat16 where the CPU computes it natively, and is refused where it does not."""
    monkeypatch.setattr(config, "gpu_name", lambda: None)
    monkeypatch.setattr(config, "bfloat16_supported", lambda: True)
    monkeypatch.delenv("CXR_PRECISION", raising=False)
    cpu = config.PROFILES["cpu"]
    assert experiments.experiment("squeezenet_ft2", cpu).precision == "float32"
    assert "precision: float32" in cpu.summary()
    monkeypatch.setenv("CXR_PRECISION", "bfloat16")
    assert experiments.experiment("squeezenet_ft2", cpu).precision == "mixed_bfloat16"
    assert experiments.experiment("squeezenet_ft", cpu).precision == "float32"  # not marked fast: never bfloat16
    assert "mixed bfloat16 where marked (CXR_PRECISION=bfloat16)" in cpu.summary()
    monkeypatch.setattr(config, "bfloat16_supported", lambda: False)
    with pytest.raises(ValueError, match="no native bfloat16"):
        experiments.experiment("squeezenet_ft2", cpu)
    monkeypatch.setenv("CXR_PRECISION", "fp16")
    with pytest.raises(ValueError, match="choose one of float32, bfloat16"):
        experiments.experiment("squeezenet_ft2", cpu)


def test_a_profile_leaves_out_the_runs_it_skips():
    cpu = config.PROFILES["cpu"]
    assert "squeezenet_ft2_long" not in experiments.transfer_runs(cpu)
    assert "squeezenet_ft" not in experiments.transfer_runs(cpu)  # the thesis's one-stage recipe runs on Lite0
    assert "efficientnet_lite0_ft" in experiments.transfer_runs(cpu, "ft")
    assert "efficientnet_lite0_ft2_all" in experiments.transfer_runs(cpu, "ft2")
    assert {"squeezenet_ft2_long", "squeezenet_ft"} <= set(experiments.transfer_runs(config.PROFILES["full"]))


def test_notebook_07_s_matched_pair_differs_in_who_is_in_training_only():
    """efficientnet_lite0_ft2_all is compared with efficientnet_lite0_ft2 in notebook 07: same schedule, same part
    of the base fine-tuned and, through match_split, the thesis split's class counts, in every profile."""
    for profile in config.PROFILES.values():
        thesis, every = (dataclasses.asdict(experiments.experiment(n, profile))
                         for n in ("efficientnet_lite0_ft2", "efficientnet_lite0_ft2_all"))
        differ = {key for key in thesis if thesis[key] != every[key]}
        allowed = {"name", "protocol", "published", "source", "match_split"}
        assert differ <= allowed, (profile.name, differ - allowed)
        assert every["match_split"] == thesis["protocol"]


def test_efficientnet_lite0_stands_in_for_densenet121_in_the_thesis_rows():
    cpu = config.PROFILES["cpu"]
    assert cpu.progression_backbone == "efficientnet_lite0"
    published = {kind: experiments.experiment(f"efficientnet_lite0_{kind}", cpu).published[1]
                 for kind in ("v0", "v1", "v2", "ec", "ft")}
    assert published == {"v0": "DN-V0", "v1": "DN-V1", "v2": "DN-V2", "ec": "DN-V2-reg", "ft": "DN-V3"}
    full = experiments.experiment("efficientnet_lite0_ft2", config.PROFILES["full"])
    assert full.image_size == 224 and full.fine_tune_from is None  # the full profile: 224 px, whole network


def test_the_settings_table_says_how_much_of_the_base_each_fine_tuned_run_trains():
    cpu = config.PROFILES["cpu"]
    table = experiments.settings_table(["squeezenet_ft", "squeezenet_ft2", "squeezenet_ec"], cpu)
    assert table["fine-tuned"].to_dict() == {"squeezenet_ft": "whole base",
                                             "squeezenet_ft2": "from fire6_squeeze1x1 on", "squeezenet_ec": "–"}
    assert "fine-tuned" not in experiments.settings_table(["red_david", "squeezenet_ec"], cpu)


def test_a_profile_of_any_name_gets_its_own_time_hint_or_its_committed_times(tmp_path, monkeypatch):
    """No code asks for a profile by name: a new profile works like the built-in ones. The committed times are
    scaled by this machine's speed against the committed run's (a warm-up measured now)."""
    mine = dataclasses.replace(config.PROFILES["quick"], name="classroom", run_time_hint="a minute or two per run")
    assert runs.expected_minutes(["red_david"], mine) == "a minute or two per run"
    mine = dataclasses.replace(mine, figures_subdir=str(tmp_path))
    (tmp_path / "results_table.csv").write_text("model,train_seconds\nred_david,300\nred_alberto,200\n")
    assert runs.expected_minutes(["red_david", "red_alberto"], mine) == (
        "about 10 min on the committed run's machine in the classroom profile (its times; this machine's speed "
        "unknown)")
    monkeypatch.setattr(runs, "calibration_rate", lambda: 100.0)
    runs.save_calibration(mine)  # the committed run's machine: 100 images/s
    monkeypatch.setattr(runs, "calibration_rate", lambda: 250.0)  # this one: 2.5 times as fast
    assert runs.expected_minutes(["red_david", "red_alberto"], mine) == (
        "about 4 min here (the committed run's times in the classroom profile, scaled by a warm-up measured now: "
        "this machine trains 2.5x as fast)")


def test_the_calibration_measures_a_real_training_speed():
    """Images per second of real training: sixteen times the pixels per image train far fewer images per second
    (a rate that counted no work, or returned seconds instead of images/s, would not)."""
    small = timing.training_speed("polazaro_baseline", 32, batch_size=16, steps=4)
    large = timing.training_speed("polazaro_baseline", 128, batch_size=16, steps=4)
    assert large < small / 2, (small, large)
    assert runs.calibration_rate() > 0


def test_an_unknown_run_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown run 'vgg19_ft'"):
        experiments.experiment("vgg19_ft", config.PROFILES["cpu"])
