"""Duplicate images: byte-identical files, and the same radiograph saved again under another id (re-encoded,
resized, a little brighter). Candidates come from a perceptual hash (``imagehash.phash``), each is confirmed by
comparing the pixels, and duplicates form groups (connected components) that every split keeps on one side.

    index = dataset.index_dataset(root)       # has a ``phash`` column per image and a ``duplicate_group`` column
    pairs = near_duplicate_pairs(index)       # candidates with their hash distance and pixel correlation
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from . import config
from .files import atomic_csv
from .pipeline import read_gray

# A pair of images is a candidate when their 64-bit DCT hashes differ in at most this many bits: the same
# radiograph saved again lands at 0-4 bits (4 when it was also cropped or its contrast changed), while different
# radiographs of a similar layout reach 2-4 bits too, so the hash only proposes (notebook 01 shows pairs).
MAX_HASH_DISTANCE = 4
# A candidate is confirmed when the two images' grey values, both resized to COMPARE_SIZE, correlate at least
# this much: chosen by looking at candidate pairs on both sides of it (notebook 01, section 5).
MIN_CORRELATION = 0.946
COMPARE_SIZE = 64


def phash(image: Image.Image) -> str:
    """The 64-bit DCT perceptual hash of an 8-bit grey image, as 16 hex digits (``imagehash.phash``: 32 x 32
    grey, the top-left 8 x 8 DCT coefficients against their median)."""
    import imagehash

    return str(imagehash.phash(image))


def hash_distances(hashes: pd.Series, max_distance: int = MAX_HASH_DISTANCE, chunk: int = 1024,
                   against: pd.Series | None = None) -> pd.DataFrame:
    """Every pair of rows whose hashes differ in at most ``max_distance`` bits: columns ``a``, ``b`` (positions,
    ``a < b``) and ``distance``; with ``against``, every such pair of a row of ``hashes`` (``a``) and a row of
    ``against`` (``b``). Vectorised in blocks of rows (XOR, then a population count), so the full release's
    21,165 images take seconds, not the hours of a pairwise Python loop."""
    values = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    others = values if against is None else np.array([int(h, 16) for h in against], dtype=np.uint64)
    found = []
    for start in range(0, len(values), chunk):
        distance = np.bitwise_count(values[start:start + chunk, None] ^ others[None, :])
        a, b = np.nonzero(distance <= max_distance)
        keep = a + start < b if against is None else np.ones(len(a), dtype=bool)
        found.append(pd.DataFrame({"a": a[keep] + start, "b": b[keep], "distance": distance[a[keep], b[keep]]}))
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=["a", "b", "distance"])


def correlation(path_a, path_b, size: int = COMPARE_SIZE) -> float:
    """Pearson correlation of two images' grey values, both resized to ``size`` x ``size``: near 1 for the same
    radiograph however it was re-encoded or brightened, lower for two radiographs that only share a layout."""
    a, b = (read_gray(path, size).astype(np.float64).ravel() for path in (path_a, path_b))
    if a.std() == 0 or b.std() == 0:
        return float(np.array_equal(a, b))
    return float(np.corrcoef(a, b)[0, 1])


def correlations_file() -> Path:
    """Where ``near_duplicate_pairs`` keeps the correlations it computed, keyed by the two files' SHA-256: a value
    depends only on the two files' bytes and ``COMPARE_SIZE``, so thresholds can change without making it stale."""
    return config.data_dir() / "cache" / f"correlations-{COMPARE_SIZE}px.csv"


def cached_correlations(pairs: pd.DataFrame) -> list[float]:
    """``correlation`` of each pair (columns ``path_a``, ``path_b``, ``sha_a``, ``sha_b``), read from
    ``correlations_file()`` where it was computed before; the new ones are added to the file."""
    path = correlations_file()
    known = pd.read_csv(path, dtype={"sha_a": str, "sha_b": str}) if path.exists() else pd.DataFrame(
        columns=["sha_a", "sha_b", "correlation"])
    lookup = dict(zip(zip(known["sha_a"], known["sha_b"]), known["correlation"]))
    values, new = [], []
    for row in pairs.itertuples(index=False):
        key = tuple(sorted((row.sha_a, row.sha_b)))  # correlation is symmetric: one entry per pair of files
        if key not in lookup:
            lookup[key] = correlation(row.path_a, row.path_b)
            new.append((*key, lookup[key]))
        values.append(lookup[key])
    if new:
        atomic_csv(pd.concat([known, pd.DataFrame(new, columns=known.columns)], ignore_index=True), path)
    return values


def near_duplicate_pairs(index: pd.DataFrame, max_distance: int = MAX_HASH_DISTANCE, cache: bool = True
                         ) -> pd.DataFrame:
    """Candidate pairs of different files (not byte-identical) with their hash distance, pixel correlation and
    whether they are confirmed (``correlation >= MIN_CORRELATION``); columns ``path_a``, ``path_b``,
    ``label_a``, ``label_b``, ``distance``, ``correlation``, ``confirmed``. With ``cache``, correlations computed
    before are read from ``correlations_file()`` (reading the pairs' pixels is most of the time)."""
    frame = index.reset_index(drop=True)
    pairs = hash_distances(frame["phash"], max_distance)
    pairs = pairs[frame["sha256"].to_numpy()[pairs["a"]] != frame["sha256"].to_numpy()[pairs["b"]]]
    out = pd.DataFrame({"path_a": frame["path"].to_numpy()[pairs["a"]], "path_b": frame["path"].to_numpy()[pairs["b"]],
                        "label_a": frame["label"].to_numpy()[pairs["a"]], "label_b": frame["label"].to_numpy()[pairs["b"]],
                        "distance": pairs["distance"].to_numpy()})
    if cache:
        sha = frame["sha256"].to_numpy()
        out["correlation"] = cached_correlations(out.assign(sha_a=sha[pairs["a"]], sha_b=sha[pairs["b"]]))
    else:
        out["correlation"] = [correlation(a, b) for a, b in zip(out["path_a"], out["path_b"])]
    out["confirmed"] = out["correlation"] >= MIN_CORRELATION
    return out.sort_values(["distance", "correlation"], ascending=[True, False], ignore_index=True)


def duplicate_groups(index: pd.DataFrame, pairs: pd.DataFrame | None = None, cache: bool = True) -> pd.Series:
    """One group id per row of ``index``: byte-identical files and confirmed near-duplicates (``pairs``,
    computed when not given, with ``cache`` as ``near_duplicate_pairs``) are linked, and each connected component
    is one group, named by the smallest sha256 in it. An image without a duplicate is a group of its own."""
    frame = index.reset_index(drop=True)
    if pairs is None:
        pairs = near_duplicate_pairs(frame, cache=cache)
    position = {path: k for k, path in enumerate(frame["path"])}
    confirmed = pairs[pairs["confirmed"]]
    first_of_sha = frame.groupby("sha256").cumcount() == 0
    anchor = frame["sha256"].map(dict(zip(frame.loc[first_of_sha, "sha256"], frame.index[first_of_sha])))
    rows = np.concatenate([frame.index.to_numpy(), confirmed["path_a"].map(position).to_numpy(dtype=int)])
    cols = np.concatenate([anchor.to_numpy(), confirmed["path_b"].map(position).to_numpy(dtype=int)])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(frame), len(frame)))
    _, component = connected_components(graph, directed=False)
    names = frame.groupby(component)["sha256"].transform("min")
    return pd.Series(names.to_numpy(), index=index.index, name="duplicate_group")


def twins_of(images: pd.DataFrame, seen: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``images`` that duplicate a row of ``seen``: the same bytes, or a perceptual hash within
    ``MAX_HASH_DISTANCE`` bits confirmed by pixel correlation when ``seen`` has readable ``path``s (else the hash
    alone, at distance 0). Both need ``sha256`` and ``phash`` columns; a ``twin_of`` column names the seen file."""
    same_bytes = images["sha256"].map(dict(zip(seen["sha256"], seen["relpath"])))
    if "phash" not in seen or seen["phash"].isna().any():  # a split saved before hashes were kept
        return images.assign(twin_of=same_bytes)[same_bytes.notna()]
    pairs = hash_distances(images["phash"], against=seen["phash"])
    readable = "path" in seen and seen["path"].map(lambda p: isinstance(p, str) and Path(p).is_file()).all()
    if readable:
        keep = [correlation(images["path"].iat[a], seen["path"].iat[b]) >= MIN_CORRELATION
                for a, b in zip(pairs["a"], pairs["b"])]
    else:
        keep = pairs["distance"] == 0
    pairs = pairs[np.asarray(keep, dtype=bool)]
    near = pd.Series(seen["relpath"].to_numpy()[pairs["b"].to_numpy(dtype=int)],
                     index=images.index[pairs["a"].to_numpy(dtype=int)])
    twin_of = same_bytes.fillna(near[~near.index.duplicated()].reindex(images.index))
    return images.assign(twin_of=twin_of)[twin_of.notna()]
