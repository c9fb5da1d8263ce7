"""Find the COVID-19 Radiography Database (argument, CXR_DATA_DIR, data/, or a Kaggle download) and index it:
one row per readable image with its label, id, sha256, size and mode, checked with the decoder training uses.

    root = find_dataset()
    index = index_dataset(root)
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import warnings
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from . import config, duplicates
from .config import CLASSES
from .files import atomic_csv
from .pipeline import to_gray

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

INDEX_COLUMNS = ["path", "relpath", "label", "class_id", "image_id", "sha256", "phash", "width", "height", "mode",
                 "bytes", "mtime_ns", "duplicate_group"]


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


def describe_image(path: Path) -> dict:
    """sha256, size, mode and perceptual hash of one image; raises ValueError naming the file when it cannot be
    decoded.

    Pillow reports size and mode; TensorFlow's decoder, the one training uses (``_decode``), must read it too:
    a TIFF named ``.png`` or an RLE-compressed BMP opens in Pillow but not there (TF 2.21 reads WebP).
    """
    raw = path.read_bytes()
    try:
        with Image.open(path) as image:
            image.load()  # decodes every pixel: catches truncated files that verify() lets through
            width, height, mode, kind = image.width, image.height, image.mode, image.format
            perceptual = duplicates.phash(to_gray(image))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{path}: cannot be read as an image ({error})") from error
    problem = _tf_decode_problem(raw)
    if problem:
        raise ValueError(f"{path}: a {kind} image that TensorFlow's decoder, which training uses, cannot read "
                         f"({problem}). Convert it to PNG.")
    return {"sha256": hashlib.sha256(raw).hexdigest(), "width": width, "height": height, "mode": mode,
            "phash": perceptual}


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


def file_listing(problems: list[tuple[str, str]], limit: int = 20) -> str:
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
            f"{len(bad)} image(s) could not be decoded (changed since the dataset was indexed?):\n"
            f"{file_listing(bad)}\n"
            "Replace or remove them; the index reads them again when their size or time changes.") from error


def index_dataset(root: str | os.PathLike, *, include=CLASSES, cache: bool = True,
                  progress: bool = True) -> pd.DataFrame:
    """One row per readable image of the classes in ``include``, in class order then by id, with its perceptual
    hash and its ``duplicate_group`` (byte-identical files and confirmed near-duplicates, ``duplicates``).

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

    # v3: with each image's perceptual hash (v2 had none; v1 was checked with Pillow only, not TensorFlow's decoder)
    cache_file = config.data_dir() / "cache" / f"index-v3-{hashlib.sha1(str(root).encode()).hexdigest()[:12]}.csv"
    known = {}
    if cache and cache_file.exists():
        old = pd.read_csv(cache_file, dtype={"sha256": str, "mode": str, "phash": str})
        known = {row.relpath: row for row in old.itertuples(index=False)}

    rows, read_again = [], 0
    for label, path in tqdm(files, desc="indexing images", unit="img", disable=not progress, mininterval=1):
        stat = path.stat()
        relpath = str(path.relative_to(root))
        hit = known.get(relpath)
        if hit is not None and hit.bytes == stat.st_size and hit.mtime_ns == stat.st_mtime_ns:
            described = {"sha256": hit.sha256, "width": hit.width, "height": hit.height, "mode": hit.mode,
                         "phash": hit.phash}
        else:
            read_again += 1
            try:
                described = describe_image(path)
            except ValueError as error:
                problems.append((str(path), str(error).split(": ", 1)[-1]))
                continue
        rows.append({"path": str(path), "relpath": relpath, "label": label,
                     "class_id": (CLASSES + OPTIONAL_CLASSES).index(label), "image_id": image_id(path.name),
                     **described, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})

    frame = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    frame["image_id"] = frame["image_id"].astype("Int64")
    frame = frame.sort_values(["class_id", "image_id", "relpath"], na_position="last").reset_index(drop=True)
    if cache and not frame.empty and (read_again or set(frame["relpath"]) != set(known)):  # else it is unchanged
        atomic_csv(frame.drop(columns="duplicate_group"), cache_file)
    frame["duplicate_group"] = duplicates.duplicate_groups(frame, cache=cache) if not frame.empty else frame["sha256"]
    if problems:
        warnings.warn(f"{len(problems)} file(s) left out of the index:\n{file_listing(problems)}", stacklevel=2)
    if frame.empty:
        raise DatasetNotFoundError(f"No readable image of the classes {list(include)} in {root}.")
    frame.attrs["root"] = str(root)
    frame.attrs["skipped"] = problems
    return frame
