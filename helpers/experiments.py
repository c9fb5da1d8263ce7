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
    "red_alberto": dict(image_size=96, epochs=10),
}

QUICK_IMAGE_SIZE = 64  # a multiple of 32 (Red David pools five times)


def experiment(name: str, profile: config.Profile) -> Experiment:
    """The run called ``name`` with the settings of ``profile`` (full: as published; cpu: reduced; quick: tiny)."""
    if name not in FULL:
        raise ValueError(f"Unknown run {name!r}; known: {', '.join(FULL)}.")
    if profile.name == "full":
        return FULL[name]
    if profile.name == "quick":
        return replace(FULL[name], image_size=QUICK_IMAGE_SIZE, epochs=profile.epochs,
                       batch_size=profile.batch_size, early_stopping=None)
    return replace(FULL[name], **CPU[name])
