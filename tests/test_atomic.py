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
