"""The central square of an image and its complement, the border: the crude stand-in for the lung fields that
the shortcut checks hide or keep (notebooks 01, 06 and 07). It is not a lung mask."""
from __future__ import annotations

import numpy as np


def central_mask(size: int, fraction: float = 0.6) -> np.ndarray:
    """A (size, size) boolean mask of the central square covering ``fraction`` of the height and width: most of
    the lung fields in these frontal X-rays; its complement is the border (notebooks 01 and 06)."""
    low, high = int(size * (1 - fraction) / 2), int(size * (1 + fraction) / 2)
    mask = np.zeros((size, size), dtype=bool)
    mask[low:high, low:high] = True
    return mask


def masking(image_size: int, keep: str, fraction: float = 0.6):
    """A batch function for ``pipeline.make_dataset(preprocess=...)`` that blacks out part of every image:
    ``keep="border"`` hides the central square (the lungs), ``keep="centre"`` hides everything around it."""
    if keep not in ("border", "centre"):
        raise ValueError(f"keep must be 'border' or 'centre', got {keep!r}.")
    mask = central_mask(image_size, fraction)
    kept = (mask if keep == "centre" else ~mask).astype(np.float32)[None, :, :, None]
    return lambda images: images * kept
