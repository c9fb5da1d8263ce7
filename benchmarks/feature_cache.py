"""Feature caching for EC heads: seconds per epoch with cached features against running the frozen base.

    python benchmarks/feature_cache.py [--images 512] [--size 224] [--epochs 3]

Both sides train the same head (the thesis's V2-reg) on the same images with the same batch size; the only
difference is whether the frozen SqueezeNet base runs every epoch. Prints a Markdown table and appends it,
with the machine and the date, to benchmarks/results.md. A measurement, not a test: compare the ratio.
"""
from __future__ import annotations

import argparse
import os
import platform
from datetime import date
from pathlib import Path

from helpers import backbones, config, data, features  # first: helpers mutes TensorFlow's start-up lines

import keras


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    profile = config.current("cpu")
    index = data.index_dataset(data.find_dataset(), progress=False)
    split = data.load_split(index, "thesis", profile)
    rows = split[split["split"] == "train"].head(args.images)
    extractor, pretrained = backbones.feature_extractor("squeezenet", args.size, allow_random=True)
    result = features.epoch_seconds_with_and_without_cache(extractor, rows, args.size,
                                                           batch_size=args.batch_size, epochs=args.epochs)
    weights = "ImageNet" if pretrained else "random init"
    table = "\n".join([
        f"### Feature cache for EC heads: {date.today()}, {platform.node()} ({os.cpu_count()} cores, "
        f"{platform.machine()}), keras {keras.__version__}",
        "",
        f"SqueezeNet ({weights}) at {args.size} px, {result['images']} training images, batch {args.batch_size}, "
        f"V2-reg head, median of {args.epochs} epochs after a warm-up epoch.",
        "",
        "| per epoch | seconds |",
        "|---|---|",
        f"| head on cached features | {result['cached_epoch_s']:.3f} |",
        f"| frozen base run every epoch + head | {result['base_epoch_s']:.3f} |",
        f"| **speed-up** | **{result['speedup']:.0f}x** |",
        f"| building the cache once (one pass of the base) | {result['build_cache_s']:.1f} |",
        "",
    ])
    print(table)
    with Path(__file__).with_name("results.md").open("a") as handle:
        handle.write(table + "\n")


if __name__ == "__main__":
    main()
