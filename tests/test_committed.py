"""The committed artefacts agree with each other: what the README quotes is what the committed run wrote."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_readme_results_table_is_the_one_notebook_05_wrote():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- results-table:start.*?-->\n(.*?)<!-- results-table:end -->", readme, flags=re.S)
    assert block, "README.md lost its results-table markers"
    written = (REPO / "figures" / "results_table.md").read_text()
    table = "\n".join(line for line in written.splitlines() if line.startswith("|"))
    assert block.group(1).strip() == table.strip(), "README's results table differs from figures/results_table.md"


@pytest.mark.parametrize("path", sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_committed_notebooks_link_their_neighbours_and_say_they_are_not_a_diagnostic_tool(path):
    notebook = nbformat.read(path, as_version=4)
    header = notebook.cells[0].source
    assert "Not a diagnostic tool" in header
    others = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb") if p != path)
    assert all(name in header for name in others), f"{path.name}'s series line misses a notebook"


def test_readme_shortcut_numbers_are_those_notebook_07_printed():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- shortcuts:start.*?-->\n(.*?)<!-- shortcuts:end -->", readme, flags=re.S)
    assert block, "README.md lost its shortcuts markers"
    notebook = nbformat.read(REPO / "notebooks" / "07_shortcuts.ipynb", as_version=4)
    printed = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            printed.append(output.get("text", ""))
            printed += [str(v) for v in output.get("data", {}).values()]
    printed = "\n".join(printed)
    numbers = re.findall(r"\d+(?:\.\d+)?%|p = [\d.e-]+|n = \d+", block.group(1))
    assert numbers, "no numbers found in the README's shortcut summary"
    missing = [n for n in numbers if n not in printed]
    assert not missing, f"README quotes numbers notebook 07 did not print: {missing}"
