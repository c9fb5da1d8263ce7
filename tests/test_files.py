"""files: a write is whole or absent, two writers never share a temporary file, and a corrupt file is named."""
from __future__ import annotations

import json
import os

import pytest

from helpers import files


def test_a_file_and_a_folder_are_replaced_whole_and_leave_nothing_beside_them(tmp_path):
    target = tmp_path / "metrics.json"
    files.write_json(target, {"a": 1})
    files.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    record = tmp_path / "run"
    for version in ("old", "new"):
        def fill(folder, version=version):
            folder.mkdir()
            (folder / "model.txt").write_text(version)
        files.atomic_write(record, fill)
    assert (record / "model.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "run"]


def test_a_failed_write_leaves_the_old_version_and_no_temporary_file(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        files.atomic_write(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_two_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    """A second writer starting while the first is still writing (another process, a notebook and a script)
    must not remove or overwrite the first one's temporary file."""
    target = tmp_path / "index.csv"

    def first(tmp):
        tmp.write_text("first, part 1;")
        files.atomic_write(target, lambda other: other.write_text("second"))  # starts and ends meanwhile
        with tmp.open("a") as handle:
            handle.write(" part 2")

    files.atomic_write(target, first)
    assert target.read_text() == "first, part 1; part 2"  # the last rename wins, and it is whole


def test_the_data_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    files.write_json(tmp_path / "state.json", {"wait": 1})
    assert "fsync" in events and events.index("fsync") < events.index("replace")


def test_a_missing_json_file_is_empty_and_a_corrupt_one_is_an_error_naming_it(tmp_path):
    assert files.read_json(tmp_path / "absent.json") == {}
    broken = tmp_path / "early_stopping.json"
    broken.write_text('{"0": {"wait": 1')  # cut short
    with pytest.raises(files.CorruptFileError, match="early_stopping.json"):
        files.read_json(broken)
    broken.write_text("[1, 2]")
    with pytest.raises(files.CorruptFileError, match="not an object"):
        files.read_json(broken)
