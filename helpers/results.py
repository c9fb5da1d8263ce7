"""The results table: the series' runs, one row each from their run records (``run_records``), beside the
original projects' published numbers (``thesis_results.csv``, shipped as data); the validation rule that picks a
model and the paired test that says which differences are real."""
from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from . import experiments


def published() -> pd.DataFrame:
    """Both projects' results as they published them (errata corrected and marked in ``note``).

    Transcribed from the thesis report's tables and the smaller project's README; per-class sensitivity and
    precision of the thesis are computed from its confusion matrices (the thesis reports accuracy only).
    """
    with resources.files(__package__).joinpath("thesis_results.csv").open() as handle:
        return pd.read_csv(handle)


def published_row(record) -> pd.Series:
    """The published result a run record is compared with (its experiment's ``published`` field)."""
    project, model = record.config.get("published") or experiments.PUBLISHED[record.name].published
    table = published()
    found = table[(table["project"] == project) & (table["model"] == model)]
    if found.empty:  # a run the projects did not publish (e.g. a recipe variant)
        return pd.Series({"project": "–", "model": "none", **dict.fromkeys(table.columns.drop(["project", "model"]))})
    return found.iloc[0]


def differences(record) -> str:
    """How a run differs from the published run it is compared with, in a few words for its table row: another
    backbone standing in, another recipe, a smaller input, fewer epochs (the published settings are the ``full``
    profile's: ``experiments.PUBLISHED``). Empty where it differs in none of these or has no published run."""
    theirs, cfg = published_row(record), record.config
    published_run = experiments.PUBLISHED.get(record.name)
    if theirs["model"] == "none" or published_run is None:
        return ""
    notes = []
    backbone = str(theirs.get("backbone") or "")
    if cfg["scheme"] != "scratch" and backbone and backbone.lower() != cfg["model"]:
        notes.append(f"{cfg['model']} stands in for {backbone}")
    if cfg["scheme"] == "ft2":
        notes.append("two-stage recipe (the thesis: one stage)")
    if cfg["image_size"] != published_run.image_size:
        notes.append(f"{cfg['image_size']} px (published {published_run.image_size})")
    ours, planned = cfg.get("epochs", 0), published_run.epochs
    if cfg["scheme"] != "ft2" and ours != planned:
        notes.append(f"{ours} epoch{'' if ours == 1 else 's'} (published {planned})")
    return "; ".join(notes)


def compare(record) -> pd.DataFrame:
    """One run beside the published result it reproduces: accuracy with interval, per-class sensitivity, ..."""
    test, mine = record.metrics["test"], record.metrics
    theirs = published_row(record)
    per_class = test["per_class"]

    def fmt(value, digits=4):
        return "–" if value is None or pd.isna(value) else f"{value:.{digits}f}"

    rows = {
        "test accuracy": ((f"{fmt(test['accuracy'])} [{fmt(test['accuracy_ci_low'], 3)}, "
                           f"{fmt(test['accuracy_ci_high'], 3)}]"), fmt(theirs["test_accuracy"])),
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
    # a run no project published (e.g. the `all`-protocol run) has no published column to fill
    label = f"{theirs['project']}: {theirs['model']} (published)" if theirs["model"] != "none" else "published: none"
    random_base = ", random init" if mine.get("pretrained") is False else ""  # a backbone without ImageNet weights
    ours = f"ours ({record.config['profile']} profile{random_base})"
    return pd.DataFrame(rows, index=[ours, label]).T


def most_frequent_error(confusion) -> tuple[int, int, int]:
    """The most frequent (true, predicted) pair off the diagonal of a confusion matrix, and its count."""
    errors = np.array(confusion)
    np.fill_diagonal(errors, 0)
    i, j = np.unravel_index(errors.argmax(), errors.shape)
    return int(i), int(j), int(errors[i, j])


def run_summary(record) -> str:
    """The measured facts of one run as a Markdown sentence for a notebook's reading of it: test accuracy with its
    interval, the epoch whose weights were kept, COVID sensitivity as a count, the most frequent confusion, and the
    published number it reproduces (inside or outside our interval). Generated, so a rerun cannot leave it behind."""
    test, m = record.metrics["test"], record.metrics
    classes = list(test["per_class"])
    matrix = np.array(test["confusion_matrix"])
    i, j, most = most_frequent_error(matrix)
    covid = test["per_class"]["COVID"]
    kept = "" if m.get("selected_epoch") is None else f", weights of epoch {m['selected_epoch'] + 1} kept"
    text = (f"`{record.name}` ({record.config['image_size']} px, {m['epochs_run']} epochs{kept}): test accuracy "
            f"**{test['accuracy']:.1%}** ({test['accuracy_ci_low']:.1%}–{test['accuracy_ci_high']:.1%}, "
            f"{test['n']} images); COVID sensitivity {covid['sensitivity']:.1%} ({matrix[0, 0]} of {matrix[0].sum()})"
            f"; {matrix.sum() - np.trace(matrix)} errors, most often {classes[i]} called {classes[j]} ({most}).")
    theirs = published_row(record)
    if pd.notna(theirs.get("test_accuracy")):
        where = ("inside" if test["accuracy_ci_low"] <= theirs["test_accuracy"] <= test["accuracy_ci_high"]
                 else "above" if theirs["test_accuracy"] > test["accuracy_ci_high"] else "below")
        text += (f" Published ({theirs['project']}: {theirs['model']}): {theirs['test_accuracy']:.2%}, {where} our "
                 "interval.")
    return text


# --------------------------------------------------------------------------------------------------
# The results table of the series (notebook 05), built from run records only
# --------------------------------------------------------------------------------------------------

def series_runs(profile) -> list[str]:
    """Every run the series makes in ``profile``, in notebook order (scratch, then transfer)."""
    return list(experiments.FULL) + experiments.transfer_runs(profile)


def table_row(record) -> dict:
    """One run as a row of the results table (see ``results_table``)."""
    cfg, m = record.config, record.metrics
    test, val = m["test"], m["val"]
    history = record.history
    chosen = history[history["selected"].astype(bool)].tail(1) if "selected" in history else history.tail(0)
    at_selected = chosen.iloc[0] if len(chosen) else {}
    theirs = published_row(record)
    row = {
        "model": record.name, "family": experiments.FAMILY[cfg["scheme"]], "backbone": cfg["model"],
        "pretrained": bool(m.get("pretrained")), "diverged": bool(m.get("diverged")), "protocol": cfg["protocol"],
        "image_size": cfg["image_size"], "precision": cfg.get("precision", "float32"),
        "epochs": m["epochs_run"],
        "selected_epoch": None if m.get("selected_epoch") is None else m["selected_epoch"] + 1,
        "loss": at_selected.get("loss"), "accuracy": at_selected.get("accuracy"),
        "val_loss": val["loss"], "val_accuracy": val["accuracy"],
        "test_accuracy": test["accuracy"], "test_accuracy_ci_low": test["accuracy_ci_low"],
        "test_accuracy_ci_high": test["accuracy_ci_high"], "macro_f1": test["macro_f1"],
        "auc_ovr_macro": test["auc_ovr_macro"],
    }
    for measure in ("sensitivity", "precision", "auc"):
        for label, values in test["per_class"].items():
            row[f"{measure}_{label.lower().replace(' ', '_')}"] = values[measure]
    row.update({"test_n": test["n"], "train_seconds": m["train_seconds"],
                "images_per_second": m.get("images_per_second"), "parameters": m.get("parameters"),
                "published": f"{theirs['project']}: {theirs['model']}", "published_test_accuracy": theirs["test_accuracy"],
                "published_sensitivity_covid": theirs["sensitivity_covid"], "differs_from_published": differences(record)})
    return row


def results_table(records) -> pd.DataFrame:
    """One row per run record: what the thesis's table has (training loss and accuracy, validation loss and
    accuracy, test accuracy, epochs) and what it lacks (95 % interval, macro-F1, per-class sensitivity,
    precision and AUC, training time, images per second), with the published result each run reproduces.

    ``loss``/``accuracy`` are the training metrics of the epoch whose weights were kept (logged during that
    epoch, with augmentation and dropout on); validation and test metrics are of the kept weights.
    """
    records = list(records.values()) if isinstance(records, dict) else list(records)
    return pd.DataFrame([table_row(r) for r in records])


def best_on_validation(table: pd.DataFrame, family: str | None = None, protocols=None) -> str:
    """The run of ``table`` (``results_table``) with the highest validation accuracy, ties (one validation image
    is a third of a point) going to the lower validation loss; optionally within one family (scratch, EC, FT) and
    among some protocols (validation sets of different protocols are not comparable): how every notebook chooses
    a model, never on test."""
    rows = table if family is None else table[table["family"] == family]
    if protocols is not None:
        rows = rows[rows["protocol"].isin([protocols] if isinstance(protocols, str) else protocols)]
    if rows.empty:
        raise ValueError(f"No run of family {family!r} (protocols {protocols}) in the table.")
    rows = rows.set_index("model") if "model" in rows else rows
    return str(rows.sort_values(["val_accuracy", "val_loss"], ascending=[False, True], kind="stable").index[0])


def best_per_family(table: pd.DataFrame, protocol: str = "thesis") -> dict:
    """The best run of each family (scratch, EC, FT) among ``protocol``'s runs, by ``best_on_validation``: "the best
    scratch / EC / FT model" wherever notebooks 06 and 07 say it, one definition for both."""
    families = [f for f in ("scratch", "EC", "FT") if ((table["family"] == f) & (table["protocol"] == protocol)).any()]
    return {family: best_on_validation(table, family, protocol) for family in families}


def paired_comparison(a, b) -> dict:
    """Exact McNemar test of two runs scored on the same test images: how many images only ``a`` gets right,
    how many only ``b``, and the two-sided binomial p-value of that split (overlapping intervals are not a
    test; this is, because it pairs the images)."""
    first, second = a.test_predictions(), b.test_predictions()
    if not first["relpath"].equals(second["relpath"]):
        raise ValueError(f"{a.name} and {b.name} were not tested on the same images; a paired test needs that.")
    right_a, right_b = first["true"] == first["predicted"], second["true"] == second["predicted"]
    return {"run": a.name, "other": b.name, **mcnemar(right_a, right_b)}


def mcnemar(right_a, right_b) -> dict:
    """Exact McNemar test of two models' right/wrong on the same images, in the same order: the images only the
    first gets right, only the second, and the two-sided binomial p-value of that split."""
    from scipy.stats import binomtest

    right_a, right_b = np.asarray(right_a, dtype=bool), np.asarray(right_b, dtype=bool)
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_run_right": only_a, "only_other_right": only_b, "p_value": p}


MARKDOWN_COLUMNS = {
    "model": "run", "family": "family", "weights": "weights", "image_size": "input px", "precision": "precision",
    "epochs": "epochs",
    "test accuracy [95 % CI]": "test accuracy [95 % CI]", "macro_f1": "macro-F1",
    "sensitivity_covid": "COVID sens.", "published": "published row", "published_test_accuracy": "published acc.",
    "differs_from_published": "differs from the published run in",
}


def to_markdown(table: pd.DataFrame) -> str:
    """The columns the README shows, ours beside the published accuracy, as a Markdown table."""
    shown = table.assign(
        weights=[("ImageNet" if p else "random init") if f != "scratch" else "–"
                 for p, f in zip(table["pretrained"], table["family"])],
        **{"test accuracy [95 % CI]": [f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in zip(
            table["test_accuracy"], table["test_accuracy_ci_low"], table["test_accuracy_ci_high"])]})
    shown = shown[list(MARKDOWN_COLUMNS)].rename(columns=MARKDOWN_COLUMNS)
    # a run no project published (e.g. the `all`-protocol run): a dash, not "nan"
    shown["published acc."] = [f"{v:.3f}" if pd.notna(v) else "–" for v in shown["published acc."]]
    shown["published row"] = shown["published row"].replace("–: none", "–")
    shown["differs from the published run in"] = shown["differs from the published run in"].replace("", "–")
    return shown.to_markdown(index=False, floatfmt=".3f")


def write_table(table: pd.DataFrame, profile) -> tuple:
    """``results_table.csv`` (every column, 4 decimals) and ``results_table.md`` in the profile's figures
    folder (``figures/`` for the cpu profile); returns both paths."""
    folder = profile.figures_dir
    folder.mkdir(parents=True, exist_ok=True)
    csv, md = folder / "results_table.csv", folder / "results_table.md"
    table.round(4).to_csv(csv, index=False)
    md.write_text(f"Test set results of the {profile.name} profile (written by notebooks/05_results_table.ipynb)."
                  f"\n\n{to_markdown(table)}\n")
    return csv, md
