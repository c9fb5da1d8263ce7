"""What notebook 07's `all`-protocol run would need to call at most 5 % of adult Normal images COVID (issue:
EfficientNet-Lite0 as the DenseNet121 stand-in), measured on validation images only.

    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/all_remedy.py                  # every variant, seeds 42 and 43
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/all_remedy.py whole_base --seeds 42

Each variant changes the cpu profile's ``efficientnet_lite0_ft2_all`` in one way, keeps its matched split (the
thesis split's class counts) and trains in its own runs folder (``data/runs/all-remedy/``). It is scored on the
`all` split's validation images, none of which any `all` run trains on: the share of the adult Normals (ids above
1341) it calls COVID, and its accuracy on the whole validation split. No test image is read, so a variant chosen
here could be measured on 07's unseen test images afterwards without having been tuned on them. A variant taken
into the series would add its extra training seconds to ``make run`` twice: the thesis-protocol run would have to
change the same way to keep 07's comparison matched. Rows go to ``benchmarks/all_remedy.csv`` (the newest of each
variant and seed, with the machine and date) and the table to ``results.md``.
"""
from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import pandas as pd
from budgets import machine, merge_rows, record
from seed_spread import train_with_seed  # the cpu profile's run with another seed, in its own runs folder

from helpers import config, dataset, metrics, protocols, shortcuts

HERE = Path(__file__).parent
RUN = "efficientnet_lite0_ft2_all"
# variant -> the fields it changes in the cpu profile's run (the committed recipe first)
VARIANTS = {
    "committed": {},
    "whole_base": {"fine_tune_from": None},
    "from_block5": {"fine_tune_from": "block5a_expand_conv"},
    "4_epochs": {"epochs": 4},
    "160px": {"image_size": 160},
}


def main(names: list[str], seeds: list[int]) -> pd.DataFrame:
    cpu = config.PROFILES["cpu"]
    index = shortcuts.with_groups(dataset.index_dataset(dataset.find_dataset(), progress=False))
    every = protocols.load_split(index, "all", cpu)
    val = every[every["split"] == "val"]
    adults = val["group"].to_numpy() == shortcuts.ADULT
    rows = []
    for name in names:
        for seed in seeds:  # on the run's matched split, as the series trains it
            found = train_with_seed(RUN, seed, index, folder="all-remedy", variant=name, changes=VARIANTS[name])
            predicted = metrics.predict(found.load_model(), val, found.config["image_size"])
            right = (predicted["predicted"] == predicted["true"]).to_numpy()
            called = predicted["predicted"].to_numpy() == config.CLASSES.index("COVID")
            rows.append({"variant": name, "seed": seed, "changes": str(VARIANTS[name] or "-"),
                         "val_accuracy": right.mean(), "val_adult_normals": int(adults.sum()),
                         "val_adult_normals_called_covid": called[adults].mean(),
                         "train_seconds": found.metrics["train_seconds"]})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    merge_rows(table.assign(machine=machine(), date=str(date.today())).round(4), HERE / "all_remedy.csv",
               ["variant", "seed"])
    record("07's `all` run: what calling at most 5 % of adult Normals COVID would take (validation only)",
           [(f"`{RUN}` variants, its matched split, scored on the `all` split's {len(val)} validation images "
             f"({int(adults.sum())} adult Normals); no test image read."), "",
            *table.to_markdown(index=False, floatfmt=".4f").splitlines()])
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", help=f"variants (default: all of {', '.join(VARIANTS)})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    args = parser.parse_args()
    main(args.variants or list(VARIANTS), args.seeds)
