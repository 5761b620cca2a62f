"""tunesmith.io: a reader sees the old file or the new one, never half; failures change nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tunesmith.io import atomic_dir, atomic_open, atomic_write, atomic_write_json, read_json


def test_atomic_write_replaces_text_bytes_and_json(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "a.txt"
    atomic_write(f, "héllo\n")
    assert f.read_text(encoding="utf-8") == "héllo\n"
    atomic_write(f, b"\x00\x01")
    assert f.read_bytes() == b"\x00\x01"
    atomic_write_json(tmp_path / "x.json", {"p": Path("/a"), "k": "ü"})
    assert read_json(tmp_path / "x.json") == {"p": "/a", "k": "ü"}
    assert "ü" in (tmp_path / "x.json").read_text(encoding="utf-8")  # not \\u-escaped


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    f = tmp_path / "keep.txt"
    f.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(f) as fh:
        fh.write("half of the new")
        raise RuntimeError("killed")
    assert f.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_mode_is_what_open_would_give_and_an_existing_mode_is_kept(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        new = tmp_path / "new.txt"
        atomic_write(new, "x")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644  # not mkstemp's private 0600
        new.chmod(0o640)
        atomic_write(new, "y")
        assert stat.S_IMODE(new.stat().st_mode) == 0o640
    finally:
        os.umask(mask)


def test_atomic_open_refuses_read_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError), atomic_open(tmp_path / "f", "r"):  # type: ignore[arg-type]
        pass


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
        raise RuntimeError("killed")
    assert not out.exists() and list(tmp_path.iterdir()) == []

    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
        assert not out.exists()  # not visible before the block ends
    assert (out / "a").read_text() == "1"

    with pytest.raises(FileExistsError), atomic_dir(out) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["a"]  # untouched without replace

    with atomic_dir(out, replace=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp or old dir left


def test_atomic_dir_gets_the_mode_mkdir_would_give(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "d"):
            pass
        assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755  # not mkdtemp's 0700
    finally:
        os.umask(mask)
