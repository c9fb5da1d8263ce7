"""The original projects' published numbers, shipped as data, for side-by-side comparison with our runs."""
from __future__ import annotations

from importlib import resources

import pandas as pd

# Our run name -> the published row it reproduces (project, model).
PUBLISHED_ROW = {
    "polazaro_baseline": ("polazaro", "Baseline"),
    "polazaro_baseline_aug": ("polazaro", "Baseline + data augmentation"),
    "polazaro_inception_aug": ("polazaro", "Final architecture + data augmentation"),
    "red_david": ("thesis", "Red David"),
    "red_alberto": ("thesis", "Red Alberto"),
}


def published() -> pd.DataFrame:
    """Both projects' results as they published them (errata corrected and marked in ``note``).

    Transcribed from the thesis report's tables and the smaller project's README; per-class sensitivity and
    precision of the thesis are computed from its confusion matrices (the thesis reports accuracy only).
    """
    with resources.files(__package__).joinpath("thesis_results.csv").open() as handle:
        return pd.read_csv(handle)


THESIS_PREFIX = {"resnet50": "ResNet", "vgg16": "VGG16", "inceptionv3": "InceptionV3", "xception": "Xception"}
PROGRESSION = {"v0": "DN-V0", "v1": "DN-V1", "v2": "DN-V2", "ec": "DN-V2-reg", "ft": "DN-V3"}


def published_key(run_name: str) -> tuple[str, str]:
    """(project, model) of the published row a run is compared with.

    Scratch runs: the row they reproduce. DenseNet121 and SqueezeNet (which stands in for DenseNet121 in the
    cpu profile) follow the thesis's DN-V0 ... DN-V3 rows; the other backbones their -EC / -FT rows. Every
    two-stage fine-tuning (``_ft2``, not in the thesis) is compared with the thesis's best, Xception-FT.
    """
    if run_name in PUBLISHED_ROW:
        return PUBLISHED_ROW[run_name]
    backbone, scheme = run_name.rsplit("_", 1)
    if scheme == "ft2":
        return "thesis", "Xception-FT"
    if backbone in ("densenet121", "squeezenet"):
        return "thesis", PROGRESSION[scheme]
    return "thesis", f"{THESIS_PREFIX[backbone]}-{scheme.upper()}"


def published_row(run_name: str) -> pd.Series:
    """The published result that the run ``run_name`` is compared with (see ``published_key``)."""
    project, model = published_key(run_name)
    table = published()
    return table[(table["project"] == project) & (table["model"] == model)].iloc[0]


def compare(record) -> pd.DataFrame:
    """One run beside the published result it reproduces: accuracy with interval, per-class sensitivity, ..."""
    test, mine = record.metrics["test"], record.metrics
    theirs = published_row(record.name)
    per_class = test["per_class"]

    def fmt(value, digits=4):
        return "–" if value is None or pd.isna(value) else f"{value:.{digits}f}"

    rows = {
        "test accuracy": (f"{fmt(test['accuracy'])} [{fmt(test['accuracy_ci_low'], 3)}, "
                          f"{fmt(test['accuracy_ci_high'], 3)}]", fmt(theirs["test_accuracy"])),
        "sensitivity COVID": (fmt(per_class["COVID"]["sensitivity"]), fmt(theirs["sensitivity_covid"])),
        "sensitivity Normal": (fmt(per_class["Normal"]["sensitivity"]), fmt(theirs["sensitivity_normal"])),
        "sensitivity Viral Pneumonia": (fmt(per_class["Viral Pneumonia"]["sensitivity"]),
                                        fmt(theirs["sensitivity_viral_pneumonia"])),
        "precision COVID": (fmt(per_class["COVID"]["precision"]), fmt(theirs["precision_covid"])),
        "macro-F1": (fmt(test["macro_f1"]), "–"),
        "AUC (one-vs-rest, macro)": (fmt(test["auc_ovr_macro"]), "–"),
        "validation accuracy (last epoch)": (fmt(mine["last_epoch"].get("val_accuracy")),
                                             fmt(theirs["val_accuracy"])),
        "epochs": (str(mine["epochs_run"]), fmt(theirs["epochs"], 0)),
        "input size": (f"{record.config['image_size']} px", "224 px"),
        "test images": (str(test["n"]), fmt(theirs["test_n"], 0)),
    }
    label = f"{theirs['project']}: {theirs['model']} (published)"
    random_base = ", random init" if mine.get("pretrained") is False else ""  # a backbone without ImageNet weights
    ours = f"ours ({record.config['profile']} profile{random_base})"
    return pd.DataFrame(rows, index=[ours, label]).T
