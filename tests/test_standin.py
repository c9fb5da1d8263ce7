"""benchmarks/full_size_standin.py: the release's layout, counts and size, with no duplicate the release lacks."""
from __future__ import annotations

import subprocess
import sys
import warnings

from PIL import Image

from helpers import config, dataset

from conftest import make_release


def test_the_stand_in_has_the_release_s_layout_counts_size_and_distinct_images(tmp_path):
    source = make_release(tmp_path / "offline", counts={"COVID": 5, "Normal": 6, "Viral Pneumonia": 4})
    scale = 0.002  # 7 COVID, 20 Normal, 3 Viral Pneumonia, 12 Lung_Opacity
    result = subprocess.run([sys.executable, str(config.ROOT / "benchmarks" / "full_size_standin.py"),
                             "--source", str(source), "--target", str(tmp_path / "standin"), "--scale", str(scale)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    root = tmp_path / "standin" / "COVID-19_Radiography_Dataset"
    expected = {label: max(1, round(n * scale)) for label, n in dataset.RELEASE_COUNTS.items()}
    for label, n in expected.items():
        assert len(list((root / label / "images").glob("*.png"))) == n, label
        assert len(list((root / label / "masks").glob("*.png"))) == n, label
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = dataset.index_dataset(root, progress=False, cache=False)  # masks and Lung_Opacity ignored
    assert index["label"].value_counts().to_dict() == {c: expected[c] for c in config.CLASSES}
    assert (index[["width", "height"]] == 299).all().all()
    assert index["sha256"].is_unique  # every repeat differs in its bytes
    normal = index[index["label"] == "Normal"].sort_values("image_id")["image_id"].tolist()
    assert normal == list(range(1, 21))  # the 6 originals keep their ids, the repeats continue after them
    with Image.open(root / "Normal" / "images" / "Normal-7.png") as repeat, \
            Image.open(root / "Normal" / "images" / "Normal-1.png") as original:
        difference = abs(int(repeat.getextrema()[1]) - int(original.getextrema()[1]))
    assert difference <= 1  # the same picture, give or take one grey level
