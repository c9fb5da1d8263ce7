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
    early_stopping: int | None = None  # patience on validation loss; best weights restored
    scheme: str = "scratch"         # scratch | v0 (untrained head) | ec (frozen base) | ft (one stage) | ft2
    head: str | None = None         # thesis head on pooled features: v1, v2, v2reg (backbone runs only)
    views: int = 0                  # ec / ft2 stage 1: augmented views per training image in the feature cache
    head_epochs: int = 0            # ft2: epochs of stage 1 (head only, on cached features)
    head_learning_rate: float = 1e-3  # ft2: learning rate of stage 1
    cosine: bool = False            # cosine decay of the learning rate to zero over the (last) stage
    selection: str = "best_val_loss"  # weights evaluated: of the epoch with the lowest validation loss
    source: str = ""                # which project the run reproduces, and where we deviate


# The runs as the original projects describe them: this is the `full` profile.
FULL = {
    "polazaro_baseline": Experiment(
        "polazaro_baseline", "polazaro_baseline", "polazaro", 224, 30,
        source="Lázaro & Barco 2020: baseline CNN, Adam, 30 epochs, no augmentation"),
    "polazaro_baseline_aug": Experiment(
        "polazaro_baseline_aug", "polazaro_baseline", "polazaro", 224, 30, augment="polazaro", oversample_covid=5,
        source="Lázaro & Barco 2020: baseline CNN + 5 augmented copies of each COVID training image"),
    "polazaro_inception_aug": Experiment(
        "polazaro_inception_aug", "polazaro_inception", "polazaro", 224, 30, augment="polazaro", oversample_covid=5,
        source="Lázaro & Barco 2020: inception-style CNN (README figure) + COVID augmentation"),
    "red_david": Experiment(
        "red_david", "red_david", "thesis", 224, 20, augment="thesis",
        source="thesis: Red David, 20 epochs; optimiser and augmentation not stated (Adam and the thesis's "
               "augmentation chosen here)"),
    "red_alberto": Experiment(
        "red_alberto", "red_alberto", "thesis", 224, 20, augment="thesis", early_stopping=3,
        source="thesis: Red Alberto with early stopping (stopped at 8 epochs); patience and optimiser not "
               "stated (3 on validation loss, Adam chosen here)"),
}

# What a 2-core laptop can afford (measured training speeds in notebook 02): smaller inputs, fewer epochs.
CPU = {
    "polazaro_baseline": dict(image_size=128, epochs=15),
    "polazaro_baseline_aug": dict(image_size=128, epochs=15),
    "polazaro_inception_aug": dict(image_size=128, epochs=8),
    "red_david": dict(image_size=96, epochs=10),
    "red_alberto": dict(image_size=96, epochs=8),  # at most the 8 epochs the thesis's early stopping allowed
}

QUICK_IMAGE_SIZE = 64  # a multiple of 32 (Red David pools five times)
QUICK_BACKBONE_SIZE = 96  # InceptionV3 needs at least 75 px, Xception 71

# --- transfer learning (notebooks 03 and 04) -------------------------------------------------------------
# The thesis's SGD, shown for DN-V0/V1 and probably reused for the rest: lr 0.01, momentum 0.9, Nesterov.
THESIS_SGD = {"optimizer": "sgd", "learning_rate": 0.01}
BACKBONES_BY_PROFILE = {
    "quick": ("squeezenet", "densenet121", "resnet50", "vgg16", "inceptionv3", "xception"),
    "cpu": ("squeezenet",),
    "full": ("densenet121", "resnet50", "vgg16", "inceptionv3", "xception", "squeezenet"),
}
# The V0-V3 progression runs on the backbone that has ImageNet weights in the profile.
PROGRESSION_BACKBONE = {"quick": "squeezenet", "cpu": "squeezenet", "full": "densenet121"}


def _transfer(backbone: str) -> dict:
    """All transfer runs of one backbone, with the thesis's settings (20 epochs, 224 px)."""
    common = {"model": backbone, "protocol": "thesis", "image_size": 224, "epochs": 20}
    return {
        f"{backbone}_v0": Experiment(f"{backbone}_v0", scheme="v0", head="v1", epochs=0, **{
            k: v for k, v in common.items() if k != "epochs"}, **THESIS_SGD,
            source="thesis DN-V0: frozen base, softmax head never trained"),
        f"{backbone}_v1": Experiment(f"{backbone}_v1", scheme="ec", head="v1", **common, **THESIS_SGD,
                                     source="thesis DN-V1: frozen base, softmax head trained on fixed features"),
        f"{backbone}_v2": Experiment(f"{backbone}_v2", scheme="ec", head="v2", augment="thesis", views=5, **common,
                                     **THESIS_SGD, source="thesis DN-V2: deeper head, augmentation (5 cached "
                                     "augmented views per image instead of on-the-fly augmentation)"),
        f"{backbone}_ec": Experiment(f"{backbone}_ec", scheme="ec", head="v2reg", augment="thesis", views=5,
                                     **common, **THESIS_SGD,
                                     source="thesis DN-V2-reg / -EC: frozen base, 500-Dropout-200 head, augmentation"),
        f"{backbone}_ft": Experiment(f"{backbone}_ft", scheme="ft", head="v2reg", augment="thesis", **common,
                                     **THESIS_SGD, source="thesis DN-V3 / -FT: everything trainable from the "
                                     "start, one stage, the thesis's SGD"),
        f"{backbone}_ft2": Experiment(f"{backbone}_ft2", scheme="ft2", head="v2reg", augment="thesis", views=5,
                                      head_epochs=10, learning_rate=1e-4, cosine=True, **common,
                                      source="standard two-stage recipe: train the head on frozen features, then "
                                      "unfreeze everything with Adam at 1e-4 and cosine decay"),
    }


TRANSFER = {name: exp for backbone in BACKBONES_BY_PROFILE["full"] for name, exp in _transfer(backbone).items()}
TRANSFER_CPU = {"ft": {"epochs": 8}, "ft2": {"epochs": 8}}  # fine-tuning at 224 px is the costly part


def transfer_runs(profile: config.Profile, scheme: str | None = None) -> list[str]:
    """Names of the transfer runs the profile makes (all schemes, or one: v0, v1, v2, ec, ft, ft2)."""
    progression = PROGRESSION_BACKBONE[profile.name]
    names = [f"{progression}_{s}" for s in ("v0", "v1", "v2")]
    for backbone in BACKBONES_BY_PROFILE[profile.name]:
        names += [f"{backbone}_{s}" for s in ("ec", "ft", "ft2")]
    return [n for n in names if scheme is None or n.rsplit("_", 1)[1] == scheme]


def experiment(name: str, profile: config.Profile) -> Experiment:
    """The run called ``name`` with the settings of ``profile`` (full: as published; cpu: reduced; quick: tiny)."""
    published = {**FULL, **TRANSFER}
    if name not in published:
        raise ValueError(f"Unknown run {name!r}; known: {', '.join(published)}.")
    exp = published[name]
    if profile.name == "full":
        return exp
    if profile.name == "quick":
        size = QUICK_BACKBONE_SIZE if exp.scheme != "scratch" else QUICK_IMAGE_SIZE
        return replace(exp, image_size=size, epochs=min(exp.epochs, profile.epochs), batch_size=profile.batch_size,
                       early_stopping=None, views=min(exp.views, 1), head_epochs=min(exp.head_epochs, 1))
    return replace(exp, **(CPU.get(name) or TRANSFER_CPU.get(exp.scheme, {})))
