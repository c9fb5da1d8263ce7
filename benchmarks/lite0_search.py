"""EfficientNet-Lite0 in the cpu profile: which input size, which part of the base to fine-tune and how long the
one-stage recipe runs, chosen on validation within the budget (issue: EfficientNet-Lite0 as the DenseNet121
stand-in).

    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/lite0_search.py            # every variant below, then the table
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/lite0_search.py ft2_block5  # some of them

Each variant changes one run of the cpu profile in one way and trains in its own runs folder
(``data/runs/explore-lite0/``) on the cpu profile's thesis split. The table gives validation accuracy and loss and
the seconds of training; the test set is not read. Appended to benchmarks/results.md and measurements.csv
(``budgets.record``) with the machine, the date and, through ``ONEDNN_MAX_CPU_ISA``, the instruction set, and
written to benchmarks/lite0_variants.csv (one row per variant, the newest measurement of each, with its date and
commit), where notebook 04 reads it.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess

import pandas as pd
from budgets import REPO, cpu_facts, merge_rows, record

from helpers import config, dataset, experiments, protocols, run_records, runs

CSV = REPO / "benchmarks" / "lite0_variants.csv"
# variant -> (run of the cpu profile, changed fields)
VARIANTS = {
    "ft2_block6": ("efficientnet_lite0_ft2", {"fine_tune_from": "block6a_expand_conv"}),
    "ft2_block5": ("efficientnet_lite0_ft2", {"fine_tune_from": "block5a_expand_conv"}),
    "ft2_whole": ("efficientnet_lite0_ft2", {"fine_tune_from": None}),
    "ft2_block6_160px": ("efficientnet_lite0_ft2", {"fine_tune_from": "block6a_expand_conv", "image_size": 160}),
    "ec_128px": ("efficientnet_lite0_ec", {}),
    "ec_160px": ("efficientnet_lite0_ec", {"image_size": 160}),
    "ft_2_epochs": ("efficientnet_lite0_ft", {"epochs": 2}),
    "ft_6_epochs": ("efficientnet_lite0_ft", {"epochs": 6}),
    "ft_2_epochs_lr1e-3": ("efficientnet_lite0_ft", {"epochs": 2, "learning_rate": 1e-3}),
    # cheaper settings, for the hour's budget: a smaller input, a shorter second stage
    "ec_112px": ("efficientnet_lite0_ec", {"image_size": 112}),
    "ft2_block6_2_epochs": ("efficientnet_lite0_ft2", {"fine_tune_from": "block6a_expand_conv", "epochs": 2}),
    "ft2_block6_112px_2_epochs": ("efficientnet_lite0_ft2", {"fine_tune_from": "block6a_expand_conv",
                                                             "image_size": 112, "epochs": 2}),
    "squeezenet_ft2": ("squeezenet_ft2", {}),
}


def train_variant(name: str, index: pd.DataFrame) -> run_records.Record:
    profile = dataclasses.replace(config.PROFILES["cpu"], name="explore-lite0")
    cpu = config.PROFILES["cpu"]
    run, changes = VARIANTS[name]
    exp = dataclasses.replace(experiments.experiment(run, cpu), name=name, precision="float32", **changes)
    return runs.train_unless_recorded(exp, profile, protocols.load_split(index, exp.protocol, cpu))


def main(names: list[str]) -> None:
    index = dataset.index_dataset(dataset.find_dataset(), progress=False)
    rows = []
    for name in names:
        found = train_variant(name, index)
        val = found.metrics["val"]
        rows.append({"variant": name, "run": VARIANTS[name][0], "input px": found.config["image_size"],
                     "val_accuracy": round(val["accuracy"], 4), "val_loss": round(val["loss"], 4),
                     "val_n": val["n"], "epochs": found.metrics["epochs_run"],
                     "train_seconds": round(found.metrics["train_seconds"], 1)})
        print(json.dumps(rows[-1]), flush=True)
    frame = pd.DataFrame(rows)
    record("EfficientNet-Lite0 in the cpu profile: variants on validation (thesis protocol)",
           frame.to_markdown(index=False).splitlines())
    cpu, isa = cpu_facts()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip()
    frame = frame.assign(date=str(datetime.date.today()), commit=commit, machine=f"{cpu}, {os.cpu_count()} cores",
                         isa=os.environ.get("ONEDNN_MAX_CPU_ISA") or isa)
    merge_rows(frame, CSV, ["variant"])  # the other variants' rows stay, with their date and commit


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", help=f"variants to train (default: all of {', '.join(VARIANTS)})")
    main(parser.parse_args().variants or list(VARIANTS))
