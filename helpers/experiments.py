"""The named training runs of the series and their settings in each profile.

``experiment(name, profile)`` is the single place where a run's model, protocol, input size, epochs and
augmentation are decided; its fields become the run record's ``config.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from . import config


@dataclass(frozen=True)
class Experiment:
    """Everything that defines one training run (its record is reused only when all of it matches)."""

    name: str
    model: str
    protocol: str
    image_size: int
    epochs: int
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    augment: str | None = None      # "thesis" (flip, zoom, brightness) or "polazaro" (flip, rotation)
    oversample_covid: int = 0       # extra, augmented copies of every COVID training image
    match_split: str | None = None  # training and validation cut to this protocol's class counts (protocols.run_split)
    early_stopping: int | None = None  # patience on validation loss; best weights restored
    scheme: str = "scratch"         # scratch | v0 (untrained head) | ec (frozen base) | ft (one stage) | ft2
    head: str | None = None         # thesis head on pooled features: v1, v2, v2reg (backbone runs only)
    views: int = 0                  # ec / ft2 stage 1: augmented views per training image in the feature cache
    head_epochs: int = 0            # ft2: epochs of stage 1 (head only, on cached features)
    head_learning_rate: float = 1e-3  # ft2: learning rate of stage 1
    fine_tune_from: str | None = None  # ft2: the base's first fine-tuned layer (earlier ones stay frozen); None: all
    cosine: bool = False            # cosine decay of the learning rate to zero over the (last) stage
    warmup_epochs: int = 0          # linear warm-up of the learning rate over the first epochs (with cosine)
    weight_decay: float = 0.0       # decoupled weight decay: AdamW instead of Adam where > 0
    label_smoothing: float = 0.0    # cross-entropy against smoothed one-hot labels (image stage)
    ema: bool = False               # evaluate and keep an exponential moving average of the weights
    mixup: float = 0.0              # MixUp's alpha on training batches (0: off)
    tta_flip: bool = False          # predictions averaged over the image and its left-right mirror
    precision: str = "float32"      # or "mixed_bfloat16" (Keras mixed precision; CPUs with AVX512-BF16)
    selection: str = "best_val_loss"  # weights evaluated: of the epoch with the lowest validation loss
    source: str = ""                # which project the run reproduces, and where we deviate
    published: tuple[str, str] = ("", "")  # (project, model) of the published result it is compared with

    @property
    def family(self) -> str:
        """scratch, EC (frozen ImageNet base) or FT (fine-tuned base): the results table's grouping."""
        return FAMILY[self.scheme]

    @property
    def notebook(self) -> str:
        """The notebook that trains this run (named in messages about missing records)."""
        return NOTEBOOK[self.family]


FAMILY = {"scratch": "scratch", "v0": "EC", "ec": "EC", "ft": "FT", "ft2": "FT"}
NOTEBOOK = {"scratch": "02_scratch_baseline.ipynb", "EC": "03_transfer_feature_extraction.ipynb",
            "FT": "04_fine_tuning.ipynb"}
# Fields that describe a run without changing what it computes: not part of its identity.
DESCRIPTIVE_FIELDS = ("source", "published")


# The runs as the original projects describe them: this is the `full` profile.
FULL = {
    "polazaro_baseline": Experiment(
        "polazaro_baseline", "polazaro_baseline", "polazaro", 224, 30, published=("polazaro", "Baseline"),
        source="Lázaro & Barco 2020: baseline CNN, Adam, 30 epochs, no augmentation"),
    "polazaro_baseline_aug": Experiment(
        "polazaro_baseline_aug", "polazaro_baseline", "polazaro", 224, 30, augment="polazaro", oversample_covid=5, published=("polazaro", "Baseline + data augmentation"),
        source="Lázaro & Barco 2020: baseline CNN + 5 augmented copies of each COVID training image"),
    "polazaro_inception_aug": Experiment(
        "polazaro_inception_aug", "polazaro_inception", "polazaro", 224, 30, augment="polazaro", oversample_covid=5, published=("polazaro", "Final architecture + data augmentation"),
        source="Lázaro & Barco 2020: inception-style CNN (README figure) + COVID augmentation"),
    "red_david": Experiment(
        "red_david", "red_david", "thesis", 224, 20, augment="thesis", published=("thesis", "Red David"),
        source="thesis: Red David, 20 epochs; optimiser and augmentation not stated (Adam and the thesis's "
               "augmentation chosen here)"),
    "red_alberto": Experiment(
        "red_alberto", "red_alberto", "thesis", 224, 20, augment="thesis", early_stopping=3, published=("thesis", "Red Alberto"),
        source="thesis: Red Alberto with early stopping (stopped at 8 epochs); patience and optimiser not "
               "stated (3 on validation loss, Adam chosen here)"),
}

# --- transfer learning (notebooks 03 and 04) -------------------------------------------------------------
# The thesis's SGD, shown for DN-V0/V1 and probably reused for the rest: lr 0.01, momentum 0.9, Nesterov.
THESIS_SGD = {"optimizer": "sgd", "learning_rate": 0.01}
THESIS_PREFIX = {"densenet121": "DN", "resnet50": "ResNet", "vgg16": "VGG16", "inceptionv3": "InceptionV3",
                 "xception": "Xception"}
PROGRESSION = {"v0": "V0", "v1": "V1", "v2": "V2", "ec": "V2-reg", "ft": "V3"}


# The backbones that stand in for DenseNet121 where it has no weights (offline): EfficientNet-Lite0, about as
# accurate on ImageNet at a seventh of the compute, and SqueezeNet, the small fast one.
DENSENET_STANDINS = ("efficientnet_lite0", "squeezenet")


def _published(backbone: str, kind: str) -> tuple[str, str]:
    """The thesis row a transfer run is compared with. DenseNet121 and its stand-ins (``DENSENET_STANDINS``)
    follow DN-V0 ... DN-V3; the other backbones their -EC / -FT rows; every two-stage fine-tuning (not in the
    thesis) is compared with the thesis's best, Xception-FT."""
    if kind == "ft2":
        return "thesis", "Xception-FT"
    if backbone == "densenet121" or backbone in DENSENET_STANDINS:
        return "thesis", f"DN-{PROGRESSION[kind]}"
    if kind in ("ec", "ft"):
        return "thesis", f"{THESIS_PREFIX[backbone]}-{kind.upper()}"
    return "", ""  # the thesis ran V0-V2 on DenseNet121 only


def _transfer(backbone: str) -> dict:
    """All transfer runs of one backbone, with the thesis's settings (20 epochs, 224 px)."""
    common = {"model": backbone, "protocol": "thesis", "image_size": 224}
    runs = [
        Experiment(f"{backbone}_v0", scheme="v0", head="v1", epochs=0, **common, **THESIS_SGD,
                   source="thesis DN-V0: frozen base, softmax head never trained"),
        Experiment(f"{backbone}_v1", scheme="ec", head="v1", epochs=20, **common, **THESIS_SGD,
                   source="thesis DN-V1: frozen base, softmax head trained on fixed features"),
        Experiment(f"{backbone}_v2", scheme="ec", head="v2", augment="thesis", views=5, epochs=20, **common,
                   **THESIS_SGD, source="thesis DN-V2: deeper head, augmentation (5 cached augmented views per "
                   "image instead of on-the-fly augmentation)"),
        Experiment(f"{backbone}_ec", scheme="ec", head="v2reg", augment="thesis", views=5, epochs=20, **common,
                   **THESIS_SGD, source="thesis DN-V2-reg / -EC: frozen base, 500-Dropout-200 head, augmentation"),
        Experiment(f"{backbone}_ft", scheme="ft", head="v2reg", augment="thesis", epochs=20, **common,
                   **THESIS_SGD, source="thesis DN-V3 / -FT: everything trainable from the start, one stage, the "
                   "thesis's SGD"),
        Experiment(f"{backbone}_ft2", scheme="ft2", head="v2reg", augment="thesis", views=5, head_epochs=10,
                   learning_rate=1e-4, cosine=True, epochs=20, **common,
                   source="standard two-stage recipe: train the head on frozen features, then unfreeze everything "
                   "with Adam at 1e-4 and cosine decay"),
    ]
    kinds = ("v0", "v1", "v2", "ec", "ft", "ft2")  # in the order of ``runs``
    return {exp.name: replace(exp, published=_published(backbone, kind)) for kind, exp in zip(kinds, runs)}


TRANSFER = {name: exp for backbone in config.ALL_BACKBONES for name, exp in _transfer(backbone).items()}

# --- beyond the thesis (notebooks 04 and 07) ----------------------------------------------------------------
_FT2 = TRANSFER["squeezenet_ft2"]
BEYOND = {
    # the fine-tuning recipe that validation chose among the levers of benchmarks/recipe_search.py
    "squeezenet_ft2_long": replace(
        _FT2, name="squeezenet_ft2_long", epochs=2 * _FT2.epochs, warmup_epochs=1,
        source="two-stage recipe with a second stage twice as long, one epoch of linear warm-up, then cosine "
               "decay: the lever validation chose (benchmarks/recipe_search.py)"),
    # the same two-stage recipe on every image of the release: every collection on both sides (notebook 07)
    "efficientnet_lite0_ft2_all": replace(
        TRANSFER["efficientnet_lite0_ft2"], name="efficientnet_lite0_ft2_all", protocol="all", match_split="thesis",
        published=("", ""),
        source="two-stage recipe on the `all` protocol (every image, duplicates grouped, stratified 70/15/15), "
               "so that adult Normal images are in training too; training and validation cut to the thesis split's "
               "class counts"),
}
PUBLISHED = {**FULL, **TRANSFER, **BEYOND}


def transfer_runs(profile: config.Profile, scheme: str | None = None) -> list[str]:
    """Names of the transfer runs the profile makes (all, or one kind: v0, v1, v2, ec, ft, ft2), the runs
    beyond the thesis (``BEYOND``) last among the ft2 runs; the profile's ``skip_runs`` left out."""
    runs = [(kind, f"{profile.progression_backbone}_{kind}") for kind in ("v0", "v1", "v2")]
    runs += [(kind, f"{backbone}_{kind}") for backbone in profile.backbones for kind in ("ec", "ft", "ft2")]
    runs += [("ft2", name) for name in BEYOND]
    return [name for kind, name in runs if (scheme is None or kind == scheme) and name not in profile.skip_runs]


def experiment(name: str, profile: config.Profile) -> Experiment:
    """The run called ``name`` with the settings of ``profile``: the published run, changed by the profile's
    settings for its scheme, then for this run (field by field, the run's own win), input sizes, caps and batch
    size. A precision of ``config.FAST_PRECISION`` becomes the one this machine computes fastest."""
    if name not in PUBLISHED:
        raise ValueError(f"Unknown run {name!r}; known: {', '.join(PUBLISHED)}.")
    exp = PUBLISHED[name]
    changes = {**profile.scheme_settings.get(exp.scheme, {}), **profile.run_settings.get(name, {})}
    changes["precision"] = config.resolve_precision(changes.get("precision", exp.precision))
    if exp.family in profile.image_sizes:
        changes["image_size"] = profile.image_sizes[exp.family]
    if profile.max_epochs is not None:
        changes["epochs"] = min(changes.get("epochs", exp.epochs), profile.max_epochs)
        changes["head_epochs"] = min(exp.head_epochs, profile.max_epochs)
        changes["warmup_epochs"] = min(exp.warmup_epochs, changes["epochs"] - 1)  # some epochs left to decay
    if profile.max_views is not None:
        changes["views"] = min(exp.views, profile.max_views)
    if profile.batch_size is not None:
        changes["batch_size"] = profile.batch_size
    if not profile.early_stopping:
        changes["early_stopping"] = None
    return replace(exp, **changes)


def settings_table(names, profile: config.Profile):
    """What each run in ``names`` really uses in ``profile``: the table a notebook prints before training."""
    import pandas as pd

    rows = []
    for name in names:
        exp = experiment(name, profile)
        epochs = f"{exp.head_epochs} head + {exp.epochs}" if exp.head_epochs else str(exp.epochs)
        # how much of the base a fine-tuned run trains (a column only where the table has such runs)
        base = {} if exp.family != "FT" else {"fine-tuned": f"from {exp.fine_tune_from} on"
                                               if exp.scheme == "ft2" and exp.fine_tune_from else "whole base"}
        rows.append({"run": name, "model": exp.model, "scheme": exp.scheme, **base, "protocol": exp.protocol,
                     "input px": exp.image_size, "epochs": epochs, "batch": exp.batch_size,
                     "optimizer": f"{exp.optimizer} {exp.learning_rate:g}" + (" cosine" if exp.cosine else ""),
                     "augmentation": exp.augment or "–", "cached views": exp.views or "–",
                     "early stopping": exp.early_stopping or "–",
                     "precision": {"mixed_bfloat16": "bfloat16"}.get(exp.precision, exp.precision)})
    return pd.DataFrame(rows).fillna("–").set_index("run")
