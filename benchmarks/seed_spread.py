"""How far a run of the series moves with its training seed alone (review: "single runs read as facts").

    python benchmarks/seed_spread.py squeezenet_ft red_alberto --seeds 42 43 44

Each run is trained as the cpu profile trains it, once per seed, on the same split (drawn with the profile's own
seed, 42, every time), in its own runs folder (``data/runs/seeds/``); seed 42 is the committed run again. The test
set of every seed is read: nothing is chosen here, the spread is what notebooks 02 and 04 report beside their one
run. Writes ``benchmarks/seed_spread.csv`` (with the machine and date) and appends the table to ``results.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
from datetime import date
from pathlib import Path

import pandas as pd
from budgets import machine  # the sibling script's one-line machine description

from helpers import config, dataset, experiments, protocols, run_records, training

HERE = Path(__file__).parent


def train_with_seed(name: str, seed: int, index: pd.DataFrame) -> run_records.Record:
    """The cpu profile's ``name`` trained with training seed ``seed`` on the cpu profile's split (reused when a
    record with the same settings exists)."""
    cpu = config.PROFILES["cpu"]
    profile = dataclasses.replace(cpu, name="seeds", seed=seed)
    exp = dataclasses.replace(experiments.experiment(name, cpu), name=f"{name}_seed{seed}")
    split = protocols.load_split(index, exp.protocol, cpu)
    done = profile.runs_dir / exp.name
    if (done / "model.keras").exists():
        record = run_records.read_record(done)
        if run_records.same_run(record.config, training.identity(exp, profile, split)):
            return record
    return training.train(exp, profile, split, verbose=0)


def main(names: list[str], seeds: list[int]) -> pd.DataFrame:
    index = dataset.index_dataset(dataset.find_dataset(), progress=False)
    rows = []
    for name in names:
        for seed in seeds:
            record = train_with_seed(name, seed, index)
            test = record.metrics["test"]
            rows.append({"run": name, "seed": seed, "val_accuracy": record.metrics["val"]["accuracy"],
                         "test_accuracy": test["accuracy"], "ci_low": test["accuracy_ci_low"],
                         "ci_high": test["accuracy_ci_high"], "seconds": record.metrics["train_seconds"]})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table.assign(machine=machine(), date=str(date.today())).round(4).to_csv(HERE / "seed_spread.csv", index=False)
    spread = table.groupby("run")["test_accuracy"].agg(["min", "max"])
    with (HERE / "results.md").open("a") as handle:
        handle.write(f"\n### Seed spread of single runs: {machine()}\n\n"
                     f"cpu profile settings, one split (seed 42), training seeds {', '.join(map(str, seeds))}; test "
                     "read for every seed, nothing chosen.\n\n"
                     f"{table.to_markdown(index=False, floatfmt='.4f')}\n\n"
                     + "".join(f"- `{run}`: test accuracy {r['min']:.3f}-{r['max']:.3f} over the seeds\n"
                               for run, r in spread.iterrows()))
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="runs of the series, e.g. squeezenet_ft red_alberto")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    args = parser.parse_args()
    main(args.runs, args.seeds)
