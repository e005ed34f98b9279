"""Atomic file writes (echojax.files)."""

import os
import stat

import pytest

from echojax import files


def test_write_atomic_gives_the_mode_open_would_give(tmp_path):
    path = tmp_path / "report.md"
    files.write_atomic(path, "text")
    plain = tmp_path / "plain.md"
    plain.write_text("text")  # what open() gives under this process's umask
    assert path.read_text() == "text"
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.md", "report.md"]


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with files.atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("writer failed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
