"""The code blocks of every notebook's "Try it yourself" run as given after its Setup section (quick profile, a
small synthetic dataset): an undefined name or a changed helper fails here, not in a student's hands."""
from __future__ import annotations

import dataclasses
import json
import re
import textwrap
import warnings
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pytest

from conftest import make_release

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def setup_and_exercises(notebook: Path) -> tuple[str, list[str]]:
    """The code of the notebook's Setup section (its code cells up to the next heading) and the Python code
    blocks of its "Try it yourself" cell."""
    cells = json.loads(notebook.read_text())["cells"]
    setup, exercises, in_setup = [], [], False
    for cell in cells:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            if text.startswith("## "):
                in_setup = text.startswith("## Setup")
            if text.startswith("## Try it yourself"):
                blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
                exercises = [textwrap.dedent(block) for block in blocks]
        elif in_setup:
            setup.append(text)
    return "\n".join(setup), exercises


WITH_EXERCISES = [n for n in NOTEBOOKS if setup_and_exercises(n)[1]]


def test_the_notebooks_that_give_exercise_code_are_found():
    assert {n.name[:2] for n in WITH_EXERCISES} >= {"02", "04"}
    assert all(setup_and_exercises(n)[0] for n in NOTEBOOKS)  # every notebook has a Setup section with code


@pytest.mark.parametrize("notebook", WITH_EXERCISES, ids=lambda n: n.name[:2])
def test_the_exercise_code_runs_after_the_setup_section(notebook, tmp_path, monkeypatch, offline_weights):
    setup, exercises = setup_and_exercises(notebook)
    dataset = make_release(tmp_path / "dataset", counts={"COVID": 20, "Normal": 20, "Viral Pneumonia": 20})
    monkeypatch.setenv("CXR_DATA_DIR", str(dataset))
    monkeypatch.setenv("CXR_PROFILE", "quick")
    namespace = {"display": lambda *objects, **kwargs: None}  # what Jupyter provides
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tiny dataset warns that it has fewer images than a protocol asks for
        exec(compile(setup, f"{notebook.name}, Setup", "exec"), namespace)  # noqa: S102 (the notebook's own code)
        for number, block in enumerate(exercises, 1):
            namespace.pop("record", None)
            exec(compile(block, f"{notebook.name}, exercise block {number}", "exec"), namespace)  # noqa: S102
            plt.close("all")
            if "record" in namespace:  # an exercise that trains: its record is the run it describes, complete
                record, exp = namespace["record"], namespace["exp"]
                assert record.config["name"] == exp.name and record.path.name == exp.name
                changed = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(exp))).items()
                           if k not in ("source", "published")}
                assert {k: record.config.get(k) for k in changed} == changed, f"block {number} trained another run"
                assert 0 <= record.metrics["test"]["accuracy"] <= 1 and len(record.history) >= 1
