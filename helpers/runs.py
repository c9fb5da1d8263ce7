"""Train or reuse a run, and say how long training takes here: what the notebooks call.

``get_or_train(name, profile)`` returns the run record whose config matches (``run_records.same_run``) and trains
otherwise (``training.train``, which resumes an interrupted attempt). ``training_time`` is the line a notebook
prints before it trains: the committed run's times scaled by this machine's speed (``calibration_rate``).
"""
from __future__ import annotations

import pandas as pd

from . import backbones, config, dataset, protocols, run_records, timing, training
from .experiments import experiment
from .files import read_json, write_json


def get_or_train(name: str, profile: config.Profile, index: pd.DataFrame | None = None, *,
                 retrain: bool = False, verbose: int = 2) -> run_records.Record:
    """The record of run ``name`` in ``profile``: reused when its config matches, trained otherwise.

    ``index`` is the dataset index (``dataset.index_dataset``); it is built when not given.
    """
    exp = experiment(name, profile)
    if index is None:
        index = dataset.index_dataset(dataset.find_dataset(), progress=False)
    split = protocols.run_split(index, exp.protocol, profile, exp.match_split)
    record = None if retrain else recorded(exp, profile, split)
    if record is not None and not (record.metrics.get("pretrained") is False and exp.family != "scratch" and
                                   backbones.local_weights(backbones.BACKBONES[exp.model][2])):  # weights appeared
        print(f"Reusing the run record {config.short_path(record.path)} ({record.metrics['epochs_run']} epochs, "
              f"{record.metrics['train_seconds']:.0f} s of training); delete it to train again.")
        return record
    return training.train(exp, profile, split, verbose=verbose)


def recorded(exp, profile: config.Profile, split: pd.DataFrame) -> run_records.Record | None:
    """The complete record of ``exp`` in ``profile.runs_dir`` when it was written with the same settings on the
    same split (``run_records.same_run``), else None."""
    try:
        found = run_records.read_record(profile.runs_dir / exp.name)
    except FileNotFoundError:
        return None
    return found if run_records.same_run(found.config, training.identity(exp, profile, split)) else None


def train_unless_recorded(exp, profile: config.Profile, split: pd.DataFrame, verbose: int = 0) -> run_records.Record:
    """An experiment that is not a named run of the series (a benchmark's variant, an exercise): its record in
    ``profile.runs_dir`` when one was written with the same settings (``recorded``), else trained."""
    return recorded(exp, profile, split) or training.train(exp, profile, split, verbose=verbose)


def records_or_train(profile: config.Profile, names: list[str], index: pd.DataFrame | None = None) -> dict:
    """The records of the runs ``names``, read where they exist; the missing ones are trained first, after a line
    that says which and about how long they take (so notebooks 05-07 also open on a fresh clone)."""
    found, missing = run_records.read_records(profile, names)
    if missing:
        print(f"{len(missing)} run record(s) of the {profile.name} profile missing: {', '.join(missing)}.\n"
              f"Training them now: {expected_minutes(missing, profile)}. Running notebooks 02-04 first "
              "makes the same records.")
        for name in missing:
            found[name] = get_or_train(name, profile, index, verbose=0)
    return {name: found[name] for name in names}


CALIBRATION_FILE = "calibration.json"  # in a profile's figures folder, beside results_table.csv (notebook 05)


def calibration_rate() -> float:
    """This machine's training speed, measured in about two seconds: float32 images/s of the smaller project's
    baseline at 64 px (``timing.training_speed``). Ratios of it scale training times between machines."""
    with training.dtype_policy("float32"):
        return timing.training_speed("polazaro_baseline", 64, batch_size=32, steps=8)


def save_calibration(profile: config.Profile) -> float:
    """Measure ``calibration_rate`` and write it beside the profile's results table: the speed of the machine
    whose training times that table holds (notebook 05 calls it, on the machine of the run)."""
    rate = calibration_rate()
    profile.figures_dir.mkdir(parents=True, exist_ok=True)
    write_json(profile.figures_dir / CALIBRATION_FILE, {"images_per_second": rate,
                                                        "net": "polazaro_baseline, 64 px, float32, batch 32"})
    return rate


def expected_minutes(names: list[str], profile: config.Profile) -> str:
    """How long training ``names`` takes here, as a phrase: the profile's committed training times (its figures
    folder's results_table.csv, written by notebook 05) plus 20 % for evaluation, scaled by this machine's speed
    against the committed run's machine (``calibration_rate``, measured now); else the profile's hint."""
    committed = profile.figures_dir / "results_table.csv"
    seconds = pd.read_csv(committed).set_index("model")["train_seconds"] if committed.exists() else pd.Series()
    known = [n for n in names if n in seconds.index]
    if not known:
        return profile.run_time_hint
    total = 1.2 * seconds[known].sum() / 60
    saved = read_json(profile.figures_dir / CALIBRATION_FILE).get("images_per_second")
    if not saved:
        return (f"about {max(1, round(total))} min on the committed run's machine in the {profile.name} profile "
                "(its times; this machine's speed unknown)")
    speed = calibration_rate() / saved
    return (f"about {max(1, round(total / speed))} min here (the committed run's times in the {profile.name} "
            f"profile, scaled by a warm-up measured now: this machine trains {speed:.1f}x as fast)")


def training_time(names: list[str], profile: config.Profile) -> str:
    """One line for a notebook to print before it trains: which of ``names`` have no record yet and about how long
    training them takes here (``expected_minutes``)."""
    _, missing = run_records.read_records(profile, names)
    if not missing:
        return f"All {len(names)} runs have records in {config.short_path(profile.runs_dir)}: they are reused."
    return f"{len(missing)} of {len(names)} runs to train: {expected_minutes(missing, profile)}."
