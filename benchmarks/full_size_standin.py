"""A stand-in for the real Kaggle release at full size, for measuring time and memory only (never committed).

    python benchmarks/full_size_standin.py --target /tmp/release-standin     # about 21,000 PNGs, a few minutes
    CXR_DATA_DIR=/tmp/release-standin make run                               # what a downloading user runs

The offline copy has 8058 images at 224 px; a download of version 5 (``helpers.dataset.KAGGLE_VERSION``) gives 3616
COVID, 10192 Normal, 1345 Viral Pneumonia and 6012 Lung_Opacity images at 299 x 299, with a ``masks/`` folder per
class. This script writes that layout and those counts from the offline images: each resized to 299 px, then
repeated until the class has the release's count, every repeat with a little seeded noise so that its bytes
differ (no duplicate groups that the release does not have) and a new id after the class's highest. Lung_Opacity,
which the offline copy lacks and the series ignores, is made from Normal images. The pixels of the repeats carry
nothing new and their ids mean nothing (notebook 07's paediatric/adult split by id does not hold for them): use it
for timings and memory, never for results.
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIZE = 299


def plan(source: Path, counts: dict[str, int], stand_ins: dict[str, str]) -> list[tuple]:
    """(source file, class, id, noise seed or None) for every image to write: the originals first, with their
    ids, then repeats with ids after the highest, until each class has its count."""
    sys.path.insert(0, str(REPO))
    from helpers import dataset

    index = dataset.index_dataset(dataset.dataset_root(source), progress=False, cache=False)
    jobs = []
    for label, count in counts.items():
        rows = index[index["label"] == stand_ins.get(label, label)].sort_values("image_id")
        if rows.empty:
            raise SystemExit(f"{source} has no {stand_ins.get(label, label)} image to make {label} from.")
        originals = list(zip(rows["path"], rows["image_id"]))[:count]
        jobs += [(path, label, int(image_id), None) for path, image_id in originals]
        next_id = int(rows["image_id"].max()) + 1
        for k in range(count - len(originals)):
            path, _ = originals[k % len(originals)]
            jobs.append((path, label, next_id + k, k))
    return jobs


def write(job: tuple, target: Path) -> None:
    """One image (resized; with noise when it is a repeat) and its mask, in the release's layout."""
    path, label, image_id, noise_seed = job
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.int16)
    if noise_seed is not None:  # +-1 grey level on a few per cent of the pixels: new bytes, the same picture
        rng = np.random.default_rng([image_id, noise_seed, len(label)])
        pixels = pixels + rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 0, 1], size=pixels.shape)
    name = f"{label}-{image_id}.png"
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(target / label / "images" / name)
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(target / label / "masks" / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=os.environ.get("CXR_DATA_DIR"),
                        help="the offline copy (default: CXR_DATA_DIR)")
    parser.add_argument("--target", required=True, help="where to write it (outside the repository)")
    parser.add_argument("--scale", type=float, default=1.0, help="a fraction of the release's counts (tests)")
    args = parser.parse_args()
    if not args.source:
        raise SystemExit("Give --source or set CXR_DATA_DIR to the offline copy.")
    target = Path(args.target).resolve() / "COVID-19_Radiography_Dataset"
    if REPO in target.parents:
        raise SystemExit("Write the stand-in outside the repository: images are never committed.")
    sys.path.insert(0, str(REPO))
    from helpers import dataset

    counts = {label: max(1, round(n * args.scale)) for label, n in dataset.RELEASE_COUNTS.items()}
    jobs = plan(Path(args.source), counts, stand_ins={"Lung_Opacity": "Normal"})
    for label in counts:
        (target / label / "images").mkdir(parents=True, exist_ok=True)
        (target / label / "masks").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(write, jobs, [target] * len(jobs), chunksize=64))
    print(f"{len(jobs)} images at {SIZE} px in {target}: " + ", ".join(f"{n} {c}" for c, n in counts.items()))


if __name__ == "__main__":
    main()
