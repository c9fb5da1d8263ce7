"""Evaluate a saved run on any folder in a dataset layout that ``helpers.data`` reads.

    python -m helpers.evaluate --run data/runs/cpu/polazaro_baseline --data /path/to/my_test_set

prints accuracy (with a 95 % bootstrap interval), per-class metrics and the confusion matrix for every image
found there, e.g. an external test set from another hospital. Exits with status 2 and a message when the run or
the images cannot be read.
"""
from __future__ import annotations

import argparse
import sys
import warnings

import pandas as pd

from . import data, metrics, records


def evaluate_folder(run: str, folder: str, batch_size: int = 32) -> dict:
    """Metrics of the run's model on every image of ``folder`` (all of them: no protocol, no split)."""
    record = records.read_record(run)
    index = data.index_dataset(data.find_dataset(folder, download=False), cache=False, progress=False)
    predictions = metrics.predict(record.load_model(), index, record.config["image_size"], batch_size)
    scores = metrics.classification_metrics(predictions["true"], metrics.probabilities(predictions))
    scores["skipped"] = len(index.attrs.get("skipped", []))
    return scores


def report(metrics: dict) -> str:
    """The metrics as the text the command prints."""
    per_class = pd.DataFrame(metrics["per_class"]).T[["support", "sensitivity", "precision", "f1", "auc"]]
    matrix = pd.DataFrame(metrics["confusion_matrix"], index=[f"true {c}" for c in data.CLASSES],
                          columns=[f"pred {c}" for c in data.CLASSES])
    lines = [f"images: {metrics['n']} (left out as unreadable: {metrics['skipped']})",
             f"accuracy: {metrics['accuracy']:.4f} (95% bootstrap interval "
             f"{metrics['accuracy_ci_low']:.4f}-{metrics['accuracy_ci_high']:.4f})",
             f"macro-F1: {metrics['macro_f1']:.4f}",
             "", per_class.to_string(float_format=lambda v: f"{v:.4f}", na_rep="n/a"),
             "", matrix.to_string()]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a run record folder, e.g. data/runs/cpu/red_david")
    parser.add_argument("--data", required=True, help="a folder with class sub-folders (COVID, Normal, ...)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            metrics = evaluate_folder(args.run, args.data, args.batch_size)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
    print(report(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
