"""One figure style for the series and ``save(fig, name)`` into the profile's figures folder."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import config

CLASS_COLORS = {"COVID": "#d95f02", "Normal": "#1b9e77", "Viral Pneumonia": "#7570b3"}
DPI = 150
MAX_FIGURE_BYTES = 500_000  # a figure file a README or a course page can load quickly


def use_style() -> None:
    """Seaborn's whitegrid theme with readable sizes; called once in each notebook's setup cell."""
    sns.set_theme(style="whitegrid", context="notebook", palette=list(CLASS_COLORS.values()))
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": DPI, "savefig.bbox": "tight",
                                "axes.titleweight": "bold", "image.cmap": "gray"})


def save(fig: plt.Figure, name: str, profile: config.Profile | None = None) -> Path:
    """Write ``fig`` as ``<figures_dir>/<name>.png`` at 150 dpi and return the path. Photo-like figures (grids of
    X-rays) that would pass 500 KB are written at a lower resolution instead (100, then 72 dpi).

    The cpu profile writes the committed ``figures/``; the quick profile writes under ``data/runs/quick/``.
    """
    profile = profile or config.current(set_seed=False)
    path = profile.figures_dir / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    for dpi in (DPI, 100, 72):
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        if path.stat().st_size <= MAX_FIGURE_BYTES:
            break
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
    """Loss and accuracy per epoch, training against validation, side by side (as the thesis drew them).
    Legends sit below the axes, off the curves; the loss axis turns logarithmic when one epoch's loss would
    flatten the others (a spread of more than 20x); the accuracy axis spans the data, not 0-1."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    epochs = history["epoch"] + 1
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[metric], marker="o", ms=3, label=f"training {metric}")
        ax.plot(epochs, history[f"val_{metric}"], marker="o", ms=3, label=f"validation {metric}")
        if "selected" in history and history["selected"].astype(bool).any():
            chosen = history["selected"].astype(bool).to_numpy().nonzero()[0][-1]
            ax.plot(epochs.iloc[chosen], history[f"val_{metric}"].iloc[chosen], "k*", ms=11,
                    label="weights kept (lowest val. loss)")
        ax.set_xlabel("epoch"); ax.set_ylabel(metric)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if "stage" in history and (history["stage"] == "fine-tune").any():  # two-stage fine-tuning
            start = epochs[history["stage"] == "fine-tune"].iloc[0] - 0.5
            ax.axvline(start, color="grey", ls="--", lw=1, label="base unfrozen")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    losses = history[["loss", "val_loss"]].to_numpy(float)
    losses = losses[np.isfinite(losses) & (losses > 0)]
    if len(losses) and losses.max() > 20 * losses.min():
        axes[0].set_yscale("log")
    accuracies = history[["accuracy", "val_accuracy"]].to_numpy(float)
    accuracies = accuracies[np.isfinite(accuracies)]
    if len(accuracies):
        axes[1].set_ylim(max(0.0, accuracies.min() - 0.03), min(1.0, accuracies.max()) + 0.01)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _confusion_on(ax, matrix, title: str = "", labels=None) -> None:
    """Draw a confusion matrix (rows true, columns predicted) on ``ax``: counts and row shares."""
    from .config import CLASSES

    matrix = np.asarray(matrix)
    labels = labels or [name.replace(" ", "\n") for name in CLASSES]  # "Viral\nPneumonia" fits under its column
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    notes = np.array([[f"{n}\n{s:.0%}" for n, s in zip(row_n, row_s)] for row_n, row_s in zip(matrix, shares)])
    sns.heatmap(shares, annot=notes, fmt="", cmap="Blues", vmin=0, vmax=1, cbar=False, square=True,
                xticklabels=labels, yticklabels=labels, ax=ax, annot_kws={"fontsize": 10})
    ax.set_xlabel("predicted"); ax.set_ylabel("true")
    ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
    if title:
        ax.set_title(title, fontsize=11)


def confusion_matrix(matrix, title: str = "", labels=None) -> plt.Figure:
    """A confusion matrix (rows true, columns predicted) as a seaborn heatmap with counts and row shares."""
    fig, ax = plt.subplots(figsize=(4.6, 3.9))
    _confusion_on(ax, matrix, title, labels)
    fig.tight_layout()
    return fig


def confusion_grid(records, ncols: int = 4) -> plt.Figure:
    """The test confusion matrices of several runs in one grid, titled with run name and accuracy."""
    records = list(records.values()) if isinstance(records, dict) else list(records)
    nrows = int(np.ceil(len(records) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.9 * nrows), squeeze=False)
    for ax, record in zip(axes.flat, records):
        test = record.metrics["test"]
        weights = ", random init" if record.metrics.get("pretrained") is False else ""
        _confusion_on(ax, test["confusion_matrix"], f"{record.name}{weights}\naccuracy {test['accuracy']:.3f}")
    for ax in axes.flat[len(records):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


ZOOM_FROM = 0.8  # accuracy_intervals: the axis shows the runs and published values from here up


def accuracy_intervals(table, title: str = "", label: str = "ours") -> plt.Figure:
    """Test accuracy with its 95 % interval per run (a results table), the published accuracy as a cross, the
    published row named in brackets. Runs of several protocols (different test sets) are grouped by protocol,
    the groups separated by a line and named at the right."""
    several = "protocol" in table and table["protocol"].nunique() > 1
    if several:
        table = table.sort_values("protocol", kind="stable")
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(table) + 1.6))
    y = np.arange(len(table))
    accuracy = table["test_accuracy"].to_numpy(float)
    errors = [accuracy - table["test_accuracy_ci_low"], table["test_accuracy_ci_high"] - accuracy]
    ax.errorbar(accuracy, y, xerr=errors, fmt="o", capsize=4, label=f"{label} (95 % CI)")
    ax.scatter(table["published_test_accuracy"], y, marker="x", s=60, c="k", zorder=3,
               label="published (the row named in brackets)")
    names = [f"{m} (random init)" if f != "scratch" and not p else m
             for m, f, p in zip(table["model"], table["family"], table["pretrained"])]
    if "published" in table:  # name the published row each cross stands for
        names = [f"{n} [{p.split(': ', 1)[-1]}]" if pd.notna(a) else n
                 for n, p, a in zip(names, table["published"], table["published_test_accuracy"])]
    ax.set_yticks(y, names, fontsize=9); ax.invert_yaxis()
    # zoomed to where the comparisons are: values below ZOOM_FROM (a collapsed run, an untrained head) are
    # written at the left edge instead of stretching the axis down to them
    published = table["published_test_accuracy"].to_numpy(float)
    lows = table["test_accuracy_ci_low"].to_numpy(float)
    shown = np.concatenate([lows[accuracy >= ZOOM_FROM], published[published >= ZOOM_FROM]])
    shown = shown if len(shown) else np.concatenate([lows, published])
    high = np.nanmax(np.concatenate([shown, table["test_accuracy_ci_high"].to_numpy(float)]))
    left = max(0.0, np.nanmin(shown) - 0.02)
    ax.set_xlim(left, min(1.005, high + 0.015))
    for k, (ours, theirs) in enumerate(zip(accuracy, published)):
        below = [f"{who} {v:.3f}" for who, v in (("ours", ours), ("published", theirs)) if v < left]
        if below:
            ax.annotate("◀ " + ", ".join(below), (left, k), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=8, color="grey")
    if several:
        protocols = table["protocol"].to_numpy()
        for k in range(len(table)):
            if k == 0 or protocols[k] != protocols[k - 1]:
                if k:
                    ax.axhline(k - 0.5, color="grey", lw=0.8)
                ax.annotate(f"{protocols[k]} protocol", (1.01, k), xycoords=("axes fraction", "data"),
                            fontsize=9, va="center", color="grey")
    ax.set_xlabel("test accuracy")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=9, ncol=2, frameon=False)
    if title:
        ax.set_title(title, pad=26)
    fig.tight_layout()
    return fig


def gradcam_grid(images, maps, titles, overlay: bool = True, ncols: int = 4, suptitle: str = "",
                 size: float = 2.6) -> plt.Figure:
    """Grad-CAM as the thesis drew it: raw low-resolution maps (viridis), or maps resized onto the grey image
    (jet, alpha 0.4), one panel of ``size`` inches per image with its title (``T: <true>, P: <pred>``), axes off,
    one colour bar for the map's 0-1 scale."""
    nrows = int(np.ceil(len(maps) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + 0.1) * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(maps):
            ax.axis("off")
            continue
        if overlay:
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
            shown = ax.imshow(maps[i], cmap="jet", alpha=0.4, vmin=0, vmax=1,
                              extent=(-0.5, images[i].shape[1] - 0.5, images[i].shape[0] - 0.5, -0.5))
        else:
            shown = ax.imshow(maps[i], cmap="viridis", vmin=0, vmax=1)
        ax.axis("off")
        ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    # a narrow bar that takes little width from the panels (an overlay should be at least the image's own size)
    fig.colorbar(shown, ax=axes, shrink=0.5, fraction=0.02, pad=0.01, label="Grad-CAM (0 to 1)")
    return fig


def activation_grid(activation, title: str = "") -> plt.Figure:
    """One panel per channel of a layer's output (h, w, C), YlGnBu, in the thesis's grid (ceil(sqrt(C)) rows).
    Each channel is divided by its own 99th percentile and clipped at 1, so the one colour bar (0-1) holds for
    every panel and a channel with one bright pixel does not look blank."""
    channels = activation.shape[-1]
    nrows = int(np.ceil(np.sqrt(channels)))
    ncols = int(np.ceil(channels / nrows))
    side = min(0.8, 14 / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols + 1, side * nrows + 0.6), squeeze=False)
    for c, ax in enumerate(axes.flat):
        ax.axis("off")
        if c < channels:
            channel = np.asarray(activation[..., c], np.float32)
            peak = np.percentile(np.abs(channel), 99)
            shown = ax.imshow(np.clip(channel / peak, 0, 1) if peak > 0 else channel, cmap="YlGnBu", vmin=0, vmax=1)
    fig.colorbar(shown, ax=axes, shrink=0.6, label="activation / channel's 99th percentile")
    if title:
        fig.suptitle(title)
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


def masked_accuracy(masked, example_image, views, trivial=None) -> plt.Figure:
    """One example image under each view of ``views`` (name -> ``masks.masking`` keep), then each model's test
    accuracy with its 95 % interval under every view (``masked``: rows of model, view, accuracy, ci_low,
    ci_high, as ``shortcuts.masked_accuracy`` gives them per model); ``trivial`` (model -> share) marks what always
    answering the largest class scores on that model's test set."""
    from . import masks

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), gridspec_kw={"width_ratios": [1, 1, 1, 3.2]},
                             layout="constrained")
    size = example_image.shape[1]
    for ax, (view, keep) in zip(axes, views.items()):
        shown = example_image if keep is None else masks.masking(size, keep)(example_image)
        ax.imshow(shown[0, ..., 0], cmap="gray", vmin=0, vmax=255)
        ax.set_title(view, fontsize=10)
        ax.axis("off")
    interval_bars(axes[3], masked, "model", "view", order=list(views), chance=trivial)
    axes[3].set_title("Accuracy when part of the image is hidden")
    return fig


VIEW_COLORS = ["#666666", "#d95f02", "#1b9e77", "#7570b3"]
# Fewer images than this: a bar is drawn pale and hatched, and its label says "small n", so that a share of four
# images does not look like evidence (a 95 % interval on so few spans much of the axis).
SMALL_N = 30


def _mark_small(ax, bars, counts) -> None:
    """Draw the ``bars`` (matplotlib patches) whose ``counts`` are under ``SMALL_N`` pale and hatched."""
    for bar, n in zip(bars, counts):
        if n < SMALL_N:
            bar.set_alpha(0.35)
            bar.set_hatch("///")


def interval_bars(ax, table, rows: str, bars: str, *, order=None, value: str = "accuracy", chance=None,
                  xlabel: str = "accuracy (95 % CI)") -> None:
    """Horizontal bars of ``value`` with their 95 % intervals (``ci_low``, ``ci_high``): one group of bars per
    distinct ``rows`` entry, one bar per ``bars`` entry (in ``order``); ``chance`` (row -> value) marks a value
    per row with a dotted line, e.g. what always answering the largest class of that row's test set scores."""
    def pivot(column):
        wide = table.pivot(index=rows, columns=bars, values=column)
        wide = wide.reindex(index=list(dict.fromkeys(table[rows])))
        return wide[order] if order is not None else wide
    middle, low, high = pivot(value), pivot("ci_low"), pivot("ci_high")
    errors = np.stack([(middle - low).to_numpy().T, (high - middle).to_numpy().T], axis=1)  # (bars, 2, rows)
    counts = pivot("images") if "images" in table else None
    if counts is not None:  # n beside each row: one number where every bar of the row counts the same images
        middle.index = [f"{row} (n={'/'.join(str(int(v)) for v in dict.fromkeys(counts.loc[row].dropna()))}"
                        + (", small n" if counts.loc[row].min() < SMALL_N else "") + ")" for row in middle.index]
    middle.plot.barh(ax=ax, xerr=errors, capsize=3, color=VIEW_COLORS[:middle.shape[1]], width=0.75)
    if counts is not None:  # pandas draws the bars column by column, each over the rows in order
        _mark_small(ax, ax.patches, counts.to_numpy().T.ravel())
    if chance:
        for k, row in enumerate(low.index):  # the row names without their n
            ax.plot([chance[row]] * 2, [k - 0.45, k + 0.45], ls=":", c="k", lw=1.5,
                    label="largest class's share" if k == 0 else None)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))


def group_accuracy_bars(table, title: str) -> plt.Figure:
    """Per model and group: the share classified correctly on outside images beside the model's own test
    sensitivity for that class, both with their 95 % intervals and n (``table``: model, group, images, accuracy,
    ci_low, ci_high, and the same for the own test set: own test images, own test sensitivity, own ci_low,
    own ci_high)."""
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(table) + 1.2))
    labels = [f"{m} · {g} (n={n}{', small n' if n < SMALL_N else ''}; own test n={o})"
              for m, g, n, o in zip(table["model"], table["group"], table["images"], table["own test images"])]
    y = np.arange(len(table))
    own = table["own test sensitivity"]
    ax.barh(y + 0.2, own, height=0.4, color="#999999", label="own test set (same class, 95 % CI)", capsize=2,
            xerr=np.stack([own - table["own ci_low"], table["own ci_high"] - own]))
    errors = np.stack([table["accuracy"] - table["ci_low"], table["ci_high"] - table["accuracy"]])
    outside = ax.barh(y - 0.2, table["accuracy"], height=0.4, color="#d95f02", label="left-out images (95 % CI)",
                      xerr=errors, capsize=2)
    _mark_small(ax, outside.patches, table["images"])
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share classified correctly")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(title)
    return fig
