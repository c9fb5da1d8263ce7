"""Every "Try it yourself" item either gives code that `make test` runs after its notebook (nbval on the copies of
``exercise_notebooks.py``, each followed by a check of what it produced) or says that it is a thinking or looking
exercise; every item says how long it takes."""
from __future__ import annotations

import re

import nbformat
import pytest
from exercise_notebooks import CHECKS, NO_CODE, NOTEBOOKS, exercises, with_exercises

ITEMS = [exercise for notebook in NOTEBOOKS for exercise in exercises(notebook)]
TIME = re.compile(r"\((?:[^()]*\b(?:seconds?|minutes?|hours?)\b[^()]*)\)")


def test_every_notebook_has_exercises():
    assert {item.key[:2] for item in ITEMS} == {n.name[:2] for n in NOTEBOOKS}


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: item.key)
def test_an_exercise_gives_code_with_a_check_or_says_it_has_none(item):
    if item.code is None:
        assert NO_CODE.search(item.text), f"{item.key}: no code, and not marked as a thinking or looking exercise"
    else:
        assert not NO_CODE.search(item.text), f"{item.key}: marked as a thinking exercise, but gives code"
        assert item.key in CHECKS, f"{item.key}: runnable, but exercise_notebooks.CHECKS has no check for it"
        compile(item.code, item.key, "exec")


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: item.key)
def test_every_exercise_says_how_long_it_takes(item):
    first_line = item.text.splitlines()[0]
    assert TIME.search(first_line), f"{item.key}: no time estimate in its first line: {first_line!r}"


def test_every_check_belongs_to_an_exercise_with_code():
    runnable = {item.key for item in ITEMS if item.code is not None}
    assert set(CHECKS) == runnable


def test_the_copies_run_each_exercise_then_its_check_after_the_notebook(tmp_path):
    notebook = next(n for n in NOTEBOOKS if n.name.startswith("04"))
    original = nbformat.read(notebook, as_version=4).cells
    copy = with_exercises(notebook).cells
    assert [c.source for c in copy[:len(original)]] == [c.source for c in original]  # the notebook, unchanged
    added = copy[len(original):]
    runnable = [item for item in exercises(notebook) if item.code is not None]
    assert len(added) == 2 * len(runnable)
    for item, (code, check) in zip(runnable, zip(added[::2], added[1::2])):
        assert item.code in code.source and CHECKS[item.key] in check.source
