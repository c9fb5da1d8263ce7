"""Profiles (how much compute a run may use) and the project's paths.

Every notebook starts with ``cfg = config.current()`` and prints ``cfg.summary()``, so a reader always
knows which profile produced the outputs in front of them. ``CXR_PROFILE`` picks the profile.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import keras

ROOT = Path(__file__).resolve().parents[1]
FIGURES_DIR = ROOT / "figures"
SEED = 42
CLASSES = ("COVID", "Normal", "Viral Pneumonia")  # fixed order: class ids 0, 1, 2 as in both projects


def data_dir() -> Path:
    """Where caches, splits, downloads and run records go: ``CXR_WORK_DIR`` (another disk, or a test's own
    folder), else the checkout's ``data/``; for helpers installed with ``pip install .`` (no checkout around
    them), ``data/`` in the current folder, never site-packages. Read when called, so a variable set after
    ``import helpers`` still counts."""
    if os.environ.get("CXR_WORK_DIR"):
        return Path(os.environ["CXR_WORK_DIR"]).expanduser()
    return (ROOT if (ROOT / "pyproject.toml").is_file() else Path.cwd()) / "data"


@dataclass(frozen=True)
class Profile:
    """How much compute a profile spends and where it writes; what differs between profiles lives here.

    The runs themselves (model, input size, epochs, ...) are ``experiments.experiment(name, profile)``: it
    applies ``scheme_settings``, then ``run_settings`` (a run's own entry wins field by field) and the quick
    profile's caps to the published runs, and ``experiments.settings_table`` prints what each run really uses.
    """

    name: str
    description: str
    max_per_class: int | None = None  # cap per class after the protocol's own selection (quick only)
    seed: int = SEED
    backbones: tuple[str, ...] = ("squeezenet",)  # backbones that get EC / FT runs
    skip_runs: tuple[str, ...] = ()    # runs of the series this profile leaves out (their cost, in benchmarks/)
    left_out_per_class: int | None = None  # notebook 07 scores a seeded sample of this many left-out images per class
    probe_images: int | None = None  # notebook 07's linear probes: a seeded sample of at most this many images
    masked_test_share: float | None = None  # 07 masks a seeded share of each test set, classes in proportion (None: all)
    progression_backbone: str = "squeezenet"      # the backbone of the thesis's V0-V3 progression
    allow_random_weights: bool = False  # a backbone without ImageNet weights: error (False) or random init
    figures_subdir: str | None = ""     # "" -> the committed figures/; "x" -> figures/x; None -> the runs folder
    scheme_settings: Mapping[str, Mapping] = field(default_factory=dict)  # scheme (ft, ft2, ...) -> changed fields
    run_settings: Mapping[str, Mapping] = field(default_factory=dict)     # run name -> changed fields (win)
    image_sizes: Mapping[str, int] = field(default_factory=dict)  # family (scratch, EC, FT) -> input size
    max_epochs: int | None = None        # cap on every stage's epochs (quick)
    max_views: int | None = None         # cap on cached augmented views per image (quick)
    batch_size: int | None = None        # one batch size for every run (quick)
    early_stopping: bool = True          # False: runs go their full (capped) length
    # how long a missing run takes, when no committed timing of this profile says it (``runs.expected_minutes``)
    run_time_hint: str = "time unknown (no committed timing for these runs)"

    @property
    def runs_dir(self) -> Path:
        """Run records of this profile: ``data/runs/<profile>/``."""
        return data_dir() / "runs" / self.name

    @property
    def figures_dir(self) -> Path:
        """Where ``plots.save`` and the results table write (the committed ``figures/`` for the cpu profile)."""
        if self.figures_subdir is None:
            return self.runs_dir / "figures"
        return FIGURES_DIR / self.figures_subdir

    @property
    def splits_dir(self) -> Path:
        """Saved splits (``protocols.load_split``): shared by every profile, named by protocol, cap and seed."""
        return data_dir() / "splits"

    def summary(self) -> str:
        """One line: the profile, its data cap and seed, the Keras stack, the device and precision it trains in and
        where figures go. The settings of the runs themselves are printed by ``experiments.settings_table``."""
        cap = "all images" if self.max_per_class is None else f"<= {self.max_per_class} images/class"
        weights = "random init where ImageNet weights are missing" if self.allow_random_weights else "ImageNet"
        return (f"profile={self.name} ({self.description}) | {cap} | seed={self.seed} | backbones: "
                f"{', '.join(self.backbones)} ({weights}) | keras {keras.__version__} ({keras.backend.backend()})"
                f" | device: {device()} | {precision_summary()} | figures -> {short_path(self.figures_dir)}")


def short_path(path: Path) -> str:
    """``path`` relative to the repository when it is inside it, else to ``$CXR_WORK_DIR`` when it is inside that
    (for messages and summaries: no machine-specific paths in a notebook's outputs)."""
    path = Path(path)
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        pass
    if os.environ.get("CXR_WORK_DIR"):
        try:
            return f"$CXR_WORK_DIR/{path.relative_to(data_dir())}"
        except ValueError:
            pass
    return str(path)


def bfloat16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16): where mixed bfloat16 trains
    faster for some nets (benchmarks/results.md). Without native support it is emulated, and slower. oneDNN held
    to an instruction set without bfloat16 (``ONEDNN_MAX_CPU_ISA=AVX2``, as on the reference machine) has none:
    its bfloat16 convolutions then fail instead of running."""
    held = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if held and held != "ALL" and "BF16" not in held and "AMX" not in held:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: keep float32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_name() -> str | None:
    """The name of the first GPU TensorFlow sees (e.g. "NVIDIA H200"), or None on a machine without one."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)


def device() -> str:
    """The device training runs on, for the header line every notebook prints: a GPU by name, else the CPU."""
    gpu = gpu_name()
    return f"GPU ({gpu})" if gpu else f"CPU ({os.cpu_count()} cores)"


# A run setting that marks the runs where a faster precision was measured to help and not to hurt: on a GPU they
# train in mixed float16 (Keras scales the loss); on a CPU in float32, the precision every CPU has, so a student on
# any machine gets the committed numbers, unless ``CXR_PRECISION=bfloat16`` opts in to mixed bfloat16 (useful only
# where the CPU computes it natively; benchmarks/results.md). Resolved when a run's settings are made
# (``resolve_precision``), so importing the helpers reads no device, CPU flag or variable.
FAST_PRECISION = "fast"
PRECISION_CHOICES = ("float32", "bfloat16")  # the values of CXR_PRECISION


def cpu_precision() -> str:
    """``CXR_PRECISION`` (``float32``, the default, or ``bfloat16``): the precision the runs marked fast train in on
    a CPU. A bfloat16 opt-in on a CPU without native bfloat16 is an error (it would be emulated, and slower)."""
    choice = (os.environ.get("CXR_PRECISION") or "float32").strip().lower()
    if choice not in PRECISION_CHOICES:
        raise ValueError(f"CXR_PRECISION={choice!r}: choose one of {', '.join(PRECISION_CHOICES)} (default float32).")
    if choice == "bfloat16" and not bfloat16_supported():
        raise ValueError("CXR_PRECISION=bfloat16, but this CPU has no native bfloat16 (AVX512-BF16 or AMX): it would "
                         "train slower than in float32. Unset CXR_PRECISION.")
    return choice


def resolve_precision(precision: str) -> str:
    """The Keras dtype policy a run uses: ``precision`` itself, or for ``FAST_PRECISION`` mixed float16 on a GPU,
    on a CPU float32 or, with ``CXR_PRECISION=bfloat16``, mixed bfloat16."""
    if precision != FAST_PRECISION:
        return precision
    if gpu_name():
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_precision() == "bfloat16" else "float32"


def precision_summary() -> str:
    """For the header line: the precision of the runs marked fast on this machine, and how to change it."""
    if gpu_name():
        return "precision: mixed float16 where marked"
    if cpu_precision() == "bfloat16":
        return "precision: mixed bfloat16 where marked (CXR_PRECISION=bfloat16)"
    return "precision: float32"


ALL_BACKBONES = ("densenet121", "resnet50", "vgg16", "inceptionv3", "xception", "efficientnet_lite0", "squeezenet")
# The cpu and quick profiles' backbones: EfficientNet-Lite0 stands in for the thesis's DenseNet121 (V0-V3, FT,
# the `all` model of 07); SqueezeNet, the small fast one, is the second backbone of the EC comparison.
OFFLINE_BACKBONES = ("efficientnet_lite0", "squeezenet")
# SqueezeNet is fine-tuned in the full profile and in benchmarks/ only: in the cpu profile's hour the fine-tuning goes
# to the stronger backbone (EfficientNet-Lite0, one stage and two), and SqueezeNet's EC row compares the backbones.
OFFLINE_SKIPPED = ("squeezenet_ft", "squeezenet_ft2", "squeezenet_ft2_long")
# The cpu profile fine-tunes EfficientNet-Lite0 from block 6 on, for two epochs after the head's: chosen on validation
# (benchmarks/lite0_search.py; its table in benchmarks/results.md, "EfficientNet-Lite0 in the cpu profile")
LITE0_FINE_TUNE_FROM = "block6a_expand_conv"
LITE0_FINE_TUNE_EPOCHS = 2
PROFILES = {
    "quick": Profile(
        "quick", "smoke test: every code path, tiny data", max_per_class=40,
        # the cpu profile's backbones: the transfer code is the same for every backbone, and a Keras application's
        # path (batch norm kept frozen, its own preprocessing) is unit-tested on a small stand-in
        # (tests/test_backbones.py, tests/test_training.py); DenseNet121 here cost about 2 of make test's minutes
        backbones=OFFLINE_BACKBONES, progression_backbone="efficientnet_lite0",
        allow_random_weights=True, figures_subdir=None,
        image_sizes={"scratch": 64,  # a multiple of 32 (Red David pools five times)
                     "EC": 96, "FT": 96},  # the full profile's InceptionV3 needs at least 75 px, Xception 71
        skip_runs=OFFLINE_SKIPPED, left_out_per_class=40,  # as the cpu profile; as the data cap
        # the cpu profile's fast-precision code path (float32 unless CXR_PRECISION=bfloat16) and its fine-tuning of
        # the bases' upper parts
        run_settings={name: {"precision": FAST_PRECISION, "fine_tune_from": first}
                      for name, first in (("squeezenet_ft2", "fire6_squeeze1x1"),
                                          ("efficientnet_lite0_ft2", LITE0_FINE_TUNE_FROM),
                                          ("efficientnet_lite0_ft2_all", LITE0_FINE_TUNE_FROM))},
        max_epochs=1, max_views=1, batch_size=16, early_stopping=False,
        run_time_hint="a few seconds to a minute per run in the quick profile"),
    "cpu": Profile(
        "cpu", "default: an hour on an ordinary 2-core laptop, in float32",
        # Planned for the slowest machine we know (2 cores, AVX2, float32; benchmarks/results.md): make run within
        # 60 minutes there. Each cut below is measured in benchmarks/results.md ("Planning the cpu profile",
        # "EfficientNet-Lite0 in the cpu profile").
        backbones=OFFLINE_BACKBONES, progression_backbone="efficientnet_lite0", skip_runs=OFFLINE_SKIPPED,
        # 07's seeded samples, each cut for the hour on 2026-12-07 (benchmarks/results.md, "The hour with
        # EfficientNet-Lite0"): the left-out images it scores, per class (300 before); the probes' images, with the
        # same share of every class and collection (3000 before; features of every image grow with the release); and
        # the share of each test set it masks (all before)
        left_out_per_class=150,
        probe_images=1500,
        masked_test_share=0.5,
        # frozen features and fine-tuning at 128 px instead of 224 (one feature cache per backbone serves 03, 04's
        # head stages and 07's probes)
        image_sizes={"EC": 128, "FT": 128},
        run_settings={
            # the smaller project's nets at 48 px (their Flatten layer makes the cost grow with the square of the
            # side; validation accuracy about as at 64 px), epochs a few past the best validation epoch of a longer
            # trial run: benchmarks/results.md, "Planning the cpu profile"
            "polazaro_baseline": {"image_size": 48, "epochs": 8, "precision": FAST_PRECISION},
            "polazaro_baseline_aug": {"image_size": 48, "epochs": 8, "precision": FAST_PRECISION},
            "polazaro_inception_aug": {"image_size": 48, "epochs": 3, "precision": FAST_PRECISION},
            # the thesis's nets at 32 px (Red David pools five times: a multiple of 32), epochs past the kept one of
            # a trial run (benchmarks/results.md, "Planning the cpu profile"). Red Alberto keeps the thesis's early
            # stopping, with a patience that can act within its four epochs; Red David, like the thesis's, has none:
            # its validation loss jumps about in the first epochs while training accuracy climbs (a patience of two
            # stopped it at chance level in a trial run, 2026-12-07), and the epoch of the lowest one is kept anyway
            "red_david": {"image_size": 32, "epochs": 7},
            "red_alberto": {"image_size": 32, "epochs": 4, "early_stopping": 1},
            # frozen features of two augmented views instead of five (the extraction dominated notebook 03)
            "efficientnet_lite0_v2": {"views": 2}, "efficientnet_lite0_ec": {"views": 2}, "squeezenet_ec": {"views": 2},
            # fine-tune the bases' upper parts: the layers below keep their ImageNet weights and the backward pass
            # stops there; chosen on validation (benchmarks/results.md, "Fine-tuning the upper part",
            # "EfficientNet-Lite0 in the cpu profile")
            "squeezenet_ft2": {"fine_tune_from": "fire6_squeeze1x1"},
            "efficientnet_lite0_ft2": {"fine_tune_from": LITE0_FINE_TUNE_FROM, "epochs": LITE0_FINE_TUNE_EPOCHS},
            # the `all` protocol's run keeps efficientnet_lite0_ft2's schedule and, through its match_split, the thesis
            # split's class counts: the two runs differ in who is in training, not in how much or how long (07)
            "efficientnet_lite0_ft2_all": {"fine_tune_from": LITE0_FINE_TUNE_FROM, "epochs": LITE0_FINE_TUNE_EPOCHS},
        },
        # The one-stage recipe: one epoch, a budget cut (two until 2026-12-07): on EfficientNet-Lite0 it stays at
        # chance at two and at six epochs as well (benchmarks/lite0_variants.csv, notebook 04).
        # CXR_PRECISION=bfloat16 trains the runs marked fast in mixed bfloat16 (not the committed results).
        scheme_settings={"ft": {"epochs": 1},
                         "ft2": {"epochs": 4, "views": 2, "precision": FAST_PRECISION}}),
    "full": Profile(
        "full", "the thesis as written: published epochs and 224 px, needs a GPU and ImageNet weights",
        backbones=ALL_BACKBONES, progression_backbone="densenet121", figures_subdir="full",
        # mixed float16 on a GPU for the nets trained on images, as the cpu profile's fast precision; not the
        # thesis's one-stage SGD fine-tuning, which diverged in bfloat16 on a CPU (untested on a GPU so far)
        scheme_settings={"scratch": {"precision": FAST_PRECISION}, "ft2": {"precision": FAST_PRECISION}},
        run_time_hint="hours without a GPU in the full profile"),
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

