"""Atomic writes: the old file survives a failed write, and no temp file is left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diffkit.atomic import NEW_FILE_MODE, atomic_open, atomic_write_bytes


def test_atomic_write_gives_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert os.stat(target).st_mode & 0o777 == NEW_FILE_MODE
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_open(target, "wb") as handle:
        handle.write(b"new but incomplete")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_missing_folders_are_created_and_a_file_in_the_way_is_one_error(tmp_path: Path) -> None:
    from diffkit.errors import DiffkitError

    target = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(target, b"abc")  # the folders are made only when the first mkstemp finds none
    assert target.read_bytes() == b"abc"
    (tmp_path / "blocker").write_bytes(b"")
    with pytest.raises(DiffkitError):
        atomic_write_bytes(tmp_path / "blocker" / "file.bin", b"abc")
