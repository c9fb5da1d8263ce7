"""Find the COVID-19 Radiography Database, index it, choose a protocol's images, split, and feed tf.data.

The flow every notebook uses::

    root = find_dataset()                 # argument, CXR_DATA_DIR, data/, or a Kaggle download
    index = index_dataset(root)           # one row per readable image (path, label, sha256, size, mode)
    split = load_split(index, "thesis", profile)   # seeded, duplicate-aware, saved as CSV and reused
    train = make_dataset(split[split.split == "train"], 224, 32, training=True)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from . import config
from .files import atomic_write

CLASSES = ("COVID", "Normal", "Viral Pneumonia")  # fixed order: class ids 0, 1, 2 as in both projects
OPTIONAL_CLASSES = ("Lung_Opacity",)
# Folder names of the current release and of the first releases (2020), matched case-insensitively.
FOLDER_ALIASES = {
    "covid": "COVID", "covid-19": "COVID",
    "normal": "Normal",
    "viral pneumonia": "Viral Pneumonia", "viral_pneumonia": "Viral Pneumonia",
    "lung_opacity": "Lung_Opacity", "lung opacity": "Lung_Opacity",
}
ROOT_NAMES = ("COVID-19_Radiography_Dataset", "COVID-19 Radiography Database")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}

KAGGLE_HANDLE = "tawsifurrahman/covid19-radiography-database"
KAGGLE_VERSION = 5  # 3616 COVID / 10192 Normal / 6012 Lung_Opacity / 1345 Viral Pneumonia, 299 x 299 PNG
RELEASE_COUNTS = {"COVID": 3616, "Normal": 10192, "Viral Pneumonia": 1345, "Lung_Opacity": 6012}
RELEASE_IMAGE_SIZE = (299, 299)

INDEX_COLUMNS = ["path", "relpath", "label", "class_id", "image_id", "sha256", "width", "height", "mode",
                 "bytes", "mtime_ns"]


class DatasetNotFoundError(FileNotFoundError):
    """No usable copy of the dataset was found or could be downloaded."""


# --------------------------------------------------------------------------------------------------
# Finding the dataset
# --------------------------------------------------------------------------------------------------

def _class_of(folder: Path) -> str | None:
    return FOLDER_ALIASES.get(folder.name.strip().lower())


def _subfolders(folder: Path, unreadable: list[Path]) -> list[Path]:
    """The visible sub-folders of ``folder``, sorted; a folder that cannot be listed is noted in ``unreadable``."""
    try:
        return sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
    except OSError:  # PermissionError, a vanished network mount, ...
        unreadable.append(folder)
        return []


def _dataset_root_in(path: Path, depth: int = 3, unreadable: list[Path] | None = None,
                     max_folders: int = 5000) -> Path | None:
    """The folder at or below ``path`` whose children are class folders (searched breadth-first, at most
    ``max_folders`` folders, so pointing at a home folder stops soon); folders it could not list go to
    ``unreadable``."""
    unreadable = [] if unreadable is None else unreadable
    frontier, seen = [path], 0
    for _ in range(depth + 1):
        children = {folder: _subfolders(folder, unreadable) for folder in frontier}
        for folder in frontier:
            if {_class_of(child) for child in children[folder]} & set(CLASSES):
                return folder
        frontier = [child for folder in frontier for child in children[folder]]
        seen += len(frontier)
        if seen > max_folders:
            return None
    return None


def _check_root(path: Path, origin: str) -> Path:
    """The dataset root at or below ``path``, or an error that says what is wrong with ``path`` (named by
    ``origin``: the argument, CXR_DATA_DIR, --data) and what was found there instead."""
    if not path.exists():
        raise DatasetNotFoundError(f"{origin} points to {path}, which does not exist.")
    if not path.is_dir():
        raise DatasetNotFoundError(f"{origin} points to {path}, which is a file, not the dataset folder.")
    unreadable: list[Path] = []
    root = _dataset_root_in(path, unreadable=unreadable)
    if root is None:
        found = [child.name for child in _subfolders(path, [])]
        seen = f" Its folders: {', '.join(found[:12])}{' ...' if len(found) > 12 else ''}." if found else ""
        denied = (f" Could not look inside (permission denied or unreadable): "
                  f"{', '.join(str(f) for f in unreadable[:5])}." if unreadable else "")
        raise DatasetNotFoundError(
            f"{origin} points to {path}, but no class folder was found in it or in the three levels below "
            f"(known names: {', '.join(sorted(FOLDER_ALIASES))}; case does not matter).{seen}{denied} "
            "Is this the COVID-19 Radiography Database folder? Rename a class folder to one of the known names "
            "if it is.")
    return root


def dataset_root(path: str | os.PathLike, origin: str = "The path given") -> Path:
    """The dataset root at or below ``path``; a clear error naming ``origin`` (e.g. ``--data``) when none is."""
    return _check_root(Path(path).expanduser(), origin)


def download_dataset(target: Path | None = None, version: int = KAGGLE_VERSION) -> Path:
    """Download the pinned Kaggle release into ``data/`` with kagglehub and return its folder.

    Needs network access to Kaggle; public datasets need no login, but kagglehub uses your
    Kaggle credentials (``~/.kaggle/kaggle.json`` or ``KAGGLE_USERNAME``/``KAGGLE_KEY``) when present.
    """
    import kagglehub

    target = Path(target or config.data_dir() / "kaggle")
    target.mkdir(parents=True, exist_ok=True)
    handle = f"{KAGGLE_HANDLE}/versions/{version}"
    return Path(kagglehub.dataset_download(handle, output_dir=str(target)))


def find_dataset(path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The dataset root, from ``path``, ``CXR_DATA_DIR``, ``data/COVID-19_Radiography_Dataset``, or Kaggle.

    An explicit ``path`` or ``CXR_DATA_DIR`` that is wrong is an error (it was asked for); only when neither is
    given does the search go on to ``data/`` and then to a kagglehub download of the pinned version.
    """
    if path is not None:
        return dataset_root(path)
    if "CXR_DATA_DIR" in os.environ:
        if not os.environ["CXR_DATA_DIR"].strip():  # set but empty: a mistake, never a reason to download
            raise DatasetNotFoundError(
                "CXR_DATA_DIR is set but empty. Set it to the dataset folder (export CXR_DATA_DIR=/path/to/"
                "COVID-19_Radiography_Dataset), or unset it to look in data/ and then download the release.")
        return dataset_root(os.environ["CXR_DATA_DIR"], "CXR_DATA_DIR")
    for candidate in [config.data_dir() / name for name in ROOT_NAMES] + [config.data_dir() / "kaggle"]:
        if candidate.is_dir() and (root := _dataset_root_in(candidate)) is not None:
            return root
    reason = "download=False"
    if download:
        try:
            return _check_root(download_dataset(), "The Kaggle download")
        except DatasetNotFoundError:
            raise
        except Exception as error:  # noqa: BLE001 (no network, no credentials, Kaggle down: one advice for all)
            reason = f"the Kaggle download failed ({type(error).__name__}: {error})"
    raise DatasetNotFoundError(
        "The COVID-19 Radiography Database was not found, and " + reason + ".\n"
        "Get it one of these ways:\n"
        f"  1. set CXR_DATA_DIR to a folder holding it (e.g. export CXR_DATA_DIR=/path/to/COVID-19_Radiography_Dataset);\n"
        f"  2. unpack the Kaggle archive into {config.data_dir() / ROOT_NAMES[0]};\n"
        f"  3. let kagglehub download it: https://www.kaggle.com/datasets/{KAGGLE_HANDLE} (version {KAGGLE_VERSION}).")


# --------------------------------------------------------------------------------------------------
# Indexing
# --------------------------------------------------------------------------------------------------

def image_id(name: str) -> int | None:
    """The number in a file name: ``COVID-123.png`` and ``COVID-19 (123).png`` both give 123."""
    match = re.search(r"(\d+)\)?\s*$", Path(name).stem)
    return int(match.group(1)) if match else None


def _image_files(class_dir: Path, problems: list) -> list[Path]:
    """Image files of one class folder: ``<class>/images/`` if it exists, else the folder itself; never masks."""
    source = class_dir / "images" if (class_dir / "images").is_dir() else class_dir
    try:
        items = sorted(source.iterdir())
    except OSError as error:
        raise DatasetNotFoundError(f"The class folder {source} cannot be read ({type(error).__name__}: "
                                   f"{error.strerror or error}).") from error
    files = []
    for item in items:
        if item.is_dir() or item.name.lower() in IGNORED_NAMES or item.name.startswith("."):
            continue  # masks/ and other sub-folders are not part of the classification data
        if item.suffix.lower() in IMAGE_SUFFIXES:
            files.append(item)
        else:
            problems.append((str(item), "not an image file (unknown extension)"))
    return files


class UndecodableImageError(ValueError):
    """An image file that the pipeline's decoder cannot read; the message names the file(s)."""


def _describe(path: Path) -> dict:
    """sha256, size and mode of one image; raises ValueError naming the file when it cannot be decoded.

    Pillow reports size and mode; TensorFlow's decoder, the one training uses (``_decode``), must read it too:
    a TIFF named ``.png`` or an RLE-compressed BMP opens in Pillow but not there (TF 2.21 reads WebP).
    """
    raw = path.read_bytes()
    try:
        with Image.open(path) as image:
            image.load()  # decodes every pixel: catches truncated files that verify() lets through
            width, height, mode, kind = image.width, image.height, image.mode, image.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{path}: cannot be read as an image ({error})") from error
    problem = _tf_decode_problem(raw)
    if problem:
        raise ValueError(f"{path}: a {kind} image that TensorFlow's decoder, which training uses, cannot read "
                         f"({problem}). Convert it to PNG.")
    return {"sha256": hashlib.sha256(raw).hexdigest(), "width": width, "height": height, "mode": mode}


def _tf_decode_problem(raw: bytes) -> str | None:
    """None when ``tf.io.decode_image`` reads these bytes as ``_decode`` does, else its error message."""
    import tensorflow as tf

    try:
        tf.io.decode_image(raw, channels=3, dtype=tf.uint8, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
        message = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", error.message).strip()  # TF's op names: noise here
        return (message.splitlines() or ["unreadable"])[0]
    return None


def undecodable(paths) -> list[tuple[str, str]]:
    """The files among ``paths`` that the pipeline's decoder cannot read (missing ones too), with the reason:
    what names the culprit when a training or prediction pass stops on a decode error."""
    bad = []
    for path in paths:
        try:
            problem = _tf_decode_problem(Path(path).read_bytes())
        except OSError as error:
            problem = f"{type(error).__name__}: {error.strerror or error}"
        if problem:
            bad.append((str(path), problem))
    return bad


def _listing(problems: list[tuple[str, str]], limit: int = 20) -> str:
    """``path: why`` lines for a message about files, the first ``limit`` of them, then how many more."""
    lines = [f"  {path}: {why}" for path, why in problems[:limit]]
    return "\n".join(lines + ([f"  ... and {len(problems) - limit} more"] if len(problems) > limit else []))


@contextlib.contextmanager
def naming_undecodable(frame: pd.DataFrame):
    """Around a pass over ``frame``'s images (fit, predict, feature extraction): a TensorFlow error raised by the
    pipeline becomes an ``UndecodableImageError`` naming the files that cannot be read, when there are any (a
    file changed or replaced after the index was made); any other error passes through unchanged."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnimplementedError) as error:
        bad = undecodable(frame["path"].unique())
        if not bad:
            raise
        raise UndecodableImageError(
            f"{len(bad)} image(s) could not be decoded (changed since the dataset was indexed?):\n{_listing(bad)}\n"
            "Replace or remove them; the index reads them again when their size or time changes.") from error


def index_dataset(root: str | os.PathLike, *, include=CLASSES, cache: bool = True,
                  progress: bool = True) -> pd.DataFrame:
    """One row per readable image of the classes in ``include``, in class order then by id.

    Unreadable files are left out with one warning that names them; the list is in ``frame.attrs["skipped"]``.
    The index is cached in ``data/cache/`` and only new or changed files (size, mtime) are read again.
    """
    root = _check_root(Path(root), "The dataset folder")
    unknown = set(include) - set(CLASSES) - set(OPTIONAL_CLASSES)
    if unknown:
        raise ValueError(f"Unknown class(es) {sorted(unknown)}; known: {CLASSES + OPTIONAL_CLASSES}")
    folders: dict[str, list[Path]] = {}
    for child in sorted(root.iterdir()):
        if child.is_dir() and _class_of(child) in include:
            folders.setdefault(_class_of(child), []).append(child)

    problems: list[tuple[str, str]] = []
    files: list[tuple[str, Path]] = []
    unknown_folders = [child.name for child in _subfolders(root, []) if _class_of(child) is None]
    for label in include:
        if label not in folders:
            others = (f" Folders not recognised as a class: {', '.join(unknown_folders)} (known names: "
                      f"{', '.join(sorted(FOLDER_ALIASES))}; rename one if it holds {label})."
                      if unknown_folders else "")
            warnings.warn(f"No folder for class {label!r} in {root}.{others}", stacklevel=2)
            continue
        found = [f for folder in folders[label] for f in _image_files(folder, problems)]
        if not found:
            warnings.warn(f"The class folder(s) {[str(f) for f in folders[label]]} hold no images.", stacklevel=2)
        files += [(label, f) for f in found]

    # v2: images checked with TensorFlow's decoder too (older caches were checked with Pillow only)
    cache_file = config.data_dir() / "cache" / f"index-v2-{hashlib.sha1(str(root).encode()).hexdigest()[:12]}.csv"
    known = {}
    if cache and cache_file.exists():
        old = pd.read_csv(cache_file, dtype={"sha256": str, "mode": str})
        known = {row.relpath: row for row in old.itertuples(index=False)}

    rows = []
    for label, path in tqdm(files, desc="indexing images", unit="img", disable=not progress, mininterval=1):
        stat = path.stat()
        relpath = str(path.relative_to(root))
        hit = known.get(relpath)
        if hit is not None and hit.bytes == stat.st_size and hit.mtime_ns == stat.st_mtime_ns:
            described = {"sha256": hit.sha256, "width": hit.width, "height": hit.height, "mode": hit.mode}
        else:
            try:
                described = _describe(path)
            except ValueError as error:
                problems.append((str(path), str(error).split(": ", 1)[-1]))
                continue
        rows.append({"path": str(path), "relpath": relpath, "label": label,
                     "class_id": (CLASSES + OPTIONAL_CLASSES).index(label), "image_id": image_id(path.name),
                     **described, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})

    frame = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    frame["image_id"] = frame["image_id"].astype("Int64")
    frame = frame.sort_values(["class_id", "image_id", "relpath"], na_position="last").reset_index(drop=True)
    if cache and not frame.empty:
        _atomic_csv(frame, cache_file)
    if problems:
        warnings.warn(f"{len(problems)} file(s) left out of the index:\n{_listing(problems)}", stacklevel=2)
    if frame.empty:
        raise DatasetNotFoundError(f"No readable image of the classes {list(include)} in {root}.")
    frame.attrs["root"] = str(root)
    frame.attrs["skipped"] = problems
    return frame


def _atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


# --------------------------------------------------------------------------------------------------
# Protocols and splits
# --------------------------------------------------------------------------------------------------

PROTOCOLS = {
    # first N images of each class by id; random (unstratified) 80/20, then 10 % of train for validation
    # ("val_of": "rest": validation is a share of what is left after test; "all": a share of the whole)
    "thesis": {"per_class": {"COVID": 1200, "Normal": 1200, "Viral Pneumonia": 1200},
               "test": 0.20, "val": 0.10, "val_of": "rest", "stratify": False},
    # the first release's counts (first ids); stratified 70/15/15; COVID training images augmented
    "polazaro": {"per_class": {"COVID": 219, "Normal": 1341, "Viral Pneumonia": None},
                 "test": 0.15, "val": 0.15, "val_of": "all", "stratify": True},
    # everything found; stratified 70/15/15; under a cap (quick profile) a seeded random sample of each class,
    # so every collection stays in it (the first ids of Normal are one paediatric collection)
    "all": {"per_class": {"COVID": None, "Normal": None, "Viral Pneumonia": None},
            "test": 0.15, "val": 0.15, "val_of": "all", "stratify": True, "capped": "random"},
}


def sample_per_class(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A seeded random sample of at most ``n`` rows of each class (``label``) of ``frame``, in its row order:
    the one way the series draws a capped subset (the capped ``all`` protocol, left-out images)."""
    parts = [rows.sample(min(n, len(rows)), random_state=seed) for _, rows in frame.groupby("label", sort=False)]
    return pd.concat(parts).sort_index() if parts else frame


def cap_training(split: pd.DataFrame, n: int | None, seed: int = config.SEED) -> pd.DataFrame:
    """``split`` with its training rows cut to a seeded sample of ``n``, stratified by class (scikit-learn);
    validation and test untouched. Used to train on the ``all`` protocol with the thesis protocol's training size,
    so the two differ in who is in training, not in how much. ``n`` None or at least the training size: unchanged."""
    from sklearn.model_selection import train_test_split

    train = split[split["split"] == "train"]
    if n is None or n >= len(train):
        return split
    kept, _ = train_test_split(train, train_size=n, stratify=train["label"], random_state=seed)
    capped = split[(split["split"] != "train") | split.index.isin(kept.index)]
    capped.attrs = dict(split.attrs)
    return capped


def select_protocol(index: pd.DataFrame, protocol: str, max_per_class: int | None = None,
                    seed: int = config.SEED) -> pd.DataFrame:
    """The protocol's images: the first ids of each class, as many as it asks for (and at most ``max_per_class``).

    A protocol that takes every image (``all``) is cut to ``max_per_class`` by a random sample seeded with
    ``seed`` instead (``sample_per_class``), kept in id order, so a capped run still sees every collection."""
    spec = _protocol(protocol)
    parts = []
    for label, wanted in spec["per_class"].items():
        rows = index[index["label"] == label].sort_values(["image_id", "relpath"], na_position="last")
        if rows.empty:
            raise ValueError(f"Protocol {protocol!r} needs class {label!r}, but the index has no image of it.")
        limit = min(x for x in (wanted, max_per_class) if x is not None) if (wanted or max_per_class) else None
        if limit is not None and len(rows) < limit:
            warnings.warn(f"Protocol {protocol!r} asks for {limit} {label} images; only {len(rows)} found.",
                          stacklevel=2)
        if limit is not None and wanted is None and spec.get("capped") == "random" and len(rows) > limit:
            rows = sample_per_class(rows, limit, seed)
        parts.append(rows.head(limit) if limit is not None else rows)
    return pd.concat(parts, ignore_index=True)


def left_out(index: pd.DataFrame, protocol: str, max_per_class: int | None = None,
             seed: int = config.SEED) -> pd.DataFrame:
    """The images a protocol does not use (higher ids of each class), without any byte-identical copy of an
    image it does use: an outside test set for the protocol's models (notebook 06). ``max_per_class`` draws a
    seeded random sample of at most that many per class, in id order."""
    used = select_protocol(index, protocol)
    rest = index[~index["relpath"].isin(used["relpath"]) & ~index["sha256"].isin(used["sha256"])]
    rest = rest[rest["label"].isin(CLASSES)]
    if max_per_class is not None:
        rest = sample_per_class(rest, max_per_class, seed)
    return rest.sort_values(["class_id", "image_id", "relpath"]).reset_index(drop=True)


def _protocol(name: str) -> dict:
    if name not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}.")
    return PROTOCOLS[name]


def split_images(images: pd.DataFrame, protocol: str, seed: int = config.SEED) -> pd.DataFrame:
    """Add a ``split`` column (train / val / test) to a protocol's images.

    Byte-identical images (same sha256) form one group and always land on the same side, so no test image
    has a copy in training. The split is made on groups with scikit-learn's ``train_test_split``
    (stratified by class where the protocol says so); ``val`` is a share of the non-test part for ``thesis``
    (10 % of train, as Keras' ``validation_split`` did) and of the whole for the 70/15/15 protocols.
    """
    spec = _protocol(protocol)
    groups = images.groupby("sha256", sort=True)["label"].agg(lambda s: s.mode().iloc[0]).reset_index()
    val_share = spec["val"] if spec["val_of"] == "rest" else spec["val"] / (1 - spec["test"])
    counts = groups["label"].value_counts()
    try:
        if spec["stratify"] and counts.min() < 3:  # scikit-learn would leave a side without the class, or fail
            raise ValueError(f"{counts.idxmin()} has {counts.min()} distinct image(s), fewer than one per side")
        stratify = groups["label"] if spec["stratify"] else None
        rest, test = train_test_split(groups, test_size=spec["test"], random_state=seed, stratify=stratify)
        stratify = rest["label"] if spec["stratify"] else None
        train, val = train_test_split(rest, test_size=val_share, random_state=seed, stratify=stratify)
    except ValueError as error:  # also scikit-learn's words for too few images of a class to stratify
        raise ValueError(
            f"Protocol {protocol!r} cannot split these images: distinct images per class "
            f"{counts.reindex(CLASSES).fillna(0).astype(int).to_dict()} are too few for a "
            f"{'stratified ' if spec['stratify'] else ''}split into train, validation and test. Every class "
            f"needs images on each side; add images or use another protocol. ({error})") from error
    side = {**dict.fromkeys(train["sha256"], "train"), **dict.fromkeys(val["sha256"], "val"),
            **dict.fromkeys(test["sha256"], "test")}
    return _in_split_order(images.assign(split=images["sha256"].map(side)))


def _in_split_order(split: pd.DataFrame) -> pd.DataFrame:
    """train, val, test; inside each, class order then id: the order of the saved CSV and of every pass."""
    rank = {"train": 0, "val": 1, "test": 2}
    return split.sort_values(["split", "class_id", "image_id", "relpath"],
                             key=lambda col: col.map(rank) if col.name == "split" else col).reset_index(drop=True)


SPLIT_COLUMNS = ["relpath", "label", "class_id", "image_id", "sha256", "split"]


def load_split(index: pd.DataFrame, protocol: str, profile: config.Profile, *, directory: Path | None = None
               ) -> pd.DataFrame:
    """The protocol's split for this profile: read from ``data/splits/`` when it exists, else made and saved.

    The file name carries the protocol, the cap, the seed and a fingerprint of the images chosen and of the
    protocol's definition (shares, stratification), so a different dataset copy or a changed protocol never
    reuses another's split, while every notebook and rerun on the same data sees the identical test set.
    """
    images = select_protocol(index, protocol, profile.max_per_class, profile.seed)
    definition = json.dumps(_protocol(protocol), sort_keys=True)
    fingerprint = hashlib.sha256((definition + "".join(sorted(images["sha256"] + images["label"]))).encode()
                                 ).hexdigest()[:10]
    cap = profile.max_per_class or "all"
    path = Path(directory or profile.splits_dir) / f"{protocol}-n{cap}-seed{profile.seed}-{fingerprint}.csv"
    if path.exists():
        saved = pd.read_csv(path, dtype={"sha256": str})
        split = images.merge(saved[["relpath", "split"]], on="relpath", how="left", validate="one_to_one")
        if split["split"].isna().any():  # cannot happen when the fingerprint matches, but never guess
            raise RuntimeError(f"{path} does not cover the selected images; delete it to make a new split.")
        split = _in_split_order(split)
    else:
        split = split_images(images, protocol, profile.seed)
        _atomic_csv(split[SPLIT_COLUMNS], path)
    split.attrs["file"] = path.name  # run records name the split they were trained and tested on
    return split


def split_counts(split: pd.DataFrame) -> pd.DataFrame:
    """Images per class and split, with totals: the table every notebook shows."""
    table = pd.crosstab(split["label"], split["split"], margins=True, margins_name="total")
    rows = [c for c in CLASSES if c in table.index] + ["total"]
    cols = [c for c in ("train", "val", "test") if c in table.columns] + ["total"]
    return table.loc[rows, cols]


def oversample(frame: pd.DataFrame, label: str = "COVID", copies: int = 5) -> pd.DataFrame:
    """``frame`` plus ``copies`` extra rows of each ``label`` image, marked ``augment=True``.

    This is the smaller project's COVID-only augmentation (Augmentor made 5 augmented copies of each COVID
    training image); here the copies are augmented afresh every epoch by the pipeline, not saved to disk.
    """
    base = frame.assign(augment=frame.get("augment", False))
    extra = pd.concat([base[base["label"] == label].assign(augment=True)] * copies, ignore_index=True)
    return pd.concat([base, extra], ignore_index=True)


# --------------------------------------------------------------------------------------------------
# Pixels and tf.data pipelines
# --------------------------------------------------------------------------------------------------

def read_gray(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """One image as 8-bit grayscale (uint8, H x W), optionally resized bilinearly to ``size`` x ``size``.

    Handles RGB, RGBA (alpha dropped), palette and 16-bit images the same way the pipeline does.
    """
    with Image.open(path) as image:
        if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit: keep the high byte, as TF does
            image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
        image = image.convert("RGB").convert("L")
        if size is not None:
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def _decode(path, size: int):
    """TensorFlow side of ``read_gray``: decode any PNG/JPEG/BMP to one 8-bit channel, resize, keep uint8."""
    import tensorflow as tf

    raw = tf.io.read_file(path)
    image = tf.io.decode_image(raw, channels=3, dtype=tf.uint8, expand_animations=False)  # 16-bit -> 8-bit
    image = tf.image.rgb_to_grayscale(image)
    image = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def make_dataset(frame: pd.DataFrame, image_size: int, batch_size: int, *, training: bool = False,
                 preprocess=None, augment=None, seed: int = config.SEED, cache: bool = True,
                 shuffle: bool | None = None, one_hot: bool = False, mixup: float = 0.0):
    """A ``tf.data.Dataset`` of ``(images, class_ids)`` batches for the rows of ``frame``.

    Images are decoded once to 8-bit grayscale at ``image_size`` and cached in memory, then repeated to
    3 channels as float32 in [0, 255]. Training data is shuffled every epoch and, when ``augment`` (a Keras
    layer, e.g. ``augmentation()``) is given, augmented: every row, or only rows whose ``augment`` column is
    True. ``preprocess`` (a backbone's input convention) runs last. Evaluation data keeps the frame's order;
    ``shuffle=False`` keeps it for training data too (augmented feature views, which must stay aligned).
    ``one_hot`` gives labels as one-hot rows (for label smoothing); ``mixup`` > 0 blends the training images
    and their one-hot labels in pairs with Keras's ``MixUp`` layer (its ``alpha``).
    """
    import tensorflow as tf

    if frame.empty:
        raise ValueError("make_dataset got no rows: the split is empty for this selection.")
    paths = frame["path"].astype(str).to_numpy()
    labels = frame["class_id"].to_numpy(dtype=np.int32)
    flags = (frame["augment"].to_numpy(dtype=bool) if "augment" in frame
             else np.ones(len(frame), dtype=bool))
    ds = tf.data.Dataset.from_tensor_slices((paths, labels, flags))
    ds = ds.map(lambda p, y, a: (_decode(p, image_size), y, a), num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if training if shuffle is None else shuffle:
        ds = ds.shuffle(len(frame), seed=seed, reshuffle_each_iteration=True)

    ds = ds.map(lambda image, label, flag: (tf.cast(image, tf.float32), label, flag),
                num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    if training and augment is not None:
        # Whole batch at once, on the single grey channel: a third of the work of augmenting three identical
        # channels (it was 19 % of SqueezeNet-FT's training time on 2 cores; see benchmarks/results.md).
        def maybe_augment(images, labels, flags):  # then keep the unflagged rows as they were
            augmented = tf.clip_by_value(augment(images, training=True), 0.0, 255.0)
            return tf.where(flags[:, None, None, None], augmented, images), labels, flags
        # Serially: the layers' random state advances batch by batch in order, so a rerun draws the same.
        ds = ds.map(maybe_augment)
    ds = ds.map(lambda images, labels, flags: (tf.image.grayscale_to_rgb(images), labels),
                num_parallel_calls=tf.data.AUTOTUNE)
    if one_hot or (training and mixup):
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, len(CLASSES))), num_parallel_calls=tf.data.AUTOTUNE)
    if training and mixup:
        import keras

        mix = keras.layers.MixUp(alpha=mixup, seed=layer_seeds(seed, 5)[4])  # its own stream, as each layer

        def mixed(images, labels):
            out = mix({"images": images, "labels": labels}, training=True)
            return out["images"], out["labels"]
        ds = ds.map(mixed)  # serially, like the augmentation
    if preprocess is not None:
        ds = ds.map(lambda x, y: (preprocess(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    # tf.data's autotuner off: with it, on 2 cores, many epochs of `fit` ended on a multiple of about 10.3 s
    # whatever the net (one batch a second at 100 % CPU); without it, epochs ran at 83-100 % of the net's bare
    # training rate with both cores busy (benchmarks/results.md, 2026-12-04). AUTOTUNE then means TF's defaults.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def layer_seeds(seed: int, count: int) -> list[int]:
    """``count`` independent seeds derived from ``seed`` (NumPy ``SeedSequence.spawn``).

    Each Keras random layer draws from its own ``SeedGenerator``; layers given one seed draw the same numbers in
    lockstep (a flipped image was almost always also darker and zoomed less). Spawned seeds are unrelated to
    each other and to those spawned from any other ``seed``, so augmented feature views stay independent too.
    """
    return [int(child.generate_state(1)[0] >> 1) for child in np.random.SeedSequence(seed).spawn(count)]


def augmentation(flip: bool = True, rotation: float = 0.0, zoom: tuple | float | None = None,
                 brightness: float | None = None, translation: float = 0.0, contrast: float = 0.0,
                 seed: int = config.SEED):
    """A Keras ``Sequential`` of preprocessing layers for images in [0, 255], each layer with its own seed.

    thesis: ``augmentation(zoom=(0.0, 0.2), brightness=0.2)`` (flip, zoom out up to 20 %, brightness);
    polazaro: ``augmentation(rotation=15 / 360)`` (flip, rotation within +-15 degrees).
    ``translation`` shifts by up to that share of the size, ``contrast`` scales contrast by up to 1 +- it.
    """
    import keras

    # one seed per possible layer, in a fixed order (index 4 is MixUp's, in make_dataset)
    flip_seed, rotation_seed, zoom_seed, brightness_seed, _, translation_seed, contrast_seed = layer_seeds(seed, 7)
    layers = []
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=flip_seed))
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation, fill_mode="constant", seed=rotation_seed))
    if zoom is not None:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="constant", seed=zoom_seed))
    if translation:
        layers.append(keras.layers.RandomTranslation(translation, translation, fill_mode="constant",
                                                     seed=translation_seed))
    if brightness:
        layers.append(keras.layers.RandomBrightness(brightness, value_range=(0, 255), seed=brightness_seed))
    if contrast:
        layers.append(keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=contrast_seed))
    return keras.Sequential(layers, name="augmentation")


PROJECT_AUGMENTATIONS = {
    "thesis": {"flip": True, "zoom": (0.0, 0.2), "brightness": 0.2},  # flip, zoom out to 20 %, brightness
    "polazaro": {"flip": True, "rotation": 15 / 360},                # left-right flip, rotation within +-15 deg
    # stronger, for the improved recipe (notebook 04): no flip (a chest is not symmetric), small rotations and
    # shifts, zoom in and out, brightness and contrast
    "strong": {"flip": False, "rotation": 10 / 360, "zoom": (-0.15, 0.15), "translation": 0.08,
               "brightness": 0.2, "contrast": 0.2},
}


def project_augmentation(kind: str | None, seed: int = config.SEED):
    """The augmentation a project used (``"thesis"`` or ``"polazaro"``), or the improved recipe's
    (``"strong"``), as Keras layers; None gives None."""
    if kind is None:
        return None
    if kind not in PROJECT_AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {kind!r}; use one of {list(PROJECT_AUGMENTATIONS)} or None.")
    return augmentation(seed=seed, **PROJECT_AUGMENTATIONS[kind])
