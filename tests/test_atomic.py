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


def _record_syscalls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every fsync (named by what its descriptor points at) and every rename, in order."""
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: object, dst: object, *args: object, **kwargs: object) -> None:
        events.append(("replace", os.fspath(src), os.fspath(dst)))  # type: ignore[arg-type]
        real_replace(src, dst, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names descriptors through /proc")
def test_durable_write_fsyncs_the_file_then_renames_then_fsyncs_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24: skipping the folder's fsync after the rename passed the suite. Without it a power cut
    can lose the rename (the old file, or none, comes back) although the write returned."""
    folder = tmp_path / "run"
    folder.mkdir()
    target = folder / "state.json"
    events = _record_syscalls(monkeypatch)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert len(events) == 3, events
    (kind_1, temp), (kind_2, renamed_from, renamed_to), (kind_3, synced_folder) = events
    assert (kind_1, kind_2, kind_3) == ("fsync", "replace", "fsync")
    assert renamed_from == temp and Path(temp).parent == folder and renamed_to == str(target)
    assert synced_folder == str(folder)  # the folder holding the new name, after the rename

    events.clear()
    atomic_write_bytes(target, b"fast", durable=False)  # reports: no fsync at all, still a rename
    assert [event[0] for event in events] == ["replace"] and target.read_bytes() == b"fast"
