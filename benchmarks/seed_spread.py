"""How far a run of the series moves with its training seed alone (review: "single runs read as facts").

    python benchmarks/seed_spread.py squeezenet_ft red_alberto --seeds 42 43 44

Each run is trained as the cpu profile trains it, once per seed, on the same split (drawn with the profile's own
seed, 42, every time), in its own runs folder (``data/runs/seeds/``); seed 42 is the committed run again. The test
set of every seed is read: nothing is chosen here, the spread is what notebooks 02 and 04 report beside their one
run. For every run it also measures notebook 07's age shortcut: the share of the unseen adult Normal images its
model calls COVID. Writes its rows to ``benchmarks/seed_spread.csv`` (with the machine and date; rows of other runs,
or of these runs with other seeds, stay) and appends the table to ``results.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
from datetime import date
from pathlib import Path

import pandas as pd
from budgets import machine, merge_rows  # the sibling script's machine line and CSV merge

from helpers import config, dataset, experiments, metrics, protocols, run_records, runs, shortcuts

HERE = Path(__file__).parent


def train_with_seed(name: str, seed: int, index: pd.DataFrame, *, folder: str = "seeds", variant: str | None = None,
                    changes: dict | None = None) -> run_records.Record:
    """The cpu profile's ``name`` trained with training seed ``seed`` on the cpu profile's split (reused when a
    record with the same settings exists), in ``data/runs/<folder>/``; with ``changes`` (fields of the run), as
    ``variant`` (benchmarks/all_remedy.py)."""
    cpu = config.PROFILES["cpu"]
    profile = dataclasses.replace(cpu, name=folder, seed=seed)
    exp = dataclasses.replace(experiments.experiment(name, cpu), name=f"{variant or name}_seed{seed}", **(changes or {}))
    split = protocols.run_split(index, exp.protocol, cpu, exp.match_split)  # as runs.get_or_train cuts it
    return runs.train_unless_recorded(exp, profile, split)


def unseen_adult_normals(index: pd.DataFrame) -> pd.DataFrame:
    """The adult Normal images that neither protocol's run of the cpu profile has seen (``index`` with groups):
    where notebook 07 measures the age shortcut (``shortcuts.unseen_by_thesis_run``)."""
    cpu = config.PROFILES["cpu"]
    unseen = shortcuts.unseen_by_thesis_run(protocols.load_split(index, "all", cpu),
                                            protocols.load_split(index, "thesis", cpu))
    return unseen[unseen["group"] == shortcuts.ADULT]


def called_covid(record: run_records.Record, images: pd.DataFrame) -> float:
    """The share of ``images`` that ``record``'s model calls COVID."""
    predictions = metrics.predict(record.load_model(), images, record.config["image_size"])
    return float((predictions["predicted"] == config.CLASSES.index("COVID")).mean())


def main(names: list[str], seeds: list[int]) -> pd.DataFrame:
    index = shortcuts.with_groups(dataset.index_dataset(dataset.find_dataset(), progress=False))
    adults = unseen_adult_normals(index)  # once: the same images for every run and seed
    rows = []
    for name in names:
        for seed in seeds:
            record = train_with_seed(name, seed, index)
            test = record.metrics["test"]
            rows.append({"run": name, "seed": seed, "val_accuracy": record.metrics["val"]["accuracy"],
                         "test_accuracy": test["accuracy"], "ci_low": test["accuracy_ci_low"],
                         "ci_high": test["accuracy_ci_high"], "seconds": record.metrics["train_seconds"],
                         "adult_normals_called_covid": called_covid(record, adults)})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    # the rows of other runs, and of these runs with other seeds, stay (the notebooks quote runs of other days)
    merge_rows(table.assign(machine=machine(), date=str(date.today())).round(4), HERE / "seed_spread.csv",
               ["run", "seed"])
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
