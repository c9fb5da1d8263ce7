"""The committed artefacts agree with each other: what the README quotes is what the committed run wrote."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _readme_block(marker: str, page: str = "README.md") -> str:
    """The text of ``page`` (the README, or a page under docs/) between ``<!-- {marker}:start ... -->`` and
    ``<!-- {marker}:end -->``."""
    readme = (REPO / page).read_text()
    block = re.search(rf"<!-- {marker}:start.*?-->\n(.*?)<!-- {marker}:end -->", readme, flags=re.DOTALL)
    assert block, f"{page} lost its {marker} markers"
    return block.group(1)


def test_readme_results_table_is_the_one_notebook_05_wrote():
    block = _readme_block("results-table")
    written = (REPO / "figures" / "results_table.md").read_text()
    table = "\n".join(line for line in written.splitlines() if line.startswith("|"))
    assert block.strip() == table.strip(), "README's results table differs from figures/results_table.md"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_link_their_neighbours_and_say_they_are_not_a_diagnostic_tool(path):
    notebook = nbformat.read(path, as_version=4)
    header = notebook.cells[0].source
    assert "Not a diagnostic tool" in header
    others = [p.name for p in NOTEBOOKS if p != path]
    assert all(name in header for name in others), f"{path.name}'s series line misses a notebook"


def _printed(stem: str) -> str:
    """Everything a committed notebook printed or displayed as text."""
    notebook = nbformat.read(REPO / "notebooks" / f"{stem}.ipynb", as_version=4)
    return "\n".join(str(output.get("text", "")) + "".join(str(v) for k, v in output.get("data", {}).items()
                                                         if k.startswith("text/"))
                     for cell in notebook.cells for output in cell.get("outputs", []))


@pytest.mark.parametrize("page", ["README.md", "docs/results.md"])
def test_readme_shortcut_numbers_are_those_notebook_07_printed(page):
    block = _readme_block("shortcuts", page)
    printed = _printed("07_shortcuts")
    pattern = r"(?<![\d.])\d+(?:\.\d+)?%|p = [\d.e-]+\d|n = \d+"  # whole tokens: "5%" is not in "95%"
    numbers = re.findall(pattern, block)
    assert numbers, "no numbers found in the README's shortcut summary"
    printed_numbers = set(re.findall(pattern, printed))
    missing = [n for n in numbers if n not in printed_numbers]
    assert not missing, f"README quotes numbers notebook 07 did not print: {missing}"


def test_readme_reading_of_the_results_table_quotes_committed_numbers():
    """The numbers in the README's reading of the results table are the committed ones: an accuracy with its
    interval is a row of the results table notebook 05 wrote; a range ("30.3–35.0 %"), a count ("20 of 32") and a
    difference from the published numbers ("1.8 points below to 5.3 points above") are what notebooks 02-04
    printed; any other percentage is one they printed or a test accuracy the thesis published."""
    block = _readme_block("table-reading")
    printed = "\n".join(_printed(stem) for stem in ("02_scratch_baseline", "03_transfer_feature_extraction",
                                                    "04_fine_tuning"))
    table = (REPO / "figures" / "results_table.md").read_text()
    missing, checked = [], 0

    def check(pattern, expected, source):
        """Every match of ``pattern`` in what is left of the block must have ``expected(*groups)`` in ``source`` (a
        text or a set of numbers); the matches are then removed, so a later, looser pattern does not see them."""
        nonlocal block, checked
        for match in re.finditer(pattern, block):
            checked += 1
            if expected(*match.groups()) not in source:
                missing.append(match.group(0))
        block = re.sub(pattern, "", block)

    def fraction(percent):
        return f"{float(percent) / 100:.3f}"

    check(r"(\d+\.\d) % \[(\d+\.\d), (\d+\.\d)\]",
          lambda a, lo, hi: f"{fraction(a)} [{fraction(lo)}, {fraction(hi)}]", table)
    check(r"(\d+(?:\.\d+)?)–(\d+(?:\.\d+)?) ?%", lambda a, b: f"{a}%–{b}%", printed)
    check(r"(\d+\.\d) points below to (\d+\.\d) points above", lambda a, b: f"-{a} to +{b} points", printed)
    check(r"(\d+ of \d+)", lambda pair: pair, printed)
    known = set(re.findall(r"(?<![\d.])(\d+\.\d)%", printed))
    published = pd.read_csv(REPO / "helpers" / "thesis_results.csv")["test_accuracy"].dropna()
    known |= {f"{100 * accuracy:.1f}" for accuracy in published}
    check(r"(?<![\d.])(\d+\.\d) ?%", lambda a: a, known)
    assert checked >= 8, "the README's reading of the results table lost its numbers"
    assert not missing, f"README's reading of the results table quotes numbers no committed output holds: {missing}"


def _readme_timings() -> dict:
    """Minutes per notebook and profile from the README's timing table (between its timings markers)."""
    rows = {}
    for line in _readme_block("timings").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and re.fullmatch(r"\d\d", cells[0]):
            rows[cells[0]] = {"cpu": float(cells[1]), "quick": float(cells[3]), "AVX2": float(cells[4]),
                              "reference": float(cells[5])}
    return rows


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_header_run_times_agree_with_the_readme_timing_table(path):
    """A header's "about N min" (cpu and quick profile, the AVX2 machine, the reference's estimate) is the README's
    time, rounded: within half a minute or 15 % of it."""
    header = nbformat.read(path, as_version=4).cells[0].source
    stated = {profile: float(minutes)
              for minutes, profile in re.findall(r"about (\d+(?:\.\d+)?) min in the `(cpu|quick)` profile", header)}
    assert set(stated) == {"cpu", "quick"}, f"{path.name}: the header does not state both profiles' run times"
    machines = re.search(r"about (\d+(?:\.\d+)?) min measured on a 2-core AVX2 machine and about (\d+(?:\.\d+)?) "
                         r"estimated on an ordinary 2-core laptop", header)
    assert machines, f"{path.name}: the header does not state the AVX2 machine's and the reference's times"
    stated |= {"AVX2": float(machines.group(1)), "reference": float(machines.group(2))}
    measured = _readme_timings()[path.name[:2]]
    for profile, minutes in stated.items():
        assert abs(minutes - measured[profile]) <= max(0.5, 0.15 * measured[profile]), \
            f"{path.name}: header says {minutes} min ({profile}), README measured {measured[profile]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_end_with_questions_exercises_and_a_linked_next_step(path):
    notebook = nbformat.read(path, as_version=4)
    text = "\n".join(cell.source for cell in notebook.cells)
    assert "## Questions" in text and "## Try it yourself" in text, f"{path.name} has no exercises"
    answers = sum(output.get("data", {}).get("text/markdown", "").count("<details>")
                  for cell in notebook.cells for output in cell.get("outputs", [])) + text.count("<details>")
    assert answers >= 3, f"{path.name}: fewer than three questions with collapsible answers"
    assert "glossary.md" in notebook.cells[0].source, f"{path.name}'s header does not link the glossary"
    if path != NOTEBOOKS[-1]:
        assert re.search(r"\*\*Next:\*\* \[", text), f"{path.name}: the next notebook is not a link"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_are_clean(path):
    """No progress bars, Keras epoch headers, TensorFlow log lines, warnings, colour codes or machine paths in
    what a reader sees (training prints one compact line per epoch)."""
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            assert output.get("name") != "stderr", f"{path.name} cell {index}: stderr output"
            text = output.get("text", "") + "".join(str(v) for k, v in output.get("data", {}).items()
                                                     if k.startswith("text/"))
            for bad in ("\x1b[", "Epoch 1/", "Warning", "/work/", "/tmp/", "/home/", "I0000", "E0000", "it/s]"):
                assert bad not in text, f"{path.name} cell {index}: {bad!r} in an output"
    assert path.stat().st_size <= 2_000_000, f"{path.name} is over 2 MB"
