"""Profiles (how much compute a run may use) and the project's paths.

Every notebook starts with ``cfg = config.current()`` and prints ``cfg.summary()``, so a reader always
knows which profile produced the outputs in front of them. ``CXR_PROFILE`` picks the profile.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import keras

ROOT = Path(__file__).resolve().parents[1]
# Caches, splits and run records; CXR_WORK_DIR moves them (another disk, or a test's own folder).
DATA_DIR = Path(os.environ.get("CXR_WORK_DIR") or ROOT / "data").expanduser()
FIGURES_DIR = ROOT / "figures"
SEED = 42


@dataclass(frozen=True)
class Profile:
    """How much data, which input size and how many epochs a run uses; where it writes."""

    name: str
    description: str
    image_size: int
    epochs: int
    batch_size: int
    max_per_class: int | None = None  # cap per class after the protocol's own selection (quick only)
    seed: int = SEED

    @property
    def runs_dir(self) -> Path:
        """Run records of this profile: ``data/runs/<profile>/``."""
        return DATA_DIR / "runs" / self.name

    @property
    def figures_dir(self) -> Path:
        """Committed ``figures/`` for the cpu profile; never touched by the quick smoke run."""
        if self.name == "cpu":
            return FIGURES_DIR
        if self.name == "quick":
            return self.runs_dir / "figures"
        return FIGURES_DIR / self.name

    @property
    def splits_dir(self) -> Path:
        return DATA_DIR / "splits"

    @property
    def cache_dir(self) -> Path:
        return DATA_DIR / "cache"

    def summary(self) -> str:
        cap = "all images" if self.max_per_class is None else f"<= {self.max_per_class} images/class"
        return (f"profile={self.name} ({self.description}) | {cap} | {self.image_size}px | "
                f"epochs={self.epochs} | batch={self.batch_size} | seed={self.seed} | "
                f"keras {keras.__version__} ({keras.backend.backend()}) | figures -> {short_path(self.figures_dir)}")


def short_path(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (for messages and summaries)."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


PROFILES = {
    "quick": Profile("quick", "smoke test: every code path, tiny data", image_size=72, epochs=1,
                     batch_size=16, max_per_class=40),
    "cpu": Profile("cpu", "default: a 2-core laptop in about an hour", image_size=224, epochs=10,
                   batch_size=32),
    "full": Profile("full", "the thesis as written: 20 epochs at 224 px, needs a GPU", image_size=224,
                    epochs=20, batch_size=32),
}
DEFAULT_PROFILE = "cpu"


def current(name: str | None = None, *, set_seed: bool = True) -> Profile:
    """The profile named by ``name`` or ``CXR_PROFILE`` (default ``cpu``); seeds Python, NumPy and Keras."""
    name = (name or os.environ.get("CXR_PROFILE") or DEFAULT_PROFILE).strip().lower()
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r} (from CXR_PROFILE?). Choose one of: {', '.join(PROFILES)}.")
    profile = PROFILES[name]
    if set_seed:
        keras.utils.set_random_seed(profile.seed)
    return profile

