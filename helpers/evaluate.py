"""Evaluate a saved run on any folder in a dataset layout that ``helpers.dataset`` reads.

    python -m helpers.evaluate --run data/runs/cpu/polazaro_baseline --data /path/to/my_test_set

prints accuracy (with a 95 % bootstrap interval), per-class metrics and the confusion matrix for every image
found there, e.g. an external test set from another hospital, with the run's own test-time flip where it used
one. Files left out as unreadable are listed as warnings, also when the evaluation then fails. Exits with
status 2 and a one-line message when the run, the images or the arguments cannot be used.
"""
from __future__ import annotations

import argparse
import sys
import warnings


class EvaluationError(ValueError):
    """The run or the folder cannot be evaluated; the message says why in one line."""


def evaluate_folder(run: str, folder: str, batch_size: int = 32) -> dict:
    """Metrics of the run's model on every image of ``folder`` (all of them: no protocol, no split), predicted
    as the run predicted its own test set (input size, test-time flip)."""
    from . import config, dataset, metrics, run_records

    if batch_size < 1:
        raise EvaluationError(f"--batch-size must be a positive number of images, got {batch_size}.")
    record = run_records.read_record(run)
    index = dataset.index_dataset(dataset.dataset_root(folder, "--data"), cache=False, progress=False)
    warn_about_training_twins(record, index, folder)
    try:
        model = record.load_model()
    except Exception as error:  # Keras raises ValueError, OSError, zipfile errors... for a damaged file
        saved = config.short_path(record.path / "model.keras")
        raise EvaluationError(f"{saved} cannot be loaded ({type(error).__name__}: {_first_line(error)}); train the "
                              "run again.") from error
    with dataset.naming_undecodable(index):
        predictions = metrics.predict(model, index, record.config["image_size"], batch_size,
                                      tta_flip=bool(record.config.get("tta_flip", False)))
    scores = metrics.classification_metrics(predictions["true"], metrics.probabilities(predictions))
    scores["skipped"] = len(index.attrs.get("skipped", []))
    return scores


def warn_about_training_twins(record, index, folder: str) -> None:
    """Warn, naming the files, when ``folder`` holds images the run trained or validated on, or the same
    radiographs saved again: its accuracy there would not be the accuracy on unseen images."""
    import pandas as pd

    from . import config, dataset, duplicates

    split_file = config.data_dir() / "splits" / str(record.config.get("split_file"))
    if not split_file.is_file():
        return  # the run's split is not on this machine: nothing to compare with
    seen = pd.read_csv(split_file, dtype={"sha256": str, "phash": str}).query("split != 'test'")
    try:
        root = dataset.find_dataset(download=False)
        seen = seen.assign(path=[str(root / relpath) for relpath in seen["relpath"]])
    except dataset.DatasetNotFoundError:
        pass  # without the training images, near-duplicates are matched on their hash alone
    twins = duplicates.twins_of(index, seen)
    if len(twins):
        listing = dataset.file_listing([(row.relpath, f"the same radiograph as training image {row.twin_of}")
                                        for row in twins.itertuples()])
        warnings.warn(f"{len(twins)} image(s) in {folder} duplicate images {record.config.get('name')} trained or "
                      f"validated on; its accuracy on them is not accuracy on unseen images:\n{listing}",
                      stacklevel=2)


def report(metrics: dict) -> str:
    """The metrics as the text the command prints."""
    import pandas as pd

    from .config import CLASSES

    per_class = pd.DataFrame(metrics["per_class"]).T[["support", "sensitivity", "precision", "f1", "auc"]]
    matrix = pd.DataFrame(metrics["confusion_matrix"], index=[f"true {c}" for c in CLASSES],
                          columns=[f"pred {c}" for c in CLASSES])
    interval = f"{metrics['accuracy_ci_low']:.4f}-{metrics['accuracy_ci_high']:.4f}"
    lines = [f"images: {metrics['n']} (left out as unreadable: {metrics['skipped']})",
             f"accuracy: {metrics['accuracy']:.4f} (95% bootstrap interval {interval})",
             f"macro-F1: {metrics['macro_f1']:.4f}",
             "", per_class.to_string(float_format=lambda v: f"{v:.4f}", na_rep="n/a"),
             "", matrix.to_string()]
    return "\n".join(lines)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a run record folder, e.g. data/runs/cpu/red_david")
    parser.add_argument("--data", required=True, help="a folder with class sub-folders (COVID, Normal, ...)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per prediction batch (default 32)")
    args = parser.parse_args(argv)  # --help and argument errors end here, before TensorFlow is imported
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            metrics = evaluate_folder(args.run, args.data, args.batch_size)
        except (FileNotFoundError, ValueError) as error:  # missing or damaged run, wrong folder, no images...
            metrics, failure = None, error
    for warning in caught:  # which files were left out and why: shown also when the evaluation failed
        if issubclass(warning.category, UserWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
    if metrics is None:
        message = str(failure).strip()
        if "\n" in message and not isinstance(failure, EvaluationError):  # lists of files: keep them readable
            print(f"error: {message}", file=sys.stderr)
        else:
            print(f"error: {_first_line(failure)}", file=sys.stderr)
        return 2
    print(report(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
