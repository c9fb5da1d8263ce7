"""Test images with a twin in training, and what they do to the committed runs' test accuracy.

    python benchmarks/twins_in_test.py RUNS_DIR [--protocol thesis]

For every run record of ``protocol`` in ``RUNS_DIR`` (e.g. ``data/runs/cpu`` of a clone), reads the split the run
was trained on (``data/splits/<its split file>`` beside the runs) and counts its test images that duplicate a
training or validation image: byte-identical, or a confirmed near-duplicate (``helpers.duplicates``, on the
dataset of ``CXR_DATA_DIR``). Then the run's test accuracy with and without them. Appends the table to
``benchmarks/results.md``: the measurement behind "near-duplicates grouped in every split".
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from budgets import record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="a profile's runs folder, e.g. /tmp/clone/data/runs/cpu")
    parser.add_argument("--protocol", default="thesis")
    args = parser.parse_args()
    from helpers import dataset

    index = dataset.index_dataset(dataset.find_dataset(), progress=False).set_index("relpath")
    lines = [("| run | split file | test images | with a twin in training (byte-identical / near-duplicate) | "
             "test accuracy | without them | on the twins |"), "|---|---|---|---|---|---|---|"]
    for folder in sorted(p for p in args.runs.iterdir() if (p / "config.json").exists()):
        config = json.loads((folder / "config.json").read_text())
        if config.get("protocol") != args.protocol:
            continue
        split = pd.read_csv(args.runs.parents[1] / "splits" / config["split_file"], dtype={"sha256": str})
        split["duplicate_group"] = split["relpath"].map(index["duplicate_group"])
        seen = split[split["split"] != "test"]
        test = split[split["split"] == "test"]
        twin = test["duplicate_group"].isin(seen["duplicate_group"])
        same_bytes = test["sha256"].isin(seen["sha256"])
        predictions = pd.read_csv(folder / "predictions.csv").query("split == 'test'")
        right = (predictions["true"] == predictions["predicted"]).to_numpy()
        twin_rows = predictions["relpath"].isin(test.loc[twin, "relpath"]).to_numpy()
        on_twins = f"{right[twin_rows].mean():.3f} ({right[twin_rows].sum()} of {twin_rows.sum()})" if twin_rows.any() else "–"
        lines.append(f"| `{folder.name}` | `{config['split_file']}` | {len(test)} | {int(twin.sum())} "
                     f"({int(same_bytes.sum())} / {int((twin & ~same_bytes).sum())}) | {right.mean():.3f} | "
                     f"{right[~twin_rows].mean():.3f} | {on_twins} |")
        print(lines[-1], flush=True)
    record(f"Test images with a twin in training ({args.protocol} protocol, runs of {args.runs})",
           [("Twins: the same duplicate group (byte-identical files and confirmed near-duplicates, "
            "`helpers.duplicates`) as a training or validation image of the run's split."), "", *lines])


if __name__ == "__main__":
    main()
