"""Atomic writes: a reader (or a run killed half-way) never sees half a file or half a folder."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, flush it to disk, then rename it to ``path``.

    Works for a file (``write`` creates ``tmp``) and for a folder (``write`` fills ``tmp``, created empty). The
    temporary name is unique, so two writers never share it; the data is fsynced before the rename, so a power
    loss leaves the old version or the new one. POSIX has no atomic swap of two folders: an existing folder at
    ``path`` is renamed aside and the new one renamed in its place (two renames, microseconds apart), then the
    old one is removed; a reader that looks in between finds no folder, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keeps the suffix: np.savez appends .npz to a name without it
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp = work / f"new{path.suffix}"
    try:
        write(tmp)
        _fsync_tree(tmp)
        if tmp.is_dir() and path.exists():
            old = work / "old"
            os.replace(path, old)
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def atomic_csv(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """``frame`` written to ``path`` as CSV without its index, atomically (``atomic_write``)."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def _fsync(path: Path) -> None:
    """Flush one file or folder entry to disk (a folder's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file in a folder and the folders themselves."""
    if path.is_dir():
        for item in path.rglob("*"):
            _fsync(item)
    _fsync(path)


def write_json(path: str | os.PathLike, value) -> Path:
    """``value`` as indented JSON, written atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2)))


class CorruptFileError(ValueError):
    """A file the project wrote cannot be read back (a disk fault or a hand edit): never guessed around."""


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in ``path``; an empty dict when the file does not exist. A file that exists but is not a
    JSON object is an error naming it (treating it as empty would silently forget what it held)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise CorruptFileError(f"{path} is not valid JSON ({error}).") from error
    if not isinstance(value, dict):
        raise CorruptFileError(f"{path} holds a JSON {type(value).__name__}, not an object.")
    return value
