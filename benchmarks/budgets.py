"""The series' performance budgets, measured on this machine and compared as ratios within one run.

    python benchmarks/budgets.py               # make bench: input pipeline and feature cache (about 3 min)
    python benchmarks/budgets.py end-to-end    # make test from a fresh clone, then make run (benchmarks/run_times.csv)
    python benchmarks/budgets.py precision     # training speed in mixed bfloat16 against float32 (about 8 min)
    python benchmarks/budgets.py precision --accuracy  # the fast-marked runs trained in both (about 10 min)
    python benchmarks/budgets.py speed [--isa AVX2]  # the speed index against the reference machine (1 min)
    python benchmarks/budgets.py partial       # fine-tuning SqueezeNet's upper part only: training rates (1 min)
    python benchmarks/budgets.py calibrate --isa AVX2  # the test suite the reference machine timed, timed here (8 min)

Components (``make bench``):

- input pipeline: training images per second of a run's model fed by the real ``tf.data`` pipeline (decode,
  cache, shuffle, augmentation) against the same batches already in memory as tensors, timed in alternating
  pairs of epochs. Budget: >= 90 %.
- feature cache: seconds per epoch of an EC head on cached features against running the frozen base. Budget:
  >= 10x.

End to end: measures the speed index, clones the repository into a temporary folder, runs ``make test`` there
(environment creation included; budget on the reference machine < 15 min) and then ``make run`` (budget < 60 min in
all, peak memory < 6 GB), taking wall time and peak resident memory of each command from ``wait4`` and each
notebook's share from its cells' timestamps, and appends every time to ``benchmarks/run_times.csv`` (``benchmarks/pages.py`` renders the pages
from it). The clone's executed notebooks and figures are left in place for the caller to copy back (``--keep``).

Every run prints a Markdown table and appends it, with the machine and the date, to ``benchmarks/results.md``.
Measurements, not tests: the numbers vary with the machine; compare the ratios within one entry.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results.md"
GB = 1024 ** 3


def machine() -> str:
    """One line naming the machine, for the heading of a results entry."""
    import keras

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return (f"{date.today()}, {platform.node()} ({os.cpu_count()} cores, {memory:.0f} GB, {platform.machine()}, "
            f"no GPU), Python {platform.python_version()}, keras {keras.__version__}")


MEASUREMENTS = REPO / "benchmarks" / "measurements.csv"


def merge_rows(new, path: Path, keys: list[str]) -> None:
    """``new`` (a DataFrame) into the CSV at ``path``: its rows replace the older rows with the same ``keys``, the
    other older rows stay (a benchmark run on some variants or seeds keeps the others' measurements)."""
    import pandas as pd

    if path.exists():
        old = pd.read_csv(path)
        new = pd.concat([old[~old.set_index(keys).index.isin(new.set_index(keys).index)], new], ignore_index=True)
    new.to_csv(path, index=False)


def record(title: str, lines: list[str]) -> None:
    """Print an entry and append it to benchmarks/results.md (the log a person reads), and the rows of its tables
    to benchmarks/measurements.csv (the same numbers, machine-readable: one row per table row and column, with
    the entry's title, the date, the commit and the machine)."""
    text = "\n".join([f"### {title}: {machine()}", "", *lines, ""])
    print(text)
    with RESULTS.open("a") as handle:
        handle.write(text + "\n")
    append_measurements(title, lines)


def append_measurements(title: str, lines: list[str]) -> None:
    """The Markdown tables among ``lines``, long format, appended to MEASUREMENTS."""
    import csv

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip()
    cpu, isa = cpu_facts()
    facts = {"entry": title, "date": str(date.today()), "commit": commit, "cpu": cpu,
             "isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or isa, "cores": os.cpu_count()}
    rows, header = [], None
    for line in lines:
        cells = [c.strip().strip("`*") for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None or set("".join(cells)) <= set("-: "):
            header = None if cells is None else header
            continue
        if header is None:
            header = cells
            continue
        rows += [{**facts, "row": cells[0], "column": column, "value": value}
                 for column, value in zip(header[1:], cells[1:]) if value]
    if not rows:
        return
    new = not MEASUREMENTS.exists()
    with MEASUREMENTS.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------------

def trainable_model(exp, profile):
    """The model a run trains on images, compiled as the run compiles it (scratch, or the whole fine-tuned net)."""
    from helpers import backbones, training

    model, pretrained = training.build_model(exp, profile)
    if exp.family != "scratch":
        backbones.unfreeze_for_fine_tuning(model.get_layer(f"{exp.model}_features"), pretrained=pretrained,
                                           first_trainable=exp.fine_tune_from)
    training.compile_model(model, exp.optimizer, exp.learning_rate)
    return model


def pipeline_rates(index, run: str, images: int, epochs: int) -> dict:
    """Images/s of ``run``'s model (cpu profile) on the real pipeline and on the same batches in memory.

    The two are timed alternately, one epoch each, after a warm-up epoch of each (which also fills the
    pipeline's cache of decoded images, as the first epoch of a real run does). On this VM single epochs of
    either kind stall at random (one in three took ~5 s instead of ~3.5 s), so one pair says little.
    """
    import tensorflow as tf

    from helpers import config, experiments, pipeline, protocols

    profile = config.current("cpu")
    exp = experiments.experiment(run, profile)
    split = protocols.load_split(index, exp.protocol, profile)
    rows = split[split["split"] == "train"].sample(images, random_state=profile.seed)
    pipeline = pipeline.make_dataset(rows, exp.image_size, exp.batch_size, training=True, seed=profile.seed,
                                 augment=pipeline.project_augmentation(exp.augment, profile.seed))
    # The same augmented batches, held in memory as tensors: batching and feeding cost the same on both sides,
    # decoding, shuffling and augmenting only on the pipeline's. (Keras's NumPy-array input is not used: it
    # slices arrays per batch in Python and was slower than either.)
    batches = list(pipeline)
    memory = tf.data.Dataset.from_tensor_slices((tf.concat([b[0] for b in batches], 0),
                                                 tf.concat([b[1] for b in batches], 0)))
    memory = memory.batch(exp.batch_size).cache().prefetch(tf.data.AUTOTUNE)
    model = trainable_model(exp, profile)

    def timed(fit) -> float:
        start = time.perf_counter()
        fit()
        return images / (time.perf_counter() - start)

    from_pipeline = lambda: model.fit(pipeline, epochs=1, verbose=0)
    from_memory = lambda: model.fit(memory, epochs=1, verbose=0)
    timed(from_pipeline), timed(from_memory)
    rates = [(timed(from_pipeline), timed(from_memory)) for _ in range(epochs)]
    tf_rate, memory_rate = (float(np.median(r)) for r in zip(*rates))
    # The ratio of each adjacent pair, then their median: a slow drift of the machine's speed cancels out
    ratio = float(np.median([p / m for p, m in rates]))
    return {"run": run, "size": exp.image_size, "augment": exp.augment, "images": images, "rates": rates,
            "pipeline": tf_rate, "memory": memory_rate, "ratio": ratio}


def cache_speedup(index, images: int, epochs: int) -> dict:
    """Seconds per epoch of the EC head on cached SqueezeNet features against the frozen base run each epoch."""
    from helpers import config, experiments, protocols, timing

    profile = config.current("cpu")
    split = protocols.load_split(index, "thesis", profile)
    rows = split[split["split"] == "train"].head(images)
    result = timing.cache_speedup(experiments.experiment("squeezenet_ec", profile), profile, rows, epochs=epochs)
    return {**result, "weights": "ImageNet" if result["pretrained"] else "random init"}


def precision_speedup(index, run: str, images: int, epochs: int) -> dict:
    """Training images per second of ``run`` (cpu profile) in float32 and in mixed bfloat16, on the same batches
    held in memory, timed in alternating pairs of epochs after a warm-up epoch of each."""
    import dataclasses

    import tensorflow as tf

    from helpers import config, experiments, pipeline, protocols

    profile = config.current("cpu")
    exp = experiments.experiment(run, profile)
    split = protocols.load_split(index, exp.protocol, profile)
    rows = split[split["split"] == "train"].sample(images, random_state=profile.seed)
    batches = list(pipeline.make_dataset(rows, exp.image_size, exp.batch_size, training=True, seed=profile.seed))
    memory = tf.data.Dataset.from_tensor_slices((tf.concat([b[0] for b in batches], 0),
                                                 tf.concat([b[1] for b in batches], 0)))
    memory = memory.batch(exp.batch_size).cache().prefetch(tf.data.AUTOTUNE)
    models = {p: trainable_model(dataclasses.replace(exp, precision=p), profile)
              for p in ("float32", "mixed_bfloat16")}

    def rate(model) -> float:
        start = time.perf_counter()
        model.fit(memory, epochs=1, verbose=0)
        return images / (time.perf_counter() - start)

    for model in models.values():
        rate(model)  # warm-up: tracing and the first allocations
    rates = [tuple(rate(m) for m in models.values()) for _ in range(epochs)]
    return {"run": run, "size": exp.image_size, "images": images, "rates": rates,
            "float32": float(np.median([r[0] for r in rates])), "bf16": float(np.median([r[1] for r in rates])),
            "ratio": float(np.median([b / f for f, b in rates]))}


def precision(args) -> None:
    """bfloat16 against float32 for every scratch net and SqueezeNet fine-tuning (issue: beat 98.75 % on a CPU)."""
    from helpers import dataset

    index = dataset.index_dataset(dataset.find_dataset(), progress=False)
    names = args.runs or ["polazaro_baseline", "polazaro_inception_aug", "red_david", "red_alberto", "squeezenet_ft"]
    lines = ["| run | input px | float32 img/s | bfloat16 img/s | bfloat16 / float32 (pairs) |", "|---|---|---|---|---|"]
    for run in names:
        r = precision_speedup(index, run, args.images, args.epochs)
        pairs = [b / f for f, b in r["rates"]]
        lines.append(f"| `{run}` | {r['size']} | {r['float32']:.1f} | {r['bf16']:.1f} | **{r['ratio']:.2f}x** "
                     f"({min(pairs):.2f}-{max(pairs):.2f}) |")
        print(lines[-1], flush=True)
    record("Training speed: mixed bfloat16 against float32",
           [(f"{args.images} training images in memory, batch 32, cpu profile settings; {args.epochs} pairs of "
             "epochs (float32, then bfloat16) after a warm-up epoch of each; the ratio is the median of the pairs' "
             "ratios (range in brackets). CPU flags include avx512_bf16: "
             f"{'avx512_bf16' in Path('/proc/cpuinfo').read_text()}."),
            "", *lines])


def precision_accuracy(args) -> None:
    """The runs the cpu profile marks fast, trained in float32 (the committed records of data/runs/cpu, trained
    where missing) and in mixed bfloat16 (CXR_PRECISION=bfloat16, records in data/runs/cpu-bfloat16): validation and
    test accuracy and training seconds side by side. What the opt-in gains in time and what it moves in accuracy;
    the committed results stay float32."""
    import dataclasses

    from helpers import config, dataset, experiments, results, runs

    if not config.bfloat16_supported():
        raise SystemExit("This CPU has no native bfloat16 (AVX512-BF16 or AMX): nothing to compare.")
    index = dataset.index_dataset(dataset.find_dataset(), progress=False)
    cpu = config.PROFILES["cpu"]
    os.environ["CXR_PRECISION"] = "bfloat16"  # the runs that train in bfloat16 under the opt-in: those marked fast
    names = args.runs or [n for n in results.series_runs(cpu)
                          if experiments.experiment(n, cpu).precision == "mixed_bfloat16"]
    lines = [("| run | float32: val / test accuracy | bfloat16: val / test accuracy | training s float32 / bfloat16 "
              "| bfloat16 speed-up |"), "|---|---|---|---|---|"]
    for name in names:
        by_precision = {}
        for choice, profile in (("float32", cpu), ("bfloat16", dataclasses.replace(cpu, name="cpu-bfloat16"))):
            os.environ["CXR_PRECISION"] = choice
            by_precision[choice] = runs.get_or_train(name, profile, index, verbose=0).metrics
        f, b = by_precision["float32"], by_precision["bfloat16"]
        lines.append(f"| `{name}` | {f['val']['accuracy']:.3f} / {f['test']['accuracy']:.3f} | "
                     f"{b['val']['accuracy']:.3f} / {b['test']['accuracy']:.3f} | {f['train_seconds']:.0f} / "
                     f"{b['train_seconds']:.0f} | {f['train_seconds'] / b['train_seconds']:.2f}x |")
        print(lines[-1], flush=True)
    os.environ.pop("CXR_PRECISION")
    record("Mixed bfloat16 against float32: time and accuracy of the cpu profile's fast-marked runs",
           [("One run each, seed 42, cpu profile settings; float32 is the committed precision. A difference of a "
             "point or two between single runs is within the seed spread (notebook 04)."), "", *lines])


# The reference machine (the slowest of this kind we know: 2 cores, AVX2, no AVX-512/AMX, float32): training
# images/s with train_on_batch, batch 32, float32, random images, after a warm-up (issue "An hour on an ordinary
# CPU"). Budgets are for it; a machine's speed index is its own rate over these, net by net.
REFERENCE_RATES = {"polazaro_baseline": (128, 33.6), "polazaro_inception_aug": (128, 7.3), "red_david": (64, 21.7),
                   "red_alberto": (64, 14.1), "squeezenet_ft2": (224, 15.7)}


def bare_training_rate(run: str, size: int, seconds: float = 8.0, **changes) -> float:
    """Training images/s of ``run``'s model at ``size`` px in float32 with ``train_on_batch`` on one batch of 32
    random images (the reference's method): two warm-up steps, then steps for at least ``seconds``. ``changes``:
    other Experiment fields (e.g. ``fine_tune_from``)."""
    import dataclasses

    from helpers import config, experiments

    profile = dataclasses.replace(config.current("cpu"), allow_random_weights=True)
    exp = dataclasses.replace(experiments.experiment(run, profile), image_size=size, precision="float32", **changes)
    model = trainable_model(exp, profile)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, size, size, 3)).astype("float32")
    y = rng.integers(0, 3, 32)
    for _ in range(2):
        model.train_on_batch(x, y)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.train_on_batch(x, y)
        steps += 1
    return 32 * steps / (time.perf_counter() - start)


def pipeline_fit_rate(index, run: str, size: int, images: int, epochs: int = 3, **changes) -> dict:
    """``model.fit`` of ``run``'s model (float32, at ``size`` px) on the project's own training pipeline
    (``training``'s datasets: decode, cache, shuffle, oversampling and augmentation where the run has them), on
    ``images`` training rows: images/s and CPU use (process CPU time over wall time; 200 % is both of 2 cores
    busy), the median of ``epochs`` epochs after a warm-up epoch. The epochs run in one ``fit`` call and are timed
    by a callback, as a notebook trains (a call per epoch would add the call's own start-up to every epoch).
    ``changes``: other Experiment fields."""
    import dataclasses

    import keras
    import pandas as pd

    from helpers import config, experiments, protocols, training

    class EpochClock(keras.callbacks.Callback):
        """Wall and process CPU seconds of each epoch."""

        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append((time.perf_counter() - self.start[0], time.process_time() - self.start[1]))

    profile = dataclasses.replace(config.current("cpu"), allow_random_weights=True)
    exp = dataclasses.replace(experiments.experiment(run, profile), image_size=size, precision="float32", **changes)
    split = protocols.load_split(index, exp.protocol, profile)
    train = split[split["split"] == "train"].sample(images, random_state=profile.seed)
    train_ds, _, n_train = training.image_datasets(exp, profile, pd.concat([train, split[split["split"] == "val"]]))
    model = trainable_model(exp, profile)
    clock = EpochClock()  # the first epoch is the warm-up: tracing, and the pipeline's cache of decoded images
    model.fit(train_ds, epochs=1 + epochs, callbacks=[clock], verbose=0)
    rates = [n_train / wall for wall, _ in clock.epochs[1:]]
    cpu = [busy / wall for wall, busy in clock.epochs[1:]]
    return {"run": run, "size": size, "images": n_train, "rate": float(np.median(rates)),
            "cpu": float(np.median(cpu))}


def speed(args) -> None:
    """The speed index: this machine's bare float32 training rates against the reference machine's, net by net
    (and, with ``--isa AVX2``, with oneDNN held to AVX2 in a child process: the instruction set's effect alone)."""
    if args.isa:
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": args.isa}
        subprocess.run([sys.executable, __file__, "speed", "--images", str(args.images)]
                       + (["--fit"] if args.fit else []), env=env, check=True)
        return
    from helpers import dataset

    dataset = dataset.index_dataset(dataset.find_dataset(), progress=False) if args.fit else None
    lines = ["| net | input px | here, train_on_batch (img/s) | reference (img/s) | here / reference |"
             + (" fit on the pipeline (img/s, CPU use) | fit / train_on_batch |" if args.fit else ""),
             "|---|---|---|---|---|" + ("---|---|" if args.fit else "")]
    ratios = []
    whole = {"fine_tune_from": None}  # the reference fine-tuned the whole base, as this run did when it was measured
    for run, (size, reference) in REFERENCE_RATES.items():
        bare = bare_training_rate(run, size, **whole)
        ratios.append(bare / reference)
        line = f"| `{run}` | {size} | {bare:.1f} | {reference:.1f} | {bare / reference:.2f} |"
        if args.fit:
            fit = pipeline_fit_rate(dataset, run, size, args.images, **whole)
            line += f" {fit['rate']:.1f} ({fit['cpu']:.0%}) | {fit['rate'] / bare:.0%} |"
        lines.append(line)
        print(line, flush=True)
    index = float(np.exp(np.mean(np.log(ratios))))
    lines.append(f"| **speed index** (geometric mean) | | | | **{index:.2f}** |" + (" | |" if args.fit else ""))
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "as the CPU allows")
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    features = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags.split())
    record(f"Speed index against the reference machine (oneDNN ISA: {isa})",
           [(f"train_on_batch, batch 32, float32, random images, 2 warm-up steps then at least 8 s per net; CPU "
             f"features: {features}. A time measured here, times the speed index (or the ratio of the net that "
             "dominates it), estimates the reference machine's."), "", *lines])


def fit_at_profile_sizes(args) -> None:
    """``fit`` on the project's pipeline against bare ``train_on_batch``, each net at the input the cpu profile
    trains it at (the speed index uses the reference's sizes): does the pipeline keep both cores busy there too?"""
    from helpers import config, dataset, experiments

    dataset = dataset.index_dataset(dataset.find_dataset(), progress=False)
    lines = [("| net | input px (cpu profile) | train_on_batch (img/s) | fit on the pipeline (img/s, CPU use) | "
              "fit / train_on_batch |"), "|---|---|---|---|---|"]
    for run in REFERENCE_RATES:
        size = experiments.experiment(run, config.PROFILES["cpu"]).image_size
        bare = bare_training_rate(run, size)
        fit = pipeline_fit_rate(dataset, run, size, args.images)
        lines.append(f"| `{run}` | {size} | {bare:.1f} | {fit['rate']:.1f} ({fit['cpu']:.0%}) | "
                     f"{fit['rate'] / bare:.0%} |")
        print(lines[-1], flush=True)
    record("fit on the pipeline at the cpu profile's input sizes",
           [(f"float32, batch 32; fit: median of 3 epochs of {args.images} training rows after a warm-up epoch, in "
            "one fit call."), "", *lines])


def partial_fine_tuning(args) -> None:
    """What fine-tuning only the upper part of SqueezeNet saves: bare training rates at the cpu profile's input with
    the base trainable from each fire module on (the layers below stay frozen, so the backward pass stops there)."""
    from helpers import config, experiments

    size = experiments.experiment("squeezenet_ft2", config.PROFILES["cpu"]).image_size
    lines = ["| fine-tuned | train_on_batch (img/s) | against the whole base |", "|---|---|---|"]
    whole = None
    for first in (None, "fire4_squeeze1x1", "fire6_squeeze1x1", "fire8_squeeze1x1"):
        rate = bare_training_rate("squeezenet_ft", size, fine_tune_from=first)
        whole = whole or rate
        lines.append(f"| {'from ' + first if first else 'whole base'} | {rate:.1f} | {rate / whole:.2f}x |")
        print(lines[-1], flush=True)
    record("Fine-tuning the upper part of SqueezeNet only",
           [(f"squeezenet_ft's model at {size} px, float32, batch 32, random images, train_on_batch for at least "
             "8 s after 2 warm-up steps."), "", *lines])


def components(args) -> None:
    from helpers import dataset

    index = dataset.index_dataset(dataset.find_dataset(), progress=False)  # once, for all three measurements
    pipelines = [pipeline_rates(index, "squeezenet_ft", args.images, args.epochs),
                 pipeline_rates(index, "polazaro_baseline", args.images * 2, args.epochs)]
    cache = cache_speedup(index, args.images * 2, args.epochs)
    yes = {True: "yes", False: "**no**"}
    lines = ["| budget | measured | target | met |", "|---|---|---|---|"]
    for p in pipelines:
        lines.append(f"| `{p['run']}` ({p['size']} px, augmentation: {p['augment'] or 'none'}): tf.data rate / "
                     f"in-memory rate | {p['ratio']:.0%} (pairs {min(a / b for a, b in p['rates']):.0%}-"
                     f"{max(a / b for a, b in p['rates']):.0%}; medians {p['pipeline']:.1f} vs {p['memory']:.1f} "
                     f"img/s, {p['images']} images) | >= 90 % | {yes[p['ratio'] >= 0.9]} |")
    lines.append(f"| EC head per epoch: frozen base / cached features (SqueezeNet, {cache['weights']}, 224 px, "
                 f"{cache['images']} images) | {cache['speedup']:.0f}x ({cache['base_epoch_s']:.2f} s vs "
                 f"{cache['cached_epoch_s']:.3f} s; the cache costs {cache['build_cache_s']:.1f} s once) | >= 10x | "
                 f"{yes[cache['speedup'] >= 10]} |")
    record("Budgets: input pipeline and feature cache",
           [(f"Pipeline: {args.epochs} pairs of epochs (tf.data, then in memory) after a warm-up epoch of each; "
             "the ratio is the median of the pairs' ratios, with their range. Cache: median of the epochs. Batch "
             "32, cpu profile settings."), "", *lines])


# --------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------

def timed_command(command: list[str], cwd: Path, env: dict, log) -> tuple[float, float, int]:
    """Run ``command``; wall minutes, peak resident GB of the largest process in its tree, exit status."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return (time.perf_counter() - start) / 60, usage.ru_maxrss * 1024 / GB, child.returncode


def cpu_facts() -> tuple[str, str]:
    """The CPU's model name and the widest instruction set oneDNN can use on it, in plain words."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", info, flags=re.MULTILINE)
    flags = set(re.findall(r"^flags\s*:\s*(.+)$", info, flags=re.MULTILINE)[0].split()) if "flags" in info else set()
    isa = next((name for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"),
                                        ("avx2", "AVX2")) if flag in flags), platform.machine())
    return (model.group(1).strip() if model else platform.processor() or platform.machine()), isa


def speed_index() -> float:
    """This machine's speed against the reference machine: the geometric mean over ``REFERENCE_RATES``' nets of
    the bare training rate here over the reference's (``python benchmarks/budgets.py speed`` prints each net)."""
    ratios = [bare_training_rate(run, size, fine_tune_from=None) / reference
              for run, (size, reference) in REFERENCE_RATES.items()]
    return float(np.exp(np.mean(np.log(ratios))))


def nbval_minutes(log_text: str) -> dict[str, float]:
    """Minutes per notebook that nbval spent in its cells, from pytest's ``--durations`` lines."""
    minutes: dict[str, float] = {}
    for seconds, stem in re.findall(r"^([\d.]+)s \w+ +[\w/]*?(\d\d)_[\w]+\.ipynb::", log_text, flags=re.MULTILINE):
        minutes[stem] = minutes.get(stem, 0.0) + float(seconds) / 60
    return minutes


def cell_minutes(notebook: Path) -> float:
    """Minutes from the start of an executed notebook's first code cell to the end of its last (nbclient's
    timestamps in each cell's metadata): the notebook's share of a ``make run``, without the kernel's start-up.
    NaN where the notebook was not executed to its end (a failed run)."""
    import json
    from datetime import datetime

    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    times = [c.get("metadata", {}).get("execution", {}) for c in (cells[0], cells[-1])] if cells else []
    try:
        start, end = (datetime.fromisoformat(t[key].replace("Z", "+00:00"))
                      for t, key in zip(times, ("iopub.execute_input", "shell.execute_reply")))
    except (KeyError, ValueError):
        return float("nan")
    return (end - start).total_seconds() / 60


def end_to_end(args) -> None:
    """``make test`` and then ``make run`` in a fresh clone; every time goes to
    ``benchmarks/run_times.csv`` (``pages.py`` renders the README, docs and notebook lines from it) and the
    table to ``benchmarks/results.md``."""
    import pages
    import pandas as pd

    if args.isa:  # before TensorFlow loads here, and inherited by every command below
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.isa
    target = Path(args.keep or tempfile.mkdtemp(prefix="cxr-e2e-")) / "repo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=target, capture_output=True, text=True,
                            check=True).stdout.strip()
    cpu, isa = cpu_facts()
    if args.isa:
        isa = f"{args.isa} (oneDNN held to it on an {isa} CPU)"
    index = speed_index()
    facts = {"date": str(date.today()), "commit": commit, "cpu": cpu, "cores": os.cpu_count(), "isa": isa,
             "speed_index": round(index, 3)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_PROFILE")}
    log_path = target.parent / "end-to-end.log"
    rows, measured = [], []
    with log_path.open("w") as log:
        if args.no_test:  # make run alone (make test's clone, minus the test run)
            subprocess.run(["make", ".venv/bin/activate"], cwd=target, env=env, stdout=log, check=True)
        else:  # each pytest run (unit tests, notebooks) lists every test's duration: a notebook's share is summed from them
            minutes, peak, status = timed_command(["make", "test"], target,
                                                  {**env, "PYTEST_ADDOPTS": "--durations=0 --durations-min=0"}, log)
            log.flush()
            text = log_path.read_text()
            summary = re.findall(r"=+ (.*) in [\d.]+s", text)
            per_notebook = nbval_minutes(text)
            rows.append(("`make test` from a fresh clone (environment creation included)", minutes, peak, status,
                         (f"{'; '.join(summary)}; notebooks through nbval: "
                         f"{sum(per_notebook.values()):.1f} min")))
            measured.append({"command": "make test", "profile": "quick", "notebook": "all", "minutes": minutes,
                             "peak_gb": peak, "exit": status})
            measured += [{"command": "make test", "profile": "quick", "notebook": stem, "minutes": m,
                          "peak_gb": float("nan"), "exit": status} for stem, m in sorted(per_notebook.items())]
        if not args.no_run:  # one make run, as a user runs it; each notebook's share from its cells' clocks
            notebooks = sorted((target / "notebooks").glob("[0-9][0-9]_*.ipynb"))
            run_minutes, run_peak, status = timed_command(["make", "run", f"PROFILE={args.profile}"], target, env, log)
            for notebook in notebooks:
                minutes = cell_minutes(notebook)
                rows.append((f"`make run`: {notebook.stem} (its cells)", minutes, float("nan"), status, ""))
                measured.append({"command": "make run", "profile": args.profile, "notebook": notebook.name[:2],
                                 "minutes": minutes, "peak_gb": float("nan"), "exit": status})
            rows.append(((f"`make run` ({args.profile} profile, all {len(notebooks)} notebooks, no run records at the "
                         "start)"), run_minutes, run_peak, status, ""))
            measured.append({"command": "make run", "profile": args.profile, "notebook": "all", "minutes": run_minutes,
                             "peak_gb": run_peak, "exit": status})
    new = pd.DataFrame([{**facts, **row} for row in measured], columns=pages.COLUMNS).round(
        {"minutes": 2, "peak_gb": 2})
    old = pages.read() if pages.MEASUREMENTS.exists() else None
    pd.concat([old, new] if old is not None else [new]).to_csv(pages.MEASUREMENTS, index=False)
    lines = ["| command | wall time (min) | peak memory (GB) | exit | notes |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {m:.1f} | {p:.1f} | {s} | {note} |" for name, m, p, s, note in rows]
    lines += ["", (f"Speed index {index:.2f} ({isa}). Budgets on the reference machine: `make test` < 15 min; "
                   "`make run` < 60 min with peak memory < 6 GB. Peak memory is the largest single process (a "
                   "notebook's kernel), from `wait4`. Rows appended to `benchmarks/run_times.csv`."),
              f"Clone and log: `{target.parent}`."]
    record("Budgets: end to end", lines)


def calibrate(args) -> None:
    """Time ``pages.REFERENCE_SUITE``'s pytest run (unit tests and nbval, quick profile, fresh work folder) here, in a
    clone of that commit with its own environment (not timed); append the minutes to ``run_times.csv`` (command
    ``reference suite``), whose ratio to the reference's minutes ``pages.py`` applies to make test. One change to
    the clone: the reference has no bfloat16, so its ``bfloat16_supported`` answers False (on such a CPU that
    changes nothing; with oneDNN held to AVX2 the suite would otherwise emulate bfloat16)."""
    import pages
    import pandas as pd

    suite = pages.REFERENCE_SUITE
    if args.isa:
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.isa
    target = Path(args.keep or tempfile.mkdtemp(prefix="cxr-calibrate-")) / "repo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True)
    subprocess.run(["git", "checkout", "--quiet", suite["commit"]], cwd=target, check=True)
    config_file = target / "helpers" / "config.py"
    text = config_file.read_text()
    body = re.search(r"(def bfloat16_supported\(\) -> bool:\n    \"\"\".*?\"\"\"\n)(.*?)\n\n", text, flags=re.DOTALL)
    config_file.write_text(text.replace(body.group(0), body.group(1) + "    return False\n\n"))
    log_path = target.parent / "calibrate.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_PROFILE")}
    with log_path.open("w") as log:
        subprocess.run(["make", ".venv/bin/activate"], cwd=target, env=env, stdout=log, stderr=subprocess.STDOUT,
                       check=True)
        env = {**env, "CXR_PROFILE": "quick", "CXR_WORK_DIR": str(target.parent / "work")}
        minutes, peak, status = timed_command([".venv/bin/pytest", "tests", "notebooks", "--nbval-lax",
                                               "--nbval-current-env", "-q", "-p", "no:cacheprovider"], target, env, log)
    cpu, isa = cpu_facts()
    if args.isa:
        isa = f"{args.isa} (oneDNN held to it on an {isa} CPU)"
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed).*) in [\d.]+s", log_path.read_text(), flags=re.MULTILINE)
    row = {"date": str(date.today()), "commit": suite["commit"], "cpu": cpu, "cores": os.cpu_count(),
           "isa": isa, "speed_index": float("nan"), "command": "reference suite", "profile": "quick",
           "notebook": "all", "minutes": round(minutes, 2), "peak_gb": round(peak, 2), "exit": status}
    frame = pages.read()
    pd.concat([frame, pd.DataFrame([row], columns=pages.COLUMNS)]).to_csv(pages.MEASUREMENTS, index=False)
    ratio = suite["pytest_minutes"] / minutes
    record("make test's own ratio: the reference machine's timed test suite, timed here", [
        "| commit | pytest here (min) | pytest on the reference (min) | ratio | exit | result |",
        "|---|---|---|---|---|---|",
        (f"| {suite['commit']} | {minutes:.2f} | {suite['pytest_minutes']:.1f} | {ratio:.2f} | "
         f"{status} | {summary[-1] if summary else ''} |"), "",
        (f"{isa}. Quick profile, fresh work folder, environment made before the clock starts. A non-zero exit "
         "is reported, not hidden: a test of that commit may fail here (e.g. one that needs bfloat16 while "
         "oneDNN is held to AVX2). Row appended to `benchmarks/run_times.csv` (command `reference suite`).")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=["calibrate", "components", "end-to-end", "fit", "partial",
                                                       "precision", "speed"],
                        default="components")
    parser.add_argument("--images", type=int, default=320, help="training images per epoch (doubled for the "
                        "faster polazaro baseline and the cache)")
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--no-test", action="store_true", help="end-to-end: time make run only")
    parser.add_argument("--no-run", action="store_true", help="end-to-end: time make test only")
    parser.add_argument("--profile", default="cpu", help="end-to-end: the profile make run uses (cpu, or quick "
                        "to time each notebook's quick-profile run)")
    parser.add_argument("--runs", nargs="+", help="precision: only these runs (default: every scratch net and "
                        "squeezenet_ft)")
    parser.add_argument("--keep", help="end-to-end: folder to clone into and keep (default: a temporary one)")
    parser.add_argument("--isa", help="speed, end-to-end: hold oneDNN to this instruction set (e.g. AVX2)")
    parser.add_argument("--accuracy", action="store_true", help="precision: train the cpu profile's fast-marked "
                        "runs in both precisions and compare accuracy and time (minutes)")
    parser.add_argument("--fit", action="store_true", help="speed: also fit each net on the project's pipeline "
                        "(--images training rows) and compare with train_on_batch")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.what == "precision" and args.accuracy:
        return precision_accuracy(args)
    {"calibrate": calibrate, "components": components, "end-to-end": end_to_end, "fit": fit_at_profile_sizes, "partial": partial_fine_tuning,
     "precision": precision, "speed": speed}[args.what](args)


if __name__ == "__main__":
    main()
