"""plots: figures that a README or a course page can carry."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from helpers import config


def test_a_photo_like_figure_is_saved_under_the_size_limit_and_a_chart_keeps_full_resolution(tmp_path):
    """figures/ stays light enough for a README or a course page: a grid of photo-like images drops to a lower
    resolution, a plain chart keeps 150 dpi."""
    import matplotlib
    matplotlib.use("Agg")
    from PIL import Image

    from helpers import plots

    profile = config.PROFILES["cpu"]
    profile = type(profile)(**{**asdict(profile), "figures_subdir": None, "name": "quick"})
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)  # smoothed noise: about as hard to compress as X-rays (1.2 MB at 150 dpi)
    photos = np.stack([np.clip(gaussian_filter(rng.normal(128, 60, (160, 160)), 2), 0, 255).astype(np.uint8)
                       for _ in range(24)])
    grid = plots.save(plots.image_grid(photos, ncols=6, size=2.5), "grid", profile)
    assert grid.stat().st_size <= plots.MAX_FIGURE_BYTES
    chart, ax = plots.plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    line = plots.save(chart, "line", profile)
    assert abs(Image.open(line).info["dpi"][0] - plots.DPI) < 1


def test_interval_bars_name_n_on_every_row_and_draw_the_chance_line_per_row():
    import matplotlib.pyplot as plt
    import pandas as pd

    from helpers import plots

    table = pd.DataFrame({"group": ["adult", "adult", "child", "child"], "model": ["a", "b", "a", "b"],
                          "images": [356, 356, 33, 33], "accuracy": [0.48, 0.78, 0.97, 1.0],
                          "ci_low": [0.43, 0.73, 0.85, 0.9], "ci_high": [0.53, 0.82, 1.0, 1.0]})
    fig, ax = plt.subplots()
    plots.interval_bars(ax, table, "group", "model", chance={"adult": 0.5, "child": 0.35})
    assert [t.get_text() for t in ax.get_yticklabels()] == ["adult (n=356)", "child (n=33)"]
    chance = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert chance == [0.5, 0.35]
    plt.close(fig)


def test_both_interval_charts_say_small_n_the_same_way_and_hatch_those_bars():
    """A group of fewer than ``SMALL_N`` images reads "(n=4, small n" in either chart of notebook 07, and its bar is
    drawn hatched, so that four images do not look like evidence."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from helpers import plots

    shares = pd.DataFrame({"group": ["adult", "child"], "model": ["a", "a"], "images": [150, 4],
                           "accuracy": [0.5, 1.0], "ci_low": [0.4, 0.4], "ci_high": [0.6, 1.0]})
    fig, ax = plt.subplots()
    plots.interval_bars(ax, shares, "group", "model")
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == ["adult (n=150)", "child (n=4, small n)"]
    assert [bar.get_hatch() for bar in ax.patches] == [None, "///"]
    plt.close(fig)
    outside = shares.assign(**{"own test images": [40, 40], "own test sensitivity": [0.9, 0.9],
                               "own ci_low": [0.8, 0.8], "own ci_high": [1.0, 1.0]})
    fig = plots.group_accuracy_bars(outside, "left-out images")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["a · adult (n=150; own test n=40)", "a · child (n=4, small n; own test n=40)"]
    plt.close(fig)
