"""One figure style for the series and ``save(fig, name)`` into the profile's figures folder."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from . import config

CLASS_COLORS = {"COVID": "#d95f02", "Normal": "#1b9e77", "Viral Pneumonia": "#7570b3"}
DPI = 150


def use_style() -> None:
    """Seaborn's whitegrid theme with readable sizes; called once in each notebook's setup cell."""
    sns.set_theme(style="whitegrid", context="notebook", palette=list(CLASS_COLORS.values()))
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": DPI, "savefig.bbox": "tight",
                                "axes.titleweight": "bold", "image.cmap": "gray"})


def save(fig: plt.Figure, name: str, profile: config.Profile | None = None) -> Path:
    """Write ``fig`` as ``<figures_dir>/<name>.png`` at 150 dpi and return the path.

    The cpu profile writes the committed ``figures/``; the quick profile writes under ``data/runs/quick/``.
    """
    profile = profile or config.current(set_seed=False)
    path = profile.figures_dir / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def image_grid(images, titles=None, ncols: int = 6, size: float = 2.0, cmap: str = "gray",
               suptitle: str | None = None) -> plt.Figure:
    """Images in a grid with optional titles, axes off: examples, augmentations, Grad-CAM panels."""
    images = list(images)
    nrows = max(1, int(np.ceil(len(images) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            scale = {"vmin": 0, "vmax": 255} if np.asarray(images[i]).dtype == np.uint8 else {}
            ax.imshow(images[i], cmap=cmap, **scale)
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def training_curves(history, title: str = "") -> plt.Figure:
    """Loss and accuracy per epoch, training against validation, side by side (as the thesis drew them)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    epochs = history["epoch"] + 1
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[metric], marker="o", ms=3, label=f"training {metric}")
        ax.plot(epochs, history[f"val_{metric}"], marker="o", ms=3, label=f"validation {metric}")
        if "selected" in history and history["selected"].astype(bool).any():
            chosen = history["selected"].astype(bool).to_numpy().nonzero()[0][-1]
            ax.plot(epochs.iloc[chosen], history[f"val_{metric}"].iloc[chosen], "k*", ms=11,
                    label="weights kept (lowest val. loss)")
        ax.set_xlabel("epoch"); ax.set_ylabel(metric); ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
        if "stage" in history and (history["stage"] == "fine-tune").any():  # two-stage fine-tuning
            start = epochs[history["stage"] == "fine-tune"].iloc[0] - 0.5
            ax.axvline(start, color="grey", ls="--", lw=1)
            ax.text(start, ax.get_ylim()[1], " base unfrozen", va="top", fontsize=8, color="grey")
    axes[1].set_ylim(0, 1.02)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(matrix, title: str = "", labels=None) -> plt.Figure:
    """A confusion matrix (rows true, columns predicted) as a seaborn heatmap with counts and row shares."""
    from .data import CLASSES

    matrix = np.asarray(matrix)
    labels = labels or [name.replace(" ", "\n") for name in CLASSES]  # "Viral\nPneumonia" fits under its column
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    notes = np.array([[f"{n}\n{s:.0%}" for n, s in zip(row_n, row_s)] for row_n, row_s in zip(matrix, shares)])
    fig, ax = plt.subplots(figsize=(4.6, 3.9))
    sns.heatmap(shares, annot=notes, fmt="", cmap="Blues", vmin=0, vmax=1, cbar=False, square=True,
                xticklabels=labels, yticklabels=labels, ax=ax, annot_kws={"fontsize": 10})
    ax.set_xlabel("predicted"); ax.set_ylabel("true")
    ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def show_run(record, prefix: str, profile: config.Profile) -> None:
    """A finished run in a notebook: training curves and test confusion matrix (saved as
    ``<prefix>_curves_<run>.png`` / ``<prefix>_confusion_<run>.png``), then ours beside the published numbers."""
    from IPython.display import display

    from . import results

    name = record.name
    weights = " (random init)" if record.metrics.get("pretrained") is False else ""
    if len(record.history):
        save(training_curves(record.history, f"{name}{weights}: training curves"), f"{prefix}_curves_{name}", profile)
        plt.show()
    save(confusion_matrix(record.metrics["test"]["confusion_matrix"], f"{name}{weights}: test set"),
         f"{prefix}_confusion_{name}", profile)
    plt.show()
    display(results.compare(record))
