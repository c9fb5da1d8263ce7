"""The notebooks with their "Try it yourself" code run after them: what `make test` gives nbval.

    python tests/exercise_notebooks.py data/exercises     # writes data/exercises/NN_*.ipynb

Each copy is the committed notebook followed, for every exercise that gives code, by a cell with that code as the
student reads it and a cell that checks what it produced (``CHECKS``). nbval runs the copies top to bottom, so an
exercise that stops working after a top-to-bottom run of its notebook fails `make test`. An exercise without code
says that it is a thinking (or looking) exercise; ``tests/test_exercises.py`` holds every item to one of the two.
"""
from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import nbformat

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
HEADING = "## Try it yourself"
NO_CODE = re.compile(r"\((?:a )?(?:thinking|looking) exercise")

# What each runnable exercise must have produced, by notebook and item number: names its code defines.
CHECKS = {
    "01.1": 'assert set(moved) == {0.4, 0.8} and all(s["accuracy"].between(0, 1).all() for s in moved.values())',
    "01.2": "assert len(twins) <= len(naive_held) and twins.duplicate_group.isin(naive_train.duplicate_group).all()",
    "01.3": 'assert len(picks) > 0 and set(picks.label) == {"Normal"}',
    "02.1": 'assert record.config["oversample_covid"] == 2 and 0 <= record.metrics["test"]["accuracy"] <= 1',
    "02.2": 'assert 0 <= last_epoch <= 1 and len(fresh.history.history["loss"]) == 15',
    "02.3": "assert len(wrong) > 0 and (wrong.true != wrong.predicted).all()",
    "03.1": "assert 0 <= deeper <= 1",
    "03.2": 'assert random_parts["train"][0].shape == x_train.shape and not np.allclose(random_parts["train"][0], x_train)',
    "03.3": 'assert border_parts["test"][0].shape == x_test.shape and not np.allclose(border_parts["test"][0], x_test)',
    "04.1": 'assert record.config["learning_rate"] == 1e-3 and 0 <= record.metrics["val"]["accuracy"] <= 1',
    "04.2": 'assert record.config["fine_tune_from"] is None and record.metrics["train_seconds"] > 0',
    "04.3": "assert len(wrong) == 0 or (maps.shape[0] == len(wrong) and 0 <= maps.min() and maps.max() <= 1)",
    "05.1": "assert 0 <= low <= right.mean() <= high <= 1",
    "05.2": 'assert runner_up != best and 0 <= paired_test["p_value"] <= 1',
    "05.3": 'assert len(normals) > 0 and set(scored["true"]) == {1}',  # class 1: Normal
    "06.1": "assert len(wrong) == 0 or (for_true.shape == for_predicted.shape and for_true.max() <= 1)",
    "06.3": "assert finer.shape[1] > maps.shape[1] and finer.shape[0] == len(images)",
    "07.1": 'assert 0 <= covid_scores["accuracy"] <= 1 and len(covid_fit) > 0',
    "07.2": 'assert 0 <= weak_scores["accuracy"] <= 1 and weak_features.shape[0] == len(images)',
}


@dataclass
class Exercise:
    key: str          # "04.2": notebook 04, item 2
    text: str         # the item as the student reads it
    code: str | None  # its Python block, dedented; None for a thinking or looking exercise


def exercises(notebook: Path) -> list[Exercise]:
    """The items of the notebook's "Try it yourself" cell, in order."""
    cells = [c for c in nbformat.read(notebook, as_version=4).cells
             if c.cell_type == "markdown" and c.source.startswith(HEADING)]
    if not cells:
        return []
    text = cells[0].source.split("**Next:**")[0]
    items = re.split(r"^(?=\d+\. )", text, flags=re.MULTILINE)[1:]
    found = []
    for item in items:
        number = item.split(".", 1)[0]
        blocks = re.findall(r"```python\n(.*?)```", item, re.DOTALL)
        code = "\n\n".join(textwrap.dedent(block).strip() for block in blocks) or None
        found.append(Exercise(f"{notebook.name[:2]}.{number}", item.strip(), code))
    return found


def with_exercises(notebook: Path):
    """The notebook with, for each exercise that gives code, that code and its check appended as code cells."""
    nb = nbformat.read(notebook, as_version=4)
    for exercise in exercises(notebook):
        if exercise.code is None:
            continue
        nb.cells.append(nbformat.v4.new_code_cell(f"# Try it yourself, {exercise.key}\n{exercise.code}"))
        nb.cells.append(nbformat.v4.new_code_cell(f"# what {exercise.key} produced\n{CHECKS[exercise.key]}"))
    return nb


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.ipynb"):
        old.unlink()
    for notebook in NOTEBOOKS:
        nbformat.write(with_exercises(notebook), out / notebook.name)


if __name__ == "__main__":
    main(sys.argv[1])
