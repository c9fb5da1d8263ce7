"""Atomic writes: a reader (or a run killed half-way) never sees half a file or half a folder."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it to ``path``.

    Works for a file (``write`` creates ``tmp``) and for a folder (``write`` fills ``tmp``, created empty); an
    existing folder at ``path`` is moved aside first and removed once the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")  # keeps the suffix: np.savez appends .npz otherwise
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    write(tmp)
    if tmp.is_dir() and path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    return path


def write_json(path: str | os.PathLike, value) -> Path:
    """``value`` as indented JSON, written atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2)))


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in ``path``, or an empty dict when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
