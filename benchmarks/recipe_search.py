"""Levers of the fine-tuning recipe, measured one at a time on the validation set (issue: beat 98.75 % on a CPU).

    python benchmarks/recipe_search.py                 # every variant below, then the table
    python benchmarks/recipe_search.py base long ema   # some of them
    python benchmarks/recipe_search.py --seeds 42 43 44 --recipe long+ema   # a recipe's spread over seeds

Each variant changes the two-stage recipe (``squeezenet_ft2`` in the cpu profile: head on cached features, then
the whole base at Adam 1e-4 with cosine decay, in float32) in one way, trains in its own runs folder
(``data/runs/explore/``) on the thesis protocol's split, and reports validation accuracy and loss, macro-F1 and
seconds. Test-time flipping and the ensemble need no training: they re-score trained variants. The test set is
only read with ``--seeds``, for the recipe that validation chose. Results are appended to
``benchmarks/results.md`` with the machine and the date.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config, dataset, experiments, metrics, protocols, run_records, runs

RESULTS = Path(__file__).with_name("results.md")
CSV_ONLY = "--csv-only" in sys.argv  # rewrite the CSVs from the trained records without a new results.md entry

# One change each from the base recipe (fields of helpers.experiments.Experiment).
VARIANTS = {
    "base": {},
    "long": {"epochs": 16, "warmup_epochs": 1},                 # a longer second stage, warm-up, cosine
    "adamw": {"weight_decay": 0.05},                            # decoupled weight decay
    "smooth": {"label_smoothing": 0.1},
    "ema": {"ema": True},
    "strong": {"augment": "strong"},                            # translation, contrast, zoom in/out, no flip
    "mixup": {"mixup": 0.2},
    "bf16": {"precision": "mixed_bfloat16"},
    "upper4": {"fine_tune_from": "fire4_squeeze1x1"},            # the base's upper part only (from fire4 / fire6)
    "upper6": {"fine_tune_from": "fire6_squeeze1x1"},
    "short": {"epochs": 3},                                     # one fine-tuning epoch fewer (of 4)
}


def recipe(names: str) -> dict:
    """The changes of one or more variants joined with '+', e.g. ``long+ema``."""
    changes = {}
    for name in names.split("+"):
        changes.update(VARIANTS[name])
    return changes


def explore_profile(seed: int = config.SEED) -> config.Profile:
    """The cpu profile with its own runs folder and a training seed of its own."""
    return dataclasses.replace(config.PROFILES["cpu"], name="explore", seed=seed)


def cpu_split(index: pd.DataFrame) -> pd.DataFrame:
    """The cpu profile's thesis split (seed 42): every variant and every training seed sees the same images."""
    return protocols.load_split(index, "thesis", config.PROFILES["cpu"])


def train_variant(name: str, index: pd.DataFrame, seed: int = config.SEED) -> run_records.Record:
    profile = explore_profile(seed)
    split = cpu_split(index)
    base = experiments.experiment("squeezenet_ft2", config.PROFILES["cpu"])
    # the levers were measured from float32 (bf16 is one) and the whole base fine-tuned (upper4/upper6 are two; the
    # cpu profile has since adopted upper6)
    base = dataclasses.replace(base, precision="float32", fine_tune_from=None)
    exp = dataclasses.replace(base, name=f"ft2_{name.replace('+', '_')}_seed{seed}", **recipe(name))
    return runs.train_unless_recorded(exp, profile, split)  # trained before with the same settings: reused


def row(name: str, scores: dict, seconds: float | None) -> dict:
    return {"variant": name, "val_accuracy": scores["accuracy"], "val_loss": scores["loss"],
            "val_macro_f1": scores["macro_f1"], "seconds": seconds}


def flipped_validation(record: run_records.Record, index: pd.DataFrame) -> dict:
    """Validation scores of a trained variant with test-time averaging over a left-right flip."""
    split = cpu_split(index)
    val = split[split["split"] == "val"]
    predictions = metrics.predict(record.load_model(), val, record.config["image_size"], tta_flip=True)
    return metrics.classification_metrics(predictions["true"], metrics.probabilities(predictions))


def ensemble_validation(members: list[run_records.Record], part: str = "val") -> dict:
    """Scores of the mean probability of ``members`` (trained on one split) on its val or test images."""
    frames = [m.predictions[m.predictions["split"] == part].reset_index(drop=True) for m in members]
    if any(not f["relpath"].equals(frames[0]["relpath"]) for f in frames):
        raise ValueError("ensemble members were not scored on the same images")
    proba = np.mean([metrics.probabilities(f) for f in frames], axis=0)
    return metrics.classification_metrics(frames[0]["true"], proba)


def diagnose(record: run_records.Record) -> str:
    """Where a run's validation errors are, whether validation accuracy was still rising at the last epoch, and
    how far training and validation loss are apart: what decides which levers can matter."""
    val = record.metrics["val"]
    matrix = pd.DataFrame(val["confusion_matrix"], index=[f"true {c}" for c in config.CLASSES],
                          columns=[f"called {c}" for c in config.CLASSES])
    history = record.history
    stage = history.query("stage == 'fine-tune'") if "stage" in history else history
    curve = stage[["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]].astype({"epoch": int})
    return (f"{record.name}: {round(val['n'] * (1 - val['accuracy']))} validation errors of {val['n']}\n\n"
            f"{matrix.to_markdown()}\n\nfine-tuning stage, per epoch (training metrics with augmentation and "
            f"dropout on):\n\n{curve.to_markdown(index=False, floatfmt=('.0f',) + ('.4f',) * 4)}\n")


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"


def append(title: str, table: pd.DataFrame, csv: str) -> None:
    """Print the table, append it to results.md (unless --csv-only) and write it to ``benchmarks/<csv>.csv``
    with the machine and date, where notebook 04 reads it."""
    text = (f"\n## {title} ({datetime.date.today()}, {machine()})\n\n"
            f"{table.to_markdown(index=False, floatfmt='.4f')}\n")
    print(text)
    table.assign(machine=machine(), date=str(datetime.date.today())).round(4).to_csv(
        RESULTS.with_name(f"{csv}.csv"), index=False)
    if not CSV_ONLY:
        with RESULTS.open("a") as handle:
            handle.write(text)


def search(names: list[str]) -> None:
    index = dataset.index_dataset(dataset.find_dataset(), progress=False)
    rows, trained = [], {}
    for name in names:
        start = time.perf_counter()
        record = train_variant(name, index)
        trained[name] = record
        rows.append(row(name, record.metrics["val"], record.metrics["train_seconds"]))
        print(json.dumps({**rows[-1], "wall_minutes": (time.perf_counter() - start) / 60}), flush=True)
    if "base" in trained:
        rows.append(row("base + flip at test time", flipped_validation(trained["base"], index), None))
    # best validation accuracy first; ties (one image is 0.35 points) broken by the lower validation loss
    by_val = sorted(trained, key=lambda n: (-trained[n].metrics["val"]["accuracy"], trained[n].metrics["val"]["loss"]))
    if len(by_val) >= 3:  # the three best on validation, averaged
        rows.append(row(f"ensemble of {' / '.join(by_val[:3])}", ensemble_validation(
            [trained[n] for n in by_val[:3]]), None))
    append("Fine-tuning levers on validation (squeezenet_ft2, thesis protocol, cpu profile)", pd.DataFrame(rows),
           "recipe_levers")


def spread(name: str, seeds: list[int]) -> None:
    """The chosen recipe trained with each seed (same split): validation and test accuracy with their
    intervals, and the mean probability of all seeds (an ensemble with no member chosen on test)."""
    index = dataset.index_dataset(dataset.find_dataset(), progress=False)
    rows, trained = [], []
    for seed in seeds:
        record = train_variant(name, index, seed)
        trained.append(record)
        test = record.metrics["test"]
        rows.append({"recipe": name, "seed": seed, "val_accuracy": record.metrics["val"]["accuracy"],
                     "test_accuracy": test["accuracy"], "ci_low": test["accuracy_ci_low"],
                     "ci_high": test["accuracy_ci_high"], "test_errors": round(test["n"] * (1 - test["accuracy"])),
                     "seconds": record.metrics["train_seconds"]})
        print(json.dumps(rows[-1]), flush=True)
    accuracy = pd.Series([r["test_accuracy"] for r in rows])
    if len(trained) > 1:
        val, test = ensemble_validation(trained, "val"), ensemble_validation(trained, "test")
        rows.append({"recipe": f"mean probability of the {len(seeds)} seeds", "seed": None,
                     "val_accuracy": val["accuracy"], "test_accuracy": test["accuracy"],
                     "ci_low": test["accuracy_ci_low"], "ci_high": test["accuracy_ci_high"],
                     "test_errors": round(test["n"] * (1 - test["accuracy"])), "seconds": None})
        print(json.dumps(rows[-1]), flush=True)
    append(f"Recipe '{name}' over {len(seeds)} seeds: test accuracy mean {accuracy.mean():.4f}, "
           f"standard deviation {accuracy.std(ddof=1):.4f}", pd.DataFrame(rows), "recipe_seeds")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", help=f"variants to train (default: all of {', '.join(VARIANTS)})")
    parser.add_argument("--seeds", type=int, nargs="+", help="train --recipe with these seeds and read the test set")
    parser.add_argument("--recipe", default="base", help="variants joined with '+', for --seeds")
    parser.add_argument("--diagnose", action="store_true", help="print the diagnosis of the trained base variant")
    parser.add_argument("--csv-only", action="store_true", help="write the CSVs only, not a results.md entry")
    args = parser.parse_args()
    if args.diagnose:
        profile = explore_profile()
        text = diagnose(run_records.read_record(profile.runs_dir / f"ft2_base_seed{profile.seed}"))
        print(text)
        with RESULTS.open("a") as handle:
            handle.write(f"\n## Diagnosis of the two-stage recipe before changing it ({datetime.date.today()}, "
                         f"{machine()})\n\n{text}")
    elif args.seeds:
        spread(args.recipe, args.seeds)
    else:
        search(args.variants or list(VARIANTS))
    sys.exit(0)
