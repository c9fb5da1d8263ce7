"""Fine-tuning recipe variants for SqueezeNet, judged on the validation split only (never on test).

    python benchmarks/recipe_search.py lr3e-4 288px

Each variant changes the cpu profile's two-stage recipe (``squeezenet_ft2``: Adam 1e-4, cosine decay, 8 epochs
at 224 px) and is trained on the thesis protocol; records go to ``data/runs/explore/``. Notebook 04 quotes the
validation accuracies this printed on 2026-11-22: 0.9550 (lr3e-4) and 0.9481 (288px), against 0.9619 for the
recipe the notebook uses.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time

from helpers import config, data, experiments, training

VARIANTS = {
    "lr3e-4": {"learning_rate": 3e-4},
    "288px": {"learning_rate": 3e-4, "image_size": 288},
}


def main(names: list[str]) -> None:
    profile = config.current("cpu")
    explore = dataclasses.replace(profile, name="explore")  # own runs folder; same split and seed as cpu
    index = data.index_dataset(data.find_dataset(), progress=False)
    split = data.load_split(index, "thesis", profile)
    base = experiments.experiment("squeezenet_ft2", profile)
    for name in names or list(VARIANTS):
        exp = dataclasses.replace(base, name=f"squeezenet_ft2_{name}", **VARIANTS[name])
        start = time.perf_counter()
        record = training.train(exp, explore, split, verbose=0)
        print(json.dumps({"variant": name, "val_accuracy": record.metrics["val"]["accuracy"],
                          "val_loss": record.metrics["val"]["loss"],
                          "minutes": (time.perf_counter() - start) / 60}))


if __name__ == "__main__":
    main(sys.argv[1:])
