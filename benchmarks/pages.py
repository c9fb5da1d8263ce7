"""The lines of the README, docs and notebook headers that quote measurement files, rendered from them.

``benchmarks/run_times.csv`` holds every end-to-end measurement (``python benchmarks/budgets.py end-to-end``
appends to it): one row per command or notebook, with the machine, its speed index against the reference
machine, the commit and the date. ``figures/results_table.md`` is the results table notebook 05 writes. Nothing
else types these numbers: the README's run-time lines and results table, the table in ``docs/running.md`` and each
notebook's run-time line are rendered from them by

    python benchmarks/pages.py        # make pages

and ``tests/test_committed.py`` fails when a page differs from what the files give today.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
MEASUREMENTS = REPO / "benchmarks" / "run_times.csv"
COLUMNS = ["date", "commit", "cpu", "cores", "isa", "speed_index", "command", "profile", "notebook", "minutes",
           "peak_gb", "exit"]
REFERENCE = "the reference machine (2 cores, AVX2 only, float32)"
NOT_MEASURED = "not measured yet (`python benchmarks/budgets.py end-to-end` measures it)"
NOTEBOOK_MARKER = "<!-- run-time: rendered from benchmarks/run_times.csv by `make pages`; do not edit -->"


def read(path: Path = MEASUREMENTS) -> pd.DataFrame:
    """Every measurement, oldest first; the notebook column as text ("01" ... "07", "all")."""
    return pd.read_csv(path, dtype={"notebook": str, "commit": str})


def newest(frame: pd.DataFrame, command: str, profile: str) -> pd.DataFrame:
    """The rows of the newest successful measurement of ``command`` in ``profile`` (one date and commit); none
    before the first ``python benchmarks/budgets.py end-to-end``."""
    rows = frame[(frame["command"] == command) & (frame["profile"] == profile) & (frame["exit"] == 0)]
    if rows.empty:
        return rows
    last = rows.iloc[-1]
    return rows[(rows["date"] == last["date"]) & (rows["commit"] == last["commit"])]


def scalable(row) -> bool:
    """Whether a measurement scales to the reference machine by its speed index: only one made with the
    reference's AVX2 kernels (an AVX2 CPU, or oneDNN held to AVX2). Wider vector units (AVX-512, bfloat16) speed
    the nets' arithmetic far more than the rest of a run, so their times times the index overstate the
    reference's (benchmarks/results.md, "Budgets: end to end", 2026-12-07)."""
    return str(row["isa"]).startswith("AVX2")


def on_reference(row) -> float:
    """Minutes on the reference machine, estimated: the minutes measured times the machine's speed index. An upper
    estimate: the part of a run that is not training (start-ups, pip, reading files) speeds up less than the
    nets' training from machine to machine, so it takes less than the index's share on the reference."""
    return float(row["minutes"]) * float(row["speed_index"])


def shown_minutes(row) -> float:
    """The minutes a page states for a measurement: on the reference machine where it scales there, else as
    measured."""
    return on_reference(row) if scalable(row) else float(row["minutes"])


# The one test suite the reference machine itself has timed (issue "An hour on an ordinary CPU"): `bash .ci/run` of
# this commit, 322 passed, 27.0 minutes of pytest there. Timed here the same way (``budgets.py calibrate``), it gives
# make test's own ratio: a test run is mostly start-ups, graph tracing and small trainings, which speed up less from
# machine to machine than the nets' arithmetic that the speed index measures.
REFERENCE_SUITE = {"commit": "3c9ce49", "pytest_minutes": 27.0}


def suite_ratio(frame: pd.DataFrame, row) -> pd.Series | None:
    """The newest ``reference suite`` measurement (``budgets.py calibrate``) on the machine and day of ``row``, or
    None: the test suite the reference machine timed, timed here, whose ratio estimates a test run better than the
    speed index."""
    rows = frame[(frame["command"] == "reference suite") & (frame["date"] == row["date"]) &
                 (frame["cpu"] == row["cpu"]) & (frame["isa"] == row["isa"])]
    return None if rows.empty else rows.iloc[-1]


def about(minutes: float) -> str:
    return "under a minute" if minutes < 1 else f"about {round(minutes)} min"


def machine(row) -> str:
    return f"{row['cpu']} ({row['cores']} cores, {row['isa']}, speed index {row['speed_index']:.2f})"


def readme_block(frame: pd.DataFrame) -> str:
    """The README's two run-time lines, one per command."""
    lines = []
    for command, what in (("make run", "cpu profile, no run records yet"), ("make test", "quick profile")):
        rows = newest(frame, command, "cpu" if command == "make run" else "quick")
        if rows.empty:
            lines.append(f"- `{command}` ({what}): {NOT_MEASURED}.")
            continue
        whole = rows[rows["notebook"] == "all"].iloc[0]
        measured = (f"{whole['minutes']:.1f} min measured on {machine(whole)}, {whole['date']}, commit "
                    f"{whole['commit']}, peak memory {whole['peak_gb']:.1f} GB")
        suite = suite_ratio(frame, whole) if command == "make test" else None
        if suite is not None:
            ratio = REFERENCE_SUITE["pytest_minutes"] / float(suite["minutes"])
            lines.append(f"- `{command}` ({what}): {about(float(whole['minutes']) * ratio)} on {REFERENCE} by "
                         f"the test suite's own ratio, at most {about(on_reference(whole))} by the speed index, "
                         f"estimated from {measured}; the ratio {ratio:.2f} is the reference's "
                         f"{REFERENCE_SUITE['pytest_minutes']} min of pytest for the suite of commit {suite['commit']} over "
                         f"{float(suite['minutes']):.1f} min here, the same day (exit {int(suite['exit'])}; "
                         "[both estimates](docs/running.md)).")
        elif scalable(whole):
            lines.append(f"- `{command}` ({what}): at most {about(on_reference(whole))} on {REFERENCE}, "
                         f"estimated from {measured} ([an upper estimate](docs/running.md)).")
        else:
            lines.append(f"- `{command}` ({what}): {measured}; not scaled to {REFERENCE}, whose AVX2 kernels "
                         "this measurement did not use ([why](docs/running.md)).")
    return "\n".join(lines)


TRAINED_BY = ("02", "03", "04")  # the notebooks whose run records 05-07 read (and train first where missing)
NEEDS_RECORDS = ("05", "06", "07")


def notebook_line(frame: pd.DataFrame, notebook: str) -> str:
    """One notebook's run-time line: the cpu profile (on the reference machine where the measurement scales to
    it) and the quick profile."""
    cpu = newest(frame, "make run", "cpu")
    quick = newest(frame, "make test", "quick")
    if cpu.empty:
        return f"**Run time:** {NOT_MEASURED}."
    row = cpu[cpu["notebook"] == notebook].iloc[0]
    where = ("on an ordinary 2-core laptop (an upper estimate)" if scalable(row)
             else f"on a 2-core {row['isa']} machine (longer on an ordinary laptop)")
    minutes = shown_minutes(row)
    quick_row = quick[quick["notebook"] == notebook]
    quick_text = (f", {about(float(quick_row.iloc[0]['minutes']))} in the `quick` profile on the same machine"
                  if len(quick_row) else "")
    trained = cpu[cpu["notebook"].isin(TRAINED_BY)]  # 05-07 first train what 02-04 would have: about as long
    first = ""
    if notebook in NEEDS_RECORDS and len(trained) == len(TRAINED_BY):
        more = sum(shown_minutes(r) for _, r in trained.iterrows())
        first = f"; on a fresh clone, without the run records of notebooks 02–04, {about(more)} more"
    return (f"**Run time:** {about(minutes)} in the `cpu` profile {where}, after the notebooks before it{first}"
            f"{quick_text} ([how this is measured](../docs/running.md)).")


def docs_table(frame: pd.DataFrame) -> str:
    """docs/running.md's table: each notebook's newest measurement, in both profiles."""
    cpu = newest(frame, "make run", "cpu").set_index("notebook")
    quick = newest(frame, "make test", "quick").set_index("notebook")
    if cpu.empty:
        return f"Run times: {NOT_MEASURED}."
    first = cpu.iloc[0]
    note = ("the reference column is the measured time times the speed index, an upper estimate" if scalable(first) else
            "measured with wider vector instructions than the reference's AVX2, so not scaled to it")
    quick_source = (f"; the quick column: {machine(quick.iloc[0])}, {quick.iloc[0]['date']}, commit "
                    f"{quick.iloc[0]['commit']}" if len(quick) else "")
    lines = [f"Measured on {machine(first)}, {first['date']}, commit {first['commit']}; {note}{quick_source}.", "",
             ("| notebook | cpu profile here (min; a notebook: its cells; all: the whole `make run`) | cpu peak memory (GB; "
              "the largest kernel) | cpu profile on the reference (min, "
              "estimated) | quick profile through nbval here (min; all: the whole `make test`) |"),
             "|---|---|---|---|---|"]
    for notebook, row in cpu.iterrows():
        quick_minutes = f"{quick.loc[notebook, 'minutes']:.1f}" if notebook in quick.index else "–"
        reference = f"{on_reference(row):.0f}" if scalable(row) else "–"
        peak = f"{row['peak_gb']:.1f}" if pd.notna(row["peak_gb"]) else "–"  # one make run: its largest kernel only
        lines.append(f"| {notebook} | {row['minutes']:.1f} | {peak} | {reference} | {quick_minutes} |")
    return "\n".join(lines)


def results_table() -> str:
    """The results table notebook 05 wrote (its table lines only)."""
    written = (REPO / "figures" / "results_table.md").read_text()
    return "\n".join(line for line in written.splitlines() if line.startswith("|"))


def replace_block(text: str, marker: str, body: str) -> str:
    """``text`` with the lines between ``<!-- {marker}:start ... -->`` and ``<!-- {marker}:end -->`` replaced."""
    pattern = re.compile(rf"(<!-- {marker}:start[^\n]*-->\n).*?(<!-- {marker}:end -->)", re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"no {marker} markers found")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def render_notebook_header(source: str, line: str) -> str:
    """A notebook's first cell with the line after ``NOTEBOOK_MARKER`` replaced by ``line``."""
    pattern = re.compile(re.escape(NOTEBOOK_MARKER) + r"\n[^\n]*")
    if not pattern.search(source):
        raise ValueError("the header has no run-time marker")
    return pattern.sub(lambda m: NOTEBOOK_MARKER + "\n" + line, source)


def rendered(frame: pd.DataFrame | None = None) -> dict[Path, str]:
    """Every page that quotes a measurement file, as the files render it today (path -> full text)."""
    frame = read() if frame is None else frame
    readme = replace_block((REPO / "README.md").read_text(), "run-times", readme_block(frame))
    pages = {REPO / "README.md": replace_block(readme, "results-table", results_table()),
             REPO / "docs" / "running.md": replace_block((REPO / "docs" / "running.md").read_text(), "run-times",
                                                         docs_table(frame))}
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        notebook = json.loads(path.read_text())
        header = "".join(notebook["cells"][0]["source"])
        new = render_notebook_header(header, notebook_line(frame, path.name[:2]))
        notebook["cells"][0]["source"] = new.splitlines(keepends=True)
        pages[path] = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    return pages


def main() -> None:
    for path, text in rendered().items():
        if path.read_text() != text:
            path.write_text(text)
            print(f"rendered {path.relative_to(REPO)}")


if __name__ == "__main__":
    sys.exit(main())
